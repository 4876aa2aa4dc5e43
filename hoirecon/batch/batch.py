"""Command `batch`: run the pipeline on many clips, one output folder each, with one report.

``DIR/<clip name>/`` is each clip's usual output folder (stages cached, ``run.json``,
``run.log``); ``DIR/batch.jsonl``, ``DIR/batch.csv`` and ``DIR/index.html`` cover the batch.

Resuming: a clip whose earlier record (in ``DIR/batch.jsonl``) says done with the same
settings, and whose stages are all done, is not run again; any other clip runs ``hoirecon
run``, which resumes through the stage cache. A clip that died (a signal, out of memory) is
run once more; one that failed on its own (exit 1 or 2) is not.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hoirecon.batch.clips import ClipJob, plan_clips
from hoirecon.batch.executors import LocalExecutor, RayExecutor, default_workers
from hoirecon.batch.index import write_index
from hoirecon.batch.report import JSONL, append_record, clip_record, read_records, summary_table, write_reports
from hoirecon.batch.task import ClipTask, current_stage, run_argv
from hoirecon.errors import UserError
from hoirecon.pipeline.hashing import config_digest
from hoirecon.pipeline.report import QUIET, Reporter
from hoirecon.pipeline.runner import STAGE_ORDER, output_lock, status_table

MAX_ATTEMPTS = 2  # a clip that died is retried once
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class BatchConfig:
    """Settings of `hoirecon batch` (CLI: ``hoirecon batch CLIPS... --out DIR [run options]``).

    inputs: clip files, folders or glob patterns. manifest: CSV/JSON list of clips with settings.
    category: the category of clips whose manifest row gives none.
    run_options: further ``hoirecon run`` options, passed to every clip as given (e.g. ("--prior", "none")).
    workers: local clip processes at once (None: what fits the cores and memory).
    ray / ray_address: run the clips as Ray tasks (on the cluster at ray_address, else $RAY_ADDRESS or local).
    rerun_done: run clips again even when an earlier batch finished them with the same settings
        (each still skips its fresh stages).
    """

    inputs: tuple[str, ...]
    out: str
    manifest: Optional[str] = None
    category: Optional[str] = None
    run_options: tuple[str, ...] = ()
    device: str = "cpu"
    workers: Optional[int] = None
    ray: bool = False
    ray_address: Optional[str] = None
    rerun_done: bool = False


def source_stamp(source: str) -> list:
    """Size and modification time of a clip (of each image of a folder clip): a cheap 'did it change?'."""
    path = Path(source)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def clip_settings(task: ClipTask) -> str:
    """Digest of everything that decides a clip's results: its run arguments and its source's stamp."""
    return config_digest({"argv": run_argv(task), "source": source_stamp(task.job.source)})[:16]


def is_fresh(record: Optional[dict], task: ClipTask, settings: str) -> bool:
    """An earlier batch finished this clip with these settings, and every stage of it is still done."""
    if not record or record.get("status") != "done" or record.get("settings") != settings:
        return False
    from hoirecon.stages.registry import STAGES

    rows = status_table(Path(task.out), [STAGES[n] for n in STAGE_ORDER])
    return all(r["state"] == "done" for r in rows)


def _make_tasks(jobs: list[ClipJob], cfg: BatchConfig, out_dir: Path) -> list[ClipTask]:
    tasks = []
    for job in jobs:
        category = job.category or cfg.category
        if not category:
            raise UserError(f"clip {job.name} has no category: pass --category or give one in the manifest")
        tasks.append(ClipTask(job, str(out_dir / job.name), category, tuple(cfg.run_options), cfg.device))
    return tasks


def _progress_text(done: int, failed: int, running: list[ClipTask]) -> str:
    stages = ", ".join(f"{t.job.name}: {current_stage(Path(t.out)) or 'starting'}" for t in running[:4])
    more = f" +{len(running) - 4}" if len(running) > 4 else ""
    return f"clips: {done} done, {failed} failed, {len(running)} running" + (f" ({stages}{more})" if running else "")


def _executor(cfg: BatchConfig):
    if cfg.ray or cfg.ray_address:
        return RayExecutor(cfg.ray_address, cfg.device)
    return LocalExecutor(default_workers() if cfg.workers is None else cfg.workers)


def _schedule(executor, tasks: list[ClipTask], settings: dict[str, str], on_record, task_bar) -> None:
    """Run ``tasks`` to the end on ``executor``; ``on_record(record)`` as each clip finishes for good."""
    pending = deque(tasks)
    attempts = {t.job.name: 0 for t in tasks}
    counts = {"done": 0, "failed": 0}
    while pending or executor.running():
        while pending and executor.free_slots() > 0:
            task = pending.popleft()
            attempts[task.job.name] += 1
            executor.submit(task)
        for task, outcome in executor.poll(POLL_SECONDS):
            if outcome.died and attempts[task.job.name] < MAX_ATTEMPTS:
                pending.appendleft(task)  # died (killed, out of memory): once more, first in line
                continue
            record = clip_record(task, outcome, attempts[task.job.name], settings[task.job.name])
            counts[record["status"]] += 1
            on_record(record)
            task_bar.advance()
        task_bar.update(description=_progress_text(counts["done"], counts["failed"], executor.running()))


def run_batch(cfg: BatchConfig, reporter: Reporter = QUIET) -> dict:
    """Run every clip of the batch (resuming an earlier one), write the reports, return the summary."""
    t0 = time.perf_counter()
    out_dir = Path(cfg.out).resolve()
    jobs = plan_clips(list(cfg.inputs), Path(cfg.manifest) if cfg.manifest else None)
    tasks = _make_tasks(jobs, cfg, out_dir)
    executor = _executor(cfg)  # before any file is written: a missing Ray is bad input
    try:
        paths, final, to_run = _run_locked(cfg, out_dir, tasks, executor, reporter)
    finally:
        executor.stop()
    if final:
        reporter.info(summary_table(final))
    seconds = time.perf_counter() - t0
    done = sum(r["status"] == "done" for r in final)
    return {
        "out": str(out_dir), "clips": len(final), "done": done, "failed": len(final) - done,
        "skipped": sum(bool(r.get("skipped")) for r in final), "seconds": round(seconds, 3),
        "clips_per_hour": round(len(to_run) * 3600 / seconds, 2) if to_run else None,
        "reports": paths, "results": final,
    }


def _run_locked(cfg: BatchConfig, out_dir: Path, tasks: list[ClipTask], executor, reporter: Reporter):
    """The batch proper, holding DIR's lock: skip fresh clips, run the others, write the reports."""
    with output_lock(out_dir):
        earlier = read_records(out_dir / JSONL)
        settings = {t.job.name: clip_settings(t) for t in tasks}
        records: dict[str, dict] = {}
        for task in tasks:
            if not cfg.rerun_done and is_fresh(earlier.get(task.job.name), task, settings[task.job.name]):
                records[task.job.name] = {**earlier[task.job.name], "skipped": True}
        to_run = [t for t in tasks if t.job.name not in records]
        ordered = lambda: [records[t.job.name] for t in tasks if t.job.name in records]  # noqa: E731

        def on_record(record: dict) -> None:
            records[record["clip"]] = record
            append_record(out_dir / JSONL, record)
            write_index(out_dir, ordered())

        reporter.info(f"batch: {len(tasks)} clips, {len(records)} fresh, {len(to_run)} to run "
                      f"({'ray' if isinstance(executor, RayExecutor) else f'{executor.workers} local workers'})")
        with reporter.task("clips", total=len(tasks)) as bar:
            bar.update(completed=len(records))
            _schedule(executor, to_run, settings, on_record, bar)
        final = ordered()
        paths = write_reports(out_dir, final)
        paths["index"] = str(write_index(out_dir, final))
    return paths, final, to_run
