"""Classical offline segmentation and mask tracking (no learned weights).

- ``grabcut_from_box``: a first-frame mask from a box (GrabCut, opencv-contrib).
- ``segment_hand_object``: first-frame hand and object masks from their two boxes together
  (GrabCut on the boxes' neighbourhood, so the colour models are local; the object may be
  split by the fingers; pixels both claim go to the closer colour model).
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
    band_px: int = 6  # largest half-width of the "probable" band around the warped boundary
    # The band is at most this fraction of the mask's mean width (2 area / perimeter): a 6 px
    # band erodes a 5 px knife blade to nothing, leaving GrabCut no sure foreground to keep.
    band_fraction: float = 0.25
    # GrabCut may not drop more than (1 - this) of a warped mask in one frame: in a thin or
    # small object the colour model is weak and one frame's cut can erase it for good.
    min_keep_fraction: float = 0.5
    min_area_px: int = 16  # below this, a tracked mask is considered lost
    # each mask's foreground colour model is learned once on the first frame and kept (the
    # background model is re-learned every frame: the background changes as the camera moves)
    first_frame_colour: bool = True
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


def _components_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that contain a pixel of ``anchor``; the largest if none does."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.astype(bool)
    hit = np.unique(labels[anchor & mask])
    hit = hit[hit > 0]
    if len(hit) == 0:
        return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.isin(labels, hit)


def _significant_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Components with at least ``min_fraction`` of the largest one's area (an object seen on
    both sides of the fingers is two components; specks of background are dropped)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return np.isin(labels, 1 + np.nonzero(areas >= min_fraction * areas.max())[0])


def _box_fit(mask: np.ndarray, box: Sequence[int]) -> float:
    """IoU between the bounding box of ``mask`` and ``box`` (x0, y0, x1, y1, exclusive ends)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0.0
    mx0, my0, mx1, my1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    x0, y0, x1, y1 = box
    iw, ih = max(0, min(mx1, x1) - max(mx0, x0)), max(0, min(my1, y1) - max(my0, y0))
    inter = iw * ih
    return inter / float((mx1 - mx0) * (my1 - my0) + (x1 - x0) * (y1 - y0) - inter)


