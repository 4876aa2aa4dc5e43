"""The cached stage runner: fresh / stale / forced / killed-and-resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import numpy as np
import pytest

from hoirecon.errors import UserError
from hoirecon.pipeline.runner import (StageDef, freshness, read_manifest, run_pipeline, status_table,
                                      write_external_stage)


@dataclass(frozen=True)
class Cfg:
    value: int = 1


CALLS: list[str] = []


def _a(ctx, cfg):
    CALLS.append("a")
    (ctx.tmp_dir / "a.txt").write_text(str(cfg.value))
    return {"value": cfg.value}


def _b(ctx, cfg):
    CALLS.append("b")
    a = (ctx.input_dir("a") / "a.txt").read_text()
    (ctx.tmp_dir / "b.txt").write_text(a + "+" + str(cfg.value))
    return {}


A = StageDef("a", "1", (), _a)
B = StageDef("b", "1", ("a",), _b)


def pipeline(a=1, b=1):
    return [(A, Cfg(a)), (B, Cfg(b))]


def test_fresh_stages_are_skipped(tmp_path):
    CALLS.clear()
    r1 = run_pipeline(tmp_path, pipeline())
    r2 = run_pipeline(tmp_path, pipeline())
    assert [r.status for r in r1] == ["ran", "ran"]
    assert [r.status for r in r2] == ["cached", "cached"]
    assert CALLS == ["a", "b"]
    m = read_manifest(tmp_path / "b")
    assert m["stage"] == "b" and m["status"] == "done"
    assert m["inputs"]["a"] == read_manifest(tmp_path / "a")["output_digest"]
    assert {"config_hash", "version", "seconds", "started", "finished"} <= set(m)


def test_config_change_recomputes_stage_and_downstream(tmp_path):
    CALLS.clear()
    run_pipeline(tmp_path, pipeline())
    CALLS.clear()
    assert freshness(tmp_path, A, Cfg(2))[0] == "stale"
    run_pipeline(tmp_path, pipeline(a=2))
    assert CALLS == ["a", "b"]
    assert (tmp_path / "b" / "b.txt").read_text() == "2+1"


def test_downstream_config_change_only_reruns_downstream(tmp_path):
    CALLS.clear()
    run_pipeline(tmp_path, pipeline())
    CALLS.clear()
    run_pipeline(tmp_path, pipeline(b=5))
    assert CALLS == ["b"]


def test_force_recomputes_from_stage(tmp_path):
    CALLS.clear()
    run_pipeline(tmp_path, pipeline())
    CALLS.clear()
    run_pipeline(tmp_path, pipeline(), force_from="b")
    assert CALLS == ["b"]
    CALLS.clear()
    run_pipeline(tmp_path, pipeline(), force_from="a")
    assert CALLS == ["a", "b"]
    with pytest.raises(UserError):
        run_pipeline(tmp_path, pipeline(), force_from="nope")


def test_code_version_change_is_stale(tmp_path):
    run_pipeline(tmp_path, pipeline())
    assert freshness(tmp_path, StageDef("a", "2", (), _a), Cfg(1))[0] == "stale"


def test_failed_stage_leaves_nothing(tmp_path):
    def boom(ctx, cfg):
        (ctx.tmp_dir / "partial.txt").write_text("x")
        raise RuntimeError("boom")

    run_pipeline(tmp_path, pipeline())
    with pytest.raises(RuntimeError):
        run_pipeline(tmp_path, [(A, Cfg(1)), (StageDef("b", "1", ("a",), boom), Cfg(9))])
    # the old committed b survives untouched, no temp folders remain
    assert (tmp_path / "b" / "b.txt").read_text() == "1+1"
    assert not list(tmp_path.glob(".b.tmp-*"))


def test_status_table_reports_stale_and_missing(tmp_path):
    run_pipeline(tmp_path, pipeline())
    run_pipeline(tmp_path, [(A, Cfg(3))])  # a changes, b not rerun
    c = StageDef("c", "1", ("b",), _b)
    rows = {r["stage"]: r["state"] for r in status_table(tmp_path, [A, B, c])}
    assert rows == {"a": "done", "b": "stale", "c": "missing"}


def test_external_stage_counts_as_done(tmp_path):
    write_external_stage(tmp_path, "a", lambda d: (d / "a.txt").write_text("7"), producer="test")
    CALLS.clear()
    run_pipeline(tmp_path, pipeline())
    assert CALLS == ["b"]
    assert (tmp_path / "b" / "b.txt").read_text() == "7+1"


def test_lock_refuses_concurrent_writer(tmp_path):
    import fcntl

    fd = os.open(tmp_path / ".hoirecon.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        script = textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from hoirecon.errors import UserError
            from hoirecon.pipeline.runner import output_lock
            try:
                with output_lock(Path({str(tmp_path)!r})):
                    pass
            except UserError as e:
                print("refused:", e); sys.exit(0)
            sys.exit(1)
        """)
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert p.returncode == 0 and "in use" in p.stdout
    finally:
        os.close(fd)


