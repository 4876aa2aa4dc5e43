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

Outputs edited by hand (a mask PNG fixed after looking at ``overlay.mp4``): the manifest
records each file's size and mtime, so a cheap stat finds a changed, added or removed file;
only then is the folder digested again. A stage whose files differ from what it recorded is
*edited*: a rerun keeps the edit (the manifest takes the new digest and lists the edited
files) instead of recomputing it, and every stage that read the old files is stale, because
the digest a downstream stage compares with is always that of the files as they are now.
``--force <stage>`` recomputes it and discards the edit.

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
    config_inputs(config) names upstream stages a setting adds to ``inputs``, each with the
    line that tells a user how to make it ({stage: hint}; e.g. ``fit --init pose`` reads
    ``pose``, which is off the main chain and never run for it).
    outputs names the classes of ``hoirecon.stages.outputs`` that describe what the stage writes
    (names, so that declaring a stage imports nothing; ``tests/test_stage_outputs.py`` resolves them).
    """

    name: str
    version: str
    inputs: tuple[str, ...]
    run: Callable[[StageContext, Any], dict] | None
    external_inputs: Callable[[Any], dict[str, str]] = lambda cfg: {}
    # Rebuilds the config from the manifest's JSON, so that ``status`` digests the same
    # external files a rerun would (None: the recorded JSON dict stands in for the config).
    config_type: type | None = None
    config_inputs: Callable[[Any], dict[str, str]] = lambda cfg: {}
    outputs: tuple[str, ...] = ()


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "cached" | "edited" (kept as edited by hand)
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


def file_stats(stage_dir: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of a stage folder's files, its manifest left out."""
    stats = {}
    for p in sorted(q for q in stage_dir.rglob("*") if q.is_file()):
        rel = p.relative_to(stage_dir).as_posix()
        if rel != MANIFEST:
            st = p.stat()
            stats[rel] = [st.st_size, st.st_mtime_ns]
    return stats


def edited_files(stage_dir: Path, manifest: dict) -> tuple[str, list[str]]:
    """(digest of the stage's files as they are now, the files changed since it was recorded).

    Cheap when nothing changed: sizes and mtimes are compared first, and the folder is only
    digested again when one differs (a file touched but not changed is then no edit).
    Manifests written before files were recorded cannot tell, and count as unedited.
    """
    recorded = manifest.get("files")
    if recorded is None:
        return manifest["output_digest"], []
    now = file_stats(stage_dir)
    differ = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
    if not differ:
        return manifest["output_digest"], []
    digest = tree_digest(stage_dir, exclude=(MANIFEST,))
    return digest, ([] if digest == manifest["output_digest"] else differ)


def _few_files(files: list[str], shown: int = 3) -> str:
    return ", ".join(files[:shown]) + (f" (+{len(files) - shown} more)" if len(files) > shown else "")


def _input_digests(out_root: Path, stage: StageDef, config: Any) -> dict[str, str]:
    """Digests of what ``stage`` reads now: upstream stages' files (edits included) and external files."""
    digests = {}
    hints = {name: "" for name in stage.inputs} | stage.config_inputs(config)
    for name, hint in hints.items():
        m = read_manifest(out_root / name)
        if m is None or m.get("status") != "done":
            raise UserError(f"stage '{stage.name}' needs stage '{name}' first: {out_root / name} has no results"
                            + (f"; {hint}" if hint else ""))
        digests[name] = edited_files(out_root / name, m)[0]
    digests.update(stage.external_inputs(config))
    return digests


def freshness(out_root: Path, stage: StageDef, config: Any) -> tuple[str, str]:
    """('done'|'edited'|'stale'|'missing', reason) of ``stage`` for this config.

    'edited': up to date but its files were changed by hand since it ran (a rerun keeps them).
    """
    m = read_manifest(out_root / stage.name)
    if m is None or m.get("status") != "done":
        return "missing", "no results"
    if not m.get("external"):
        if m.get("version") != stage.version:
            return "stale", f"code version {m.get('version')} -> {stage.version}"
        if m.get("config_hash") != config_digest(config):
            return "stale", "config changed"
        try:
            current = _input_digests(out_root, stage, config)
        except UserError as err:
            return "stale", str(err)
        recorded = m.get("inputs", {})
        changed = sorted(k for k in set(current) | set(recorded) if current.get(k) != recorded.get(k))
        if changed:
            return "stale", "inputs changed since it ran: " + ", ".join(changed)
    _, edited = edited_files(out_root / stage.name, m)
    if edited:
        return "edited", (f"{len(edited)} file(s) changed by hand since it ran ({_few_files(edited)}): kept, later "
                          f"stages recompute from them; --force {stage.name} recomputes it")
    if m.get("external"):
        return "done", f"provided by {m.get('producer', 'external')}"
    return "done", "up to date"


