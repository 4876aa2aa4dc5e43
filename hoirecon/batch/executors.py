"""Where a batch's clip processes run: on this machine (``LocalExecutor``) or on a Ray cluster (``RayExecutor``).

Both take ``ClipTask``s and hand back ``(task, ClipOutcome)`` pairs as clips finish; the batch
decides about retries. Each clip declares what it needs: one CPU (its process runs torch on
one thread), ``MEMORY_PER_CLIP`` bytes, and one GPU with ``--device cuda``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from hoirecon.batch.task import ClipOutcome, ClipTask, read_outcome, run_clip, start_clip
from hoirecon.errors import UserError

# A 30-frame clip's fit measured about 1 GB (README); the other stages less. Room for 2 GB each.
MEMORY_PER_CLIP = 2 * 1024 ** 3
RAY_INSTALL_HINT = "--ray needs Ray: pip install 'hoirecon[ray]'"


def available_memory() -> Optional[int]:
    """Bytes of memory available now (Linux /proc/meminfo), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_workers() -> int:
    """Clip processes that fit this machine: one per CPU core, as many as MEMORY_PER_CLIP allows."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    memory = available_memory()
    by_memory = cpus if memory is None else memory // MEMORY_PER_CLIP
    return max(1, min(cpus, by_memory))


class LocalExecutor:
    """Up to ``workers`` clip processes at once on this machine."""

    def __init__(self, workers: int):
        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self._running: dict[str, tuple[ClipTask, object, float]] = {}

    def free_slots(self) -> int:
        return self.workers - len(self._running)

    def running(self) -> list[ClipTask]:
        return [task for task, _, _ in self._running.values()]

    def submit(self, task: ClipTask) -> None:
        self._running[task.job.name] = (task, start_clip(task), time.perf_counter())

    def poll(self, timeout: float) -> list[tuple[ClipTask, ClipOutcome]]:
        """Clips that finished, waiting up to ``timeout`` seconds for the first."""
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for name, (task, process, t0) in list(self._running.items()):
                code = process.poll()
                if code is not None:
                    del self._running[name]
                    done.append((task, read_outcome(Path(task.out), code, time.perf_counter() - t0)))
            if done or not self._running or time.monotonic() >= deadline:
                return done
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate the clips still running (their stage caches keep what they finished)."""
        for _, process, _ in self._running.values():
            process.terminate()
        for _, process, _ in self._running.values():
            try:
                process.wait(timeout=10)
            except Exception:
                process.kill()
        self._running.clear()


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(RAY_INSTALL_HINT) from None
    return ray


class RayExecutor:
    """Each clip one Ray task that runs the clip's process on a node; Ray queues them by their resources.

    ``address``: a running cluster (``ray start --head`` prints it); None: $RAY_ADDRESS or a local
    instance. Connected here unless the caller has already called ``ray.init``. The output folder must
    be one the nodes share (one machine, or a shared file system).
    """

    def __init__(self, address: Optional[str], device: str):
        self.ray = import_ray()
        self._owns_ray = not self.ray.is_initialized()
        if self._owns_ray:
            try:
                self.ray.init(address=address, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise UserError(f"cannot connect to the Ray cluster {address or '(local)'}: "
                                f"{' '.join(str(err).split())}") from None
        gpus = 1 if str(device).startswith("cuda") else 0
        # max_retries=0: the batch retries a clip that died itself, the same way locally and on Ray
        self._remote = self.ray.remote(run_clip).options(num_cpus=1, memory=MEMORY_PER_CLIP, num_gpus=gpus,
                                                         max_retries=0)
        self._running: dict[object, ClipTask] = {}
        self._started: dict[object, float] = {}

    def free_slots(self) -> int:
        return 1 << 30  # the cluster queues tasks until their resources are free

    def running(self) -> list[ClipTask]:
        return list(self._running.values())

    def submit(self, task: ClipTask) -> None:
        ref = self._remote.remote(task)
        self._running[ref] = task
        self._started[ref] = time.perf_counter()

    def poll(self, timeout: float) -> list[tuple[ClipTask, ClipOutcome]]:
        if not self._running:
            return []
        ready, _ = self.ray.wait(list(self._running), num_returns=len(self._running), timeout=timeout)
        done = []
        for ref in ready:
            task = self._running.pop(ref)
            seconds = time.perf_counter() - self._started.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as err:  # our task code raised: a bug, not a death
                outcome = ClipOutcome(1, seconds, f"ray task failed: {' '.join(str(err.cause).split())}")
            except self.ray.exceptions.RayError as err:  # the worker or its node died, or ran out of memory
                outcome = ClipOutcome(-9, seconds, f"ray worker died: {type(err).__name__}", died=True)
            done.append((task, outcome))
        return done

    def stop(self) -> None:
        for ref in self._running:
            self.ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns_ray:
            self.ray.shutdown()
