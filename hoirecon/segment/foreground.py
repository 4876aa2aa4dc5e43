"""Hand and object masks from each frame's own evidence: a learned foreground cue split by the hand.

MediaPipe's selfie segmenter (shipped inside the ``mediapipe`` wheel, run through
``ai-edge-litert``) marks a person's hand *together with* the object it holds as foreground,
frame by frame, so it cannot drift the way flow-carried masks do. It does not say which
pixels are hand and which are object; that split comes from the hand's landmarks (its bones
are sure hand, a finger-wide band around them is probable hand) and a GrabCut colour model,
run inside the foreground only. The previous frame's masks, moved by optical flow, keep the
split consistent in time and limit how far the object may grow in one frame (a static
cupboard the object passes in front of is foreground too, but it is not the object).

- ``SelfieForeground``: (H, W, 3) uint8 RGB -> (H, W) float32 foreground probability.
- ``split_foreground``: one frame's foreground, hand seeds and hints -> (hand, object) masks.
- ``ForegroundSplitTracker``: the whole clip, forward from first-frame masks.

Images are ``(H, W, 3) uint8`` RGB; masks ``(H, W) bool``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from hoirecon.geometry.regions import mask_box
from hoirecon.segment.classic import grabcut

SELFIE_MODEL = "selfie_segmentation/selfie_segmentation.tflite"


@dataclass(frozen=True)
class ForegroundSplitConfig:
    """Settings of the foreground split.

    threshold: foreground probability above which a pixel is hand or held object.
    confident, confident_reach: the hand and its object are the foreground the segmenter is
        sure of (probability above ``confident``) and the less sure foreground within
        ``confident_reach`` of the image's short side from it. Clutter behind the hand (a bus,
        a passer-by) is foreground at 0.3-0.7 and joined the object where it touched it; the
        objects' own less sure pixels lie along their outlines (docs/experiments.md).
    grabcut_iters: GrabCut iterations of the hand / not-hand cut inside the foreground.
    growth: in one frame the object may extend at most this fraction of its size (square
        root of its area), plus ``growth_px``, past where the flow moved it (an object turning
        shows new parts gradually; a cupboard touching it appears all at once).
    growth_px: see ``growth``.
    min_area_px: below this a mask counts as empty.
    static_fraction, static_std: a pixel that is foreground in at least ``static_fraction`` of
        the frames while its grey level varies by less than ``static_std`` (of 255, standard
        deviation over the clip) belongs to something that never moves, not to a held object;
        the object may not grow into it (it may still keep such pixels it already has).
    box_slack: first-frame boxes are grown by this fraction of their size on each side.
    keep_fraction: where the split keeps less than this fraction of the flow-moved object,
        the object is carried by flow (and a GrabCut refinement) for that frame instead.
    reach: tracked mask pixels farther than this fraction of the image's short side from the
        frame's foreground are dropped (a mask that leaked into the road or a passing bus);
        nearer ones stay (the foreground misses thin or dark parts of a held object).
    seen_fraction: ``reach`` applies only to a mask the foreground covers at least this much
        of (it may miss a white object on a white wall entirely).
    gap_close: ``object_gaps`` looks for the object's notches with a closing of this radius, as a
        fraction of the object's size (the square root of its area).
    """

    threshold: float = 0.5
    confident: float = 0.8
    confident_reach: float = 0.05
    grabcut_iters: int = 3
    growth: float = 0.15
    growth_px: int = 6
    min_area_px: int = 16
    static_fraction: float = 0.9
    static_std: float = 8.0
    box_slack: float = 0.15
    keep_fraction: float = 0.5
    reach: float = 0.03
    seen_fraction: float = 0.6
    gap_close: float = 0.3
    still_camera: float = 0.8
    plate_fraction: float = 0.5
    plate_tolerance: float = 12.0
    plate_max_share: float = 0.3


class SelfieForeground:
    """The learned per-frame foreground cue: ``__call__(image) -> (H, W) float32 in [0, 1]``;
    ``mirrored(image)``: the same for the image's left-right mirror, flipped back (see
    :func:`hand_symmetric`)."""

    def __init__(self, num_threads: int = 1):
        from hoirecon.handpose.landmarks import _interpreter, mediapipe_model_path

        self.interp = _interpreter(mediapipe_model_path(SELFIE_MODEL), num_threads)
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self.size_hw = tuple(int(v) for v in self.input["shape"][1:3])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._run(image, mirror=False)

    def mirrored(self, image: np.ndarray) -> np.ndarray:
        return self._run(image, mirror=True)

    def _run(self, image: np.ndarray, mirror: bool) -> np.ndarray:
        h, w = image.shape[:2]
        # The model takes the whole frame squeezed to its square input, as MediaPipe feeds it.
        x = cv2.resize(image, self.size_hw[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        x = np.ascontiguousarray(x[:, ::-1]) if mirror else x
        self.interp.set_tensor(self.input["index"], x[None])
        self.interp.invoke()
        prob = self.interp.get_tensor(self.output["index"])[0, :, :, 0]
        prob = prob[:, ::-1] if mirror else prob
        return np.clip(cv2.resize(np.ascontiguousarray(prob), (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def hand_symmetric(prob: np.ndarray, mirror_prob: Optional[np.ndarray], hand: np.ndarray) -> np.ndarray:
    """(H, W) foreground probability that is the same for a hand and its mirror image.

    The selfie segmenter is not mirror-symmetric: it is sure of a right hand's palm (~1.0) and
    unsure of the same palm mirrored into a left hand (0.3-0.6, hand_fan), so a left hand lost
    its palm. Inside ``hand`` (H, W) bool, where the landmarks put the hand, a pixel takes the
    larger of ``prob`` and ``mirror_prob`` (the mirror image's, flipped back); elsewhere ``prob``
    stays: taking the larger everywhere also made clutter the mirror image sees (a bus, a
    passer-by) sure foreground (docs/experiments.md). ``mirror_prob`` None: ``prob``.
    """
    if mirror_prob is None or not hand.any():
        return prob
    return np.where(hand, np.maximum(prob, mirror_prob), prob)


def _disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _disk(radius)).astype(bool)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), _disk(radius)).astype(bool)


def _within(mask: np.ndarray, reach_px: float) -> np.ndarray:
    """(H, W) bool: pixels at most ``reach_px`` (Euclidean) from ``mask`` (H, W) bool."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) <= reach_px


def components_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Connected components of ``mask`` (H, W) bool that share a pixel with ``anchor`` (H, W) bool."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    hit = np.unique(labels[anchor & mask])
    return np.isin(labels, hit[hit > 0])


def _crop_box(mask: np.ndarray, margin: int) -> Optional[tuple[int, int, int, int]]:
    box = mask_box(mask)
    if box is None:
        return None
    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    return max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin + 1), min(h, y1 + margin + 1)