def _adopt_edits(stage_dir: Path, manifest: dict) -> dict:
    """Record the hand-edited files of a committed stage as its outputs (the manifest is
    replaced atomically); returns the new manifest."""
    digest, edited = edited_files(stage_dir, manifest)
    manifest = {**manifest, "output_digest": digest, "files": file_stats(stage_dir),
                "edited": sorted(set(manifest.get("edited", [])) | set(edited)), "edited_recorded": _now()}
    tmp = stage_dir / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, stage_dir / MANIFEST)
    return manifest


LOCK = ".hoirecon.lock"


@contextmanager
def output_lock(out_root: Path) -> Iterator[None]:
    """Exclusive lock on an output folder, so two commands never write into it at once.

    The lock file is removed on release, and so is the output folder when the command
    created it and left nothing in it (a run that failed before writing anything).
    """
    created = not out_root.exists()
    lock = out_root / LOCK
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write to output folder {out_root}: {err.strerror}") from None
    fd = _acquire(lock, out_root)
    try:
        yield
    finally:
        # Unlinked while still held: a process that opened the old file meanwhile sees that
        # its inode is no longer the lock file's and tries again (``_acquire``).
        lock.unlink(missing_ok=True)
        os.close(fd)
        if created:
            _remove_empty(out_root)


def _acquire(lock: Path, out_root: Path) -> int:
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as err:
            raise UserError(f"cannot write to output folder {out_root}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"output folder {out_root} is in use by another hoirecon process") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder released and removed this file between our open and flock
    raise UserError(f"output folder {out_root} is in use by another hoirecon process")


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
    state, reason = freshness(out_root, stage, config)
    final_dir = out_root / stage.name
    if state == "done" and not force:
        m = read_manifest(final_dir) or {}
        return StageResult(stage.name, "cached", 0.0, m.get("summary", {}))
    if state == "edited" and not force:
        reporter.info(f"{stage.name}: {reason}")
        m = _adopt_edits(final_dir, read_manifest(final_dir) or {})
        return StageResult(stage.name, "edited", 0.0, {**m.get("summary", {}), "edited": m["edited"]})

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
        _remove_empty(scratch)  # a failed run keeps only scratch it can resume from
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
        "files": file_stats(tmp_dir),
        "status": "done",
        "started": started,
        "finished": _now(),
        "seconds": round(seconds, 3),
        "summary": summary,
    }
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    commit_dir(tmp_dir, final_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    _remove_empty(scratch.parent)  # only when no other stage keeps resumable state
    return StageResult(stage.name, "ran", seconds, summary)


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` and then ``.work`` above it when they are empty."""
    for path in (folder, folder.parent) if folder.parent.name == ".work" else (folder,):
        try:
            path.rmdir()
        except OSError:
            return


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
            "output_digest": tree_digest(tmp_dir), "files": file_stats(tmp_dir), "status": "done",
            "started": _now(), "finished": _now(),
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
    """Per stage: name, state (done/edited/stale/missing), reason, seconds, finished.

    Each stage is judged by ``freshness`` with the config it recorded, so external files
    (the source video, --boxes, --masks-dir) and hand edits count exactly as a rerun with
    the same settings would count them; a stage after one that would be recomputed is stale.
    """
    rows = []
    upstream = None  # the first stage a rerun would (re)compute: everything after it is stale
    for stage in stages:
        m = read_manifest(out_root / stage.name)
        state, reason = "missing", "no results"
        if m is not None and m.get("status") == "done":
            state, reason = _recorded_freshness(out_root, stage, m)
            if state in ("done", "edited") and upstream:
                state, reason = "stale", f"stage '{upstream}' is not done or is recomputed first"
        if state in ("stale", "missing") and upstream is None:
            upstream = stage.name
        rows.append({"stage": stage.name, "state": state, "reason": reason,
                     "seconds": m.get("seconds") if m else None, "finished": m.get("finished") if m else None})
    return rows


def _recorded_freshness(out_root: Path, stage: StageDef, manifest: dict) -> tuple[str, str]:
    """``freshness`` of a committed stage with the config recorded in its manifest."""
    recorded = manifest.get("config", {})
    if manifest.get("external") or manifest.get("version") != stage.version or stage.config_type is None:
        return freshness(out_root, stage, recorded)
    try:
        config = stage.config_type(**recorded)
    except (TypeError, UserError) as err:  # e.g. its --boxes file is gone
        return "stale", f"its recorded settings no longer hold: {err}"
    return freshness(out_root, stage, config)