def segment_hand_object(image: np.ndarray, hand_box: Sequence[float], object_box: Sequence[float],
                        iters: int = 5, context: float = 0.15, min_component: float = 0.15,
                        min_box_fit: float = 0.5) -> np.ndarray:
    """First-frame hand and held-object masks from their boxes (x0, y0, x1, y1); (2, H, W) bool.

    Each box is segmented by GrabCut on a crop around both boxes (padded by ``context`` of
    their extent), not on the whole frame: the background model is then dominated by what
    surrounds the pair -- the hand's skin outside the object box, the object's parts outside
    the hand box -- instead of far-away scenery, which is what separates a held object from
    the fingers over it. The box alone seeds the cut; only if the result does not span the
    box (IoU of its bounding box with the box < ``min_box_fit``: a small object mostly hidden
    in a fist) is the box centre added as sure foreground -- not by default, because on a
    thin or long object the centre is often a finger. The object keeps
    every component of at least ``min_component`` of its largest (fingers split it); a pixel
    both claim goes to the hand or the object by the likelihood of its colour under each one's
    colour model, learned where only that one is.
    Returns [hand, object], disjoint.
    """
    h, w = image.shape[:2]
    boxes = []
    for box in (hand_box, object_box):
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        boxes.append((max(0, x0), max(0, y0), min(w, x1), min(h, y1)))
    if any(x1 - x0 < 2 or y1 - y0 < 2 for x0, y0, x1, y1 in boxes):
        return np.zeros((2, h, w), bool)
    ux0, uy0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    ux1, uy1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    px, py = int(context * (ux1 - ux0)) + 4, int(context * (uy1 - uy0)) + 4
    cx0, cy0, cx1, cy1 = max(0, ux0 - px), max(0, uy0 - py), min(w, ux1 + px), min(h, uy1 + py)
    crop = image[cy0:cy1, cx0:cx1]
    masks = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        local = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
        best, best_fit = np.zeros(crop.shape[:2], bool), -1.0
        for centre_seed in (False, True):
            if best_fit >= min_box_fit:
                break
            seed = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
            seed[local[1]:local[3], local[0]:local[2]] = cv2.GC_PR_FGD
            if centre_seed:
                cy, cx = (local[1] + local[3]) // 2, (local[0] + local[2]) // 2
                ry, rx = max(1, (y1 - y0) // 8), max(1, (x1 - x0) // 8)
                seed[cy - ry:cy + ry, cx - rx:cx + rx] = cv2.GC_FGD
            m = _run_grabcut(crop, seed, iters, keep=None)
            m = _significant_components(m, min_component) if i == 1 else _largest_component(m)
            fit = _box_fit(m, local)
            if fit > best_fit:
                best, best_fit = m, fit
        full = np.zeros((h, w), bool)
        full[cy0:cy1, cx0:cx1] = best
        masks.append(full)
    hand, obj = masks
    contested = hand & obj
    if contested.any():
        # a pixel both cuts claim goes to the one whose colours it is closer to, each model
        # learned where only that one is (outside the other's box and mask) when it can be
        in_hand_box, in_obj_box = np.zeros((2, h, w), bool)
        in_hand_box[boxes[0][1]:boxes[0][3], boxes[0][0]:boxes[0][2]] = True
        in_obj_box[boxes[1][1]:boxes[1][3], boxes[1][0]:boxes[1][2]] = True
        scores = []
        for own, other_box in ((hand & ~obj, in_obj_box), (obj & ~hand, in_hand_box)):
            pure = own & ~other_box
            samples = pure if pure.sum() >= 50 else (own if own.sum() >= 50 else own | contested)
            model = learn_colour_model(image, samples)
            scores.append(np.full(int(contested.sum()), -np.inf) if model is None
                          else gmm_log_likelihood(model, image[contested]))
        to_hand = np.zeros((h, w), bool)
        to_hand[contested] = scores[0] > scores[1]
        obj = obj & ~to_hand
    return np.stack([hand & ~obj, obj])


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


def learn_colour_model(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """GrabCut's foreground colour model (5-component GMM, OpenCV's (1, 65) layout) of the
    pixels of ``mask`` (H, W) bool in ``image`` (H, W, 3) uint8 RGB; None if too few pixels."""
    if mask.sum() < 8 or (~mask).sum() < 8:
        return None
    seed = np.where(mask, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:  # zero iterations: only the k-means initialisation of both models
        cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), seed, None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return fgd


def gmm_log_likelihood(model: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Log-likelihood of RGB ``pixels`` (N, 3) uint8 under a GrabCut colour model (1, 65); (N,)."""
    weights, means, covs = model[0, :5], model[0, 5:20].reshape(5, 3), model[0, 20:].reshape(5, 3, 3)
    x = pixels[:, ::-1].astype(np.float64)  # GrabCut models are in BGR
    out = np.full((len(x), 5), -np.inf)
    for k in range(5):
        if weights[k] <= 0:
            continue
        cov = covs[k] + 1e-3 * np.eye(3)
        d = x - means[k]
        maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        out[:, k] = np.log(weights[k]) - 0.5 * (maha + np.log(np.linalg.det(cov)) + 3 * np.log(2 * np.pi))
    top = out.max(1, keepdims=True)
    return (top + np.log(np.exp(out - top).sum(1, keepdims=True)))[:, 0]


def _run_grabcut(image: np.ndarray, mask: np.ndarray, iters: int, keep: str | None = "largest",
                 fg_model: np.ndarray | None = None) -> np.ndarray:
    """GrabCut from a seed mask; (H, W) bool foreground, its largest component unless ``keep`` is None.

    fg_model: a fixed foreground colour model (``learn_colour_model``) used instead of one
        learned from the seeds; the background model is learned from the seeds, both frozen.
    OpenCV's RNG (k-means initialisation of the colour models) is reseeded first, so a result
    does not depend on what ran before in the process.
    """
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    fg_like = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    bg_like = ~fg_like
    if fg_like.sum() < 2 or bg_like.sum() < 2:
        return fg_like
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.setRNGSeed(0)
    try:
        if fg_model is None:
            cv2.grabCut(bgr, mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
        else:
            cv2.grabCut(bgr, mask, None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
            fgd[:] = fg_model
            # frozen models: one cut is the fixed point, more iterations change nothing
            cv2.grabCut(bgr, mask, None, bgd, fgd, 1, cv2.GC_EVAL_FREEZE_MODEL)
    except cv2.error:  # degenerate colour models: keep the seed
        return fg_like
    out = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return _largest_component(out) if keep == "largest" else out


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

    def band_for(self, mask: np.ndarray) -> int:
        """Band half-width (px) for ``mask`` (H, W) bool: ``band_px``, narrower for thin masks."""
        m8 = mask.astype(np.uint8)
        contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        perimeter = sum(cv2.arcLength(c, True) for c in contours)
        if perimeter <= 0:
            return 1
        mean_width = 2.0 * float(m8.sum()) / perimeter
        return int(np.clip(round(self.cfg.band_fraction * mean_width), 1, self.cfg.band_px))

    def core_of(self, mask: np.ndarray, band: int) -> np.ndarray:
        """The confident interior of a warped mask: eroded by ``band``; (H, W) bool."""
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2)
        return cv2.erode(mask.astype(np.uint8), k).astype(bool)

    def refine(self, image: np.ndarray, warped: np.ndarray, forbid: np.ndarray | None = None,
               anchor: tuple[np.ndarray, np.ndarray] | None = None, band: int | None = None,
               fg_model: np.ndarray | None = None) -> np.ndarray:
        """GrabCut seeded by a warped mask: eroded core sure-FG, band probable, outside sure-BG.

        anchor: optional (sure (H,W) bool, probable (H,W) bool) extra seeds, e.g. from hand
        landmarks, that let the mask grow where the warp alone would not reach.
        band: band half-width in px (default ``band_for(warped)``).
        fg_model: fixed foreground colour model (see ``track``), else learned from the seeds.
        """
        if warped.sum() < self.cfg.min_area_px and anchor is None:
            return warped
        band = self.band_for(warped) if band is None else band
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2)
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
        # GrabCut on the bounding crop only: ~10x faster than the whole frame; the pad is at
        # least the largest band so that the background model sees the same context for all
        ys, xs = np.nonzero(outer)
        pad = 4 * self.cfg.band_px
        y0, y1 = max(0, ys.min() - pad), min(warped.shape[0], ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(warped.shape[1], xs.max() + pad + 1)
        out = np.zeros_like(warped)
        out[y0:y1, x0:x1] = _run_grabcut(image[y0:y1, x0:x1], seed[y0:y1, x0:x1].copy(), self.cfg.grabcut_iters,
                                         keep=None, fg_model=fg_model)
        # every piece holding sure foreground stays (an object split by the fingers is several
        # pieces); only islands GrabCut grew from nothing are dropped
        out = _components_touching(out, seed == cv2.GC_FGD)
        allowed = warped & ~forbid if forbid is not None else warped
        if (out & allowed).sum() < self.cfg.min_keep_fraction * allowed.sum():
            # the cut threw away most of what the flow carried: keep the flow's mask
            out = out | allowed
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
        # colour models of the first frame, where the masks are the most trustworthy: a model
        # re-learned every frame from the warped mask absorbs whatever the mask leaked into
        # (and then leaks further), so a mask slowly grows into look-alike background
        fg_models = [learn_colour_model(frames[0], first_masks[k]) if self.cfg.first_frame_colour else None
                     for k in range(K)]
        for t in range(1, T):
            flow = self.flow(frames[t - 1], frames[t])
            taken = np.zeros(first_masks.shape[1:], bool)
            warped_all = [self.warp(out[t - 1, k], flow) for k in range(K)]
            bands = [self.band_for(w) for w in warped_all]
            cores = [self.core_of(w, b) for w, b in zip(warped_all, bands)]
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
                m = self.refine(frames[t], warped, forbid=taken | others, anchor=anchor, band=bands[k],
                                fg_model=fg_models[k]) & ~taken
                out[t, k] = m
                taken |= m
            if on_frame:
                on_frame()
        return out