def _hand_cut(image: np.ndarray, union: np.ndarray, hand_sure: np.ndarray, hand_probable: np.ndarray,
              not_hand: np.ndarray, iters: int) -> np.ndarray:
    """GrabCut of the hand against everything else, inside the crop around ``union``; (H, W) bool."""
    h, w = union.shape
    crop = _crop_box(union, 8)
    if crop is None or not hand_sure.any():
        return hand_probable & union
    x0, y0, x1, y1 = crop
    init = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    init[~_dilate(union, 2)] = cv2.GC_BGD
    init[hand_probable & union] = cv2.GC_PR_FGD
    # The object's core from the previous frame stays object even inside the landmarks' band:
    # landmarks of fingers wrapped round an object (or read wrong) cover object pixels.
    init[not_hand] = cv2.GC_BGD
    init[hand_sure] = cv2.GC_FGD
    sub = np.ascontiguousarray(init[y0:y1, x0:x1])
    if not ((sub == cv2.GC_BGD) | (sub == cv2.GC_PR_BGD)).any():
        return hand_probable & union
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        grabcut(np.ascontiguousarray(cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2BGR)), sub, bgd, fgd, iters,
                cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a colour model with too few pixels
        return hand_probable & union
    hand = np.zeros((h, w), bool)
    hand[y0:y1, x0:x1] = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
    return hand & union


