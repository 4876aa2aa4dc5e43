"""Automatic first-frame boxes (offline): the hand from MediaPipe's models, the held object
from the region that moves with the hand.

Hand (:func:`detect_hand_box`): MediaPipe's palm detector proposes crops, but it misses firm
grasps (the palm is hidden by the object: 0 of 30 frames of the real ``toy_plane`` clip).
The landmark model, in contrast, recognises a hand whenever its crop is roughly centred on
it and rotated with the wrist down, so we also search it over crops: a coarse grid of
positions x 3 scales x 4 rotations (~150 runs of an 8 ms model on one core for 640x480).
The best few candidates (by hand presence) are refined with MediaPipe's own tracking rule
(re-crop around the palm landmarks, wrist down) and the best one is kept if its presence is
above a threshold stricter than MediaPipe's 0.5 (a grid search tries many crops, so a
lenient threshold would accept background; see :class:`DetectConfig`).

Object (:func:`detect_held_object_box`): GrabCut of what stands out from the background
within one hand size of the hand (the hand's own skeleton region, the image border and far
pixels are background; skin-coloured pixels are dropped), keeping the components that touch
the hand. Motion is used only where it is reliable: when one homography explains the flow of
the far background (a still or slowly panning camera, as in the real clips) and the hand
moves against it, pixels that move with the background become background too. Why not motion
alone: on the synthetic clips the camera orbits fast over low-texture backgrounds, and DIS
flow there is not explained by any homography (3-26 % inliers) - the motion cue is off and
colour does the work; on the real toy_plane clip colour alone took the office furniture
next to the plane (object box IoU 0.39 vs the drawn box), with the motion cue 0.76.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the given image; images ``(H, W, 3) uint8`` RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from hoirecon.geometry.regions import mask_box
from hoirecon.segment.classic import grabcut
from hoirecon.handpose.landmarks import (
    CropRect,
    HandLandmarker,
    LandmarkResult,
    PalmDetector,
    rect_from_landmarks,
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds and search grid of the automatic first-frame detection.

    palm_min_score: palm detector threshold for a proposal (MediaPipe's default 0.5).
    min_presence: landmark presence needed to accept the best crop as a hand.
    grid_scales: crop side as a fraction of the image's short side.
    grid_overlap: neighbouring grid crops overlap by this fraction of their side.
    grid_angles_deg: crop rotations tried at every grid position.
    border_scales: crops of these sizes (fraction of the short side) are centred up to the
        image border, half outside it: a close hand that enters the frame from its edge (the
        wrist and forearm cut off) is only recognised in a crop centred on the hand itself.
    border_angles_deg: rotations tried for the border crops (a hand entering from a corner
        points diagonally).
    refine_top: how many of the best grid/palm candidates are refined.
    refine_iterations: re-crops from a candidate's own landmarks (kept only if better).
    box_margin: the hand box is the landmarks' box grown by this fraction of its size per
        side (landmarks are joint centres; the skin extends past them).
    side: "right" | "left" | None: prefer candidates of that side (the model's handedness).
    side_weight: a candidate's score is ``presence * (1 - w * P(other side))``.
    """

    palm_min_score: float = 0.5
    min_presence: float = 0.6
    grid_scales: tuple[float, ...] = (0.45, 0.65, 0.9)
    grid_overlap: float = 0.5
    grid_angles_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    border_scales: tuple[float, ...] = (1.2,)
    border_angles_deg: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
    refine_top: int = 4
    refine_iterations: int = 2
    box_margin: float = 0.12
    side: Optional[str] = "right"
    side_weight: float = 0.3


@dataclass
class HandDetection:
    """A detected hand: its box, landmarks and the detection's scores.

    Attributes:
        box: (x0, y0, x1, y1) image pixels.
        keypoints_2d: (21, 2) image pixels (MediaPipe order).
        presence: the landmark model's hand presence in [0, 1].
        score: the ranking score (presence weighted by side agreement).
        source: "palm" (palm detector proposal) or "grid" (crop search).
    """

    box: Box
    keypoints_2d: np.ndarray
    presence: float
    score: float
    source: str


