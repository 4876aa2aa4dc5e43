"""One clip of a batch = one ``hoirecon run`` in its own process (``hoirecon.batch.child``).

Why a process per clip, on a local machine as on a Ray node: a clip that crashes, is killed
or runs out of memory takes nothing else down, its exit code says how it ended (0 done,
1 failed run, 2 bad input, a signal: it died), and the stage cache inside ``run`` makes a
rerun resume where it stopped. The process's JSON summary goes to ``<clip out>/run.json``,
its error lines to ``<clip out>/run.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hoirecon.batch.clips import ClipJob

RUN_JSON = "run.json"
RUN_LOG = "run.log"
ERROR_PREFIX = "hoirecon: error: "
# exit lines of a run that ran out of memory without being killed (MemoryError, torch's allocator)
OUT_OF_MEMORY_WORDS = ("MemoryError", "out of memory")
# One torch/OpenMP thread per clip: the batch's parallelism is its processes (measured: 2 threads on a
# busy 2-core machine made the fit 3-10x slower, README).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ClipTask:
    """What a worker needs to run one clip: the clip, its output folder and the `run` options."""

    job: ClipJob
    out: str
    category: str
    run_options: tuple[str, ...] = ()
    device: str = "cpu"


@dataclass
class ClipOutcome:
    """How one attempt at a clip ended."""

    exit_code: int
    seconds: float
    error: str = ""
    died: bool = False
    summary: dict = field(default_factory=dict)


def run_argv(task: ClipTask) -> list[str]:
    """The ``hoirecon run`` arguments of a clip (without the program name)."""
    job = task.job
    argv = ["run", job.source, "--out", task.out, "--category", task.category, "--device", task.device]
    if job.boxes:
        argv += ["--boxes", job.boxes]
    if job.focal is not None:
        argv += ["--focal", repr(float(job.focal))]
    return argv + list(task.run_options) + ["--quiet", "--json"]


def child_env(parent_pid: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HOIRECON_THREADS", "1")
    for name in THREAD_ENV:
        env.setdefault(name, "1")
    env["HOIRECON_BATCH_PARENT"] = str(parent_pid)
    return env


def start_clip(task: ClipTask) -> subprocess.Popen:
    """Start the clip's process (stdout -> run.json, stderr -> run.log in its output folder)."""
    out = Path(task.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RUN_JSON, "wb") as stdout, open(out / RUN_LOG, "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "hoirecon.batch.child", *run_argv(task)], stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, env=child_env(os.getpid()))


def exit_is_death(exit_code: int) -> bool:
    """A process ended by a signal (Popen: negative; a shell: 128 + signal), not by its own exit."""
    return exit_code < 0 or exit_code > 128


def _signal_name(exit_code: int) -> str:
    number = -exit_code if exit_code < 0 else exit_code - 128
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _error_line(log_text: str) -> str:
    lines = [line[len(ERROR_PREFIX):] for line in log_text.splitlines() if line.startswith(ERROR_PREFIX)]
    return lines[-1] if lines else ""


def read_outcome(out: Path, exit_code: int, seconds: float) -> ClipOutcome:
    """What a finished clip process left: its JSON summary, its error line, whether it died."""
    try:
        summary = json.loads((out / RUN_JSON).read_text())
        summary = summary if isinstance(summary, dict) else {}
    except (OSError, ValueError):
        summary = {}
    try:
        log = (out / RUN_LOG).read_text(errors="replace")
    except OSError:
        log = ""
    error = "" if exit_code == 0 else str(summary.get("error") or _error_line(log))
    died = exit_is_death(exit_code) or any(w in error for w in OUT_OF_MEMORY_WORDS)
    if exit_is_death(exit_code) and not error:
        error = f"killed by {_signal_name(exit_code)}"
    if exit_code != 0 and not error:
        error = f"exited with code {exit_code} without an error line (see {out / RUN_LOG})"
    return ClipOutcome(exit_code, seconds, error, died, summary)


def run_clip(task: ClipTask) -> ClipOutcome:
    """Run one clip to the end (blocking): what a Ray task executes on its node."""
    t0 = time.perf_counter()
    process = start_clip(task)
    try:
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return read_outcome(Path(task.out), code, time.perf_counter() - t0)


def current_stage(out: Path) -> Optional[str]:
    """The stage a running clip is writing now (its ``.<stage>.tmp-<pid>`` folder), None between stages."""
    try:
        for entry in os.scandir(out):
            if entry.name.startswith(".") and ".tmp-" in entry.name and entry.is_dir():
                return entry.name[1:entry.name.index(".tmp-")]
    except OSError:
        pass
    return None
