"""Tests of ``hoirecon eval`` (``hoirecon.stages.evaluate``) on a small synthetic clip."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh

from hoirecon.errors import UserError
from hoirecon.stages.evaluate import evaluate, print_eval_table, resolve_gt_dir
from hoirecon.stages.outputs import GroundTruth
from hoirecon.synth.generator import generate_clip

FRAMES, SIZE, POINTS = 4, 64, 3000


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "bottle"
    generate_clip("bottle", out, frames=FRAMES, size=SIZE, seed=5)
    return out


def _gt(synth: Path) -> dict:
    with np.load(GroundTruth.file(synth)) as data:
        return {k: data[k] for k in data.files}


def _write_fit(out: Path, synth: Path, mesh: trimesh.Trimesh | None = None, **overrides) -> None:
    """A fit folder (output contract) holding the ground truth, optionally changed."""
    gt = _gt(synth)
    (out / "fit").mkdir(parents=True, exist_ok=True)
    poses = {k: gt[k] for k in ("K", "T_cam_to_hand", "T_hand_to_obj", "articulation", "shape", "side", "image_size")}
    poses.update(overrides)
    np.savez(out / "fit" / "poses.npz", **poses)
    if mesh is None:
        shutil.copy(GroundTruth.mesh_file(synth), out / "fit" / "object.ply")
    else:
        mesh.export(out / "fit" / "object.ply")


def test_ground_truth_as_prediction_is_perfect(synth, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(synth / "hand", out / "hand")
    _write_fit(out, synth)
    # The fit's saved starting point: here a sphere around the object at the true poses.
    gt = _gt(synth)
    mesh = trimesh.load(GroundTruth.mesh_file(synth), force="mesh")
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5 * float(max(mesh.extents)))
    sphere.export(out / "fit" / "object_init.ply")
    np.savez(out / "fit" / "init.npz", T_hand_to_obj=gt["T_hand_to_obj"])
    result = evaluate(out, synth, n_points=POINTS)
    fit = result["fit"]
    # Different samples of the same surface (3000 points: ~4 mm apart on a bottle).
    assert fit["object"]["f5"] > 0.99 and fit["object"]["f10"] == pytest.approx(1.0)
    assert fit["object"]["cd"] < 0.2  # sampling floor only (different samples on the same surface)
    assert fit["cd_h"] < 0.2
    assert fit["hand"]["kp_cam_mm"] < 1e-3 and fit["hand"]["kp_rel_mm"] < 1e-3
    assert fit["cd_h_true_object"] < 0.2
    # The noisy initialisation is scored too, and is clearly worse.
    init = result["init"]
    assert init["hand"]["kp_cam_mm"] > 5.0 and init["hand"]["kp_rel_mm"] > 1.0
    assert init["cd_h_true_object"] > fit["cd_h"] + 0.5
    assert init["object"]["f5"] < 0.9 and init["cd_h"] > fit["cd_h"]  # the sphere is scored as the start
    assert len(init["hand"]["per_frame"]["kp_cam_mm"]) == FRAMES
    saved = json.loads((out / "eval.json").read_text())
    assert saved["fit"]["cd_h"] == pytest.approx(fit["cd_h"])
    buf = io.StringIO()
    from rich.console import Console

    print_eval_table(result, Console(file=buf, width=120))
    assert "F@10mm" in buf.getvalue() and "CD_h" in buf.getvalue()


def test_alignment_forgives_the_object_frame_but_cd_h_does_not(synth, tmp_path):
    """A translated prediction: same shape after alignment; in the hand frame it is 1 cm off."""
    mesh = trimesh.load(GroundTruth.mesh_file(synth), force="mesh")
    shift = np.array([0.01, 0.0, 0.0])
    moved = mesh.copy()
    moved.apply_translation(shift)
    out = tmp_path / "shifted"
    _write_fit(out, synth, mesh=moved)
    result = evaluate(out, synth, n_points=POINTS)
    assert result["fit"]["object"]["f5"] > 0.97
    # Each point moved by 1 cm: both Chamfer terms ~ (1 cm)^2, less where the surface slides onto itself.
    assert 0.5 < result["fit"]["cd_h"] < 2.2
    assert result["init"] is None


def test_scaled_prediction_is_aligned_with_scale(synth, tmp_path):
    mesh = trimesh.load(GroundTruth.mesh_file(synth), force="mesh")
    big = mesh.copy()
    big.apply_scale(1.2)
    out = tmp_path / "scaled"
    _write_fit(out, synth, mesh=big)
    result = evaluate(out, synth, n_points=POINTS)
    assert result["fit"]["object"]["f10"] > 0.95
    assert result["fit"]["cd_h"] > 0.5  # in the hand frame the wrong size shows


def test_wrong_hand_pose_is_measured(synth, tmp_path):
    gt = _gt(synth)
    T = gt["T_cam_to_hand"].copy()
    T[:, :3, 3] += np.array([0.0, 0.0, 0.02], np.float32)  # camera -> hand translation off by 2 cm
    out = tmp_path / "pose"
    _write_fit(out, synth, T_cam_to_hand=T)
    result = evaluate(out, synth, n_points=POINTS)
    assert result["fit"]["hand"]["kp_cam_mm"] == pytest.approx(20.0, abs=0.01)
    assert result["fit"]["hand"]["kp_rel_mm"] < 1e-3


def test_errors(synth, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="nothing to evaluate"):
        evaluate(empty, synth)
    with pytest.raises(UserError, match="no ground truth"):
        evaluate(synth, empty)
    assert resolve_gt_dir(synth / "gt") == resolve_gt_dir(synth)
    bad = tmp_path / "bad"
    gt = _gt(synth)
    _write_fit(bad, synth, T_hand_to_obj=gt["T_hand_to_obj"][:2])
    with pytest.raises(UserError, match="frames"):
        evaluate(bad, synth, n_points=POINTS)


def test_a_flat_mesh_is_bad_input(synth, tmp_path):
    """The metrics raise ValueError on a mesh without area; eval turns the user's mesh into a UserError."""
    flat = trimesh.Trimesh(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]), process=False)
    out = tmp_path / "out"
    _write_fit(out, synth)
    flat.export(out / "flat.ply")
    with pytest.raises(UserError, match="zero surface area") as err:
        evaluate(out, synth, pred_mesh=out / "flat.ply", n_points=POINTS)
    assert "\n" not in str(err.value)
