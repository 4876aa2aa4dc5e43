"""Geometry of the pose network: control points, voting, PnP, hand translation, crops.

Pixels have their centres at integers (OpenCV's convention); a box ``(x1, y1, x2, y2)`` is the
continuous extent it covers, so a mask whose pixels run from column a to b has ``x1 = a - 0.5``,
``x2 = b + 0.5``.

Control points (the paper's 21): the 8 corners of the object's axis-aligned bounding box in
its own frame (corner ``i`` takes the max along axis k where bit k of i is set), the 12 edge
midpoints (pairs of corners that differ in one bit, in ``BOX_EDGES`` order), then the box centre.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["BOX_EDGES", "box_control_points", "vote_control_points", "solve_pnp", "solve_translation", "mask_box",
           "square_crop", "to_crop", "from_crop", "crop_intrinsics", "crop_image"]

_CORNERS = [(i & 1, (i >> 1) & 1, (i >> 2) & 1) for i in range(8)]
BOX_EDGES = [(i, i | (1 << k)) for i in range(8) for k in range(3) if not i & (1 << k)]


def box_control_points(points: Tensor) -> Tensor:
    """The 21 control points of a point set's axis-aligned bounding box.

    Args:
        points: (B, N, 3) or (N, 3), e.g. mesh vertices in the object frame.
    Returns:
        (B, 21, 3) or (21, 3): 8 corners, 12 edge midpoints, the centre (module docstring).
    """
    lo, hi = points.min(-2).values, points.max(-2).values  # (..., 3)
    bits = torch.tensor(_CORNERS, dtype=points.dtype, device=points.device)  # (8, 3)
    corners = lo[..., None, :] + bits * (hi - lo)[..., None, :]
    a = torch.tensor([e[0] for e in BOX_EDGES], device=points.device)
    b = torch.tensor([e[1] for e in BOX_EDGES], device=points.device)
    mids = 0.5 * (corners[..., a, :] + corners[..., b, :])
    centre = 0.5 * (lo + hi)[..., None, :]
    return torch.cat([corners, mids, centre], dim=-2)


def vote_control_points(votes: Tensor, conf: Tensor, top_k: int = 16) -> tuple[Tensor, Tensor]:
    """Confidence-weighted vote of each control point over the grid cells.

    Only each point's ``top_k`` most confident cells vote (the rest are far from the point
    or on the background), weighted by their confidence.

    Args:
        votes: (B, G, N, 2) each cell's prediction of each point (pixels).
        conf: (B, G, N) confidences in (0, 1).
    Returns:
        points (B, N, 2) pixels and their mean confidence (B, N) over the voters.
    """
    k = min(top_k, votes.shape[1])
    top, idx = conf.topk(k, dim=1)  # (B, k, N)
    chosen = votes.gather(1, idx[..., None].expand(-1, -1, -1, 2))  # (B, k, N, 2)
    w = top / top.sum(1, keepdim=True).clamp(min=1e-12)
    return (w[..., None] * chosen).sum(1), top.mean(1)


def solve_pnp(points_3d: np.ndarray, points_2d: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """Object pose from 2D-3D correspondences (OpenCV EPnP, then Levenberg-Marquardt).

    Args:
        points_3d: (N, 3) object-frame points, N >= 4. points_2d: (N, 2) pixels. K: (3, 3).
    Returns:
        T_obj_to_cam (4, 4) float64, or None when OpenCV finds no pose in front of the camera.
    """
    p3 = np.ascontiguousarray(points_3d, np.float64).reshape(-1, 1, 3)
    p2 = np.ascontiguousarray(points_2d, np.float64).reshape(-1, 1, 2)
    Kd = np.asarray(K, np.float64)
    ok, rvec, tvec = cv2.solvePnP(p3, p2, Kd, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok or not np.all(np.isfinite(tvec)):
        return None
    ok, rvec, tvec = cv2.solvePnP(p3, p2, Kd, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        return None
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec[:, 0]
    return T


def solve_translation(points: Tensor, pixels: Tensor, K: Tensor, weights: Tensor | None = None) -> Tensor:
    """Translation ``t`` that best projects ``points + t`` onto ``pixels`` (linear least squares).

    Each point gives two equations linear in t: ``fx (X + tx) - (u - cx)(Z + tz) = 0`` and the
    same for y; this is the hand's position once its rotation and articulation are known.

    Args:
        points: (B, N, 3) camera-oriented points relative to an unknown origin (e.g. the hand's
            keypoints about the wrist). pixels: (B, N, 2). K: (B, 3, 3). weights: (B, N) or None.
    Returns:
        (B, 3) translations.
    """
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
    du, dv = pixels[..., 0] - cx, pixels[..., 1] - cy  # (B, N)
    zero = torch.zeros_like(du)
    rows_u = torch.stack([fx.expand_as(du), zero, -du], -1)  # (B, N, 3)
    rows_v = torch.stack([zero, fy.expand_as(dv), -dv], -1)
    rhs_u = du * points[..., 2] - fx * points[..., 0]
    rhs_v = dv * points[..., 2] - fy * points[..., 1]
    A = torch.cat([rows_u, rows_v], 1)  # (B, 2N, 3)
    b = torch.cat([rhs_u, rhs_v], 1)  # (B, 2N)
    if weights is not None:
        w = torch.cat([weights, weights], 1).sqrt()
        A, b = A * w[..., None], b * w
    # Normal equations: 3x3 per batch element, well conditioned for points in front of the camera.
    return torch.linalg.solve(A.transpose(1, 2) @ A, (A.transpose(1, 2) @ b[..., None]))[..., 0]


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """(H, W) bool -> (4,) float32 continuous box of its pixels, or None when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5], np.float32)


