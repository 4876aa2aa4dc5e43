"""The pseudo-label filter: consistent frames are kept, inconsistent ones dropped."""

from __future__ import annotations

import numpy as np
import torch

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.pose.geometry import box_control_points
from hoirecon.pose.predict import ClipPoses
from hoirecon.pose.pseudo import ConsistencyConfig, pseudo_labels, temporal_consistency

K = np.array([[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]])


def _project(p):
    uvw = p @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def _smooth_track(T: int = 16, seed: int = 0):
    """A held box turning 2 deg per frame, the hand's keypoints on its side, as the network would say."""
    rng = np.random.default_rng(seed)
    verts = rng.uniform(-1, 1, (100, 3)) * np.array([0.04, 0.08, 0.03])
    control_3d = box_control_points(torch.as_tensor(verts)).numpy()
    kp_obj = np.array([0.045, 0.0, 0.0]) + rng.normal(0, 0.01, (21, 3))  # just outside the +x face
    R = axis_angle_to_matrix(torch.as_tensor([[0.0, np.radians(2.0 * t), 0.1] for t in range(T)])).numpy()
    T_obj_to_cam = np.tile(np.eye(4), (T, 1, 1))
    T_obj_to_cam[:, :3, :3] = R
    T_obj_to_cam[:, :3, 3] = np.array([0.0, 0.0, 0.45]) + 0.002 * np.arange(T)[:, None]
    cam = lambda p: p @ T_obj_to_cam[:, :3, :3].transpose(0, 2, 1) + T_obj_to_cam[:, None, :3, 3]  # noqa: E731
    keypoints_cam = cam(kp_obj)
    control_proj = _project(cam(control_3d))
    poses = ClipPoses(valid=np.ones(T, bool), joints_2d=_project(keypoints_cam) + rng.normal(0, 0.5, (T, 21, 2)),
                      keypoints_cam=keypoints_cam, T_cam_to_hand=np.tile(np.eye(4), (T, 1, 1)),
                      hand_rot=np.tile(np.eye(3), (T, 1, 1)), articulation=np.zeros((T, 45)), shape=np.zeros((T, 10)),
                      control_2d=control_proj + rng.normal(0, 0.5, (T, 21, 2)), control_conf=np.ones((T, 21)),
                      T_obj_to_cam=T_obj_to_cam, control_proj=control_proj)
    box = lambda p: np.concatenate([p.min(1), p.max(1)], 1)  # noqa: E731
    return poses, box(poses.joints_2d), box(control_proj), control_3d


def test_consistent_track_is_kept():
    poses, hb, ob, cp = _smooth_track()
    res = temporal_consistency(poses, hb, ob, cp)
    assert res.hand_keep.all() and res.object_keep.all(), {k: v.astype(int) for k, v in res.checks.items()}


def test_inconsistent_frames_are_dropped():
    poses, hb, ob, cp = _smooth_track()
    poses.joints_2d[5] += np.array([25.0, -15.0])  # the hand jumps in one frame
    R_flip = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, np.radians(70.0)]], dtype=torch.float64)).numpy()[0]
    poses.T_obj_to_cam[10, :3, :3] = R_flip @ poses.T_obj_to_cam[10, :3, :3]  # PnP flips the object
    cam = cp @ poses.T_obj_to_cam[10, :3, :3].T + poses.T_obj_to_cam[10, :3, 3]
    poses.control_proj[10] = _project(cam)
    poses.keypoints_cam[13] += np.array([0.0, 0.0, 0.2])  # the hand floats 20 cm off the object
    poses.valid[15] = False  # PnP failed
    res = temporal_consistency(poses, hb, ob, cp, ConsistencyConfig())
    assert not res.hand_keep[5] and res.object_keep[5]
    assert not res.object_keep[10] and res.hand_keep[10]
    assert not res.hand_keep[13] and not res.object_keep[13]
    assert not res.hand_keep[15] and not res.object_keep[15]
    others = np.setdiff1d(np.arange(16), [4, 5, 6, 9, 10, 11, 13, 15])  # the neighbours of a jump may go too
    assert res.hand_keep[others].all() and res.object_keep[others].all()
    labels = pseudo_labels(poses, res)
    assert labels["control_2d"] is poses.control_proj and labels["hand_keep"].sum() == res.hand_keep.sum()
