"""`hoirecon synth` through the CLI: a folder whose frames/masks/hand stages are done, with ground truth."""

from __future__ import annotations

import json

import numpy as np

from conftest import run_cli


def test_synth_cli_makes_a_fit_ready_folder(tmp_path):
    out = tmp_path / "s"
    code, stdout, err = run_cli("synth", "--category", "bottle", "--out", str(out), "--frames", "4", "--size", "64",
                                "--seed", "3", "--json")
    assert code == 0, err
    assert json.loads(stdout)["ok"]
    code, stdout, _ = run_cli("status", str(out), "--json")
    states = {r["stage"]: r["state"] for r in json.loads(stdout)["stages"]}
    assert states == {"frames": "done", "masks": "done", "hand": "done", "fit": "missing", "export": "missing"}
    gt = np.load(out / "gt" / "gt.npz")
    hands = np.load(out / "hand" / "hands.npz")
    assert gt["T_cam_to_hand"].shape == (4, 4, 4) and hands["articulation"].shape == (4, 45)
    # the hand init is noisy, not the ground truth
    assert not np.allclose(gt["T_cam_to_hand"], hands["T_cam_to_hand"])


def test_synth_cli_rejects_unknown_category(tmp_path):
    code, _, err = run_cli("synth", "--category", "spaceship", "--out", str(tmp_path / "s"))
    assert code == 2 and "unknown category" in err and len(err.strip().splitlines()) == 1
