"""`hoirecon synth` through the CLI: a folder whose frames/masks/hand stages are done, with ground truth."""

from __future__ import annotations

import json

import numpy as np

from conftest import run_cli
from hoirecon.stages.outputs import FramesMeta, GroundTruth


def test_synth_cli_makes_a_fit_ready_folder(tmp_path):
    out = tmp_path / "s"
    code, stdout, err = run_cli("synth", "--category", "bottle", "--out", str(out), "--frames", "4", "--size", "64",
                                "--seed", "3", "--json")
    assert code == 0, err
    assert json.loads(stdout)["ok"]
    code, stdout, _ = run_cli("status", str(out), "--json")
    states = {r["stage"]: r["state"] for r in json.loads(stdout)["stages"]}
    assert states == {"frames": "done", "masks": "done", "hand": "done", "fit": "missing", "export": "missing"}
    gt = np.load(GroundTruth.file(out))
    hands = np.load(out / "hand" / "hands.npz")
    assert gt["T_cam_to_hand"].shape == (4, 4, 4) and hands["articulation"].shape == (4, 45)
    # the hand init is noisy, not the ground truth
    assert not np.allclose(gt["T_cam_to_hand"], hands["T_cam_to_hand"])


def test_synth_cli_rejects_unknown_category(tmp_path):
    code, _, err = run_cli("synth", "--category", "spaceship", "--out", str(tmp_path / "s"))
    assert code == 2 and "unknown category" in err and len(err.strip().splitlines()) == 1


def test_synth_cli_fov_and_non_square_size(tmp_path):
    """--size 640x480 is 640 wide and 480 high; --fov 40 is the true horizontal field of view in gt/."""
    from hoirecon.io.video import read_rgb

    out = tmp_path / "s"
    code, stdout, err = run_cli("synth", "--category", "mug", "--out", str(out), "--frames", "2", "--size", "640x480",
                                "--fov", "40", "--seed", "1", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["size"] == [640, 480]
    assert read_rgb(out / "frames" / "000000.png").shape == (480, 640, 3)
    assert json.loads((out / "frames" / FramesMeta.FILE).read_text())["size"] == [640, 480]
    cam = json.loads((out / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())["intrinsics"]
    assert summary["intrinsics"] == cam
    assert cam["fov_deg"] == 40.0 and abs(cam["fx"] - 320.0 / np.tan(np.radians(20.0))) < 1e-3
    assert (cam["cx"], cam["cy"]) == (319.5, 239.5)
    gt = np.load(GroundTruth.file(out))
    assert gt["image_size"].tolist() == [640, 480] and abs(float(gt["K"][0, 0]) - cam["fx"]) < 1e-3


def test_synth_cli_texture(tmp_path):
    """--texture printed reaches the generator and gt/info.json; another value is refused in one line."""
    code, _, err = run_cli("synth", "--category", "mug", "--out", str(tmp_path / "bad"), "--frames", "2",
                           "--texture", "glossy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--texture" in err, err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "s"
    code, stdout, err = run_cli("synth", "--category", "mug", "--out", str(out), "--frames", "2", "--size", "64",
                                "--texture", "printed", "--seed", "1", "--json")
    assert code == 0, err
    assert json.loads(stdout)["texture"] == "printed"
    assert json.loads((out / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())["texture"] == "printed"


def test_synth_cli_rejects_bad_size_and_fov(tmp_path):
    for args in (("--size", "640x"), ("--fov", "170")):  # the other bad values: test_synth.py
        code, _, err = run_cli("synth", "--category", "mug", "--out", str(tmp_path / "s"), "--frames", "2", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert args[0] in err, (args, err)
    assert not (tmp_path / "s").exists()