SLOW_PIPELINE = textwrap.dedent("""
    import sys, time
    from dataclasses import dataclass
    from pathlib import Path
    from hoirecon.pipeline.runner import StageDef, run_pipeline

    @dataclass(frozen=True)
    class Cfg:
        n: int = 6

    def slow(ctx, cfg):
        # resumable: completed steps are kept in scratch, which survives a kill
        for i in range(cfg.n):
            step = ctx.scratch_dir / f"step{i}"
            if not step.exists():
                (ctx.tmp_dir / f"part{i}.txt").write_text(str(i))
                Path(sys.argv[2]).write_text(str(i))  # progress beacon for the test
                time.sleep(float(sys.argv[3]))
                step.write_text("done")
        for i in range(cfg.n):
            (ctx.tmp_dir / f"part{i}.txt").write_text(str(i))
        return {"parts": cfg.n}

    def after(ctx, cfg):
        n = len(list(ctx.input_dir("slow").glob("part*.txt")))
        (ctx.tmp_dir / "count.txt").write_text(str(n))
        return {}

    run_pipeline(Path(sys.argv[1]), [(StageDef("slow", "1", (), slow), Cfg()),
                                     (StageDef("after", "1", ("slow",), after), Cfg())])
""")


def test_killed_run_leaves_no_done_stage_and_rerun_finishes(tmp_path):
    out = tmp_path / "out"
    beacon = tmp_path / "beacon"
    script = tmp_path / "pipe.py"
    script.write_text(SLOW_PIPELINE)
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(beacon), "0.5"])
    deadline = time.time() + 60
    while time.time() < deadline and not (beacon.exists() and beacon.read_text() == "2"):
        time.sleep(0.05)
    assert beacon.exists(), "the slow stage never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_manifest(out / "slow") is None and not (out / "slow").exists()
    assert read_manifest(out / "after") is None
    # the rerun resumes (steps 0-1 are not redone) and completes both stages
    subprocess.run([sys.executable, str(script), str(out), str(beacon), "0.0"], check=True)
    assert json.loads((out / "slow" / "stage.json").read_text())["status"] == "done"
    assert (out / "after" / "count.txt").read_text() == "6"
    assert not list(out.glob(".slow.tmp-*")) and not (out / ".work").exists()


# ---------------------------------------------------------------- issue 20: edits, outside inputs, leftovers


def test_hand_edited_output_is_kept_and_downstream_recomputes(tmp_path):
    run_pipeline(tmp_path, pipeline())
    (tmp_path / "a" / "a.txt").write_text("5")  # the user fixes an output by hand
    assert freshness(tmp_path, A, Cfg(1))[0] == "edited"
    rows = {r["stage"]: (r["state"], r["reason"]) for r in status_table(tmp_path, [A, B])}
    assert rows["a"][0] == "edited" and "a.txt" in rows["a"][1]
    assert rows["b"][0] == "stale"
    CALLS.clear()
    results = run_pipeline(tmp_path, pipeline())
    assert [r.status for r in results] == ["edited", "ran"] and CALLS == ["b"]
    assert (tmp_path / "b" / "b.txt").read_text() == "5+1"  # b read the edited file, not the recorded one
    assert read_manifest(tmp_path / "a")["edited"] == ["a.txt"]
    assert [r["state"] for r in status_table(tmp_path, [A, B])] == ["done", "done"]
    # --force discards the edit
    run_pipeline(tmp_path, pipeline(), force_from="a")
    assert (tmp_path / "b" / "b.txt").read_text() == "1+1"


def test_added_or_removed_output_file_is_an_edit(tmp_path):
    run_pipeline(tmp_path, pipeline())
    (tmp_path / "a" / "extra.txt").write_text("x")
    assert freshness(tmp_path, A, Cfg(1))[0] == "edited"
    (tmp_path / "a" / "extra.txt").unlink()
    assert freshness(tmp_path, A, Cfg(1))[0] == "done"
    (tmp_path / "a" / "a.txt").unlink()
    assert freshness(tmp_path, A, Cfg(1))[0] == "edited"
    assert freshness(tmp_path, B, Cfg(1))[0] == "stale"


