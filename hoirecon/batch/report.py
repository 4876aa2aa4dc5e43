"""The batch's reports: one record per clip, as ``DIR/batch.jsonl``, ``DIR/batch.csv`` and a terminal table.

A record (one JSON line)::

    {"clip": name, "source": path, "out": path, "status": "done" | "failed", "exit_code": int,
     "error": one line or "", "attempts": int, "skipped": bool (fresh from an earlier batch),
     "seconds": wall seconds of the clip, "stages": {stage: seconds}, "metrics": {name: number},
     "settings": digest of the clip's run arguments and source, "view": path of view.html or ""}

``batch.jsonl`` also gets each record appended as its clip finishes, so a killed batch keeps
what it finished (the last line of a clip wins); the end of the batch rewrites it with this
batch's clips in order.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from hoirecon.batch.task import ClipOutcome, ClipTask
from hoirecon.pipeline.runner import STAGE_ORDER

JSONL = "batch.jsonl"
CSV = "batch.csv"
# metric name -> path in the `run --json` summary's "stages"
MAIN_METRICS = {
    "masks_iou_hand": ("masks", "track_iou", "hand"),
    "masks_iou_object": ("masks", "track_iou", "object"),
    "hand_valid_frames": ("hand", "valid_frames"),
    "fit_iou_object": ("fit", "mean_iou_object"),
    "fit_mesh_iou_object": ("fit", "mesh_iou_object"),  # the extracted mesh, what a user gets
    "fit_iou_hand": ("fit", "mean_iou_hand"),
}
CSV_COLUMNS = (["clip", "status", "exit_code", "attempts", "skipped", "seconds"]
               + [f"{s}_seconds" for s in STAGE_ORDER] + list(MAIN_METRICS) + ["error", "out", "view"])


def _lookup(tree: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree if isinstance(tree, (int, float)) and not isinstance(tree, bool) else None


def main_metrics(run_summary: dict) -> dict[str, float]:
    stages = run_summary.get("stages", {})
    found = {name: _lookup(stages, path) for name, path in MAIN_METRICS.items()}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in found.items() if v is not None}


def stage_seconds(run_summary: dict) -> dict[str, float]:
    stages = run_summary.get("stages", {})
    return {name: round(float(s.get("seconds", 0.0)), 3) for name, s in stages.items() if isinstance(s, dict)}


def clip_record(task: ClipTask, outcome: ClipOutcome, attempts: int, settings: str) -> dict:
    """The report line of a clip that ran (its last attempt)."""
    outputs = outcome.summary.get("stages", {}).get("export", {}).get("outputs", {})
    return {
        "clip": task.job.name, "source": task.job.source, "out": task.out,
        "status": "done" if outcome.exit_code == 0 else "failed", "exit_code": outcome.exit_code,
        "error": outcome.error, "attempts": attempts, "skipped": False, "seconds": round(outcome.seconds, 3),
        "stages": stage_seconds(outcome.summary), "metrics": main_metrics(outcome.summary),
        "settings": settings, "view": outputs.get("view", ""),
    }


def read_records(path: Path) -> dict[str, dict]:
    """Records of an earlier (maybe killed) batch by clip name; the last line of a clip wins,
    a line cut short by a kill is ignored."""
    records = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "clip" in record:
            records[record["clip"]] = record
    return records


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def csv_row(record: dict) -> dict:
    row = {k: record.get(k, "") for k in ("clip", "status", "exit_code", "attempts", "skipped", "seconds", "error",
                                          "out", "view")}
    row.update({f"{s}_seconds": record.get("stages", {}).get(s, "") for s in STAGE_ORDER})
    row.update({m: record.get("metrics", {}).get(m, "") for m in MAIN_METRICS})
    return row


def write_reports(out_dir: Path, records: list[dict]) -> dict[str, str]:
    """``batch.jsonl`` and ``batch.csv`` with exactly these records; returns their paths."""
    out_dir = Path(out_dir)
    _write_atomic(out_dir / JSONL, "".join(json.dumps(r) + "\n" for r in records))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_row(r) for r in records)
    _write_atomic(out_dir / CSV, buffer.getvalue())
    return {"jsonl": str(out_dir / JSONL), "csv": str(out_dir / CSV)}


def summary_table(records: list[dict]):
    """A rich Table of the batch: one row per clip."""
    from rich.table import Table

    table = Table(title="hoirecon batch")
    for col in ("clip", "status", "exit", "seconds", "fit IoU obj", "error"):
        table.add_column(col)
    for r in records:
        status = "[green]done[/]" if r["status"] == "done" else "[red]failed[/]"
        if r.get("skipped"):
            status += " (fresh)"
        iou = r.get("metrics", {}).get("fit_iou_object")
        table.add_row(r["clip"], status, str(r["exit_code"]), f"{r.get('seconds', 0):.1f}",
                      "" if iou is None else f"{iou:.3f}", (r.get("error") or "")[:80])
    return table