def square_crop(boxes_a: Tensor, boxes_b: Tensor, margin: float = 1.25) -> Tensor:
    """The square around the union of two boxes, its side ``margin`` x the longer side.

    Args:
        boxes_a, boxes_b: (B, 4) pixels.
    Returns:
        (B, 3) crops ``(side, x0, y0)``: the square's side and top-left corner (pixels).
    """
    lo = torch.minimum(boxes_a[:, :2], boxes_b[:, :2])
    hi = torch.maximum(boxes_a[:, 2:], boxes_b[:, 2:])
    side = (hi - lo).max(1).values * margin
    centre = 0.5 * (lo + hi)
    return torch.cat([side[:, None], centre - 0.5 * side[:, None]], 1)


def to_crop(points: Tensor, crop: Tensor, size: int) -> Tensor:
    """(B, N, 2) frame pixels -> pixels of the ``size`` x ``size`` crop (crops (B, 3))."""
    s = (size / crop[:, 0])[:, None, None]
    return (points - crop[:, None, 1:]) * s - 0.5


def from_crop(points: Tensor, crop: Tensor, size: int) -> Tensor:
    """Inverse of ``to_crop``."""
    s = (size / crop[:, 0])[:, None, None]
    return (points + 0.5) / s + crop[:, None, 1:]


def crop_intrinsics(K: Tensor, crop: Tensor, size: int) -> Tensor:
    """(B, 3, 3) intrinsics of the frame -> those of the crops (B, 3)."""
    s = size / crop[:, 0]
    Kc = K.clone()
    Kc[:, 0, :] = K[:, 0, :] * s[:, None]
    Kc[:, 1, :] = K[:, 1, :] * s[:, None]
    Kc[:, 0, 2] = (K[:, 0, 2] - crop[:, 1]) * s - 0.5
    Kc[:, 1, 2] = (K[:, 1, 2] - crop[:, 2]) * s - 0.5
    return Kc


def crop_image(image: np.ndarray, crop: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 frame -> (size, size, 3) crop (``crop`` = (side, x0, y0)); outside is black."""
    s = size / float(crop[0])
    M = np.array([[s, 0.0, -crop[1] * s - 0.5], [0.0, s, -crop[2] * s - 0.5]])
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)
