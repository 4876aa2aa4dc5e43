"""Object-frame cameras: the object's own motion (structure from motion) in the fit's start, the
grasp consensus that finds the hand estimator's wrong frames, and the camera options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from hoirecon.fit.init import ObjectCameras, grasp_consensus, object_in_hand_poses
from hoirecon.geometry.rotations import rotation_angle_deg


def _rot(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _rigid(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _grasp_clip(T: int = 8):
    """A rigid grasp turning in front of the camera: true T_cam_to_hand, the true object pose in
    the hand, and structure from motion of the object in its own frame and scale."""
    T_hand_to_obj = _rigid(_rot([0.2, 1, 0.1], 70), [0.03, -0.02, 0.05])
    T_cam_to_hand = []
    for t in range(T):
        T_hand_to_cam = _rigid(_rot([0.3, 1, 0.2], 12 * t), [0.02 * t, 0.0, 0.45])
        T_cam_to_hand.append(np.linalg.inv(T_hand_to_cam))
    T_cam_to_hand = np.stack(T_cam_to_hand)
    # The model: the object frame turned by G, its origin moved by c, scaled by 1 / 0.3.
    G, c, scale = _rot([1, 0, 0], 40), np.array([0.4, -0.1, 0.2]), 0.3
    T_cam_to_obj = T_hand_to_obj[None] @ T_cam_to_hand
    T_obj_to_cam = np.linalg.inv(T_cam_to_obj)
    R_model = T_obj_to_cam[:, :3, :3] @ G.T  # camera from model
    t_model = T_obj_to_cam[:, :3, 3] / scale - R_model @ c
    cams = ObjectCameras(R_model, t_model, np.ones(T, bool), c)
    return T_cam_to_hand, T_hand_to_obj, cams


def test_object_in_hand_poses_recover_a_rigid_grasp():
    T_cam_to_hand, true_h2o, cams = _grasp_clip()
    center_hand = np.linalg.inv(true_h2o)[:3, 3]  # the object's centre in the hand frame
    T_h2o = object_in_hand_poses(cams, T_cam_to_hand, center_hand)
    # Constant over the clip (a rigid grasp seen through exact cameras) ...
    assert rotation_angle_deg(np.transpose(T_h2o[:, :3, :3], (0, 2, 1)) @ T_h2o[0, :3, :3]).max() < 1e-4
    assert np.allclose(T_h2o[:, :3, 3], T_h2o[0, :3, 3], atol=1e-9)
    # ... with the object's centre where it is, at its metric distance from the hand.
    hand_in_obj = T_h2o[0, :3, 3]
    assert np.linalg.norm(hand_in_obj) == pytest.approx(np.linalg.norm(true_h2o[:3, 3]), rel=1e-6)


def test_unregistered_frames_take_the_nearest_registered_grasp():
    T_cam_to_hand, true_h2o, cams = _grasp_clip()
    cams.registered[[0, 1, 5]] = False
    cams.R_cam_from_obj[[0, 1, 5]] = np.eye(3)  # what an unregistered frame holds
    T_h2o = object_in_hand_poses(cams, T_cam_to_hand, np.linalg.inv(true_h2o)[:3, 3])
    assert np.allclose(T_h2o[0], T_h2o[2]) and np.allclose(T_h2o[5], T_h2o[4])


def test_grasp_consensus_finds_the_hand_estimators_wrong_frames():
    T_cam_to_hand, true_h2o, cams = _grasp_clip(10)
    wrong = T_cam_to_hand.copy()
    wrong[2] = _rigid(_rot([0, 0, 1], 150), [0, 0, 0]) @ wrong[2]  # a hand read upside down
    wrong[7, :3, 3] *= 2.0  # a hand put twice as far away
    T_h2o = object_in_hand_poses(cams, wrong, np.linalg.inv(true_h2o)[:3, 3])
    ref, angle, shift, outliers = grasp_consensus(T_h2o)
    assert outliers.tolist() == [t in (2, 7) for t in range(10)]
    assert angle[2] == pytest.approx(150, abs=1) and shift[7] > 0.05 and ref not in (2, 7)


def test_focal_and_fov_reach_the_camera(tmp_path):
    from hoirecon.errors import UserError
    from hoirecon.handpose.perspective import DEFAULT_FOCAL_PER_LONGER_SIDE, DEFAULT_FOCAL_SOURCE
    from hoirecon.stages.configs import HandConfig
    from hoirecon.stages.hand import resolve_camera
    from hoirecon.stages.outputs import FramesMeta

    clip = tmp_path / "s"
    assert run_cli("synth", "--category", "mug", "--out", str(clip), "--frames", "3", "--size", "96",
                   "--seed", "1", "--quiet")[0] == 0
    code, _, err = run_cli("hand", str(clip), "--focal", "150", "--no-sfm", "--force", "--quiet")
    assert code == 0, err
    K = np.load(clip / "hand" / "hands.npz")["K"]
    camera = json.loads((clip / "hand" / "camera.json").read_text())
    assert K[0, 0] == pytest.approx(150.0) and camera["source"] == "--focal"  # same size as the video
    meta = FramesMeta.load(clip / "frames")
    focal, info, sfm = resolve_camera(HandConfig(fov_deg=60, sfm=False), meta, [], np.zeros((0, 96, 96), bool),
                                      tmp_path)
    assert focal * 48.0 == pytest.approx(48.0 / np.tan(np.radians(30.0)), rel=1e-5)  # normalised by half the width
    assert info["source"] == "--fov" and info["fov_deg"] == pytest.approx(60.0) and sfm is None
    focal, info, _ = resolve_camera(HandConfig(sfm=False), meta, [], np.zeros((0, 96, 96), bool), tmp_path)
    assert focal * 48.0 == pytest.approx(DEFAULT_FOCAL_PER_LONGER_SIDE * 96) and info["source"] == DEFAULT_FOCAL_SOURCE
    with pytest.raises(UserError, match="--focal"):
        HandConfig(focal_px=150, fov_deg=60)


def _box_mesh():
    import torch

    corners = np.array([[x, y, z] for x in (-0.03, 0.03) for y in (-0.04, 0.04) for z in (-0.01, 0.01)])
    faces = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    return torch.tensor(corners, dtype=torch.float32), torch.tensor(faces)


def test_a_contradicting_hand_keeps_its_own_pose_where_it_matches_its_mask_better():
    import torch

    from hoirecon.fit.init import hand_mask_ious
    from hoirecon.fit.optimize import _worse_than_grasp
    from hoirecon.geometry.transforms import transform_points
    from hoirecon.render.raster import rasterize

    verts, faces = _box_mesh()
    K = np.array([[300.0, 0, 80], [0, 300.0, 60], [0, 0, 1]])
    right = np.linalg.inv(_rigid(_rot([1, 1, 0], 20), [0, 0, 0.4]))  # T_cam_to_hand
    off = np.linalg.inv(_rigid(_rot([1, 1, 0], 20), [0.05, 0.0, 0.4]))
    verts_cam = transform_points(torch.as_tensor(np.linalg.inv(right), dtype=torch.float32), verts[None])
    mask = rasterize(verts_cam, faces, torch.as_tensor(K, dtype=torch.float32)[None], 120, 160).covered.numpy()
    masks = np.repeat(mask, 2, 0)
    ious = hand_mask_ious(verts[None].repeat(2, 1, 1), faces, np.stack([right, off]), K, masks, stride=1)
    assert ious[0] > 0.99 and ious[1] < 0.5
    # frame 0's own pose is right, frame 1's grasp is: only frame 1 restarts from the grasp
    worse, ious = _worse_than_grasp(np.array([True, True]), (verts[None].repeat(2, 1, 1), faces),
                                    np.stack([right, off]), np.stack([off, right]), K, masks)
    assert worse.tolist() == [False, True] and ious[0][0] > 0.99 and ious[1][1] > 0.99
    worse, ious = _worse_than_grasp(np.array([False, False]), (verts[None].repeat(2, 1, 1), faces),
                                    np.stack([off, off]), np.stack([right, right]), K, masks)
    assert not worse.any() and ious == {}


def test_short_runs_marks_only_runs_under_the_length():
    from hoirecon.fit.optimize import short_runs

    flags = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], bool)
    np.testing.assert_array_equal(short_runs(flags, 3), [1, 0, 1, 1, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(short_runs(flags, 1), np.zeros(10, bool))
    assert not short_runs(np.zeros(0, bool), 3).any()


def test_a_short_run_goes_onto_the_grasp_only_where_the_grasp_covers_its_mask():
    from hoirecon.fit.optimize import InitConfig, _short_run_starts

    # Frames 1-2 and 4 contradict the grasp; 6-8 are a long run (a re-grip); frame 0 already
    # restarts from the grasp. Frame 1's grasp covers its mask (0.5 of its own 0.6); frame 4's
    # grasp misses it (a wrong object camera carries it).
    contradicting = np.array([1, 1, 1, 0, 1, 0, 1, 1, 1], bool)
    outliers = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    ious = {0: [0.2, 0.9], 1: [0.6, 0.5], 2: [0.8, 0.45], 4: [0.63, 0.0], 6: [0.7, 0.0], 7: [0.7, 0.0], 8: [0.7, 0.0]}
    jumps = np.ones(9, bool)
    hands, cameras = _short_run_starts(contradicting, outliers, ious, jumps, InitConfig(own_hand_min_run=3))
    assert hands.tolist() == [True, True, True, False, False, False, False, False, False]
    assert cameras.tolist() == [False, False, False, False, True, False, False, False, False]
    hands, cameras = _short_run_starts(contradicting, outliers, ious, jumps, InitConfig(short_run_grasp_share=0.0))
    assert hands.tolist() == [True, True, True, False, True, False, False, False, False] and not cameras.any()
    # where structure from motion does not jump at frame 4, the hand moved on the object: it keeps both
    hands, cameras = _short_run_starts(contradicting, outliers, ious, ~jumps, InitConfig(own_hand_min_run=3))
    assert hands.tolist() == [True, True, True, False, False, False, False, False, False] and not cameras.any()


def test_a_camera_jumps_where_structure_from_motion_turns_the_object_away_and_back():
    from hoirecon.fit.init import camera_jumps
    from hoirecon.geometry.rotations import axis_angle_to_matrix

    # The object turns 5 degrees a frame; frame 3's camera is 100 degrees off, frame 6 did not
    # register, and frame 0 turns 40 degrees to frame 1: over 30, but under 4x the median step
    # (22.5: the wrong frame's steps count too), so a fast start, not a wrong camera.
    angles = np.radians([-35.0, 5, 10, 115, 20, 25, 0, 35, 40])
    R = np.array([axis_angle_to_matrix(torch.tensor([0.0, float(a), 0.0])).numpy() for a in angles])
    reg = np.ones(9, bool)
    reg[6] = False
    cams = ObjectCameras(R, np.zeros((9, 3)), reg, np.zeros(3))
    assert camera_jumps(cams, 30.0, 4.0).tolist() == [False, False, False, True, False, False, False, False, False]
    assert not camera_jumps(cams, 150.0, 4.0).any()
    assert camera_jumps(cams, 30.0, 1.0).tolist() == [True, False, False, True, False, False, False, False, False]
    assert not camera_jumps(ObjectCameras(R, np.zeros((9, 3)), np.eye(9, dtype=bool)[4], np.zeros(3)), 30.0, 4.0).any()


def test_the_camera_report_measures_from_a_frame_whose_object_camera_was_kept():
    from hoirecon.geometry.rotations import axis_angle_to_matrix
    from hoirecon.stages.fit import _camera_report

    T = 4
    turn = np.array([axis_angle_to_matrix(torch.tensor([0.0, 0.1 * t, 0.0])).numpy() for t in range(T)])
    fitted = np.tile(np.eye(4), (T, 1, 1))
    fitted[:, :3, :3] = np.transpose(turn, (0, 2, 1))  # obj_from_cam, as structure from motion says
    fitted[0, :3, :3] = axis_angle_to_matrix(torch.tensor([1.4, 0.0, 0.0])).numpy()  # frame 0 ends elsewhere

    class Scene:
        def T_cam_to_obj(self):
            return torch.as_tensor(fitted)

    cams = ObjectCameras(turn, np.zeros((T, 3)), np.ones(T, bool), np.zeros(3))
    grasp = {"consensus_frame": 1, "hand_outlier_frames": [], "hand_kept_against_grasp_frames": [0],
             "object_camera_replaced_frames": [0], "hand_vs_grasp_rotation_deg": [0.0] * T,
             "hand_vs_grasp_shift_mm": [0.0] * T}
    report = _camera_report(Scene(), cams, {"object_cameras": grasp})
    assert report["fitted_vs_sfm_rotation_deg"][1:] == pytest.approx([0.0] * (T - 1), abs=1e-3)
    assert report["fitted_vs_sfm_rotation_deg"][0] == pytest.approx(np.degrees(1.4), abs=0.1)
    assert report["fitted_vs_sfm_rotation_deg_max"] == pytest.approx(0.0, abs=1e-3)
