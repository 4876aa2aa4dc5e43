"""Which hand holds the object, right or left, from the clip itself (``--side auto``).

The landmark model's handedness score alone is not enough on grasps. On the real toy_plane
clip (a right hand) it read "left" with 0.93-0.99 confidence in 6 of 15 frames, frame 0
among them, and it read the same frames of the clip's mirror image (a left hand) as "left"
too: where the back of a hand hides the thumb, the model has a favourite side, not an
answer. So each reading here is *symmetric*: the crop and its mirror image are both run, and

    P(right) = (h(crop) + 1 - h(mirrored crop)) / 2

where ``h`` is the model's P(right). A view the model reads the same way both ways scores
0.5 (it says nothing) instead of pulling the vote; a view it reads consistently scores near 0
or 1. The clip's answer is the mean over frames spread through the clip, where the hand is
followed from the first-frame box by the model's own crop tracking (side-neutral: no
handedness in the candidates' score). docs/experiments.md (session 23) has the readings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from hoirecon.handpose.landmarks import (
    HandLandmarker,
    LandmarkResult,
    LandmarkTrackConfig,
    LandmarkTracker,
)
from hoirecon.io.boxes import Box


@dataclass(frozen=True)
class HandSideConfig:
    """Settings of :func:`estimate_hand_side`.

    readings: frames read, spread evenly over the clip (fewer where the clip is shorter).
    min_presence: a frame's landmarks count when the model's hand presence is at least this.
    margin: the mean P(right) must be this far from 0.5 for a side to be named.
    """

    readings: int = 16
    min_presence: float = 0.5
    margin: float = 0.1


@dataclass
class HandSideEstimate:
    """The estimate: ``side`` "right" | "left", or None where the readings do not decide (too
    few, or a mean within the margin of 0.5). ``right_probability``: mean symmetric P(right)
    (0.5 without readings). ``readings``: (frame, symmetric P(right)) of every frame read."""

    side: Optional[str]
    right_probability: float
    readings: list[tuple[int, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"side": self.side, "right_probability": round(self.right_probability, 4),
                "readings": [[t, round(p, 4)] for t, p in self.readings]}


def symmetric_right_probability(landmarker: HandLandmarker, image_rgb: np.ndarray, result: LandmarkResult) -> float:
    """P(right) of the hand in ``result``'s crop, read on the crop and on its mirror image (see
    the module doc). image_rgb: (H, W, 3) uint8, the frame ``result`` came from."""
    _, mirrored = landmarker.run_mirrored(image_rgb, result.rect)
    return 0.5 * (result.right_hand_probability() + 1.0 - mirrored)


def _keypoints_box(keypoints_2d: np.ndarray, grow: float = 0.5) -> Box:
    """The landmarks' box grown by ``grow`` of its size on each side (a hand the crop lost has
    moved, so the search looks wider)."""
    lo, hi = keypoints_2d.min(0), keypoints_2d.max(0)
    pad = grow * (hi - lo)
    return (float(lo[0] - pad[0]), float(lo[1] - pad[1]), float(hi[0] + pad[0]), float(hi[1] + pad[1]))


def estimate_hand_side(frames: Sequence[np.ndarray], hand_box: Box, landmarker: Optional[HandLandmarker] = None,
                       cfg: HandSideConfig = HandSideConfig()) -> HandSideEstimate:
    """Right or left hand, from the clip (see the module doc).

    Args:
        frames: T x (H, W, 3) uint8 RGB.
        hand_box: (x0, y0, x1, y1) the hand in frame 0 (pixels of ``frames``).
        landmarker: a loaded model (default: MediaPipe's).
        cfg: settings.
    Returns:
        the estimate; its ``side`` is None where the clip does not decide.
    """
    landmarker = landmarker or HandLandmarker()
    neutral = replace(LandmarkTrackConfig(), handedness_weight=0.0, mask_weight=0.0)
    tracker = LandmarkTracker(landmarker, neutral)
    T = len(frames)
    wanted = set(np.linspace(0, T - 1, min(cfg.readings, T)).round().astype(int).tolist())
    readings: list[tuple[int, float]] = []
    previous: Optional[LandmarkResult] = None
    box = hand_box
    for t in range(max(wanted) + 1):
        image = frames[t]
        result = tracker.track(image, previous) if previous is not None else None
        if result is None or result.presence < cfg.min_presence:
            found = tracker.search(image, box)
            result = found if result is None or found.presence > result.presence else result
        if result.presence < cfg.min_presence:
            previous = None  # search again next frame, around where the hand was last seen
            continue
        previous, box = result, _keypoints_box(result.keypoints_2d)
        if t in wanted:
            readings.append((t, symmetric_right_probability(landmarker, image, result)))
    mean = float(np.mean([p for _, p in readings])) if readings else 0.5
    side = "right" if mean >= 0.5 + cfg.margin else "left" if mean <= 0.5 - cfg.margin else None
    return HandSideEstimate(side, mean, readings)