def split_foreground(image: np.ndarray, union: np.ndarray, hand_sure: np.ndarray, hand_probable: np.ndarray,
                     object_hint: np.ndarray, object_limit: np.ndarray,
                     cfg: ForegroundSplitConfig = ForegroundSplitConfig(),
                     anchor: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Split one frame's hand + held-object foreground into a hand mask and an object mask.

    Args:
        image: (H, W, 3) uint8 RGB.
        union: (H, W) bool, the foreground of the hand and what it holds.
        hand_sure: (H, W) bool, pixels that are hand (the landmarks' bones, or the core of
            the previous hand mask moved by flow).
        hand_probable: (H, W) bool, where the hand may be (a band around the bones).
        object_hint: (H, W) bool, pixels believed to be object (the core of the previous
            object mask moved by flow), used as "not hand" where they are off the hand band.
        object_limit: (H, W) bool, the object may not extend outside it.
        anchor: (H, W) bool, object pieces must touch it (default ``object_hint``, or the
            hand where that is empty): pieces seen on both sides of the fingers are kept,
            loose foreground elsewhere is not.
    Returns:
        hand, object: (H, W) bool, disjoint, both inside ``union``.
    """
    hand_sure = hand_sure & union
    hand = _hand_cut(image, union, hand_sure, hand_probable | hand_sure, object_hint, cfg.grabcut_iters)
    hand = components_touching(hand, hand_sure) if hand_sure.any() else hand
    # The forearm is foreground too but not the object: what is left of the union and lies
    # outside the object's reach is dropped rather than given to either mask.
    obj = union & ~hand & object_limit
    obj = cv2.morphologyEx(obj.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    anchor = object_hint if anchor is None else anchor
    anchor = anchor if (anchor & obj).any() else _dilate(hand, 3)
    obj = components_touching(obj, anchor)
    return hand, obj


def object_reach(previous_object: np.ndarray, cfg: ForegroundSplitConfig) -> np.ndarray:
    """(H, W) bool: where the object may be this frame, given its flow-moved previous mask."""
    area = int(previous_object.sum())
    radius = int(round(cfg.growth * np.sqrt(max(area, 1)))) + cfg.growth_px
    return _dilate(previous_object, radius)


def foreground_union(prob: np.ndarray, anchor: np.ndarray,
                     cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> np.ndarray:
    """(H, W) bool: the hand and its object, not a person walking behind them, a bus seen through
    the fingers or the side bars of a portrait clip.

    The foreground (``prob`` (H, W) > ``cfg.threshold``) that touches ``anchor`` (H, W) bool and
    lies within ``cfg.confident_reach`` of the confident foreground touching it; the plain
    foreground touching ``anchor`` where nothing confident does.
    """
    fg = prob > cfg.threshold
    core = components_touching(prob > cfg.confident, anchor)
    if not core.any():
        return components_touching(fg, anchor)
    return components_touching(fg & _within(core, cfg.confident_reach * min(prob.shape)), anchor)


def keep_near_foreground(masks: np.ndarray, probs: Sequence[np.ndarray],
                         cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> np.ndarray:
    """Tracked masks without what lies far outside each frame's learned foreground.

    Args:
        masks: (T, K, H, W) bool, e.g. [hand, object] per frame.
        probs: T x (H, W) foreground probabilities of the same frames.
    Returns:
        (T, K, H, W) bool: a mask the foreground sees (``cfg.seen_fraction``) loses its pixels
        farther than ``cfg.reach`` of the short image side from the foreground; others are kept.
    """
    out = masks.copy()
    reach_px = cfg.reach * min(masks.shape[-2:])
    for t, prob in enumerate(probs):
        fg = prob > cfg.threshold
        near = _within(fg, reach_px)
        for k in range(masks.shape[1]):
            area = int(masks[t, k].sum())
            if area and (masks[t, k] & fg).sum() >= cfg.seen_fraction * area:
                out[t, k] &= near
    return out


def object_gaps(image: np.ndarray, hand: np.ndarray, obj: np.ndarray,
                cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> np.ndarray:
    """(H, W) bool: pixels that belong to the object although neither mask has them (a dark cap
    or a label the learned foreground misses, between object parts or between object and hand).

    Candidates are the object's holes and notches: what a morphological closing of the object
    (radius ``cfg.gap_close`` of its size, the square root of its area) adds, and what the hand
    and object together enclose. Skin is never a candidate. A candidate is kept where a ring of
    background around hand, object and candidates hardly shows its colour (``rare_in``): the
    background seen through a mug's handle, or a cupboard beside the object, is the ring's colour.

    Args:
        image: (H, W, 3) uint8 RGB. hand, obj: (H, W) bool.
    """
    area = int(obj.sum())
    if area < 16:
        return np.zeros_like(obj)
    radius = max(2, int(round(cfg.gap_close * np.sqrt(area))))
    closed = cv2.morphologyEx(obj.astype(np.uint8), cv2.MORPH_CLOSE, _disk(radius)).astype(bool)
    both = hand | obj
    border = _image_border(both.shape)
    outside = components_touching(~both, border)
    candidates = (closed | ~outside) & ~both & ~skin_coloured(image)
    if not candidates.any():
        return candidates
    # What reaches the image's border runs out of the frame: background, not a gap in the object.
    candidates &= ~components_touching(candidates, border)
    ring = _dilate(both | candidates, GRIP_BACKGROUND_PX) & ~both & ~candidates
    gaps = rare_in(image, candidates, ring)
    return components_touching(gaps, _dilate(obj, 1))


def fill_object_gaps(frames: Sequence[np.ndarray], masks: np.ndarray,
                     cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> np.ndarray:
    """masks (T, 2, H, W) bool [hand, object] -> the same with each frame's ``object_gaps``
    given to the object."""
    out = masks.copy()
    for t, image in enumerate(frames):
        out[t, 1] |= object_gaps(image, masks[t, 0], masks[t, 1], cfg)
    return out


def _image_border(shape_hw: tuple[int, int]) -> np.ndarray:
    border = np.zeros(shape_hw, bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    return border


def static_foreground(frames: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                      cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> np.ndarray:
    """(H, W) bool: foreground that stays put over the clip (a cupboard next to the object).

    Args:
        frames: T x (H, W, 3) uint8 RGB. probs: T x (H, W) foreground probabilities.
    """
    count = np.zeros(frames[0].shape[:2], np.float64)
    total = np.zeros_like(count)
    total_sq = np.zeros_like(count)
    for image, prob in zip(frames, probs):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
        count += prob > cfg.threshold
        total += grey
        total_sq += grey * grey
    T = len(frames)
    if T < 3:  # too few frames to tell still from held
        return np.zeros(count.shape, bool)
    std = np.sqrt(np.maximum(total_sq / T - (total / T) ** 2, 0.0))
    return (count >= cfg.static_fraction * T) & (std < cfg.static_std)


@dataclass(frozen=True)
class BackgroundPlate:
    """What a still camera sees behind the hand and object.

    colour: (H, W, 3) float32 per-pixel median of the box-blurred frames.
    still: (H, W) bool pixels that show that colour in most frames (``plate_fraction``).
    """

    colour: np.ndarray
    still: np.ndarray

    def shown_in(self, image: np.ndarray, tolerance: float) -> np.ndarray:
        """(H, W) bool: still pixels whose colour in ``image`` (H, W, 3) uint8 is the plate's."""
        return self.still & (np.abs(_plate_blur(image) - self.colour).max(-1) < tolerance)


# Textured background pixels (Sobel magnitude of the plate's grey level above this) tell a
# still camera from a moving one; a plain wall looks still either way.
PLATE_TEXTURE = 40.0
PLATE_ROWS = 64  # the median is taken over this many image rows at a time, to bound memory


def _plate_blur(image: np.ndarray) -> np.ndarray:
    return cv2.blur(image, (5, 5)).astype(np.float32)


def _median_blurred(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W, 3) float32 per-pixel median of the box-blurred frames, a band of rows at a time."""
    h, w = frames[0].shape[:2]
    colour = np.empty((h, w, 3), np.float32)
    for y0 in range(0, h, PLATE_ROWS):
        y1 = min(h, y0 + PLATE_ROWS)
        lo, hi = max(0, y0 - 2), min(h, y1 + 2)  # the 5x5 blur reaches 2 rows out
        colour[y0:y1] = np.median(np.stack([_plate_blur(f[lo:hi])[y0 - lo:y1 - lo] for f in frames]), axis=0)
    return colour


def background_plate(frames: Sequence[np.ndarray], covered: np.ndarray,
                     cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> Optional[BackgroundPlate]:
    """The clip's still background, or None where the camera moves (or the clip is too short).

    Args:
        frames: T x (H, W, 3) uint8 RGB.
        covered: (H, W) bool, pixels a hand or object mask covers in some frame (the camera's
            stillness is judged on the others).
    """
    T = len(frames)
    if T < 5:
        return None
    colour = _median_blurred(frames)
    agree = np.zeros(colour.shape[:2], np.int32)
    for image in frames:
        agree += np.abs(_plate_blur(image) - colour).max(-1) < cfg.plate_tolerance
    still = agree >= cfg.plate_fraction * T
    grey = cv2.cvtColor(np.clip(colour, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    textured = (np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) > PLATE_TEXTURE)
    textured &= ~covered
    if textured.sum() < 100 or still[textured].mean() < cfg.still_camera:
        return None
    return BackgroundPlate(colour, still)


def drop_still_background(frames: Sequence[np.ndarray], masks: np.ndarray, plate: BackgroundPlate,
                          cfg: ForegroundSplitConfig = ForegroundSplitConfig()) -> np.ndarray:
    """masks (T, 2, H, W) bool [hand, object] -> the same without the object's leaks into the
    still background (the floor under it, the edge of a cupboard it passes).

    A leak is a part of the object mask that shows the plate's colour, in a colour the
    background around hand and object also shows (``rare_in``: a label that sits still in the
    fist is the plate's colour too, but not the wall's), and that reaches the mask's outline.
    A frame where that would take more than ``cfg.plate_max_share`` of the object keeps it all.
    """
    out = masks.copy()
    for t, image in enumerate(frames):
        hand, obj = masks[t, 0], masks[t, 1]
        candidates = obj & plate.shown_in(image, cfg.plate_tolerance)
        if not candidates.any():
            continue
        both = hand | obj
        ring = _dilate(both, GRIP_BACKGROUND_PX) & ~both
        candidates &= ~rare_in(image, candidates, ring)
        leak = components_touching(candidates, _dilate(~both, 1))
        if leak.sum() <= cfg.plate_max_share * obj.sum():
            out[t, 1] = obj & ~leak
    return out


# How much more frequent a colour must be among candidate pixels than in the background around
# them to count as not background (a shaded wall varies; a label or a dark cap is another colour).
RARE_RATIO = 10.0


def rare_in(image: np.ndarray, candidates: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W) bool: the ``candidates`` (H, W) bool whose colour ``background`` (H, W) bool hardly
    shows (``RARE_RATIO``); none where ``background`` is empty."""
    from hoirecon.segment.detect import more_like

    if not background.any():
        return np.zeros_like(candidates)
    return candidates & more_like(image, candidates, background, ratio=RARE_RATIO)


# How far around the hand and object the background's colours are sampled, to tell a grip
# the learned foreground missed from the wall behind it.
GRIP_BACKGROUND_PX = 15

HandSeeder = Callable[[np.ndarray, np.ndarray, np.ndarray], Optional[tuple[np.ndarray, np.ndarray]]]


class ForegroundSplitTracker:
    """Hand and object masks for every frame: the foreground of each frame, split by the hand.

    ``track(frames, first_masks, hand_seeder, on_frame)`` returns (T, 2, H, W) bool, [hand, object].
    ``hand_seeder(image, warped_hand, warped_object) -> (sure, probable) | None`` gives the
    hand's landmark seeds (``hoirecon.segment.anchor.HandLandmarkAnchor``); where it finds no
    hand, the core of the flow-moved previous hand mask stands in.
    """

    def __init__(self, foreground: Callable[[np.ndarray], np.ndarray],
                 cfg: ForegroundSplitConfig = ForegroundSplitConfig()):
        from hoirecon.segment.classic import FlowTracker, TrackerConfig

        self.foreground = foreground
        self.cfg = cfg
        self.flow = FlowTracker(TrackerConfig())

    def step(self, image: np.ndarray, prob: np.ndarray, static: np.ndarray, warped_hand: np.ndarray,
             warped_object: np.ndarray, seeds: Optional[tuple[np.ndarray, np.ndarray]],
             remembered: Optional[np.ndarray] = None, mirror_prob: Optional[np.ndarray] = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """One frame from its foreground ``prob`` (and its mirror image's, ``mirror_prob``, see
        :func:`hand_symmetric`), the clip's ``static`` foreground and the previous frame's masks
        moved by flow into it; (hand, object). ``remembered`` (H, W) bool: the object's parts
        hidden behind the hand, moved with the object (they may reappear anywhere along it)."""
        remembered = warped_object if remembered is None else warped_object | remembered
        cfg = self.cfg
        hand_size = int(np.sqrt(max(int(warped_hand.sum()), 1)))
        if seeds is not None:
            sure, probable = seeds
        else:
            sure = _erode(warped_hand, max(2, hand_size // 10))
            probable = _dilate(warped_hand, max(2, hand_size // 15))
        prob = hand_symmetric(prob, mirror_prob, sure | probable)
        union = foreground_union(prob, sure | warped_hand | remembered, cfg)
        if union.sum() < cfg.min_area_px:
            return warped_hand, warped_object
        obj_size = int(np.sqrt(max(int(warped_object.sum()), 1)))
        object_core = _erode(warped_object, max(1, obj_size // 12)) & ~probable
        union |= self.carried_grip(image, union, warped_object, object_core)
        hand, obj = split_foreground(image, union, sure, probable, object_core,
                                     self.object_limit(image, static, remembered), cfg,
                                     anchor=object_core | (remembered & ~warped_hand))
        if hand.sum() < cfg.min_area_px:
            hand = warped_hand & union
        if obj.sum() < cfg.keep_fraction * warped_object.sum():
            # The foreground missed most of the object this frame (an object coloured like the
            # wall behind it): carry it by flow, refined on the image, rather than lose it.
            obj = self.flow.refine(image, warped_object, forbid=hand)
        return hand, obj

    def move_hidden(self, shape: np.ndarray, hand: np.ndarray, warped_object: np.ndarray,
                    flow: np.ndarray) -> np.ndarray:
        """The object's remembered shape (H, W) bool in the previous frame, kept only where the
        ``hand`` covered it or where it was seen, moved into this frame by the similarity that
        best explains the flow over the object (the flow of the hand in front, where hidden)."""
        from hoirecon.segment.classic import estimate_similarity, move_mask

        keep = shape & _dilate(hand, 3)
        motion = estimate_similarity(flow, warped_object)
        moved = move_mask(keep, motion) if motion is not None else self.flow.warp(keep, flow)
        return moved & ~warped_object

    @staticmethod
    def carried_grip(image: np.ndarray, union: np.ndarray, warped_object: np.ndarray,
                     object_core: np.ndarray) -> np.ndarray:
        """(H, W) bool: object pixels the flow carried that the foreground misses (a dark grip
        in the fist), kept where they are not skin and are coloured like the object rather
        than like the background around it, or in a colour that background does not show."""
        from hoirecon.segment.detect import more_like

        missed = warped_object & ~union & ~skin_coloured(image)
        if not missed.any() or not object_core.any():
            return missed
        around = _dilate(union | warped_object, GRIP_BACKGROUND_PX) & ~union & ~warped_object
        return missed & (more_like(image, object_core, around) | rare_in(image, missed, around))

    def object_limit(self, image: np.ndarray, static: np.ndarray, warped_object: np.ndarray) -> np.ndarray:
        """(H, W) bool: where the object may be this frame. It keeps what flow brought and may
        grow a little, but not into the still foreground, nor into pixels coloured like it
        (the still thing's edges, which the object uncovers and covers, vary too much to be
        found still themselves)."""
        limit = object_reach(warped_object, self.cfg) & ~(static & ~warped_object)
        if static.any() and warped_object.any():
            from hoirecon.segment.detect import more_like

            limit &= warped_object | more_like(image, warped_object, static)
        return limit

    def track(self, frames: Sequence[np.ndarray], first_masks: np.ndarray, hand_seeder: Optional[HandSeeder] = None,
              on_frame: Optional[Callable[[int], None]] = None, probs: Optional[Sequence[np.ndarray]] = None,
              mirror_probs: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
        """``probs``: the frames' foreground if already computed (else it is run here);
        ``mirror_probs``: their mirror images' (see :func:`hand_symmetric`; None: not used)."""
        T = len(frames)
        probs = [self.foreground(f) for f in frames] if probs is None else probs
        static = static_foreground(frames, probs, self.cfg)
        out = np.zeros((T, 2) + frames[0].shape[:2], bool)
        out[0] = first_masks
        hidden = np.zeros_like(first_masks[1])  # object parts behind the hand, moved with the object
        for t in range(1, T):
            flow = self.flow.flow(frames[t - 1], frames[t])
            warped_hand = self.flow.warp(out[t - 1, 0], flow)
            warped_object = self.flow.warp(out[t - 1, 1], flow)
            hidden = self.move_hidden(hidden | out[t - 1, 1], out[t - 1, 0], warped_object, flow)
            seeds = hand_seeder(frames[t], warped_hand, warped_object) if hand_seeder is not None else None
            out[t, 0], out[t, 1] = self.step(frames[t], probs[t], static, warped_hand, warped_object, seeds, hidden,
                                             None if mirror_probs is None else mirror_probs[t])
            if on_frame is not None:
                on_frame(1)
        return out


def box_region(shape_hw: tuple[int, int], box: Sequence[float], grow: float = 0.0) -> np.ndarray:
    """(H, W) bool inside the (x0, y0, x1, y1) box, grown by ``grow`` times its size on each side."""
    h, w = shape_hw
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = grow * (x1 - x0), grow * (y1 - y0)
    region = np.zeros((h, w), bool)
    region[max(0, int(y0 - dy)):min(h, int(np.ceil(y1 + dy)) + 1),
           max(0, int(x0 - dx)):min(w, int(np.ceil(x1 + dx)) + 1)] = True
    return region


def first_frame_split(image: np.ndarray, prob: np.ndarray, static: np.ndarray,
                      hand_seeds: tuple[np.ndarray, np.ndarray], hand_box: Sequence[float], object_box: Sequence[float],
                      cfg: ForegroundSplitConfig = ForegroundSplitConfig(),
                      mirror_prob: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """First-frame (hand, object) from the foreground (``prob``; ``mirror_prob``: see
    :func:`hand_symmetric`), the hand's landmark seeds and the two boxes.

    The object box may cover the hand (100DOH's boxes do): the hand is cut out of it first.
    The boxes are grown by ``cfg.box_slack`` (a box drawn or detected a little tight must not
    cut the object straight across); the foreground decides within them.
    """
    shape = image.shape[:2]
    sure, probable = hand_seeds
    prob = hand_symmetric(prob, mirror_prob, sure | probable)
    in_object_box = box_region(shape, object_box, cfg.box_slack)
    boxes = box_region(shape, hand_box, cfg.box_slack) | in_object_box
    union = foreground_union(prob, sure | (in_object_box & (prob > cfg.confident)), cfg) & boxes
    object_core = _erode(union & box_region(shape, object_box) & ~probable, 2)
    # The grip between the fingers: non-skin pixels where the hand and object boxes meet,
    # coloured like the object (the learned foreground often misses a dark grip in the fist).
    # Not "any colour the background lacks": a gloved or oddly lit hand is such a colour, and the
    # hand cut below then took part of the object (a synthetic bottle lost its body). Parts in a
    # colour of their own are found after tracking (``object_gaps``).
    grip = box_region(shape, hand_box) & in_object_box & ~skin_coloured(image) & ~union
    if object_core.any() and grip.any():
        from hoirecon.segment.detect import more_like

        union |= grip & more_like(image, object_core, boxes & ~union)
    return split_foreground(image, union, sure, probable, object_core & ~static, in_object_box & ~static, cfg)


def landmark_hand_seeds(image: np.ndarray, keypoints_2d: np.ndarray, not_hand: np.ndarray,
                        hand_like: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(sure, probable) hand seeds (H, W) bool from (21, 2) landmarks.

    Bones of fingers hidden behind the object run over object pixels, so sure hand is kept
    only off ``not_hand`` (the previous object's core) and, when given, where ``hand_like``
    (H, W) bool holds (pixels whose colour is the hand's)."""
    from hoirecon.segment.anchor import landmark_seeds
    from hoirecon.segment.detect import hand_region_from_keypoints

    sure, probable = landmark_seeds(keypoints_2d, image.shape[:2])
    # The palm between the bones is hand too (the bones' band alone leaves a hole there).
    probable |= hand_region_from_keypoints(keypoints_2d, image.shape[:2])
    sure &= ~not_hand
    if hand_like is not None:
        sure &= hand_like
    # Bones run over the grip the fingers wrap round: only their skin-coloured pixels are sure
    # hand, and the band's other pixels are not probable hand (see ``skin_part``).
    skin = skin_coloured(image, sure)
    skinned = skin_part(image, sure, skin)
    if skinned is not sure:
        probable &= skin | _dilate(skinned, 2)
    return skinned, probable


def skin_part(image: np.ndarray, region: np.ndarray, skin: Optional[np.ndarray] = None) -> np.ndarray:
    """The skin-coloured pixels of ``region`` (H, W) bool where at least ``SKIN_MIN_FRACTION`` of
    it is skin-coloured (the hand's own colour where the light is tinted, see
    :func:`skin_coloured`; ``skin``: that map if the caller has it); else ``region`` itself (a
    gloved or oddly lit hand)."""
    skin = (skin_coloured(image, region) if skin is None else skin) & region
    return skin if skin.sum() >= SKIN_MIN_FRACTION * max(1, int(region.sum())) else region


SKIN_MIN_FRACTION = 0.3
SKIN_TINT_CHROMA = 10  # the hand's own chroma +- this (YCrCb units) under tinted light
SKIN_TINT_MIN_LUMA = 0.4  # and at least this fraction of its median brightness (dark chroma is noise)


def skin_coloured(image: np.ndarray, hand: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) bool: pixels in the usual skin range of chroma (YCrCb: Cr 133-180, Cb 70-130), which
    holds across skin tones because it ignores brightness.

    White balance can push a whole hand out of that range (pale skin under a blue sky). Given
    ``hand`` (H, W) bool, a region that is mostly hand (the landmarks' palm and bones), and
    where the usual range finds less than half of it, the hand's own median chroma is used
    instead, with dark pixels left out.
    """
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.int16)
    luma, cr, cb = ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2]
    usual = (cr >= 133) & (cr <= 180) & (cb >= 70) & (cb <= 130)
    if hand is None or not hand.any() or usual[hand].mean() >= 0.5:
        return usual
    own_cr, own_cb, own_luma = (float(np.median(c[hand])) for c in (cr, cb, luma))
    return ((np.abs(cr - own_cr) <= SKIN_TINT_CHROMA) & (np.abs(cb - own_cb) <= SKIN_TINT_CHROMA)
            & (luma >= SKIN_TINT_MIN_LUMA * own_luma))


def hand_coloured(image: np.ndarray, keypoints_2d: np.ndarray, elsewhere: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose colour is more frequent on the landmarks' palm and bones than in
    ``elsewhere`` (H, W) bool."""
    from hoirecon.segment.detect import hand_region_from_keypoints, more_like

    region = hand_region_from_keypoints(keypoints_2d, image.shape[:2], finger_width=0.05)
    return more_like(image, region, elsewhere & ~region)
