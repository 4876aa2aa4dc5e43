"""`hoirecon run` end to end on a tiny synthetic clip, then export glb and obj and load them back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from hoirecon.stages.outputs import ExportOutput, FitPoses


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from hoirecon.synth.generator import generate_clip

    src = tmp_path_factory.mktemp("src")
    generate_clip("mug", src, frames=6, size=160, seed=1)
    return src / "video.mp4"  # boxes.json sits beside it, as a user would leave it


@pytest.fixture(scope="module")
def run_out(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "o"
    code, stdout, err = run_cli("run", str(clip), "--category", "mug", "--out", str(out), "--steps", "30",
                                "--quiet", "--json")
    assert code == 0, err
    return out, json.loads(stdout)


def test_run_produces_every_stage(run_out):
    out, summary = run_out
    assert summary["ok"] and list(summary["stages"]) == ["frames", "masks", "hand", "fit", "export"]
    assert all(s["status"] == "ran" for s in summary["stages"].values())
    outputs = summary["stages"]["export"]["outputs"]
    for key in ("glb", "object_mesh", "turntable", "side_by_side", "summary"):
        assert (out / "export").exists() and outputs[key].startswith(str(out))


def test_second_run_is_cached_and_force_reruns_from_the_stage_named(run_out, clip):
    out, _ = run_out
    code, stdout, _ = run_cli("run", str(clip), "--category", "mug", "--out", str(out), "--steps", "30", "--quiet",
                              "--json")
    assert code == 0
    assert all(s["status"] == "cached" for s in json.loads(stdout)["stages"].values())
    code, stdout, _ = run_cli("run", str(clip), "--category", "mug", "--out", str(out), "--steps", "30", "--quiet",
                              "--json", "--force", "export")  # the runner's own tests force earlier stages
    status = {k: v["status"] for k, v in json.loads(stdout)["stages"].items()}
    assert code == 0 and status == {"frames": "cached", "masks": "cached", "hand": "cached", "fit": "cached",
                                    "export": "ran"}


def test_glb_has_object_and_hand_animated_one_key_per_frame(run_out):
    import pygltflib
    import trimesh

    out, _ = run_out
    glb = pygltflib.GLTF2().load(str(out / "export" / ExportOutput.GLB))
    assert len(glb.meshes) >= 2 and len({m.name for m in glb.materials}) >= 2
    assert glb.animations, "no animation in the glb"
    n_frames = len(np.load(out / "fit" / FitPoses.FILE)["T_cam_to_hand"])
    for sampler in glb.animations[0].samplers:
        assert glb.accessors[sampler.input].count == n_frames
    scene = trimesh.load(out / "export" / ExportOutput.GLB)
    assert len(scene.geometry) >= 2


def test_export_obj_loads_back(run_out):
    import trimesh

    out, _ = run_out
    code, _, err = run_cli("export", str(out), "--format", "obj", "--no-pictures", "--quiet")
    assert code == 0, err
    mesh = trimesh.load(out / "export" / "object.obj", force="mesh")
    assert len(mesh.faces) > 100 and mesh.is_watertight
    hands = sorted((out / "export" / "hands").glob("*.obj"))
    assert len(hands) == len(np.load(out / "fit" / FitPoses.FILE)["T_cam_to_hand"])
