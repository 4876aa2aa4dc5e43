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
    assert m["stage"] == "b" and m["status"] == "done" and m["inputs"]["a"] == read_manifest(tmp_path / "a")["output_digest"]
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
