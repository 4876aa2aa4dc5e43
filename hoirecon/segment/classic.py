"""Classical offline segmentation and mask tracking (no learned weights).

- ``segment_hand_object``: first-frame hand and object masks from their two boxes together
  (GrabCut on the boxes' neighbourhood, so the colour models are local; the object may be
  split by the fingers; pixels both claim go to the closer colour model).
- ``FlowTracker``: propagate masks frame to frame by dense optical flow (Farneback, or DIS),
  refined by GrabCut seeded with the warped mask (sure foreground inside an eroded core,
  probable in a band, sure background far away), which keeps the boundary on image edges
  instead of drifting.
  A held object also keeps a *shape memory* (``FlowTracker.amodal``): its full shape, moved
  each frame by the similarity that best explains the flow over it (where it is hidden, that
  is the flow of the hand in front of it), so that it can grow back when it reappears.
- ``estimate_similarity`` / ``move_mask``: that motion and how a mask follows it.
- ``mask_box_xyxy``: a mask's bounding box with exclusive ends (``hoirecon.geometry.regions``
  has the inclusive box, box IoU and mask IoU).

Images are ``(H, W, 3) uint8`` RGB; masks ``(H, W) bool``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from hoirecon.geometry.regions import box_iou, mask_box


FLOW_METHODS = ("farneback", "dis")


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
    # one of FLOW_METHODS: "farneback" (polynomial expansion, 4 levels, 9 px window) or "dis"
    # (``flow_preset``). Farneback keeps more of a thin object's own motion (synthetic knife,
    # object IoU 0.525 -> 0.598; toy_plane forward-backward object IoU 0.83 -> 0.88) for
    # ~15 % more masks-stage CPU; equal on the other synthetic clips.
    flow_method: str = "farneback"
    flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
    # Indices of the masks that keep a shape memory (held objects; the masks stage tracks
    # [hand, object]). A part of the remembered shape that is neither seen nor behind another
    # mask is forgotten after ``memory_frames`` frames: it was a tracking error, or the object
    # turned and really got smaller.
    shape_memory: tuple[int, ...] = (1,)
    memory_frames: int = 4
    # When a remembered mask keeps less than this fraction of the part of its predicted shape
    # that should be in view (not behind another mask), the object is segmented afresh
    # (``segment_hand_object`` on the predicted box and the other masks' box): flow and a thin
    # band cannot grow back a thin object once its colours have drifted from the first frame's.
    collapse_fraction: float = 0.5


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


def _union_except(masks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Union of the (H, W) bool ``masks`` other than ``masks[k]``; (H, W) bool."""
    out = np.zeros_like(masks[k], dtype=bool)
    for j, m in enumerate(masks):
        if j != k:
            out |= m
    return out


def _supported_islands(image: np.ndarray, islands: np.ndarray, support: np.ndarray, model: np.ndarray,
                       rivals: Sequence[np.ndarray], min_area: int) -> np.ndarray:
    """Components of ``islands`` (H, W) bool of at least ``min_area`` pixels that touch
    ``support`` (H, W) bool and whose mean colour log-likelihood under ``model`` beats that
    under every model in ``rivals``."""
    _, labels = cv2.connectedComponents(islands.astype(np.uint8), connectivity=8)
    keep = np.zeros(islands.shape, bool)
    for i in np.unique(labels[support & islands]):
        if i == 0:
            continue
        piece = labels == i
        if piece.sum() < min_area:
            continue
        pixels = image[piece]
        own = gmm_log_likelihood(model, pixels).mean()
        if all(own > gmm_log_likelihood(r, pixels).mean() for r in rivals):
            keep |= piece
    return keep


