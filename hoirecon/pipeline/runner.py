"""Cached, atomic execution of pipeline stages (Meshroom-style nodes with a manifest).

Layout of an output folder::

    <out>/<stage>/            committed artifacts of a stage, with stage.json (the manifest)
    <out>/.<stage>.tmp-<pid>  a stage being written (never looks complete; removed on rerun)
    <out>/.work/<stage>-<key> scratch that survives a kill (checkpoints to resume from)
    <out>/.hoirecon.lock      held while a command writes into <out>

A stage is *fresh* when its manifest exists with status ``done``, the same code version,
the same config hash and the same input digests (upstream stages' output digests and
digests of external files such as the source video). Otherwise it is recomputed, and
the stages after it become stale because their recorded input digests no longer match.

Commit protocol (why a kill at any instant is safe): outputs go to the tmp folder; the
manifest is written last inside it; the old folder is renamed aside, the tmp folder
renamed into place, then the old one deleted. Between the two renames no folder exists,
which reads as *missing*, never as done.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from contextlib import contextmanager

from hoirecon import __version__
from hoirecon.errors import UserError
from hoirecon.pipeline.hashing import config_digest, tree_digest
from hoirecon.pipeline.report import QUIET, Reporter

MANIFEST = "stage.json"
STAGE_ORDER = ("frames", "masks", "hand", "fit", "export")


@dataclass
class StageContext:
    """What a running stage may touch."""

    out_root: Path
    stage: str
    tmp_dir: Path
    scratch_dir: Path
    reporter: Reporter = QUIET
    device: str = "cpu"

    def input_dir(self, name: str) -> Path:
        """The committed folder of an upstream stage."""
        path = self.out_root / name
        if not (path / MANIFEST).is_file():
            raise UserError(f"stage '{self.stage}' needs stage '{name}' first: {path} has no results")
        return path


@dataclass(frozen=True)
class StageDef:
    """A node of the pipeline.

    run(ctx, config) writes artifacts into ``ctx.tmp_dir`` and returns a JSON-able summary.
    external_inputs(config) returns digests of files outside the output folder it reads.
    """

    name: str
    version: str
    inputs: tuple[str, ...]
    run: Callable[[StageContext, Any], dict] | None
    external_inputs: Callable[[Any], dict[str, str]] = lambda cfg: {}


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "cached"
    seconds: float
    summary: dict = field(default_factory=dict)


def read_manifest(stage_dir: Path) -> dict | None:
    """The manifest of a committed stage folder, or None if absent/unreadable."""
    try:
        return json.loads((stage_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _input_digests(out_root: Path, stage: StageDef, config: Any) -> dict[str, str]:
    digests = {}
    for name in stage.inputs:
        m = read_manifest(out_root / name)
        if m is None or m.get("status") != "done":
            raise UserError(f"stage '{stage.name}' needs stage '{name}' first: {out_root / name} has no results")
        digests[name] = m["output_digest"]
    digests.update(stage.external_inputs(config))
    return digests


def freshness(out_root: Path, stage: StageDef, config: Any) -> tuple[str, str]:
    """('done'|'stale'|'missing', reason) of ``stage`` for this config."""
    m = read_manifest(out_root / stage.name)
    if m is None or m.get("status") != "done":
        return "missing", "no results"
    if m.get("external"):
        return "done", "provided externally"
    if m.get("version") != stage.version:
        return "stale", f"code version {m.get('version')} -> {stage.version}"
    if m.get("config_hash") != config_digest(config):
        return "stale", "config changed"
    try:
        current = _input_digests(out_root, stage, config)
    except UserError as err:
        return "stale", str(err)
    if m.get("inputs") != current:
        changed = sorted(k for k in set(current) | set(m.get("inputs", {})) if current.get(k) != m.get("inputs", {}).get(k))
        return "stale", "inputs changed: " + ", ".join(changed)
    return "done", "up to date"


@contextmanager
def output_lock(out_root: Path) -> Iterator[None]:
    """Exclusive lock on an output folder, so two commands never write into it at once."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_root / ".hoirecon.lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as err:
        raise UserError(f"cannot write to output folder {out_root}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"output folder {out_root} is in use by another hoirecon process") from None
        yield
    finally:
        os.close(fd)


def _clean_leftovers(out_root: Path, name: str) -> None:
    for p in out_root.glob(f".{name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out_root.glob(f".{name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def commit_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Atomically replace ``final_dir`` by ``tmp_dir`` (same filesystem)."""
    old = final_dir.parent / f".{final_dir.name}.old-{os.getpid()}"
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)


def run_stage(out_root: Path, stage: StageDef, config: Any, *, force: bool = False,
              reporter: Reporter = QUIET, device: str = "cpu") -> StageResult:
    """Run ``stage`` unless it is fresh (or ``force``); commit its folder atomically."""
    if stage.run is None:
        raise UserError(f"stage '{stage.name}' is not implemented yet")
    state, _ = freshness(out_root, stage, config)
    final_dir = out_root / stage.name
    if state == "done" and not force:
        m = read_manifest(final_dir) or {}
        return StageResult(stage.name, "cached", 0.0, m.get("summary", {}))

    inputs = _input_digests(out_root, stage, config)
    chash = config_digest(config)
    _clean_leftovers(out_root, stage.name)
    tmp_dir = out_root / f".{stage.name}.tmp-{os.getpid()}"
    tmp_dir.mkdir(parents=True)
    # The scratch key ties resumable state to exactly this config and these inputs.
    key = config_digest({"v": stage.version, "c": chash, "i": inputs})[:16]
    scratch = out_root / ".work" / f"{stage.name}-{key}"
    if force:
        shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(out_root, stage.name, tmp_dir, scratch, reporter, device)
    started, t0 = _now(), time.perf_counter()
    try:
        summary = stage.run(ctx, config) or {}
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    manifest = {
        "stage": stage.name,
        "version": stage.version,
        "hoirecon_version": __version__,
        "config": config_to_json(config),
        "config_hash": chash,
        "inputs": inputs,
        "output_digest": tree_digest(tmp_dir),
        "status": "done",
        "started": started,
        "finished": _now(),
        "seconds": round(seconds, 3),
        "summary": summary,
    }
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    commit_dir(tmp_dir, final_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        scratch.parent.rmdir()  # only when no other stage keeps resumable state
    except OSError:
        pass
    return StageResult(stage.name, "ran", seconds, summary)


def config_to_json(config: Any) -> Any:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
                                 default=str))


def write_external_stage(out_root: Path, name: str, files_writer: Callable[[Path], None], producer: str,
                         summary: dict | None = None) -> None:
    """Commit a stage folder produced outside the runner (e.g. ``synth``'s GT masks).

    Such a folder counts as done (``external``) until it is forced or replaced.
    """
    _clean_leftovers(out_root, name)
    tmp_dir = out_root / f".{name}.tmp-{os.getpid()}"
    tmp_dir.mkdir(parents=True)
    try:
        files_writer(tmp_dir)
        manifest = {
            "stage": name, "version": "external", "hoirecon_version": __version__, "external": True,
            "producer": producer, "config": {}, "config_hash": "", "inputs": {},
            "output_digest": tree_digest(tmp_dir), "status": "done", "started": _now(), "finished": _now(),
            "seconds": 0.0, "summary": summary or {},
        }
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    commit_dir(tmp_dir, out_root / name)


def run_pipeline(out_root: Path, stages: list[tuple[StageDef, Any]], *, force_from: str | None = None,
                 reporter: Reporter = QUIET, device: str = "cpu",
                 on_result: Callable[[StageResult], None] | None = None) -> list[StageResult]:
    """Run ``stages`` in order, skipping fresh ones; ``force_from`` recomputes that stage and all after it."""
    names = [s.name for s, _ in stages]
    if force_from is not None and force_from not in names:
        raise UserError(f"--force: unknown stage '{force_from}' (choose from {', '.join(names)})")
    forcing = False
    results = []
    with output_lock(out_root):
        for stage, config in stages:
            forcing = forcing or stage.name == force_from
            result = run_stage(out_root, stage, config, force=forcing, reporter=reporter, device=device)
            results.append(result)
            if on_result:
                on_result(result)
    return results


def status_table(out_root: Path, stages: list[StageDef]) -> list[dict]:
    """Per stage: name, state (done/stale/missing), reason, seconds, finished — using the recorded configs."""
    rows = []
    upstream_bad = None
    for stage in stages:
        m = read_manifest(out_root / stage.name)
        if m is None or m.get("status") != "done":
            rows.append({"stage": stage.name, "state": "missing", "reason": "no results", "seconds": None,
                         "finished": None})
            upstream_bad = upstream_bad or stage.name
            continue
        state, reason = "done", "up to date"
        if m.get("external"):
            reason = f"provided by {m.get('producer', 'external')}"
        elif m.get("version") != stage.version:
            state, reason = "stale", f"code version {m.get('version')} -> {stage.version}"
        else:
            current = {}
            for name in stage.inputs:
                um = read_manifest(out_root / name)
                current[name] = um.get("output_digest") if um else None
            recorded = {k: v for k, v in m.get("inputs", {}).items() if k in stage.inputs}
            if recorded != current:
                state, reason = "stale", "an input stage changed"
            elif upstream_bad:
                state, reason = "stale", f"stage '{upstream_bad}' is not done"
        if state != "done":
            upstream_bad = upstream_bad or stage.name
        rows.append({"stage": stage.name, "state": state, "reason": reason, "seconds": m.get("seconds"),
                     "finished": m.get("finished")})
    return rows