def grid_rects(height: int, width: int, scales: Sequence[float], overlap: float,
               angles_deg: Sequence[float], to_border: bool = False) -> list[CropRect]:
    """Square crops tiling an image at several scales and rotations.

    At each scale the crops (side ``scale * min(H, W)``) are spread evenly so that the first
    and last touch the image borders (``to_border``: are centred on them) and neighbours
    overlap by at least ``overlap``.
    """
    short = float(min(height, width))
    rects = []
    for scale in scales:
        side = scale * short
        step = max(1.0, side * (1.0 - overlap))
        centres = []
        for extent in (width, height):
            lo, hi = (0.0, float(extent)) if to_border else (side / 2, extent - side / 2)
            n = int(math.ceil(max(0.0, hi - lo) / step)) + 1
            centres.append(np.linspace(lo, hi, n) if hi > lo else np.array([extent / 2]))
        for cy in centres[1]:
            for cx in centres[0]:
                for a in angles_deg:
                    rects.append(CropRect(float(cx) - 0.5, float(cy) - 0.5, side, math.radians(a)))
    return rects


def palm_rects(detector: PalmDetector, image_rgb: np.ndarray, min_score: float) -> list[CropRect]:
    """MediaPipe's hand crops from palm detections: palm box x 2.6, shifted toward the
    fingers, wrist down (same rule as ``handpose.landmarks.detect_hand_box``)."""
    rects = []
    for _, box, kps in detector.detect(image_rgb, min_score):
        up = kps[2] - kps[0]  # wrist -> middle MCP
        angle = math.atan2(up[0], -up[1])
        long_side = max(box[2] - box[0], box[3] - box[1])
        ey = np.array([-math.sin(angle), math.cos(angle)])
        centre = 0.5 * (box[:2] + box[2:]) - 0.5 * long_side * ey
        rects.append(CropRect(float(centre[0]), float(centre[1]), 2.6 * long_side, angle))
    return rects


def _score(result: LandmarkResult, cfg: DetectConfig) -> float:
    if cfg.side is None:
        return result.presence
    right = result.right_hand_probability()
    agree = right if cfg.side == "right" else 1.0 - right
    return result.presence * (1.0 - cfg.side_weight * (1.0 - agree))


def keypoints_box(keypoints_2d: np.ndarray, shape_hw: tuple[int, int], margin: float) -> Box:
    """Box (x0, y0, x1, y1) of (N, 2) points grown by ``margin`` of its size, clipped to the image."""
    lo, hi = keypoints_2d.min(0), keypoints_2d.max(0)
    grow = margin * np.maximum(hi - lo, 1.0)
    h, w = shape_hw
    x0, y0 = np.maximum(lo - grow, 0.0)
    x1, y1 = np.minimum(hi + grow, [w - 1.0, h - 1.0])
    return float(x0), float(y0), float(x1), float(y1)


def detect_hand_box(image_rgb: np.ndarray, cfg: DetectConfig = DetectConfig(),
                    landmarker: Optional[HandLandmarker] = None,
                    palm_detector: Optional[PalmDetector] = None) -> Optional[HandDetection]:
    """The hand in one image: palm detector proposals, then a crop search of the landmark model.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        cfg: thresholds and search grid.
        landmarker, palm_detector: reuse loaded models (default: load MediaPipe's, 1 thread).
    Returns:
        The best hand whose presence is at least ``cfg.min_presence``, or None.
    """
    landmarker = landmarker or HandLandmarker(num_threads=1)
    palm_detector = palm_detector or PalmDetector(num_threads=1)
    h, w = image_rgb.shape[:2]

    def run(rect: CropRect, source: str) -> tuple[float, LandmarkResult, str]:
        res = landmarker.run(image_rgb, rect)
        return _score(res, cfg), res, source

    cands = [run(r, "palm") for r in palm_rects(palm_detector, image_rgb, cfg.palm_min_score)]
    # The palm detector's confirmed proposal is enough; search crops only when it found nothing.
    if not any(r.presence >= cfg.min_presence for _, r, _ in cands):
        rects = grid_rects(h, w, cfg.grid_scales, cfg.grid_overlap, cfg.grid_angles_deg)
        rects += grid_rects(h, w, cfg.border_scales, cfg.grid_overlap, cfg.border_angles_deg, to_border=True)
        cands += [run(r, "grid") for r in rects]
    cands.sort(key=lambda c: -c[0])
    best = None
    for score, res, source in cands[:cfg.refine_top]:
        for _ in range(cfg.refine_iterations):
            cand = run(rect_from_landmarks(res.keypoints_2d), source)
            if cand[0] <= score:
                break
            score, res = cand[0], cand[1]
        if best is None or score > best[0]:
            best = (score, res, source)
    if best is None or best[1].presence < cfg.min_presence:
        return None
    score, res, source = best
    return HandDetection(box=keypoints_box(res.keypoints_2d, (h, w), cfg.box_margin),
                         keypoints_2d=res.keypoints_2d, presence=res.presence, score=score, source=source)


