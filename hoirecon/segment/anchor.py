"""Re-anchoring the tracked hand mask on MediaPipe hand landmarks.

Flow warping only moves the pixels a mask already has, so fingers that come into view as
the hand turns are lost and the hand mask shrinks over a clip. Each frame, this finds the
hand's 21 landmarks (tracked crop, rotation search on the warped mask's box; see
``hoirecon.handpose.landmarks``) and turns them into GrabCut seeds:

- sure hand: the bones, where they agree with the warped hand mask, so that fingers hidden
  behind the object (and the palm behind a held object) do not claim object pixels;
- probable hand: a band about a finger wide around the bones and palm, where GrabCut decides.
"""

from __future__ import annotations

import cv2
import numpy as np

from hoirecon.geometry.regions import mask_box
from hoirecon.handpose.landmarks import HandLandmarker, LandmarkTrackConfig, LandmarkTracker

# MediaPipe's bones (landmark index pairs) and the palm polygon.
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))


def landmark_seeds(keypoints_2d: np.ndarray, shape_hw: tuple[int, int],
                   agree_with: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(21, 2) pixel landmarks -> (sure (H, W) bool, probable (H, W) bool) hand seeds."""
    h, w = shape_hw
    kp = np.round(keypoints_2d).astype(np.int32)
    hand_len = float(np.linalg.norm(keypoints_2d[9] - keypoints_2d[0]) * 2.0)  # wrist -> middle tip, roughly
    thick = max(1, int(round(0.035 * hand_len)))
    sure = np.zeros((h, w), np.uint8)
    for a, b in BONES:
        cv2.line(sure, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]), 1, thick)
    # A band a finger wide around the bones, not the landmarks' hull: the hull spans the
    # object held between thumb and fingers.
    probable = cv2.dilate(sure, np.ones((3, 3), np.uint8), iterations=max(1, 2 * thick))
    sure_b = sure.astype(bool)
    if agree_with is not None:
        sure_b &= agree_with
    return sure_b, probable.astype(bool)


def _better(current, candidate):
    """The higher-scoring of two landmark results (``current`` may be None; ties keep it)."""
    return candidate if current is None or candidate.score > current.score else current


class HandLandmarkAnchor:
    """Callable ``(image, warped_hand_mask, near=None) -> (sure, probable) | None`` for ``FlowTracker``.

    ``near`` (H, W) bool: the other tracked masks warped into this frame (the held object).
    When the hand cannot be found from the previous landmarks or on the warped hand mask's
    box, it is searched once more on the box of the hand and ``near`` together: as the hand
    turns behind what it holds, the warped mask keeps only the part that was visible (a
    wrist going out of view), while the fingers come into view over the object, outside it.

    Keeps the previous frame's landmarks to track the crop; make a new one per clip pass.
    """

    def __init__(self, side: str = "right", presence_threshold: float = 0.5, band_px: int = 6):
        self.tracker = LandmarkTracker(HandLandmarker(), LandmarkTrackConfig(side=side,
                                                                            presence_threshold=presence_threshold))
        self.band_px = band_px
        self.previous = None

    def _region(self, mask: np.ndarray) -> np.ndarray:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * self.band_px + 1,) * 2)
        return cv2.dilate(mask.astype(np.uint8), k).astype(bool)

    def __call__(self, image: np.ndarray, warped: np.ndarray, near: np.ndarray | None = None):
        threshold = self.tracker.cfg.presence_threshold
        box = mask_box(warped)
        result = None
        if box is not None:
            region = self._region(warped)
            if self.previous is not None:
                result = self.tracker.track(image, self.previous, region=region)
            if result is None or result.score < threshold:
                result = _better(result, self.tracker.search(image, box, region))
        if (result is None or result.score < threshold) and near is not None:
            both = warped | near
            both_box = mask_box(both)
            if both_box is not None:
                result = _better(result, self.tracker.search(image, both_box, self._region(both)))
        if result is None or result.score < threshold:
            self.previous = None
            return None
        self.previous = result
        return landmark_seeds(result.keypoints_2d, warped.shape, agree_with=warped)
