"""`hoirecon batch`: clips and manifests, one process per clip, retries, reports, resuming, Ray, the pages."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from hoirecon.batch.batch import BatchConfig, _schedule, run_batch
from hoirecon.batch.clips import ClipJob, clip_names, expand_inputs, plan_clips, read_clip_list
from hoirecon.batch.report import read_records
from hoirecon.batch.task import ClipOutcome, ClipTask, read_outcome, run_argv
from hoirecon.errors import UserError

# the cheapest run that still goes through every stage
RUN_OPTIONS = ("--prior", "none", "--steps", "10")


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- which clips


def test_inputs_expand_files_folders_and_globs(tmp_path):
    a = _touch(tmp_path / "videos" / "a.mp4")
    b = _touch(tmp_path / "videos" / "b.MOV")
    _touch(tmp_path / "videos" / "notes.txt")
    images = tmp_path / "tree" / "clip3"
    _touch(images / "000.png")
    _touch(tmp_path / "tree" / "clip4" / "video.mp4")
    assert expand_inputs([str(tmp_path / "videos")]) == [a.resolve(), b.resolve()]
    assert expand_inputs([str(tmp_path / "videos" / "*.mp4"), str(a)]) == [a.resolve()]  # no repeats
    assert expand_inputs([str(tmp_path / "tree")]) == [images.resolve(), (tmp_path / "tree/clip4/video.mp4").resolve()]
    with pytest.raises(UserError, match="not found"):
        expand_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(UserError, match="no clip matches"):
        expand_inputs([str(tmp_path / "*.avi")])


def test_names_are_stems_with_parents_only_where_two_clash():
    names = clip_names([Path("/d/s1/video.mp4"), Path("/d/s2/video.mp4"), Path("/d/other.mp4")])
    assert names == ["s1_video", "s2_video", "other"]


def test_manifest_csv_and_json_resolve_paths_and_check_values(tmp_path):
    clip = _touch(tmp_path / "clips" / "a.mp4")
    boxes = _touch(tmp_path / "clips" / "a.json", b"{}")
    (tmp_path / "m.csv").write_text("clip,category,boxes,focal\nclips/a.mp4,kettle,clips/a.json,500\n")
    assert read_clip_list(tmp_path / "m.csv") == [ClipJob("", str(clip), "kettle", str(boxes), 500.0)]
    (tmp_path / "m.json").write_text(json.dumps({"clips": [{"clip": "clips/a.mp4", "name": "first"}]}))
    assert plan_clips([], tmp_path / "m.json") == [ClipJob("first", str(clip))]
    (tmp_path / "bad.csv").write_text("clip,focal\nclips/a.mp4,-3\n")
    with pytest.raises(UserError, match="row 1: focal must be a positive number"):
        read_clip_list(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("clip,colour\nclips/a.mp4,red\n")
    with pytest.raises(UserError, match="unknown column"):
        read_clip_list(tmp_path / "bad2.csv")


def test_run_argv_carries_the_clip_settings_and_asks_for_json(tmp_path):
    task = ClipTask(ClipJob("a", "/c/a.mp4", None, "/c/a.json", 500.0), str(tmp_path / "a"), "mug", RUN_OPTIONS)
    argv = run_argv(task)
    assert argv[:4] == ["run", "/c/a.mp4", "--out", str(tmp_path / "a")]
    for pair in (["--category", "mug"], ["--boxes", "/c/a.json"], ["--focal", "500.0"], ["--prior", "none"]):
        assert any(argv[i:i + 2] == pair for i in range(len(argv)))
    assert argv[-2:] == ["--quiet", "--json"]


# ---------------------------------------------------------------- how a clip ended


def test_outcome_tells_a_death_from_a_failure(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"ok": False, "error": "input not found: x", "exit_code": 2}))
    bad = read_outcome(tmp_path, 2, 1.0)
    assert (bad.exit_code, bad.error, bad.died) == (2, "input not found: x", False)
    (tmp_path / "run.json").write_text("")
    killed = read_outcome(tmp_path, -signal.SIGKILL, 1.0)
    assert killed.died and killed.error == "killed by SIGKILL"
    (tmp_path / "run.log").write_text("hoirecon: error: internal error: MemoryError: (set HOIRECON_DEBUG=1)\n")
    assert read_outcome(tmp_path, 1, 1.0).died


class _FakeExecutor:
    """Ends each clip with the next outcome scripted for it."""

    def __init__(self, script: dict[str, list[ClipOutcome]]):
        self.script = script
        self.queue: list[ClipTask] = []

    def free_slots(self):
        return 1

    def running(self):
        return self.queue

    def submit(self, task):
        self.queue.append(task)

    def poll(self, timeout):
        done = [(t, self.script[t.job.name].pop(0)) for t in self.queue]
        self.queue = []
        return done


class _Bar:
    def advance(self, n=1):
        pass

    def update(self, **fields):
        pass


def test_a_clip_that_died_is_retried_once_and_a_failed_one_never(tmp_path):
    died = ClipOutcome(-9, 1.0, "killed by SIGKILL", died=True)
    script = {"dies_once": [died, ClipOutcome(0, 1.0)], "dies_twice": [died, died],
              "bad_input": [ClipOutcome(2, 1.0, "cannot read video")]}
    tasks = [ClipTask(ClipJob(n, f"/c/{n}.mp4"), str(tmp_path / n), "mug") for n in script]
    records = []
    _schedule(_FakeExecutor(script), tasks, {n: "s" for n in script}, records.append, _Bar())
    got = {r["clip"]: (r["status"], r["attempts"], r["exit_code"]) for r in records}
    assert got == {"dies_once": ("done", 2, 0), "dies_twice": ("failed", 2, -9), "bad_input": ("failed", 1, 2)}


def test_records_of_a_killed_batch_ignore_a_cut_line(tmp_path):
    (tmp_path / "batch.jsonl").write_text('{"clip": "a", "status": "failed"}\n{"clip": "a", "status": "done"}\n'
                                          '{"clip": "b", "sta')
    assert {k: v["status"] for k, v in read_records(tmp_path / "batch.jsonl").items()} == {"a": "done"}


def test_bad_batch_input_is_exit_2(tmp_path, monkeypatch):
    from hoirecon.cli import main

    assert main(["batch", "--out", str(tmp_path / "o"), "-c", "mug"]) == 2  # no clips
    _touch(tmp_path / "a.mp4")
    assert main(["batch", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "o")]) == 2  # no category
    assert main(["batch", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "o"), "-c", "mug",
                 "--workers", "0"]) == 2
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["batch", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "o"), "-c", "mug", "--ray"]) == 2
    assert not (tmp_path / "o" / "batch.jsonl").exists()


def test_without_ray_the_error_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from hoirecon.cli import main\n"
            f"sys.exit(main(['batch', {str(_touch(tmp_path / 'a.mp4'))!r}, '--out', {str(tmp_path / 'o')!r}, "
            "'-c', 'mug', '--ray']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "hoirecon: error: --ray needs Ray: pip install 'hoirecon[ray]'"


# ---------------------------------------------------------------- real batches on tiny clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two tiny synthetic clips (s1/video.mp4, s2/video.mp4, each with its boxes.json) and a corrupt one."""
    from hoirecon.synth.generator import generate_clip

    root = tmp_path_factory.mktemp("clips")
    for seed in (1, 2):
        generate_clip("mug", root / f"s{seed}", frames=8, size=96, seed=seed)
    _touch(root / "bad" / "video.mp4", os.urandom(4096))
    return root


