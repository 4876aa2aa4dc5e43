"""`hoirecon fit --init pose`: the fit starts each frame's object pose from the pose stage's."""

from __future__ import annotations

import numpy as np
import pytest

from hoirecon.cli import main
from hoirecon.pipeline.runner import write_external_stage
from hoirecon.stages.outputs import GroundTruth, HandsOutput
from tests.test_stage_outputs import pose_output

FRAMES = 4
FIT_ARGS = ["--steps", "2", "--mesh-resolution", "24", "-q"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from hoirecon.synth.generator import generate_clip

    out = tmp_path_factory.mktemp("fitinit") / "mug"
    generate_clip("mug", out, frames=FRAMES, size=64, seed=3)
    return out


def _true_object_in_camera(out) -> np.ndarray:
    gt = np.load(GroundTruth.file(out))
    return np.linalg.inv(gt["T_hand_to_obj"].astype(np.float64) @ gt["T_cam_to_hand"].astype(np.float64))


def _write_pose_stage(out, valid: np.ndarray) -> None:
    """The true object poses as a pose stage solved them with a focal length 0.8 times the hand
    stage's: each origin keeps its pixel and sits at 0.8 times its depth."""
    K = HandsOutput.load(out / "hand").K.astype(np.float64)
    K_pose = K.copy()
    K_pose[0, 0] *= 0.8
    K_pose[1, 1] *= 0.8
    T_obj_to_cam = _true_object_in_camera(out)
    T_obj_to_cam[:, 2, 3] *= 0.8
    T_obj_to_cam[~valid] = np.eye(4)
    poses = pose_output(FRAMES, K=K_pose.astype(np.float32), valid=valid,
                        T_obj_to_cam=T_obj_to_cam.astype(np.float32))
    write_external_stage(out, "pose", poses.save, "test")


def _initial_object_in_camera(out) -> np.ndarray:
    T_hand_to_obj = np.load(out / "fit" / "init.npz")["T_hand_to_obj"].astype(np.float64)
    return np.linalg.inv(T_hand_to_obj @ HandsOutput.load(out / "hand").T_cam_to_hand.astype(np.float64))


def test_init_pose_starts_from_the_pose_stage_object_poses(clip):
    valid = np.array([True, True, False, True])
    _write_pose_stage(clip, valid)
    assert main(["fit", str(clip), "--init", "pose", *FIT_ARGS]) == 0
    start = _initial_object_in_camera(clip)
    true = _true_object_in_camera(clip)
    np.testing.assert_allclose(start[valid], true[valid], atol=2e-4)
    # Where PnP failed, the object keeps the nearest frame's pose in the hand.
    T_hand_to_obj = np.load(clip / "fit" / "init.npz")["T_hand_to_obj"]
    np.testing.assert_allclose(T_hand_to_obj[2], T_hand_to_obj[1], atol=1e-6)

    assert main(["fit", str(clip), *FIT_ARGS]) == 0  # the default starts elsewhere: axes from the hand
    default = _initial_object_in_camera(clip)
    assert np.abs(default[valid, :3, :3] - true[valid, :3, :3]).max() > 0.1


def test_init_pose_without_pose_stage_is_one_line_exit_2(clip, tmp_path, capsys):
    import shutil

    out = tmp_path / "nopose"
    shutil.copytree(clip, out, ignore=shutil.ignore_patterns("pose", "fit"))
    assert main(["fit", str(out), "--init", "pose", *FIT_ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert "hoirecon pose" in err and "--object-mesh" in err and len(err.splitlines()) == 1
    assert main(["fit", str(out), "--init", "posenet", *FIT_ARGS]) == 2
    assert "unknown init" in capsys.readouterr().err
