"""Classical offline segmentation and mask tracking (no learned weights).

- ``grabcut_from_box``: a first-frame mask from a box (GrabCut, opencv-contrib).
- ``track_masks``: propagate masks frame to frame by DIS optical flow, refined by GrabCut
  seeded with the warped mask (sure foreground inside an eroded core, probable in a band,
  sure background far away), which keeps the boundary on image edges instead of drifting.
- ``mask_iou``: IoU of boolean masks.

Images are ``(H, W, 3) uint8`` RGB; masks ``(H, W) bool``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class TrackerConfig:
    """Knobs of the flow + GrabCut tracker (defaults tuned on nothing in particular; see docs)."""

    grabcut_iters: int = 3
    band_px: int = 6  # half-width of the "probable" band around the warped boundary
    min_area_px: int = 16  # below this, a tracked mask is considered lost
    flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.astype(bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def grabcut_from_box(image: np.ndarray, box: Sequence[float], iters: int = 5,
                     sure_fg: np.ndarray | None = None, sure_bg: np.ndarray | None = None) -> np.ndarray:
    """Segment the object inside ``box`` (x0, y0, x1, y1) with GrabCut; (H, W) bool.

    ``sure_fg``/``sure_bg`` (H, W) bool pin pixels (e.g. hand landmarks, another object's mask).
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((h, w), bool)
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    # the box centre is very likely the object: it anchors GrabCut's colour model
    cy, cx, ry, rx = (y0 + y1) // 2, (x0 + x1) // 2, max(1, (y1 - y0) // 8), max(1, (x1 - x0) // 8)
    mask[cy - ry:cy + ry, cx - rx:cx + rx] = cv2.GC_FGD
    if sure_bg is not None:
        mask[sure_bg] = cv2.GC_BGD
    if sure_fg is not None:
        mask[sure_fg] = cv2.GC_FGD
    return _run_grabcut(image, mask, iters)


def _run_grabcut(image: np.ndarray, mask: np.ndarray, iters: int) -> np.ndarray:
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    fg_like = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    bg_like = ~fg_like
    if fg_like.sum() < 2 or bg_like.sum() < 2:
        return fg_like
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        cv2.grabCut(bgr, mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models: keep the seed
        return fg_like
    out = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return _largest_component(out)


class FlowTracker:
    """Frame-to-frame mask propagation with DIS flow + GrabCut refinement."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig()):
        self.cfg = cfg
        self.dis = cv2.DISOpticalFlow_create(cfg.flow_preset)

    def flow(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Dense flow (H, W, 2) mapping pixels of ``dst`` to where they were in ``src``."""
        g_src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
        g_dst = cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY)
        return self.dis.calc(g_dst, g_src, None)

    def warp(self, mask: np.ndarray, flow_dst_to_src: np.ndarray) -> np.ndarray:
        h, w = mask.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mx, my = gx + flow_dst_to_src[..., 0], gy + flow_dst_to_src[..., 1]
        warped = cv2.remap(mask.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderValue=0)
        return warped > 0.5

    def refine(self, image: np.ndarray, warped: np.ndarray, forbid: np.ndarray | None = None,
               anchor: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """GrabCut seeded by a warped mask: eroded core sure-FG, band probable, outside sure-BG.

        anchor: optional (sure (H,W) bool, probable (H,W) bool) extra seeds, e.g. from hand
        landmarks, that let the mask grow where the warp alone would not reach.
        """
        if warped.sum() < self.cfg.min_area_px and anchor is None:
            return warped
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.cfg.band_px + 1,) * 2)
        m8 = warped.astype(np.uint8)
        core = cv2.erode(m8, k).astype(bool)
        outer = cv2.dilate(m8, k).astype(bool)
        seed = np.full(warped.shape, cv2.GC_BGD, np.uint8)
        seed[outer] = cv2.GC_PR_BGD
        seed[warped] = cv2.GC_PR_FGD
        seed[core] = cv2.GC_FGD
        if anchor is not None:
            sure, probable = anchor
            seed[probable & (seed == cv2.GC_BGD)] = cv2.GC_PR_FGD
            seed[sure] = cv2.GC_FGD
            outer = outer | probable
        if forbid is not None:
            seed[forbid & ~core] = cv2.GC_BGD
        # GrabCut on the bounding crop only: ~10x faster than the whole frame
        ys, xs = np.nonzero(outer)
        pad = 4 * self.cfg.band_px
        y0, y1 = max(0, ys.min() - pad), min(warped.shape[0], ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(warped.shape[1], xs.max() + pad + 1)
        out = np.zeros_like(warped)
        out[y0:y1, x0:x1] = _run_grabcut(image[y0:y1, x0:x1], seed[y0:y1, x0:x1].copy(), self.cfg.grabcut_iters)
        return out

    def track(self, frames: Sequence[np.ndarray], first_masks: np.ndarray,
              on_frame: Callable[[], None] | None = None,
              anchors: Sequence[Callable | None] | None = None) -> np.ndarray:
        """Propagate K masks from frame 0 through the clip.

        Args:
            frames: T images (H, W, 3) uint8.
            first_masks: (K, H, W) bool, mutually exclusive, order = priority where they overlap.
            anchors: per mask, None or a callable ``(image, warped_mask) -> (sure, probable) | None``
                giving extra seeds each frame (see ``hoirecon.segment.anchor``).
        Returns:
            (T, K, H, W) bool.
        """
        T = len(frames)
        K = first_masks.shape[0]
        out = np.zeros((T, K) + first_masks.shape[1:], bool)
        out[0] = first_masks
        for t in range(1, T):
            flow = self.flow(frames[t - 1], frames[t])
            taken = np.zeros(first_masks.shape[1:], bool)
            warped_all = [self.warp(out[t - 1, k], flow) for k in range(K)]
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.cfg.band_px + 1,) * 2)
            cores = [cv2.erode(w.astype(np.uint8), kernel).astype(bool) for w in warped_all]
            for k in range(K):
                warped = warped_all[k]
                # the confident interior of the other masks is not up for grabs (a grown hand
                # must not swallow the object it holds)
                others = np.zeros_like(taken)
                for j in range(K):
                    if j != k:
                        others |= cores[j]
                anchor = anchors[k](frames[t], warped) if anchors is not None and anchors[k] is not None else None
                if anchor is not None:
                    anchor = (anchor[0] & ~others, anchor[1] & ~others)
                m = self.refine(frames[t], warped, forbid=taken | others, anchor=anchor) & ~taken
                out[t, k] = m
                taken |= m
            if on_frame:
                on_frame()
        return out