# ----------------------------------------------------------------------------------------
# Held object

# MediaPipe's hand skeleton: the bones drawn to paint the hand's own region.
HAND_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
              (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))
PALM_POLYGON = (0, 1, 5, 9, 13, 17)


@dataclass(frozen=True)
class ObjectDetectConfig:
    """Settings of the held-object box.

    finger_width: width of the painted bones, as a fraction of the hand's size (long side
        of its landmark box); the palm polygon is filled.
    reach: the object is searched within this distance of the hand (fraction of its size).
    border_px_frac: a strip this wide (fraction of the short image side) along the image
        border is background.
    grabcut_iters: GrabCut iterations.
    contact_frac: a component counts as touching the hand within this distance (fraction of
        the hand's size).
    min_area_frac: components smaller than this fraction of the hand's size squared are
        dropped.
    held_contact: a component is kept if its pixels touching the hand are at least this
        fraction of those of the component touching it most.
    motion_frames: the motion cue compares frame 0 with frame ``min(T - 1, motion_frames)``.
    motion_inliers: the background counts as explained by one homography when at least this
        fraction of the far pixels follow it (2 px); otherwise the motion cue is unused.
    motion_min_px: the hand must move at least this much against the background.
    static_frac: a pixel is static background when its residual motion is below this
        fraction of the hand's.
    """

    finger_width: float = 0.09
    reach: float = 1.0
    border_px_frac: float = 0.04
    grabcut_iters: int = 5
    contact_frac: float = 0.05
    min_area_frac: float = 0.01
    held_contact: float = 0.25
    motion_frames: int = 3
    motion_inliers: float = 0.5
    motion_min_px: float = 2.0
    static_frac: float = 0.3


def hand_region_from_keypoints(keypoints_2d: np.ndarray, shape_hw: tuple[int, int],
                               finger_width: float = 0.09) -> np.ndarray:
    """The pixels the hand's skeleton covers: thick bones plus the filled palm.

    Args:
        keypoints_2d: (21, 2) image pixels (MediaPipe order).
        shape_hw: (H, W) of the image.
        finger_width: bone thickness as a fraction of the landmarks' larger extent.
    Returns:
        (H, W) bool.
    """
    k = np.round(np.asarray(keypoints_2d, np.float64)).astype(np.int32)
    size = float(np.max(k.max(0) - k.min(0)))
    region = np.zeros(shape_hw, np.uint8)
    width = max(2, int(round(finger_width * size)))
    for a, b in HAND_BONES:
        cv2.line(region, (int(k[a, 0]), int(k[a, 1])), (int(k[b, 0]), int(k[b, 1])), 1, width)
    cv2.fillPoly(region, [k[list(PALM_POLYGON)]], 1)
    return region.astype(bool)


def static_background(frame0_rgb: np.ndarray, frame_k_rgb: np.ndarray, hand: np.ndarray,
                      far: np.ndarray, cfg: ObjectDetectConfig = ObjectDetectConfig()) -> Optional[np.ndarray]:
    """Pixels that move like the background and unlike the hand between two frames.

    DIS optical flow frame 0 -> k; one homography fitted (RANSAC) to the flow of the pixels
    far from the hand stands for the background (camera) motion. If it explains at least
    ``cfg.motion_inliers`` of them and the hand moves at least ``cfg.motion_min_px`` against
    it, pixels whose flow follows it within ``cfg.static_frac`` of the hand's motion are
    returned; else None (no usable motion cue: fast or non-planar background motion).

    Args:
        frame0_rgb, frame_k_rgb: (H, W, 3) uint8 RGB.
        hand: (H, W) bool, the hand's region in frame 0.
        far: (H, W) bool, pixels far from the hand (assumed background).
    Returns:
        (H, W) bool or None.
    """
    g0 = cv2.cvtColor(frame0_rgb, cv2.COLOR_RGB2GRAY)
    gk = cv2.cvtColor(frame_k_rgb, cv2.COLOR_RGB2GRAY)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(g0, gk, None)
    h, w = g0.shape
    ys, xs = np.nonzero(far)
    if xs.size < 50:
        return None
    pick = np.random.default_rng(0).choice(xs.size, min(4000, xs.size), replace=False)
    src = np.stack([xs[pick], ys[pick]], 1).astype(np.float32)
    dst = src + flow[ys[pick], xs[pick]]
    H, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 2.0)
    if H is None or inliers.mean() < cfg.motion_inliers:
        return None
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    grid = np.stack([xx, yy], -1).reshape(1, -1, 2)
    predicted = cv2.perspectiveTransform(grid, H)[0].reshape(h, w, 2)
    residual = np.linalg.norm(grid[0].reshape(h, w, 2) + flow - predicted, axis=-1)
    hand_motion = float(np.median(residual[hand])) if hand.any() else 0.0
    if hand_motion < cfg.motion_min_px:
        return None
    return residual < cfg.static_frac * hand_motion