@pytest.fixture(scope="module")
def batch_dir(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "B"
    code, stdout, err = run_cli("batch", str(clips), "--out", str(out), "-c", "mug", "--workers", "2",
                                *RUN_OPTIONS, "--json")
    return out, code, json.loads(stdout), err


def _report(out: Path) -> dict[str, tuple]:
    lines = [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    return {r["clip"]: (r["status"], r["exit_code"]) for r in lines}


def test_batch_of_three_gives_two_done_and_one_failed(batch_dir):
    out, code, summary, err = batch_dir
    assert code == 1 and err.strip().endswith(f"1 of 3 clips failed: see {out.resolve() / 'batch.jsonl'}")
    assert (summary["done"], summary["failed"], summary["ok"]) == (2, 1, False)
    assert _report(out) == {"bad_video": ("failed", 2), "s1_video": ("done", 0), "s2_video": ("done", 0)}
    records = read_records(out / "batch.jsonl")
    bad = records["bad_video"]
    assert "cannot read video" in bad["error"] and bad["attempts"] == 1 and bad["stages"] == {}
    for name in ("s1_video", "s2_video"):
        r = records[name]
        assert r["error"] == "" and r["attempts"] == 1 and not r["skipped"]
        assert set(r["stages"]) == {"frames", "masks", "hand", "fit", "export"}
        assert 0 <= r["metrics"]["fit_iou_object"] <= 1 and "masks_iou_hand" in r["metrics"]
        assert 0 <= r["metrics"]["fit_mesh_iou_object"] <= 1
        assert Path(r["view"]) == out.resolve() / name / "export" / "view.html" and Path(r["view"]).is_file()
    csv_lines = (out / "batch.csv").read_text().splitlines()
    assert csv_lines[0].startswith("clip,status,exit_code") and len(csv_lines) == 4
    index = (out / "index.html").read_text()
    assert 'href="s1_video/export/view.html"' in index and 'src="s2_video/export/summary.png"' in index
    assert "bad_video" in index


def test_rerun_skips_the_done_clips(batch_dir, clips):
    out, _, _, _ = batch_dir
    t0 = time.perf_counter()
    code, stdout, _ = run_cli("batch", str(clips), "--out", str(out), "-c", "mug", "--workers", "2", *RUN_OPTIONS,
                              "--json")
    summary = json.loads(stdout)
    assert code == 1 and summary["skipped"] == 2 and time.perf_counter() - t0 < 60
    assert _report(out) == {"bad_video": ("failed", 2), "s1_video": ("done", 0), "s2_video": ("done", 0)}
    assert not read_records(out / "batch.jsonl")["bad_video"]["skipped"]  # a failed clip is tried again


def test_same_batch_on_ray_gives_the_same_report(batch_dir, clips):
    ray = pytest.importorskip("ray")
    out, _, _, _ = batch_dir
    before = read_records(out / "batch.jsonl")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # --rerun-done: every clip goes through a Ray task (their stages are cached, so it is quick)
        summary = run_batch(BatchConfig(inputs=(str(clips),), out=str(out), category="mug", run_options=RUN_OPTIONS,
                                        ray=True, rerun_done=True))
    finally:
        ray.shutdown()
    assert (summary["done"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    after = read_records(out / "batch.jsonl")
    for name, r in after.items():
        keep = ("status", "exit_code", "error", "attempts", "metrics", "view")
        assert {k: r[k] for k in keep} == {k: before[name][k] for k in keep}
        assert set(r["stages"]) == set(before[name]["stages"])  # their seconds: 0 now, the stages are cached


def _lock_is_free(folder: Path) -> bool:
    fd = os.open(folder / ".hoirecon.lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_killed_batch_rerun_finishes_without_redoing_done_clips(batch_dir, clips, tmp_path):
    done_dir, _, _, _ = batch_dir
    out = tmp_path / "K"
    # s1 finished before (its output folder as a finished batch left it); s2 got as far as its hand stage
    shutil.copytree(done_dir / "s1_video", out / "s1_video")
    shutil.copytree(done_dir / "s2_video", out / "s2_video", ignore=shutil.ignore_patterns("fit", "export"))
    argv = [sys.executable, "-m", "hoirecon", "batch", str(clips / "s1"), str(clips / "s2"), "--out", str(out),
            "-c", "mug", "--workers", "1", *RUN_OPTIONS, "--quiet"]
    batch = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "s1_video" not in read_records(out / "batch.jsonl") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert read_records(out / "batch.jsonl")["s1_video"]["status"] == "done"
        time.sleep(2)  # s2 is in flight now
    finally:
        batch.kill()  # SIGKILL: no cleanup in the batch itself
        batch.wait()
    time.sleep(1)
    assert _lock_is_free(out / "s2_video"), "the killed batch's clip process outlived it"
    assert "s2_video" not in read_records(out / "batch.jsonl")
    code, stdout, err = run_cli(*argv[3:-1], "--json")
    summary = json.loads(stdout)
    assert code == 0, err
    records = {r["clip"]: r for r in summary["results"]}
    assert records["s1_video"]["skipped"] and not records["s2_video"]["skipped"]
    assert records["s2_video"]["status"] == "done"
    assert set(records["s2_video"]["stages"]) == {"frames", "masks", "hand", "fit", "export"}


@pytest.mark.slow
def test_pages_open_in_headless_chromium(batch_dir, tmp_path):
    """view.html and index.html in a real browser: model loaded, canvas not blank, no error logged."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium (apt-get install chromium)")
    out, _, _, _ = batch_dir
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "check_viewer.py"),
                        str(out / "s1_video" / "export" / "view.html"), str(out / "index.html"),
                        "--shots", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
