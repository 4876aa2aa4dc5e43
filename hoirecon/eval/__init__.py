"""Evaluation metrics of the paper: object F-score/Chamfer after alignment, CD_h, joint error."""

from hoirecon.eval.align import align_points, rotation_starts, symmetry_axis, umeyama
from hoirecon.eval.metrics import (
    chamfer_cm2,
    fscore,
    hand_object_chamfer,
    keypoint_error_mm,
    nn_distances,
    object_metrics,
    sample_surface,
)

__all__ = [
    "align_points",
    "rotation_starts",
    "symmetry_axis",
    "umeyama",
    "chamfer_cm2",
    "fscore",
    "hand_object_chamfer",
    "keypoint_error_mm",
    "nn_distances",
    "object_metrics",
    "sample_surface",
]
