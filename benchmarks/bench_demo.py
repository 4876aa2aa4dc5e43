"""Time `hoirecon run` on the bundled example (what `make demo` runs) and score it against its ground truth.

Usage: .venv/bin/python benchmarks/bench_demo.py
Writes the `bench_demo` section of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    hoirecon = [sys.executable, "-m", "hoirecon"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mug"
        t0 = time.perf_counter()
        p = subprocess.run(hoirecon + ["run", "examples/mug/video.mp4", "--category", "mug", "--out", str(out),
                                       "--quiet", "--json"], cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"hoirecon run failed: {p.stderr.strip()}")
        stages = json.loads(p.stdout)["stages"]
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        e = subprocess.run(hoirecon + ["eval", str(out), "--gt", "examples/mug", "--json"], cwd=REPO,
                           capture_output=True, text=True, check=True)
        ev = json.loads(e.stdout)
    cam = stages["hand"]["camera"]
    info = json.loads((REPO / "examples" / "mug" / "gt" / "info.json").read_text())
    true_focal = cam["image_size"][0] / 2 / math.tan(math.radians(info["fov_deg"]) / 2)
    obj, init = ev["fit"]["object"], ev["init"]["object"]
    init_cd_h = f"CD_h {ev['init']['cd_h']:.1f} cm²."
    camera = f"{cam['focal_px']:.0f} px (true: {true_focal:.0f} px; from {cam['source'].split(' (')[0]})"
    rows = "\n".join(f"| {k} | {v['seconds']:.1f} |" for k, v in stages.items())
    body = f"""## `make demo`: `hoirecon run` on examples/mug (30 frames, 256x256)

Command: `.venv/bin/python benchmarks/bench_demo.py` (runs `hoirecon run examples/mug/video.mp4 --category mug`
with default settings, then `hoirecon eval` against the clip's ground truth). Machine: {machine()}.
Target: `make demo` under 15 minutes on 2 CPU cores (set-up excluded here: a fresh `make` install took ~6 min).

| stage | seconds |
|---|---:|
{rows}
| **total wall** | **{wall:.1f}** |

Peak RSS of the run (largest child process): {peak_gb:.2f} GB.

Against ground truth (full pipeline: tracked masks, MediaPipe hand init with a focal of {camera},
fast fit with the shipped prior):
F@5 {obj['f5']:.3f}, F@10 {obj['f10']:.3f}, CD {obj['cd']:.2f} cm², CD_h {ev['fit']['cd_h']:.1f} cm².
Its visual-hull initialisation: F@5 {init['f5']:.3f}, F@10 {init['f10']:.3f}, CD {init['cd']:.2f} cm², {init_cd_h}
"""
    write_section("bench_demo", body)
    print(body)


if __name__ == "__main__":
    main()
