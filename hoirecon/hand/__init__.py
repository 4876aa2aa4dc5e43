"""Parametric hand models with MANO's parameter layout (see ``hoirecon.hand.model``)."""

from hoirecon.hand.model import (
    MANO_ARTICULATED_JOINTS,
    MANO_KEYPOINT_NAMES,
    MANO_TO_MEDIAPIPE,
    MEDIAPIPE_KEYPOINT_NAMES,
    MEDIAPIPE_TO_MANO,
    NUM_KEYPOINTS,
    NUM_SHAPE,
    HandModel,
    HandOutput,
    build_hand_model,
)

__all__ = [
    "MANO_ARTICULATED_JOINTS",
    "MANO_KEYPOINT_NAMES",
    "MANO_TO_MEDIAPIPE",
    "MEDIAPIPE_KEYPOINT_NAMES",
    "MEDIAPIPE_TO_MANO",
    "NUM_KEYPOINTS",
    "NUM_SHAPE",
    "HandModel",
    "HandOutput",
    "build_hand_model",
]
