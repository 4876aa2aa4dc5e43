"""Selecting one of the paper's backends without its checkpoint: one line naming the file, exit 2."""

from __future__ import annotations

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def synth_out(tmp_path_factory):
    from hoirecon.synth.generator import generate_clip

    out = tmp_path_factory.mktemp("s") / "clip"
    generate_clip("mug", out, frames=3, size=64, seed=2)
    return out


@pytest.mark.parametrize("args,file", [
    (["fit", "{out}", "--prior", "diffhoi", "--category", "mug"], "diffhoi/ddpm2d/checkpoints/last.ckpt"),
    (["hand", "{out}", "--backend", "frankmocap", "--force"], "frankmocap/"),
    (["hand", "{out}", "--hand-model", "mano", "--force"], "mano/MANO_RIGHT.pkl"),
])
def test_missing_checkpoint_is_one_line_exit_2(synth_out, tmp_path, monkeypatch, args, file):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path / "empty"))
    code, _, err = run_cli(*[a.format(out=synth_out) for a in args], "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and file in lines[0] and "Traceback" not in err, err


def test_fit_rejects_unknown_prior(synth_out):
    code, _, err = run_cli("fit", str(synth_out), "--prior", "magic", "--quiet")
    assert code == 2 and "unknown prior" in err
