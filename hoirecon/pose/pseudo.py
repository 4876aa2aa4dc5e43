"""Pseudo-labels for the semi-supervised phase, kept only where they agree in space and time.

The paper's idea: run the network over unlabelled videos, keep a frame's prediction as a label
only when it is consistent with the frames around it and with itself. The checks here, per
frame t (what the neighbours predict: the mean of the valid frames t - 1 and t + 1, or at the
ends and next to invalid frames the extrapolation from the two frames on the other side):

- ``hand_2d``: the 2D joints are within ``hand_2d_tol`` (a fraction of the hand box's
  diagonal) of the neighbours' prediction;
- ``object_2d``: the voted control points agree with the reprojection of the PnP pose within
  ``object_reproj_tol`` (fraction of the object box's diagonal), and the reprojected points
  are within ``object_2d_tol`` of the neighbours' prediction;
- ``object_smooth``: the object's rotation is within ``rotation_tol_deg`` of at least one
  neighbour's, its translation within ``translation_tol_m`` of the neighbours' prediction;
- ``contact``: some hand keypoint is within ``contact_tol_m`` of the object's control-point
  box (a held object touches the hand; a pose that floats away from it is wrong).

A frame keeps its hand label when ``hand_2d`` and ``contact`` hold, its object label when
``object_2d``, ``object_smooth`` and ``contact`` hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hoirecon.geometry.rotations import rotation_angle_deg
from hoirecon.pose.predict import ClipPoses

__all__ = ["ConsistencyConfig", "ConsistencyResult", "temporal_consistency", "pseudo_labels"]


@dataclass(frozen=True)
class ConsistencyConfig:
    """Tolerances of the checks (module docstring)."""

    hand_2d_tol: float = 0.08
    object_reproj_tol: float = 0.08
    object_2d_tol: float = 0.08
    rotation_tol_deg: float = 15.0
    translation_tol_m: float = 0.03
    contact_tol_m: float = 0.03


@dataclass
class ConsistencyResult:
    """hand_keep, object_keep (T,) bool; checks: name -> (T,) bool; errors: name -> (T,) float."""

    hand_keep: np.ndarray
    object_keep: np.ndarray
    checks: dict
    errors: dict


def _neighbour_mean(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, ...) -> (T, ...) what the neighbours say frame t should be: the mean of frames t-1 and
    t+1; where one of them is missing (the ends, invalid frames), the linear extrapolation from
    the two frames on the other side; else the one valid neighbour; NaN where there is none."""
    T = len(x)
    out = np.full_like(x, np.nan, dtype=np.float64)
    ok = lambda s: 0 <= s < T and valid[s]  # noqa: E731
    for t in range(T):
        if ok(t - 1) and ok(t + 1):
            out[t] = 0.5 * (x[t - 1] + x[t + 1])
        elif ok(t - 1) and ok(t - 2):
            out[t] = 2 * x[t - 1] - x[t - 2]
        elif ok(t + 1) and ok(t + 2):
            out[t] = 2 * x[t + 1] - x[t + 2]
        elif ok(t - 1) or ok(t + 1):
            out[t] = x[t - 1] if ok(t - 1) else x[t + 1]
    return out


def _box_diag(boxes: np.ndarray) -> np.ndarray:
    return np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)


def _distance_to_box(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(T, N, 3) points -> (T, N) distance to the axis-aligned box [lo, hi] (0 inside)."""
    return np.linalg.norm(np.maximum(np.maximum(lo - points, points - hi), 0.0), axis=-1)


def temporal_consistency(poses: ClipPoses, hand_boxes: np.ndarray, object_boxes: np.ndarray,
                         control_3d: np.ndarray, cfg: ConsistencyConfig = ConsistencyConfig()) -> ConsistencyResult:
    """Which frames' predictions are consistent (module docstring).

    Args:
        poses: the network's predictions for the clip's T frames.
        hand_boxes, object_boxes: (T, 4) pixels. control_3d: (21, 3) the template's control points.
    """
    valid = poses.valid.copy()
    T = len(valid)
    errors = {}
    hand_mean = _neighbour_mean(poses.joints_2d, valid)
    errors["hand_2d"] = np.linalg.norm(poses.joints_2d - hand_mean, axis=-1).mean(-1) / _box_diag(hand_boxes)
    obj_diag = _box_diag(object_boxes)
    errors["object_reproj"] = np.linalg.norm(poses.control_2d - poses.control_proj, axis=-1).mean(-1) / obj_diag
    proj_mean = _neighbour_mean(poses.control_proj, valid)
    errors["object_2d"] = np.linalg.norm(poses.control_proj - proj_mean, axis=-1).mean(-1) / obj_diag
    R = poses.T_obj_to_cam[:, :3, :3]
    angles = np.full((T, 2), np.inf)
    for j, d in enumerate((-1, 1)):
        idx = np.clip(np.arange(T) + d, 0, T - 1)
        ok = valid[idx] & (idx != np.arange(T))
        angles[ok, j] = rotation_angle_deg(np.transpose(R[ok], (0, 2, 1)) @ R[idx[ok]])
    errors["rotation_deg"] = angles.min(1)
    t_mean = _neighbour_mean(poses.T_obj_to_cam[:, :3, 3], valid)
    errors["translation_m"] = np.linalg.norm(poses.T_obj_to_cam[:, :3, 3] - t_mean, axis=-1)
    # Hand keypoints in the object frame, against the control points' box.
    T_cam_to_obj = np.linalg.inv(poses.T_obj_to_cam)
    kp_obj = poses.keypoints_cam @ T_cam_to_obj[:, :3, :3].transpose(0, 2, 1) + T_cam_to_obj[:, None, :3, 3]
    errors["contact_m"] = _distance_to_box(kp_obj, control_3d.min(0), control_3d.max(0)).min(-1)

    def ok(value, tol):  # NaN (no neighbour, invalid frame) fails
        with np.errstate(invalid="ignore"):
            return valid & (np.nan_to_num(value, nan=np.inf) <= tol)

    checks = {
        "hand_2d": ok(errors["hand_2d"], cfg.hand_2d_tol),
        "object_2d": ok(errors["object_reproj"], cfg.object_reproj_tol) & ok(errors["object_2d"], cfg.object_2d_tol),
        "object_smooth": ok(errors["rotation_deg"], cfg.rotation_tol_deg)
        & ok(errors["translation_m"], cfg.translation_tol_m),
        "contact": ok(errors["contact_m"], cfg.contact_tol_m),
    }
    hand_keep = checks["hand_2d"] & checks["contact"]
    object_keep = checks["object_2d"] & checks["object_smooth"] & checks["contact"]
    return ConsistencyResult(hand_keep, object_keep, checks, errors)


def pseudo_labels(poses: ClipPoses, result: ConsistencyResult) -> dict:
    """The labels ``hoirecon.pose.data.make_samples(pseudo=...)`` reads: the network's own 2D
    joints and hand values, and the reprojection of its PnP pose as the control points (it
    agrees with the 3D template, unlike the raw votes)."""
    return {"joints_2d": poses.joints_2d, "control_2d": poses.control_proj, "hand_rot": poses.hand_rot,
            "articulation": poses.articulation, "shape": poses.shape,
            "hand_keep": result.hand_keep, "object_keep": result.object_keep}
