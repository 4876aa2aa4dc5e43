"""Image regions in pixels: axis-aligned boxes and boolean masks (numpy, not differentiable).

Boxes are ``(x0, y0, x1, y1)``; ``box_iou`` treats them as continuous rectangles, so it serves
both conventions in use (``mask_box``: inclusive pixel centres, floats;
``hoirecon.segment.classic.mask_box_xyxy``: exclusive ends, ints) as long as both boxes share one.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def mask_box(mask: np.ndarray) -> Optional[tuple[float, float, float, float]]:
    """Tight (x0, y0, x1, y1) box of a (H, W) boolean mask (pixel centres), None if empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes as rectangles (0 when the union is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