def more_like(image_rgb: np.ndarray, region_a: np.ndarray, region_b: np.ndarray, bins: int = 16,
              ratio: float = 1.0) -> np.ndarray:
    """(H, W) bool: pixels whose (Lab, ``bins``^3 histogram) colour is more frequent in
    ``region_a`` than in ``region_b`` (both (H, W) bool), by more than ``ratio`` times (a large
    ratio: colours ``region_b`` hardly shows)."""
    lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB).astype(np.int64) * bins // 256
    code = (lab[..., 0] * bins + lab[..., 1]) * bins + lab[..., 2]
    hist_a = np.bincount(code[region_a], minlength=bins ** 3) / max(1, int(region_a.sum()))
    hist_b = np.bincount(code[region_b], minlength=bins ** 3) / max(1, int(region_b.sum()))
    return (hist_a > ratio * hist_b)[code] & (hist_a[code] > 0)


def object_mask_near_hand(image_rgb: np.ndarray, keypoints_2d: np.ndarray,
                          cfg: ObjectDetectConfig = ObjectDetectConfig(),
                          static: Optional[np.ndarray] = None,
                          foreground: Optional[np.ndarray] = None) -> np.ndarray:
    """The held object's first-frame mask: what stands out next to the hand and touches it.

    GrabCut with: background = pixels farther than ``cfg.reach`` hand sizes from the hand,
    the image border strip, the hand's own region (skeleton) and ``static`` (motion cue);
    probable foreground = the rest near the hand. The components touching the hand are kept.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        keypoints_2d: (21, 2) hand landmarks, image pixels.
        static: (H, W) bool static background (:func:`static_background`) or None.
        foreground: (H, W) bool, the learned foreground of a person and what they hold
            (``hoirecon.segment.foreground``), or None; outside it is background.
    Returns:
        (H, W) bool (empty when nothing stands out).
    """
    from hoirecon.segment.foreground import skin_part

    h, w = image_rgb.shape[:2]
    # The skeleton's non-skin pixels are the grip the fingers wrap round: object candidates.
    hand = skin_part(image_rgb, hand_region_from_keypoints(keypoints_2d, (h, w), cfg.finger_width))
    size = float(np.max(keypoints_2d.max(0) - keypoints_2d.min(0)))
    dist = cv2.distanceTransform((~hand).astype(np.uint8), cv2.DIST_L2, 3)
    init = np.full((h, w), cv2.GC_BGD, np.uint8)
    init[dist < cfg.reach * size] = cv2.GC_PR_FGD
    border = max(2, int(round(cfg.border_px_frac * min(h, w))))
    init[:border], init[-border:], init[:, :border], init[:, -border:] = (cv2.GC_BGD,) * 4
    if static is not None:
        # Inside the learned foreground a still pixel may be the object turning in place (a
        # handle spun about its axis): only probable background there, so that its colour does
        # not become background for good.
        init[static] = cv2.GC_BGD if foreground is None else np.where(foreground[static], cv2.GC_PR_BGD, cv2.GC_BGD)
    if foreground is not None:
        # Soft: the learned foreground misses dark grips between the fingers; colour decides there.
        init[~foreground & (init == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    init[hand] = cv2.GC_BGD
    if (init == cv2.GC_PR_FGD).sum() < 16:
        return np.zeros((h, w), bool)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        grabcut(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), init, bgd, fgd, cfg.grabcut_iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models
        return np.zeros((h, w), bool)
    fg = ((init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Skin next to the landmarks (forearm, the palm's edges) is not the object: drop pixels
    # whose colour is more frequent in the hand's region than in the candidate region.
    skin = more_like(image_rgb, hand, fg.astype(bool) & (dist > cfg.contact_frac * size))
    hand = hand | (skin & (dist < cfg.reach * size))
    fg[skin] = 0
    dist = cv2.distanceTransform((~hand).astype(np.uint8), cv2.DIST_L2, 3)
    near = dist <= max(3.0, cfg.contact_frac * size)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    contact = {i: int(near[labels == i].sum()) for i in range(1, n)
               if stats[i, cv2.CC_STAT_AREA] >= cfg.min_area_frac * size * size}
    # A held object lies along the fingers; what only touches a fingertip (a person walking
    # behind) is not held.
    most = max(contact.values(), default=0)
    return np.isin(labels, [i for i, c in contact.items() if c > 0 and c >= cfg.held_contact * most])


def detect_held_object_box(frames_rgb: Sequence[np.ndarray], keypoints_2d: np.ndarray,
                           cfg: ObjectDetectConfig = ObjectDetectConfig(),
                           foreground: Optional[np.ndarray] = None) -> Optional[tuple[Box, float]]:
    """First-frame box of the object held by the hand, or None.

    Args:
        frames_rgb: T x (H, W, 3) uint8 RGB (only the first ``cfg.motion_frames + 1`` are used;
            one frame disables the motion cue).
        keypoints_2d: (21, 2) the hand's landmarks in frame 0 (:class:`HandDetection`).
        foreground: (H, W) bool learned foreground of frame 0 or None (see
            :func:`object_mask_near_hand`).
    Returns:
        ((x0, y0, x1, y1), score) with score the object mask's area as a fraction of its box
        (a compactness measure in (0, 1]), or None when no region touches the hand.
    """
    first = frames_rgb[0]
    h, w = first.shape[:2]
    static = None
    if len(frames_rgb) > 1 and cfg.motion_frames > 0:
        hand = hand_region_from_keypoints(keypoints_2d, (h, w), cfg.finger_width)
        size = float(np.max(keypoints_2d.max(0) - keypoints_2d.min(0)))
        dist = cv2.distanceTransform((~hand).astype(np.uint8), cv2.DIST_L2, 3)
        static = static_background(first, frames_rgb[min(len(frames_rgb) - 1, cfg.motion_frames)], hand,
                                   dist > cfg.reach * size, cfg)
    mask = object_mask_near_hand(first, keypoints_2d, cfg, static, foreground)
    box = mask_box(mask)
    if box is None:
        return None
    fill = np.count_nonzero(mask) / ((box[2] - box[0] + 1) * (box[3] - box[1] + 1))
    return box, float(fill)


def landmarks_in_box(image_rgb: np.ndarray, box: Box, cfg: DetectConfig = DetectConfig(),
                     landmarker: Optional[HandLandmarker] = None) -> Optional[HandDetection]:
    """The hand inside a given box (e.g. the user's ``--hand-box``): rotation search + refinement.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        box: (x0, y0, x1, y1) around the hand.
    Returns:
        The best hand (its ``box`` is the given one) or None when its presence is below
        ``cfg.min_presence``.
    """
    landmarker = landmarker or HandLandmarker(num_threads=1)
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0)
    best: Optional[tuple[float, LandmarkResult]] = None
    for scale in (1.2, 1.6):
        for a in cfg.grid_angles_deg:
            res = landmarker.run(image_rgb, CropRect(0.5 * (x0 + x1), 0.5 * (y0 + y1), scale * side, math.radians(a)))
            for _ in range(cfg.refine_iterations):
                cand = landmarker.run(image_rgb, rect_from_landmarks(res.keypoints_2d))
                if _score(cand, cfg) <= _score(res, cfg):
                    break
                res = cand
            if best is None or _score(res, cfg) > best[0]:
                best = (_score(res, cfg), res)
    if best is None or best[1].presence < cfg.min_presence:
        return None
    return HandDetection(box=(x0, y0, x1, y1), keypoints_2d=best[1].keypoints_2d, presence=best[1].presence,
                         score=best[0], source="box")