def mask_box_xyxy(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), exclusive ends, of (H, W) bool ``mask``; None if empty."""
    box = mask_box(mask)
    if box is None:
        return None
    return int(box[0]), int(box[1]), int(box[2]) + 1, int(box[3]) + 1


def _box_fit(mask: np.ndarray, box: Sequence[int]) -> float:
    """IoU between the bounding box of ``mask`` and ``box`` (x0, y0, x1, y1, exclusive ends)."""
    own = mask_box_xyxy(mask)
    return 0.0 if own is None else box_iou(own, box)


def _box_seed(shape_hw: tuple[int, int], box: Sequence[int], centre: bool) -> np.ndarray:
    """GrabCut seed (H, W) uint8: background outside the integer ``box`` (x0, y0, x1, y1, clipped),
    probable foreground inside, and with ``centre`` its central quarter (per side) sure foreground."""
    x0, y0, x1, y1 = box
    seed = np.full(shape_hw, cv2.GC_BGD, np.uint8)
    seed[y0:y1, x0:x1] = cv2.GC_PR_FGD
    if centre:
        cy, cx, ry, rx = (y0 + y1) // 2, (x0 + x1) // 2, max(1, (y1 - y0) // 8), max(1, (x1 - x0) // 8)
        seed[cy - ry:cy + ry, cx - rx:cx + rx] = cv2.GC_FGD
    return seed


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
            seed = _box_seed(crop.shape[:2], local, centre_seed)
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


def grabcut(bgr: np.ndarray, mask: np.ndarray, bgd: np.ndarray, fgd: np.ndarray, iters: int, mode: int) -> None:
    """``cv2.grabCut`` (in place on ``mask``, ``bgd``, ``fgd``) with OpenCV's random generator
    seeded first. Its colour models start from k-means on that global generator, so without the
    seed a cut depended on every cut run before it in the process: the same frame gave
    hand_fan reversed an automatic object box 1 px off and forward-backward IoUs 0.93 / 0.89
    instead of 0.96 / 0.93 (session 23)."""
    cv2.setRNGSeed(0)
    cv2.grabCut(bgr, mask, None, bgd, fgd, iters, mode)


def learn_colour_model(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """GrabCut's foreground colour model (5-component GMM, OpenCV's (1, 65) layout) of the
    pixels of ``mask`` (H, W) bool in ``image`` (H, W, 3) uint8 RGB; None if too few pixels."""
    if mask.sum() < 8 or (~mask).sum() < 8:
        return None
    seed = np.where(mask, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:  # zero iterations: only the k-means initialisation of both models
        grabcut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), seed, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
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
    try:
        if fg_model is None:
            grabcut(bgr, mask, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
        else:
            grabcut(bgr, mask, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
            fgd[:] = fg_model
            # frozen models: one cut is the fixed point, more iterations change nothing
            grabcut(bgr, mask, bgd, fgd, 1, cv2.GC_EVAL_FREEZE_MODEL)
    except cv2.error:  # degenerate colour models: keep the seed
        return fg_like
    out = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return _largest_component(out) if keep == "largest" else out


def estimate_similarity(flow_dst_to_src: np.ndarray, region: np.ndarray, max_points: int = 2000,
                        threshold_px: float = 1.0) -> np.ndarray | None:
    """Similarity (rotation, uniform scale, translation) that moves ``region``'s content from the
    source frame to the destination frame; (2, 3) float64 ``[x_dst, y_dst] = A @ [x_src, y_src, 1]``.

    flow_dst_to_src: (H, W, 2) flow of the destination frame (``FlowTracker.flow``).
    region: (H, W) bool pixels of the destination frame whose flow is used (RANSAC: the
        largest group moving together wins, e.g. a hand over a few background pixels).
    Returns None when the region has fewer than 8 pixels or no fit is found.
    """
    ys, xs = np.nonzero(region)
    if len(ys) < 8:
        return None
    if len(ys) > max_points:  # evenly spread subset: the fit does not need every pixel
        keep = np.linspace(0, len(ys) - 1, max_points).astype(int)
        ys, xs = ys[keep], xs[keep]
    dst = np.stack([xs, ys], 1).astype(np.float32)
    src = dst + flow_dst_to_src[ys, xs].astype(np.float32)
    A, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold_px)
    return A


def move_mask(mask: np.ndarray, src_to_dst: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) bool or uint8 moved by a (2, 3) affine map (nearest neighbour); same dtype."""
    h, w = mask.shape
    moved = cv2.warpAffine(mask.astype(np.uint8), src_to_dst, (w, h), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return moved.astype(mask.dtype)


class FlowTracker:
    """Frame-to-frame mask propagation with dense optical flow + GrabCut refinement.

    After ``track``, ``amodal`` (K, H, W) bool holds the last frame's remembered full shapes
    (the visible masks plus the remembered parts of ``cfg.shape_memory`` masks that are hidden);
    pass it as ``first_amodal`` to a track that starts from that frame (the backward pass).
    """

    def __init__(self, cfg: TrackerConfig = TrackerConfig()):
        if cfg.flow_method not in FLOW_METHODS:
            raise ValueError(f"unknown flow_method {cfg.flow_method!r}; choose one of {FLOW_METHODS}")
        self.cfg = cfg
        self.dis = cv2.DISOpticalFlow_create(cfg.flow_preset) if cfg.flow_method == "dis" else None
        self.amodal: np.ndarray | None = None

    def flow(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Dense flow (H, W, 2) mapping pixels of ``dst`` to where they were in ``src``."""
        g_src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
        g_dst = cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY)
        if self.cfg.flow_method == "farneback":
            return cv2.calcOpticalFlowFarneback(g_dst, g_src, None, 0.5, 4, 9, 5, 5, 1.1, 0)
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
               fg_model: np.ndarray | None = None, support: np.ndarray | None = None,
               rival_models: Sequence[np.ndarray] = ()) -> np.ndarray:
        """GrabCut seeded by a warped mask: eroded core sure-FG, band probable, outside sure-BG.

        anchor: optional (sure (H,W) bool, probable (H,W) bool) extra seeds, e.g. from hand
        landmarks, that let the mask grow where the warp alone would not reach.
        support: optional (H, W) bool where an outside cue (the hand landmarks' band) places
        the mask: pieces of the cut there are kept even if they hold no sure foreground
        (fingers coming into view apart from the part the flow carried), if their colours fit
        ``fg_model`` better than each of ``rival_models`` (the other masks' colour models: an
        object coming out of the fist is in the hand's band too).
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
        if not (seed != cv2.GC_BGD).any():
            return np.zeros_like(warped)
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
        kept = _components_touching(out, seed == cv2.GC_FGD)
        if support is not None and fg_model is not None:
            kept |= _supported_islands(image, out & ~kept, support, fg_model, rival_models,
                                       self.cfg.min_area_px)
        out = kept
        allowed = warped & ~forbid if forbid is not None else warped
        if (out & allowed).sum() < self.cfg.min_keep_fraction * allowed.sum():
            # the cut threw away most of what the flow carried: keep the flow's mask
            out = out | allowed
        return out

    def predict_shape(self, amodal: np.ndarray, unseen: np.ndarray, flow_dst_to_src: np.ndarray,
                      holder: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Remembered shape moved to the next frame; (predicted (H, W) bool, unseen age (H, W) uint8).

        The shape moves as a whole by the similarity fitted to the flow where it lands and over
        ``holder`` (H, W) bool (the other masks warped into this frame, i.e. the hand): a held
        object moves with the hand, and the flow over a shrinking visible part alone is biased
        by the fingers closing over it. Dense warping would also erode a thin shape a little
        every frame. Without a fit the shape follows the dense flow.
        """
        landing = self.warp(amodal, flow_dst_to_src)
        A = estimate_similarity(flow_dst_to_src, landing if holder is None else landing | holder)
        if A is None:
            return landing, np.where(landing, self.warp(unseen > 0, flow_dst_to_src), 0).astype(np.uint8)
        return move_mask(amodal, A), move_mask(unseen, A)

    def regrow(self, image: np.ndarray, shape: np.ndarray, holder: np.ndarray, forbid: np.ndarray,
               fg_model: np.ndarray | None, holder_model: np.ndarray | None) -> np.ndarray | None:
        """The object segmented afresh around its predicted ``shape`` (H, W) bool, next to the
        ``holder`` (H, W) bool (the hand); (H, W) bool, or None when nothing credible is found.

        Only pixels near the predicted shape and outside ``forbid`` count, and the result must
        look more like the object's colour model than the holder's (a hidden object's box
        holds only fingers, which the cut would otherwise hand back as the object).
        """
        min_area = self.cfg.min_area_px
        box_holder, box_shape = mask_box_xyxy(holder), mask_box_xyxy(shape)
        if box_holder is None or box_shape is None or holder.sum() < min_area or shape.sum() < min_area:
            return None
        obj = segment_hand_object(image, box_holder, box_shape)[1]
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * self.cfg.band_px + 1,) * 2)
        obj &= cv2.dilate(shape.astype(np.uint8), k).astype(bool) & ~forbid
        if obj.sum() < min_area:
            return None
        if fg_model is not None and holder_model is not None:
            pixels = image[obj]
            if gmm_log_likelihood(fg_model, pixels).mean() <= gmm_log_likelihood(holder_model, pixels).mean():
                return None
        return obj

    def track(self, frames: Sequence[np.ndarray], first_masks: np.ndarray,
              on_frame: Callable[[], None] | None = None,
              anchors: Sequence[Callable | None] | None = None,
              first_amodal: np.ndarray | None = None) -> np.ndarray:
        """Propagate K masks from frame 0 through the clip.

        Args:
            frames: T images (H, W, 3) uint8.
            first_masks: (K, H, W) bool, mutually exclusive, order = priority where they overlap.
            anchors: per mask, None or a callable ``(image, warped_mask, near) -> (sure, probable) | None``
                giving extra seeds each frame (see ``hoirecon.segment.anchor``); ``near`` is the
                union of the other masks warped into the frame.
            first_amodal: (K, H, W) bool remembered full shapes in frame 0 (another track's
                ``amodal``), else the first masks.
        Returns:
            (T, K, H, W) bool visible masks; the remembered shapes of the last frame are left in
            ``self.amodal``.

        Shape memory (masks in ``cfg.shape_memory``): each frame the remembered shape is moved
        (``predict_shape``) and offered to GrabCut as probable foreground, so that a part the
        flow lost, or a part coming out from behind the hand, grows back where its colours say
        so. The written mask is only what GrabCut keeps (the visible part); the memory is the
        visible part plus the predicted parts that are behind another mask (hidden, kept as
        long as they are hidden) or not seen for at most ``cfg.memory_frames`` frames.
        """
        T = len(frames)
        K = first_masks.shape[0]
        out = np.zeros((T, K) + first_masks.shape[1:], bool)
        out[0] = first_masks
        remember = [k for k in self.cfg.shape_memory if 0 <= k < K]
        amodal = first_masks.copy() if first_amodal is None else first_amodal | first_masks
        unseen = np.zeros(amodal.shape, np.uint8)  # frames since a remembered pixel was last accounted for
        # colour models of the first frame, where the masks are the most trustworthy: a model
        # re-learned every frame from the warped mask absorbs whatever the mask leaked into
        # (and then leaks further), so a mask slowly grows into look-alike background
        fg_models = [learn_colour_model(frames[0], first_masks[k]) if self.cfg.first_frame_colour else None
                     for k in range(K)]
        rivals = [[m for j, m in enumerate(fg_models) if j != k and m is not None] for k in range(K)]
        for t in range(1, T):
            flow = self.flow(frames[t - 1], frames[t])
            taken = np.zeros(first_masks.shape[1:], bool)
            warped_all = [self.warp(out[t - 1, k], flow) for k in range(K)]
            bands = [self.band_for(w) for w in warped_all]
            cores = [self.core_of(w, b) for w, b in zip(warped_all, bands)]
            # what each mask is next to: the other masks warped into this frame (the holder or the held)
            nears = [_union_except(warped_all, k) for k in range(K)]
            predicted = {k: self.predict_shape(amodal[k], unseen[k], flow, nears[k]) for k in remember}
            for k in range(K):
                warped = warped_all[k]
                # the confident interior of the other masks is not up for grabs (a grown hand
                # must not swallow the object it holds)
                others = _union_except(cores, k)
                anchor = (anchors[k](frames[t], warped, nears[k])
                          if anchors is not None and anchors[k] is not None else None)
                # pieces the anchor alone vouches for may not lie on the other masks
                support = None if anchor is None else anchor[1] & ~nears[k]
                if k in predicted:
                    probable = predicted[k][0]
                    anchor = (np.zeros_like(taken), probable) if anchor is None else (anchor[0], anchor[1] | probable)
                if anchor is not None:
                    anchor = (anchor[0] & ~others, anchor[1] & ~others)
                m = self.refine(frames[t], warped, forbid=taken | others, anchor=anchor, band=bands[k],
                                fg_model=fg_models[k], support=support, rival_models=rivals[k]) & ~taken
                if k in predicted:
                    holder = taken.copy()  # the other masks: decided ones of this frame, else warped
                    for j in range(k + 1, K):
                        holder |= warped_all[j]
                    in_view = predicted[k][0] & ~holder
                    if m.sum() < self.cfg.collapse_fraction * in_view.sum():
                        grown = self.regrow(frames[t], predicted[k][0], holder, taken,
                                            fg_models[k], fg_models[0] if k != 0 else None)
                        if grown is not None:
                            m = m | grown
                    if m.sum() < self.cfg.min_area_px:
                        m = np.zeros_like(m)  # a few stray pixels of a hidden object are not the object
                out[t, k] = m
                taken |= m
            for k in remember:
                shape, age = predicted[k]
                behind = _union_except(out[t], k)
                seen = int(out[t, k].sum())
                if behind.sum() >= self.cfg.min_area_px and (
                        seen == 0 or seen < self.cfg.collapse_fraction * (shape & ~behind).sum()):
                    # (almost) nothing of the object is seen while the hand is there: it is held
                    # out of sight (or the cut lost it); the whole shape is remembered as it was,
                    # whether or not the hand mask covers all of it (a 2D motion does not say
                    # exactly where a hidden object turned to)
                    amodal[k] = shape | out[t, k]
                    unseen[k] = np.where(out[t, k], 0, age).astype(np.uint8)
                    continue
                # seen: age 0; hidden behind another mask: age kept; neither: one frame older
                age = np.where(out[t, k], 0, np.where(behind, age, age.astype(np.int32) + 1))
                kept = out[t, k] | (shape & (age <= self.cfg.memory_frames))
                amodal[k] = kept
                unseen[k] = np.where(kept, age, 0).astype(np.uint8)
            for k in range(K):
                if k not in remember:
                    amodal[k] = out[t, k]
            if on_frame:
                on_frame()
        self.amodal = amodal if T > 1 else amodal.copy()
        return out
