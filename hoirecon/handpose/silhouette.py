"""Each frame's hand fitted to its own hand mask: the landmarks' fit, refined by the silhouette.

The landmark fit (``hoirecon.handpose.ik``) explains MediaPipe's 21 points, which on a grasp are
partly guesses (fingers behind the object, a thumb in front of it seen end-on). The hand mask is
the frame's own evidence of where the hand is. :func:`fit_hand_to_masks` moves each frame's
hand (a rotation about its centre, a translation and the finger articulation) to raise the soft
IoU of its silhouette with the hand mask, counting object pixels as unknown (fingers behind the
object are rendered but not in the hand mask), while its keypoints stay near the landmarks and
its fingers near their first pose. A frame keeps the refined hand only where the hard IoU rose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hoirecon.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from hoirecon.hand.model import HandModel
from hoirecon.render.camera import pixel_grid, project_points, strided_grid
from hoirecon.render.mesh import MeshRenderConfig, render_mesh_pixels
from hoirecon.render.raster import strided_silhouettes


@dataclass(frozen=True)
class SilhouetteFitConfig:
    """Settings of :func:`fit_hand_to_masks`.

    steps: Adam steps (all frames of a chunk at once; 0 = no refinement).
    hand_px: masks and silhouettes are compared on every k-th pixel, k chosen per chunk so that the
        hand masks' boxes span about this many compared pixels along their longer side (a coarser
        grid misjudges a small hand; a finer one costs more and adds nothing), at most ``max_stride``.
    lr_rot (rad), lr_trans (m), lr_artic (rad): Adam step sizes.
    keypoint_weight: weight of the mean squared distance between the model's projected keypoints
        and the landmarks, in units of the landmarks' box diagonal.
    artic_weight: weight of the mean squared change of the articulation (rad^2).
    box_margin: pixels rendered: the box around the hand mask and the first silhouette, grown
        by this fraction of its size on each side.
    render: the soft rasterizer's settings (in pixels of the strided grid).
    chunk: frames optimised together (bounds memory on long clips).
    """

    steps: int = 20
    hand_px: int = 64
    max_stride: int = 8
    lr_rot: float = 0.02
    lr_trans: float = 2e-3
    lr_artic: float = 0.02
    keypoint_weight: float = 10.0
    artic_weight: float = 1.0
    box_margin: float = 0.15
    # A narrower soft edge than the fit's renders fewer (pixel, face) pairs: 1.4x faster here.
    render: MeshRenderConfig = field(default_factory=lambda: MeshRenderConfig(sigma=0.3, prob_eps=1e-3))
    chunk: int = 16


@dataclass
class SilhouetteFit:
    """Per-frame result (T frames).

    articulation (T, 45), wrist_rot (T, 3) axis-angle hand -> camera, transl (T, 3) metres: the
    refined hand where ``kept``, the input elsewhere; iou_before, iou_after: (T,) visible IoU of
    the input and of the refined hand (NaN for frames not refined); kept: (T,) bool.
    """

    articulation: Tensor
    wrist_rot: Tensor
    transl: Tensor
    iou_before: np.ndarray
    iou_after: np.ndarray
    kept: np.ndarray


def soft_visible_iou(silhouette: Tensor, hand_mask: Tensor, known: Tensor, eps: float = 1.0) -> Tensor:
    """Soft IoU of silhouettes and hand masks over the known pixels.

    Args:
        silhouette: (B, P) soft coverage in [0, 1]; hand_mask, known: (B, P) float 0/1 (known:
            not object).
    Returns:
        (B,) soft IoU.
    """
    inter = (silhouette * hand_mask * known).sum(-1)
    union = ((silhouette + hand_mask - silhouette * hand_mask) * known).sum(-1)
    return inter / (union + eps)


def visible_hand_iou(silhouette: np.ndarray, hand_mask: np.ndarray, object_mask: np.ndarray) -> float:
    """IoU of the rendered hand and the hand mask, ignoring object pixels.

    Fingers behind the object are rendered but not in the hand mask, so object pixels
    count as unknown: ``|R & M| / |(R | M) & ~O|``.
    """
    known = ~object_mask
    union = ((silhouette | hand_mask) & known).sum()
    return float((silhouette & hand_mask & known).sum() / union) if union else 0.0


def visible_ious(verts_cam: Tensor, faces: Tensor, K: Tensor, hand_masks: np.ndarray, obj_masks: np.ndarray,
                 stride: int) -> np.ndarray:
    """(B,) ``visible_hand_iou`` of posed hands (B, V, 3) against (B, H, W) hand and object masks,
    on every ``stride``-th pixel."""
    H, W = hand_masks.shape[1:]
    return _strided_visible_ious(strided_silhouettes(verts_cam, faces, K, H, W, stride).numpy(), hand_masks,
                                 obj_masks, stride)


def _strided_visible_ious(seen: np.ndarray, hand_masks: np.ndarray, obj_masks: np.ndarray, stride: int) -> np.ndarray:
    """(B,) ``visible_hand_iou`` of silhouettes (B, h, w) on every ``stride``-th pixel of (B, H, W) masks."""
    h, o = hand_masks[:, ::stride, ::stride], obj_masks[:, ::stride, ::stride]
    return np.array([visible_hand_iou(seen[b], h[b], o[b]) for b in range(len(seen))])


def fit_hand_to_masks(hand: HandModel, articulation: Tensor, wrist_rot: Tensor, transl: Tensor, shape: Tensor,
                      side: str, K: Tensor, hand_masks: np.ndarray, obj_masks: np.ndarray, keypoints_2d: Tensor,
                      frames: np.ndarray, cfg: SilhouetteFitConfig = SilhouetteFitConfig()) -> SilhouetteFit:
    """Refine the hand of ``frames`` to its masks (see the module docstring).

    Args:
        hand: the hand model. articulation (T, 45), wrist_rot (T, 3), transl (T, 3): each frame's
            hand -> camera pose and fingers. shape (10,).
        K: (3, 3) intrinsics of the (H, W) frames. hand_masks, obj_masks: (T, H, W) bool.
        keypoints_2d: (T, 21, 2) landmarks (pixels). frames: (T,) bool, the frames to refine.
    Returns:
        SilhouetteFit (tensors on the inputs' device).
    """
    T = articulation.shape[0]
    out_art, out_rot, out_tr = articulation.clone(), wrist_rot.clone(), transl.clone()
    before, after = np.full(T, np.nan), np.full(T, np.nan)
    kept = np.zeros(T, bool)
    idx = np.flatnonzero(frames)
    if cfg.steps <= 0 or not len(idx):
        return SilhouetteFit(out_art, out_rot, out_tr, before, after, kept)
    known = ~np.asarray(obj_masks, bool)
    for start in range(0, len(idx), cfg.chunk):
        sel = idx[start:start + cfg.chunk]
        art, rot, tr, b, a = _fit_chunk(hand, articulation[sel], wrist_rot[sel], transl[sel], shape, side, K,
                                        np.asarray(hand_masks[sel], bool), known[sel], keypoints_2d[sel], cfg)
        better = a > b
        before[sel], after[sel], kept[sel] = b, a, better
        keep = torch.as_tensor(better, device=articulation.device)
        sel_t = torch.as_tensor(sel, device=articulation.device)
        out_art[sel_t] = torch.where(keep[:, None], art, articulation[sel_t])
        out_rot[sel_t] = torch.where(keep[:, None], rot, wrist_rot[sel_t])
        out_tr[sel_t] = torch.where(keep[:, None], tr, transl[sel_t])
    return SilhouetteFit(out_art, out_rot, out_tr, before, after, kept)


def _stride(hand_masks: np.ndarray, cfg: SilhouetteFitConfig) -> int:
    """Pixel stride for (B, H, W) hand masks: their boxes' median longer side / ``cfg.hand_px``."""
    sides = []
    for mask in hand_masks:
        ys, xs = np.nonzero(mask)
        if len(ys):
            sides.append(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    longer = float(np.median(sides)) if sides else 0.0
    return int(np.clip(longer // cfg.hand_px, 1, cfg.max_stride))


def _box_pixels(regions: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the pixels in each region's box grown by ``margin`` of its size, padded
    to one length: (B, P) indices and (B, P) bool, False on the padding."""
    B, h, w = regions.shape
    rows = []
    for region in regions:
        ys, xs = np.nonzero(region)
        if not len(ys):
            rows.append(np.zeros(0, np.int64))
            continue
        gy, gx = margin * (ys.max() - ys.min() + 1), margin * (xs.max() - xs.min() + 1)
        y0, y1 = int(max(0, ys.min() - gy)), int(min(h - 1, ys.max() + gy))
        x0, x1 = int(max(0, xs.min() - gx)), int(min(w - 1, xs.max() + gx))
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        rows.append((yy * w + xx).reshape(-1))
    P = max(1, max(len(r) for r in rows))
    index, real = np.zeros((B, P), np.int64), np.zeros((B, P), bool)
    for b, r in enumerate(rows):
        index[b, :len(r)], real[b, :len(r)] = r, True
    return index, real


def _fit_chunk(hand: HandModel, art0: Tensor, rot0: Tensor, tr0: Tensor, shape: Tensor, side: str, K: Tensor,
               hand_mask: np.ndarray, known: np.ndarray, kp2d: Tensor, cfg: SilhouetteFitConfig):
    """One chunk of frames: (articulation, wrist_rot, transl, IoU before, IoU after)."""
    B, (H, W) = art0.shape[0], hand_mask.shape[1:]
    dev = art0.device
    s = _stride(hand_mask, cfg)
    K_grid, h, w = strided_grid(K.float(), H, W, s)
    R0 = axis_angle_to_matrix(rot0)
    beta = shape.reshape(1, -1)
    with torch.no_grad():
        rest = hand(art0, torch.zeros_like(rot0), beta, side=side)
        verts0 = rest.verts @ R0.transpose(1, 2) + tr0[:, None]
        centre = verts0.mean(1)  # (B, 3) rotations turn about it
        seen0 = strided_silhouettes(verts0, rest.faces, K, H, W, s).numpy()
    # Only the pixels around the hand mask and the first silhouette are rendered: the hand
    # moves a fraction of its size, and a full frame costs several times more.
    mask_grid = hand_mask[:, ::s, ::s]
    index, real = _box_pixels(mask_grid | seen0, cfg.box_margin)
    index_t = torch.as_tensor(index, device=dev)
    grid = pixel_grid(h, w, device=dev)
    pix = grid[index_t.reshape(-1)].reshape(B, -1, 2)
    def flat(a):
        return torch.as_tensor(np.take_along_axis(a.reshape(B, -1), index, 1), dtype=torch.float32, device=dev)

    target = flat(mask_grid)
    known_t = flat(known[:, ::s, ::s]) * torch.as_tensor(real, dtype=torch.float32, device=dev)
    diag2 = (kp2d.amax(1) - kp2d.amin(1)).pow(2).sum(-1).clamp_min(1.0)  # (B,)

    d_rot = torch.zeros(B, 3, device=dev, requires_grad=True)
    d_tr = torch.zeros(B, 2, device=dev, requires_grad=True)  # across the view: the depth stays the landmarks'
    d_art = torch.zeros_like(art0, requires_grad=True)
    optim = torch.optim.Adam([{"params": [d_rot], "lr": cfg.lr_rot}, {"params": [d_tr], "lr": cfg.lr_trans},
                              {"params": [d_art], "lr": cfg.lr_artic}])

    def posed(d_rot, d_tr, d_art):
        out = hand(art0 + d_art, torch.zeros_like(rot0), beta, side=side)
        R = axis_angle_to_matrix(d_rot) @ R0
        t = centre + F.pad(d_tr, (0, 1)) + ((tr0 - centre)[:, None] @ axis_angle_to_matrix(d_rot).transpose(1, 2))[:, 0]
        return R, t, out.verts @ R.transpose(1, 2) + t[:, None], out.keypoints @ R.transpose(1, 2) + t[:, None]

    faces = rest.faces
    for _ in range(cfg.steps):
        optim.zero_grad()
        _, _, verts, kps = posed(d_rot, d_tr, d_art)
        sil = render_mesh_pixels(verts, faces, K_grid.expand(B, 3, 3), pix, cfg.render).mask
        iou = soft_visible_iou(sil, target, known_t)
        kp_err = (project_points(kps, K.float().expand(B, 3, 3)) - kp2d).pow(2).sum(-1).mean(-1) / diag2
        loss = (1.0 - iou) + cfg.keypoint_weight * kp_err + cfg.artic_weight * d_art.pow(2).mean(-1)
        loss.sum().backward()
        optim.step()
    with torch.no_grad():
        R, t, v1, _ = posed(d_rot, d_tr, d_art)
        # The input hand's silhouettes were rendered above (``seen0``, the same stride).
        b = _strided_visible_ious(seen0, hand_mask, ~known, s)
        a = visible_ious(v1, faces, K, hand_mask, ~known, s)
    return (art0 + d_art).detach(), matrix_to_axis_angle(R), t.detach(), b, a
