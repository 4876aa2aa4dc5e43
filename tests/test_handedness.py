"""``hoirecon.handpose.handedness``: right or left hand, read from the clip (``--side auto``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.handpose.handedness import HandSideConfig, estimate_hand_side, symmetric_right_probability
from hoirecon.handpose.landmarks import CropRect, LandmarkResult
from test_handpose import _open_hand, _palm_facing_camera, hand, needs_mediapipe, render_hand_image  # noqa: F401


class _FixedReadings:
    """A landmark model that reads every crop as P(right) ``own`` and every mirrored crop as ``mirrored``."""

    def __init__(self, own: float, mirrored: float):
        self.own, self.mirrored = own, mirrored

    def run_mirrored(self, image, rect):
        return 0.9, self.mirrored

    def result(self) -> LandmarkResult:
        return LandmarkResult(np.zeros((21, 2)), np.zeros(21), np.zeros((21, 3)), 0.9, self.own,
                              CropRect(10.0, 10.0, 20.0, 0.0))


def test_a_view_read_as_one_side_both_ways_says_nothing():
    image = np.zeros((20, 20, 3), np.uint8)
    # A model with a favourite side for this view: the crop and its mirror both read "left".
    biased = _FixedReadings(own=0.05, mirrored=0.05)
    assert symmetric_right_probability(biased, image, biased.result()) == pytest.approx(0.5)
    # A consistent model: right one way, left the other.
    right = _FixedReadings(own=0.9, mirrored=0.1)
    assert symmetric_right_probability(right, image, right.result()) == pytest.approx(0.9)
    left = _FixedReadings(own=0.2, mirrored=0.8)
    assert symmetric_right_probability(left, image, left.result()) == pytest.approx(0.2)


def _turning_hand(hand, n: int = 6) -> tuple[list[np.ndarray], tuple[float, float, float, float]]:  # noqa: F811
    """Frames of a right hand turning in the image plane, and its first-frame box."""
    from hoirecon.geometry.regions import mask_box

    frames, first_box = [], None
    for t in range(n):
        R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.1 * t])) @ _palm_facing_camera()
        img, mask, _ = render_hand_image(hand, _open_hand(), R, torch.tensor([0.005 * t, 0.09, 0.25]))
        frames.append(img)
        first_box = first_box or mask_box(mask)
    return frames, first_box


@needs_mediapipe
def test_a_right_hand_and_its_mirror_image_are_told_apart(hand):  # noqa: F811
    frames, (x0, y0, x1, y1) = _turning_hand(hand)
    right = estimate_hand_side(frames, (x0, y0, x1, y1), cfg=HandSideConfig(readings=4))
    assert right.side == "right" and right.right_probability > 0.6
    assert len(right.readings) == 4 and [t for t, _ in right.readings] == [0, 2, 3, 5]
    W = frames[0].shape[1]
    mirrored = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
    left = estimate_hand_side(mirrored, (W - 1 - x1, y0, W - 1 - x0, y1), cfg=HandSideConfig(readings=4))
    assert left.side == "left" and left.right_probability < 0.4


@needs_mediapipe
def test_no_hand_in_the_box_decides_nothing():
    wall = [np.full((120, 160, 3), 110, np.uint8)] * 3
    estimate = estimate_hand_side(wall, (40.0, 30.0, 100.0, 90.0))
    assert estimate.side is None and estimate.readings == [] and estimate.right_probability == 0.5
