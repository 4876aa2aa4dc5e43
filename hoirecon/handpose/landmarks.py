"""MediaPipe hand landmarks on rotated crops, run directly through ``ai-edge-litert``.

The ``mediapipe==0.10.14`` wheel bundles two TFLite models that we use without the
MediaPipe graph runtime:

- ``hand_landmark/hand_landmark_full.tflite``: input (1, 224, 224, 3) float32 RGB in [0, 1];
  outputs ``Identity`` (63) screen landmarks (x, y in crop pixels of the 224 crop,
  continuous coordinates with the crop spanning [0, 224]; z a relative depth in the same
  units, wrist = 0, positive = away from the camera), ``Identity_1`` hand presence in
  [0, 1], ``Identity_2`` handedness score in [0, 1]:
  MediaPipe's graph reads it as the probability of its label 0 "Left" under its assumption
  of a *mirrored* selfie image, so for an ordinary (unmirrored) frame it is the probability
  of a **right** hand (checked on real clips: high scores go with world landmarks of
  right-hand chirality),
  ``Identity_3`` (63) world landmarks: metres, origin near the hand's centre, axes of the
  crop (x right, y down, z away from the camera).
- ``palm_detection/palm_detection_full.tflite``: the palm detector (SSD, 192x192, 2016
  anchors), used only by :func:`detect_hand_box` for an automatic first-frame box.

Why crops and not the stock pipeline: the palm detector misses firm grasps (the palm is
hidden by the object), but the landmark model gives good landmarks when its crop is
centred on the hand and rotated so that the wrist is at the bottom. So the crop comes
from the hand mask (masks stage) with a rotation search, and then follows the hand from
frame to frame using the previous landmarks, as MediaPipe's own tracking does.

Coordinates: image pixels in the OpenCV convention (integer coordinates are pixel centres,
see ``hoirecon.render.camera``). A crop is a rotated square :class:`CropRect`; its "up"
(-y of the crop) is the direction in which the fingers should point.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from hoirecon.errors import UserError
from hoirecon.geometry.regions import box_iou, mask_box
from hoirecon.io.quiet import quiet_native_stderr

LANDMARK_MODEL = "hand_landmark/hand_landmark_full.tflite"
PALM_MODEL = "palm_detection/palm_detection_full.tflite"
LANDMARK_INPUT = 224
PALM_INPUT = 192
MEDIAPIPE_HINT = "pip install --no-deps mediapipe==0.10.14 (the last release that bundles the hand models)"

# MediaPipe's palm subset (wrist, thumb CMC/MCP/IP, and the MCP + PIP of each long finger),
# from which its tracker builds the next crop: these points are stable under finger curl.
PALM_SUBSET = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
WRIST, INDEX_MCP, MIDDLE_MCP, RING_MCP = 0, 5, 9, 13

Box = tuple[float, float, float, float]


def mediapipe_model_path(relative: str) -> Path:
    """Path of a TFLite model bundled in the installed ``mediapipe`` wheel.

    Found through the package spec, without importing mediapipe (its import pulls in
    much more than the model files). Raises ``UserError`` when absent.
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the mediapipe hand backend needs the mediapipe package: {MEDIAPIPE_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "modules" / relative
    if not path.is_file():
        raise UserError(f"mediapipe is installed but has no {relative}: {MEDIAPIPE_HINT}")
    return path


def _interpreter(path: Path, num_threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError("the mediapipe hand backend needs ai-edge-litert: pip install ai-edge-litert==2.3.0") from None
    with quiet_native_stderr():
        interp = Interpreter(model_path=str(path), num_threads=num_threads)
        interp.allocate_tensors()
    return interp


@dataclass(frozen=True)
class CropRect:
    """A rotated square crop of an image.

    Attributes:
        cx, cy: centre in image pixels.
        size: side length in image pixels.
        angle: radians. The crop's x axis is ``(cos a, sin a)`` in the image and its y axis
            ``(-sin a, cos a)``; angle 0 = upright crop, and the crop's "up" (where the
            fingers should point) is the image direction ``(sin a, -cos a)``.
    """

    cx: float
    cy: float
    size: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit image-space directions (2,), (2,) of the crop's x and y axes."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([c, s]), np.array([-s, c])

    def crop_to_image(self, uv: np.ndarray, crop_size: int) -> np.ndarray:
        """(N, 2) continuous crop coordinates (crop spans [0, crop_size]) -> (N, 2) image pixels."""
        ex, ey = self.axes()
        rel = np.asarray(uv, np.float64) / crop_size - 0.5
        return np.array([self.cx, self.cy]) + self.size * (rel[:, :1] * ex + rel[:, 1:2] * ey)

    def warp(self, image: np.ndarray, crop_size: int) -> np.ndarray:
        """Cut the crop: (H, W, C) image -> (crop_size, crop_size, C), zeros outside the image."""
        ex, ey = self.axes()
        # Crop pixel centre (j, i) is at continuous crop coordinate (j + 0.5, i + 0.5).
        step = self.size / crop_size
        origin = np.array([self.cx, self.cy]) + self.size * (
            (0.5 / crop_size - 0.5) * ex + (0.5 / crop_size - 0.5) * ey)
        crop_to_img = np.column_stack([ex * step, ey * step, origin])
        return cv2.warpAffine(image, crop_to_img, (crop_size, crop_size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@dataclass
class LandmarkResult:
    """One hand's landmarks (MediaPipe order, ``hoirecon.hand.MEDIAPIPE_KEYPOINT_NAMES``).

    Attributes:
        keypoints_2d: (21, 2) image pixels.
        depth_2d: (21,) relative depth in image pixels (wrist 0, positive away from camera).
        world: (21, 3) metres, origin near the hand centre, axes parallel to the camera's
            (x right, y down, z forward): the crop rotation is undone.
        presence: hand presence score in [0, 1].
        handedness: the model's raw handedness score in [0, 1] (see module doc).
        rect: the crop it came from.
        score: the tracker's ranking score (presence weighted by mask and handedness
            agreement, see :class:`LandmarkTrackConfig`); 0 until scored.
    """

    keypoints_2d: np.ndarray
    depth_2d: np.ndarray
    world: np.ndarray
    presence: float
    handedness: float
    rect: CropRect
    score: float = field(default=0.0)

    def right_hand_probability(self) -> float:
        """Probability that this is a right hand in an unmirrored image."""
        return self.handedness


class HandLandmarker:
    """The MediaPipe landmark model on a :class:`CropRect` of an RGB image."""

    def __init__(self, model_path: Optional[Path] = None, num_threads: Optional[int] = None):
        path = Path(model_path) if model_path is not None else mediapipe_model_path(LANDMARK_MODEL)
        self.interp = _interpreter(path, num_threads or min(2, os.cpu_count() or 1))
        self._input = self.interp.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self.interp.get_output_details()}
        try:
            self._outputs = [outputs[n] for n in ("Identity", "Identity_1", "Identity_2", "Identity_3")]
        except KeyError:
            raise UserError(f"{path} is not MediaPipe's hand landmark model (outputs {sorted(outputs)})") from None

    def run(self, image_rgb: np.ndarray, rect: CropRect) -> LandmarkResult:
        """Landmarks of the hand in ``rect``.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            rect: the crop (any size and rotation).
        """
        screen, presence, handed, world = self._infer(rect.warp(image_rgb, LANDMARK_INPUT))
        screen = screen.reshape(21, 3).astype(np.float64)
        world = world.reshape(21, 3).astype(np.float64)
        ex, ey = rect.axes()
        # World xy are along the crop's axes: rotate them back into image/camera axes.
        world_cam = world.copy()
        world_cam[:, :2] = world[:, :1] * ex + world[:, 1:2] * ey
        return LandmarkResult(
            keypoints_2d=rect.crop_to_image(screen[:, :2], LANDMARK_INPUT),
            depth_2d=screen[:, 2] * rect.size / LANDMARK_INPUT,
            world=world_cam,
            presence=float(presence[0]),
            handedness=float(handed[0]),
            rect=rect,
        )

    def run_mirrored(self, image_rgb: np.ndarray, rect: CropRect) -> tuple[float, float]:
        """(presence, handedness) of the crop ``rect`` flipped left to right: the same hand seen
        as the other side's (for ``hoirecon.handpose.handedness``)."""
        _, presence, handed, _ = self._infer(rect.warp(image_rgb, LANDMARK_INPUT)[:, ::-1])
        return float(presence[0]), float(handed[0])

    def _infer(self, crop: np.ndarray) -> tuple[np.ndarray, ...]:
        """The model's four outputs, flattened, for one (224, 224, 3) uint8 RGB crop."""
        self.interp.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
        self.interp.invoke()
        return tuple(self.interp.get_tensor(i).reshape(-1) for i in self._outputs)


def rect_from_box(box: Box, angle: float = 0.0, scale: float = 1.5) -> CropRect:
    """Square crop centred on a box, side ``scale * max(w, h)``, rotated by ``angle``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return CropRect(0.5 * (x0 + x1), 0.5 * (y0 + y1), scale * max(x1 - x0, y1 - y0, 1.0), angle)


def hand_up_angle(keypoints_2d: np.ndarray) -> float:
    """Crop angle that puts the wrist at the bottom (MediaPipe's rule).

    The up direction is from the wrist to the mean of the middle MCP and the midpoint of
    the index and ring MCPs.

    Args:
        keypoints_2d: (21, 2) image pixels.
    """
    k = np.asarray(keypoints_2d, np.float64)
    target = 0.5 * (0.5 * (k[INDEX_MCP] + k[RING_MCP]) + k[MIDDLE_MCP])
    d = target - k[WRIST]
    # up = (sin a, -cos a) = d / |d|
    return math.atan2(d[0], -d[1])


def rect_from_landmarks(keypoints_2d: np.ndarray, scale: float = 2.0, shift_up: float = 0.1) -> CropRect:
    """MediaPipe's tracking crop from the previous landmarks.

    The palm subset's bounding box in the rotated frame, made square on its long side,
    scaled by ``scale`` and shifted by ``shift_up`` of its side toward the fingers
    (MediaPipe: scale 2.0, shift 0.1).

    Args:
        keypoints_2d: (21, 2) image pixels.
    """
    angle = hand_up_angle(keypoints_2d)
    rect = CropRect(0.0, 0.0, 1.0, angle)
    ex, ey = rect.axes()
    pts = np.asarray(keypoints_2d, np.float64)[list(PALM_SUBSET)]
    u, v = pts @ ex, pts @ ey
    cu, cv_ = 0.5 * (u.min() + u.max()), 0.5 * (v.min() + v.max())
    side = scale * max(u.max() - u.min(), v.max() - v.min(), 1.0)
    centre = cu * ex + cv_ * ey - shift_up * side * ey
    return CropRect(float(centre[0]), float(centre[1]), float(side), angle)


@dataclass(frozen=True)
class LandmarkTrackConfig:
    """Settings of the crop search and tracking.

    presence_threshold: a result counts as a hand when its presence is at least this
        (MediaPipe's default tracking confidence is 0.5).
    search_angles_deg: crop rotations tried when searching (the wrist may be anywhere).
    search_scales: crop side / long side of the hand-mask box tried when searching.
    refine_iterations: re-crops from the result's own landmarks (MediaPipe's tracking
        rule) after a search or a tracking step; each is kept only if it scores better.
    mask_weight: weight of the agreement with the hand mask in a candidate's score
        (score = presence * (1 - w + w * fraction of landmarks inside the dilated mask));
        it rejects confident landmarks of the wrong thing (the object) in a search.
    side: "right" | "left". handedness_weight: a candidate's score is multiplied by
        ``1 - w * P(other side)``. On grasps the model sometimes reads the right hand as a
        left one (thumb and little finger swapped); such landmarks have the wrong
        chirality and no right-hand fit explains them, so with the default 0.6 a confident
        wrong-side result scores below the threshold and its frame is interpolated instead.
    """

    presence_threshold: float = 0.5
    search_angles_deg: tuple[float, ...] = (0, 45, 90, 135, 180, 225, 270, 315)
    search_scales: tuple[float, ...] = (1.2, 1.6)
    refine_iterations: int = 2
    mask_weight: float = 0.5
    handedness_weight: float = 0.6
    side: str = "right"


def _inside_fraction(points: np.ndarray, region: Optional[np.ndarray]) -> float:
    if region is None:
        return 1.0
    h, w = region.shape
    xy = np.round(points).astype(int)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    inside = np.zeros(len(points), bool)
    inside[ok] = region[xy[ok, 1], xy[ok, 0]]
    return float(inside.mean())


class LandmarkTracker:
    """Finds the hand in a frame from its mask (rotation search) or from the previous frame.

    Args:
        landmarker: a :class:`HandLandmarker` (or anything with its ``run``).
        cfg: search and tracking settings.
    """

    def __init__(self, landmarker: HandLandmarker, cfg: LandmarkTrackConfig = LandmarkTrackConfig()):
        self.landmarker = landmarker
        self.cfg = cfg

    def _score(self, result: LandmarkResult, region: Optional[np.ndarray]) -> LandmarkResult:
        cfg = self.cfg
        inside = _inside_fraction(result.keypoints_2d, region)
        agree = self.side_agreement(result)
        result.score = (result.presence * (1.0 - cfg.mask_weight + cfg.mask_weight * inside)
                        * (1.0 - cfg.handedness_weight * (1.0 - agree)))
        return result

    def side_agreement(self, result: LandmarkResult) -> float:
        """Probability that ``result`` is the configured side."""
        right = result.right_hand_probability()
        return right if self.cfg.side == "right" else 1.0 - right

    def _run(self, image: np.ndarray, rect: CropRect, region: Optional[np.ndarray]) -> LandmarkResult:
        return self._score(self.landmarker.run(image, rect), region)

    def _refine(self, image: np.ndarray, result: LandmarkResult, region) -> LandmarkResult:
        for _ in range(self.cfg.refine_iterations):
            cand = self._run(image, rect_from_landmarks(result.keypoints_2d), region)
            if cand.score <= result.score:
                break
            result = cand
        return result

    def search(self, image: np.ndarray, box: Box, region: Optional[np.ndarray] = None,
               extra_angles: Sequence[float] = ()) -> LandmarkResult:
        """Rotation (and scale) search on a box; the best candidate after refinement.

        Args:
            image: (H, W, 3) uint8 RGB.
            box: (x0, y0, x1, y1) around the hand (e.g. the hand mask's box).
            region: (H, W) bool, where landmarks are expected (dilated hand mask) or None.
            extra_angles: more angles (radians) to try, e.g. the previous frame's.
        """
        angles = [math.radians(a) for a in self.cfg.search_angles_deg] + list(extra_angles)
        cands = [self._run(image, rect_from_box(box, a, s), region)
                 for s in self.cfg.search_scales for a in angles]
        cands.sort(key=lambda r: -r.score)
        # Refining every candidate costs a lot; the top few hold the right one in practice.
        refined = [self._refine(image, c, region) for c in cands[:3]]
        return max(refined, key=lambda r: r.score)

    def track(self, image: np.ndarray, previous: LandmarkResult, shift: np.ndarray = np.zeros(2),
              region: Optional[np.ndarray] = None) -> LandmarkResult:
        """One tracking step: crop from the previous landmarks moved by ``shift`` (pixels)."""
        rect = rect_from_landmarks(previous.keypoints_2d)
        rect = replace(rect, cx=rect.cx + float(shift[0]), cy=rect.cy + float(shift[1]))
        return self._refine(image, self._run(image, rect, region), region)


def _dilated(mask: np.ndarray, box: Box, frac: float = 0.15) -> np.ndarray:
    """Pixels within ``frac`` of the box's long side of the mask (a distance transform:
    linear time, unlike a dilation with a large disc)."""
    radius = max(2.0, frac * max(box[2] - box[0], box[3] - box[1]))
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    return dist <= radius


def track_hand_landmarks(
    frames: Sequence[np.ndarray],
    hand_masks: Sequence[np.ndarray],
    tracker: LandmarkTracker,
    on_frame: Callable[[], None] | None = None,
    object_masks: Optional[Sequence[np.ndarray]] = None,
) -> list[Optional[LandmarkResult]]:
    """Landmarks for every frame of a clip, following the hand.

    Per frame: if the previous frame had a hand, track its crop (moved with the hand mask's
    centroid); if that fails (score below the presence threshold, or the model reads the
    other hand side), search rotations on the hand mask's box, also trying the last known
    angle, and keep the better of the two. Landmarks are expected inside the
    dilated hand mask (or object mask: fingers behind the object are still predicted).

    Args:
        frames: T x (H, W, 3) uint8 RGB.
        hand_masks: T x (H, W) bool.
        tracker: a :class:`LandmarkTracker`.
        on_frame: called once per frame (progress).
        object_masks: optional T x (H, W) bool.
    Returns:
        T results; None where no hand was found.
    """
    threshold = tracker.cfg.presence_threshold
    out: list[Optional[LandmarkResult]] = []
    previous: Optional[LandmarkResult] = None
    prev_centroid = None
    last_angle: Optional[float] = None
    for t, image in enumerate(frames):
        mask = np.asarray(hand_masks[t], bool)
        box = mask_box(mask)
        centroid = np.argwhere(mask)[:, ::-1].mean(0) if box is not None else None
        region = None
        if box is not None:
            region = mask | (np.asarray(object_masks[t], bool) if object_masks is not None else False)
            region = _dilated(region, box)
        result = None
        if previous is not None:
            shift = centroid - prev_centroid if centroid is not None and prev_centroid is not None else np.zeros(2)
            result = tracker.track(image, previous, shift, region)
        weak = result is None or result.score < threshold or tracker.side_agreement(result) < 0.5
        if weak and box is not None:
            extra = [last_angle] if last_angle is not None else []
            found = tracker.search(image, box, region, extra)
            if result is None or found.score > result.score:
                result = found
        if result is not None and result.score >= threshold:
            out.append(result)
            previous, last_angle = result, result.rect.angle
        else:
            out.append(None)
            previous = None
        prev_centroid = centroid
        if on_frame is not None:
            on_frame()
    return out


# ----------------------------------------------------------------------------------------
# Palm detector (optional automatic first-frame box)


def _palm_anchors() -> np.ndarray:
    """(2016, 2) anchor centres in [0, 1] of MediaPipe's 192x192 palm detector.

    SSD anchors with strides (8, 16, 16, 16), 2 anchors per cell per layer, layers with the
    same stride merged: a 24x24 grid with 2 anchors and a 12x12 grid with 6 (fixed anchor
    size 1, so only the centres matter).
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = PALM_INPUT // stride
        ys, xs = np.mgrid[:n, :n]
        centres = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out)


class PalmDetector:
    """MediaPipe's full palm detector on a letterboxed 192x192 image."""

    def __init__(self, model_path: Optional[Path] = None, num_threads: Optional[int] = None):
        path = Path(model_path) if model_path is not None else mediapipe_model_path(PALM_MODEL)
        self.interp = _interpreter(path, num_threads or min(2, os.cpu_count() or 1))
        self._input = self.interp.get_input_details()[0]["index"]
        outs = sorted(self.interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._boxes, self._scores = outs[0]["index"], outs[1]["index"]
        self.anchors = _palm_anchors()

    def detect(self, image_rgb: np.ndarray, min_score: float = 0.5) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """Palms in an image, best first, after non-maximum suppression.

        Returns:
            list of (score, box (4,) x0 y0 x1 y1 pixels of the palm, keypoints (7, 2) pixels:
            wrist centre, index MCP, middle MCP, ring MCP, pinky MCP, thumb CMC, thumb MCP).
        """
        h, w = image_rgb.shape[:2]
        side = max(h, w)
        # Letterbox: centre the image on a square canvas, as MediaPipe does (keep aspect).
        rect = CropRect((w - 1) / 2.0, (h - 1) / 2.0, float(side), 0.0)
        tensor = rect.warp(image_rgb, PALM_INPUT).astype(np.float32) / 255.0
        self.interp.set_tensor(self._input, tensor[None])
        self.interp.invoke()
        raw = self.interp.get_tensor(self._boxes)[0].astype(np.float64)
        logits = self.interp.get_tensor(self._scores)[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        keep = np.nonzero(scores >= min_score)[0]
        dets = []
        for i in keep[np.argsort(-scores[keep])]:
            ctr = raw[i, :2] / PALM_INPUT + self.anchors[i]
            size = raw[i, 2:4] / PALM_INPUT
            kps = raw[i, 4:18].reshape(7, 2) / PALM_INPUT + self.anchors[i]
            corners = np.stack([ctr - size / 2, ctr + size / 2]) * PALM_INPUT
            corners = rect.crop_to_image(corners, PALM_INPUT)
            dets.append((float(scores[i]), corners.reshape(4), rect.crop_to_image(kps * PALM_INPUT, PALM_INPUT)))
        return _nms(dets, 0.3)


def _nms(dets, iou_threshold: float):
    # Not backends.ops.nms: this module runs TFLite without importing torch, sees a handful of palms,
    # and drops a palm at IoU >= threshold (ops.nms: > threshold).
    kept = []
    for det in dets:
        if all(box_iou(det[1], k[1]) < iou_threshold for k in kept):
            kept.append(det)
    return kept


def detect_hand_box(image_rgb: np.ndarray, min_score: float = 0.5, min_presence: float = 0.5,
                    side: Optional[str] = None) -> Optional[Box]:
    """An automatic hand box for the first frame, or None.

    The palm detector proposes palms; each proposal is turned into MediaPipe's hand crop
    (palm box x 2.6, shifted toward the fingers, rotated wrist-down) and checked by the
    landmark model; the box of the landmarks of the best confirmed hand is returned. It
    misses hands whose palm is hidden by a firm grasp: pass a box by hand then.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        min_score: palm detector threshold.
        min_presence: landmark presence needed to confirm a palm.
        side: "right"/"left" to prefer that hand, or None.
    Returns:
        (x0, y0, x1, y1) pixels around the hand's 21 landmarks (with a 10% margin), or None.
    """
    detector = PalmDetector()
    landmarker = HandLandmarker()
    best, best_score = None, -1.0
    for score, box, kps in detector.detect(image_rgb, min_score):
        up = kps[2] - kps[0]  # wrist -> middle MCP
        angle = math.atan2(up[0], -up[1])
        palm = CropRect(0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3]), 1.0, angle)
        ex, ey = palm.axes()
        side_len = 2.6 * max(box[2] - box[0], box[3] - box[1])
        centre = np.array([palm.cx, palm.cy]) - 0.5 * max(box[2] - box[0], box[3] - box[1]) * ey
        result = landmarker.run(image_rgb, CropRect(float(centre[0]), float(centre[1]), side_len, angle))
        if result.presence < min_presence:
            continue
        value = result.presence * score
        if side is not None:
            right = result.right_hand_probability()
            value *= right if side == "right" else 1.0 - right
        if value > best_score:
            best, best_score = result, value
    if best is None:
        return None
    lo, hi = best.keypoints_2d.min(0), best.keypoints_2d.max(0)
    margin = 0.1 * (hi - lo)
    h, w = image_rgb.shape[:2]
    x0, y0 = np.maximum(lo - margin, 0.0)
    x1, y1 = np.minimum(hi + margin, [w - 1.0, h - 1.0])
    return float(x0), float(y0), float(x1), float(y1)
