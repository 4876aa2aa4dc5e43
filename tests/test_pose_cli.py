"""`hoirecon pose CLIP --object-mesh MESH`: the cached stage and its one-line errors (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from hoirecon.cli import main
from hoirecon.pose.network import HandObjectPoseNet
from hoirecon.pose.train import save_pose_weights
from hoirecon.stages.outputs import GroundTruth
from tests.test_pose_train import TINY


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from hoirecon.synth.generator import generate_clip

    out = tmp_path_factory.mktemp("posecli") / "bottle"
    generate_clip("bottle", out, frames=3, size=64, seed=1)
    torch.manual_seed(0)
    weights = save_pose_weights(HandObjectPoseNet(TINY), out.parent / "tiny.pt")
    return out, weights


def test_pose_stage_writes_poses_and_overlay(clip, capsys):
    out, weights = clip
    args = ["pose", str(out), "--object-mesh", str(GroundTruth.mesh_file(out)), "--weights", str(weights), "-q"]
    assert main(args) == 0
    data = np.load(out / "pose" / "poses.npz")
    assert data["K"][0, 0] == pytest.approx(1.2 * 64)  # the hand stage's default without structure from motion
    assert data["T_cam_to_hand"].shape == (3, 4, 4) and data["T_obj_to_cam"].shape == (3, 4, 4)
    assert data["articulation"].shape == (3, 45) and data["shape"].shape == (10,)
    assert data["keypoints_2d"].shape == (3, 21, 2) and data["control_points_3d"].shape == (21, 3)
    assert (out / "pose" / "overlay.mp4").stat().st_size > 0
    assert main(args + ["--json"]) == 0  # cached the second time
    assert '"status": "cached"' in capsys.readouterr().out
    assert main(args + ["--focal", "80"]) == 0  # pixels of the original video (here the same size)
    assert np.load(out / "pose" / "poses.npz")["K"][0, 0] == pytest.approx(80.0)
    assert main(args + ["--fov", "90"]) == 0  # the paper's focal of 1: half the longer side
    assert np.load(out / "pose" / "poses.npz")["K"][0, 0] == pytest.approx(32.0)


def test_pose_errors_exit_2(clip, tmp_path, capsys, monkeypatch):
    out, weights = clip
    box = trimesh.creation.box((0.1, 0.05, 0.05))
    trimesh.Trimesh(box.vertices, box.faces[:-2]).export(tmp_path / "open.ply")
    cases = [(["--object-mesh", str(tmp_path / "missing.ply"), "--weights", str(weights)], "not found"),
             (["--object-mesh", str(tmp_path / "open.ply"), "--weights", str(weights)], "not watertight"),
             (["--object-mesh", str(GroundTruth.mesh_file(out)), "--focal", "80", "--fov", "60"], "not both")]
    for extra, word in cases:
        assert main(["pose", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert word in err and len(err.splitlines()) == 1
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    assert main(["pose", str(out), "--object-mesh", str(GroundTruth.mesh_file(out))]) == 2
    err = capsys.readouterr().err.strip()
    assert "pose/pose_cpu.pt" in err and len(err.splitlines()) == 1
