"""``DIR/index.html``: one row per clip of a batch: its summary picture, status, main numbers, a link to its view.

Links are relative to DIR, so the folder can be moved or copied whole; the page loads nothing
from the network and has no script.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from hoirecon.batch.report import MAIN_METRICS
from hoirecon.stages.outputs import ExportOutput

INDEX = "index.html"


def _relative(path: str, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def index_row(record: dict, base: Path) -> str:
    out = Path(record["out"])
    summary_png = out / "export" / ExportOutput.SUMMARY
    view = record.get("view") or ""
    link = _relative(view, base) if view and Path(view).is_file() else ""
    picture = (f'<img src="{html.escape(_relative(str(summary_png), base), quote=True)}" alt="summary">'
               if summary_png.is_file() else "")
    if link and picture:
        picture = f'<a href="{html.escape(link, quote=True)}">{picture}</a>'
    name = html.escape(record["clip"])
    if link:
        name = f'<a href="{html.escape(link, quote=True)}">{name}</a>'
    status = record["status"] + (" (fresh)" if record.get("skipped") else "")
    metrics = record.get("metrics", {})
    numbers = "".join(f"<td>{metrics[m]:.3g}</td>" if m in metrics else "<td></td>" for m in MAIN_METRICS)
    return (f'<tr class="{html.escape(record["status"])}"><td>{picture}</td><td>{name}</td>'
            f"<td>{html.escape(status)}</td><td>{record['exit_code']}</td><td>{record.get('seconds', 0):.1f}</td>"
            f"{numbers}<td class=\"error\">{html.escape(record.get('error') or '')}</td></tr>")


def render_index_html(records: list[dict], base: Path, title: str) -> str:
    done = sum(r["status"] == "done" for r in records)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in MAIN_METRICS)
    rows = "\n".join(index_row(r, base) for r in records)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - hoirecon batch</title>
<style>
  body {{ font: 14px system-ui, sans-serif; margin: 16px; color: #222; }}
  table {{ border-collapse: collapse; }}
  td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }}
  img {{ width: 320px; }}
  tr.failed td {{ background: #fdecec; }}
  td.error {{ max-width: 360px; overflow-wrap: anywhere; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(records)} clips: {done} done, {len(records) - done} failed.</p>
<table>
<tr><th>summary</th><th>clip</th><th>status</th><th>exit</th><th>seconds</th>{head}<th>error</th></tr>
{rows}
</table>
</body>
</html>
"""


def write_index(out_dir: Path, records: list[dict]) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / INDEX
    tmp = out_dir / f".{INDEX}.tmp-{os.getpid()}"
    tmp.write_text(render_index_html(records, out_dir.resolve(), out_dir.resolve().name), encoding="utf-8")
    os.replace(tmp, path)
    return path