def test_unchanged_outputs_are_not_digested_again(tmp_path, monkeypatch):
    import hoirecon.pipeline.runner as runner

    run_pipeline(tmp_path, pipeline())
    digests = []
    real = runner.tree_digest
    monkeypatch.setattr(runner, "tree_digest", lambda *a, **k: digests.append(a) or real(*a, **k))
    assert freshness(tmp_path, B, Cfg(1)) == ("done", "up to date")
    assert digests == []  # sizes and mtimes matched: no file was read
    os.utime(tmp_path / "a" / "a.txt", ns=(1, 1))  # touched, same bytes: digested once, no edit
    assert freshness(tmp_path, B, Cfg(1)) == ("done", "up to date") and len(digests) >= 1


@dataclass(frozen=True)
class SourceCfg:
    path: str


def _copy_source(ctx, cfg):
    (ctx.tmp_dir / "copy.txt").write_text(open(cfg.path).read())
    return {}


def test_status_notices_a_changed_outside_input(tmp_path):
    from pathlib import Path

    from hoirecon.stages.frames import source_digest  # UserError when the file is gone

    source = tmp_path / "source.txt"
    source.write_text("one")
    src = StageDef("src", "1", (), _copy_source, external_inputs=lambda c: {"source": source_digest(Path(c.path))},
                   config_type=SourceCfg)
    after = StageDef("after", "1", ("src",), lambda ctx, cfg: {})
    out = tmp_path / "out"
    run_pipeline(out, [(src, SourceCfg(str(source))), (after, Cfg())])
    assert [r["state"] for r in status_table(out, [src, after])] == ["done", "done"]
    source.write_text("two")
    rows = status_table(out, [src, after])
    assert [r["state"] for r in rows] == ["stale", "stale"] and "source" in rows[0]["reason"]
    assert [r.status for r in run_pipeline(out, [(src, SourceCfg(str(source))), (after, Cfg())])] == ["ran", "ran"]
    source.unlink()
    assert status_table(out, [src, after])[0]["state"] == "stale"


def test_failed_run_leaves_no_scratch_lock_or_empty_folder(tmp_path):
    def boom(ctx, cfg):
        raise RuntimeError("boom")

    def boom_after_checkpoint(ctx, cfg):
        (ctx.scratch_dir / "checkpoint").write_text("resume from here")
        raise RuntimeError("boom")

    out = tmp_path / "new"
    with pytest.raises(RuntimeError):
        run_pipeline(out, [(StageDef("a", "1", (), boom), Cfg())])
    assert not out.exists()  # the failed run created it and left nothing worth keeping
    run_pipeline(tmp_path / "o", pipeline())
    for _ in range(3):
        with pytest.raises(RuntimeError):
            run_pipeline(tmp_path / "o", [(StageDef("b", "1", ("a",), boom), Cfg(9))])
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a", "b"]
    with pytest.raises(RuntimeError):
        run_pipeline(tmp_path / "o", [(StageDef("b", "1", ("a",), boom_after_checkpoint), Cfg(9))])
    kept = list((tmp_path / "o" / ".work").iterdir())
    assert len(kept) == 1 and (kept[0] / "checkpoint").is_file()  # resumable state stays


def test_cli_status_tells_what_run_would_do(tmp_path, tiny_video):
    from conftest import make_frames, run_cli
    from hoirecon.io.masks import write_mask_folder
    from hoirecon.io.video import write_video

    masks = tmp_path / "my_masks"
    full = np.zeros((12, 48, 64), bool)
    full[:, 10:30, 10:30] = True
    write_mask_folder(masks, full, np.roll(full, 20, axis=2))
    out = tmp_path / "o"
    code, _, err = run_cli("masks", str(tiny_video), "--out", str(out), "--masks-dir", str(masks), "--quiet")
    assert code == 0, err

    def states():
        code, stdout, err = run_cli("status", str(out), "--json")
        assert code == 0, err
        return {r["stage"]: r["state"] for r in json.loads(stdout)["stages"]}

    assert states() == {"frames": "done", "masks": "done", "hand": "missing", "fit": "missing", "export": "missing"}
    write_mask_folder(masks, full, np.roll(full, 10, axis=2))  # the user's masks change
    assert states()["masks"] == "stale"
    write_video(tiny_video, make_frames()[::-1], fps=10)  # the source video changes
    assert states()["frames"] == "stale"
