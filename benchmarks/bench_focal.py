"""The hand stage's focal estimate on synthetic clips of known fields of view (40-90 degrees).

The issue's check: across synthetic clips with fields of view from 40 to 90 degrees, the focal
estimate is within 15 % of the true focal. For each field of view and each clip (category,
seed): `hoirecon synth -c CAT --size 640x480 --fov F --texture T --seed S` (30 frames), then
`hoirecon hand DIR --force` with default settings (the synth folder's frames and GT masks; its
own noisy hand stage is recomputed: no --focal or --fov, so the stage estimates the focal by
structure from motion on the object's pixels, else falls back to the stage's default,
``hoirecon.handpose.perspective.DEFAULT_FOCAL_PER_LONGER_SIDE`` x the longer side). `hand/camera.json`
gives the focal used and its source; `gt/info.json` the true fx.

Both textures of the same seed share geometry, masks and camera path: "printed" (a sharp-edged
random print on the object, like a label) and "plain" (flat colours and stripes, where
structure from motion is expected to fail, so the fallback's error is reported).

Usage: nice .venv/bin/python benchmarks/bench_focal.py   (writes the `bench_focal` section)
       [--fovs 60 --clips mug:0 --no-write for a quick look]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from hoirecon.handpose.perspective import DEFAULT_FOCAL_PER_LONGER_SIDE  # noqa: E402
from hoirecon.stages.outputs import GroundTruth  # noqa: E402

HOIRECON = [sys.executable, "-m", "hoirecon"]
FOVS = (40, 50, 60, 70, 80, 90)
CLIPS = ("mug:0", "bottle:1")  # category:seed
TEXTURES = ("printed", "plain")
SIZE = "640x480"
FRAMES = 30
TOLERANCE = 0.15


def _short_source(camera: dict) -> str:
    """camera.json's source in a few words (with why structure from motion was not used)."""
    source = camera["source"]
    if source.startswith("structure from motion"):
        return "sfm"
    if source.startswith("default"):
        sfm = camera.get("sfm") or {}
        why = sfm.get("reason") or ("not used" if sfm else "off")
        return f"default (sfm: {why})"
    return source


def run_clip(tmp: Path, category: str, seed: int, fov: float, texture: str, frames: int) -> dict:
    out = tmp / f"{category}_{seed}_{fov}_{texture}"
    row = {"fov": fov, "texture": texture, "clip": f"{category}/{seed}"}
    t0 = time.perf_counter()
    synth = subprocess.run(HOIRECON + ["synth", "-c", category, "--size", SIZE, "--frames", str(frames), "--fov",
                                       str(fov), "--texture", texture, "--seed", str(seed), "-o", str(out), "--quiet"],
                           capture_output=True, text=True)
    row["synth_s"] = time.perf_counter() - t0
    if synth.returncode != 0:
        row["error"] = "synth: " + synth.stderr.strip()
        return row
    info = json.loads((out / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())
    row["true_px"] = float(info["intrinsics"]["fx"])
    t0 = time.perf_counter()
    hand = subprocess.run(HOIRECON + ["hand", str(out), "--force", "--quiet"], capture_output=True, text=True)
    row["hand_s"] = time.perf_counter() - t0
    if hand.returncode != 0:
        row["error"] = "hand: " + hand.stderr.strip()
        return row
    camera = json.loads((out / "hand" / "camera.json").read_text())
    sfm = camera.get("sfm") or {}
    row["est_px"] = float(camera["focal_px"])
    row["rel_err"] = (row["est_px"] - row["true_px"]) / row["true_px"]
    row["source"] = _short_source(camera)
    row["registered"] = f"{sfm.get('registered_frames', 0)}/{sfm.get('num_frames', frames)}"
    row["sfm_px"] = sfm.get("focal_px")
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| fov deg | texture | clip (category/seed) | true focal px | estimated px | relative error % | source | "
             "frames registered | SfM's own focal px | seconds (hand stage) |",
             "|---:|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['fov']} | {r['texture']} | {r['clip']} | {r.get('true_px', float('nan')):.1f} | "
                         f"failed: {r['error']} | | | | | |")
            continue
        sfm_px = "" if r["sfm_px"] is None else f"{r['sfm_px']:.1f}"
        lines.append(f"| {r['fov']} | {r['texture']} | {r['clip']} | {r['true_px']:.1f} | {r['est_px']:.1f} | "
                     f"{100 * r['rel_err']:+.1f} | {r['source']} | {r['registered']} | {sfm_px} | "
                     f"{r['hand_s']:.1f} |")
    return lines


def summary(rows: list[dict]) -> list[str]:
    lines = ["| texture | clips | within 15 % | focal from SfM | median abs. error % | median abs. error % "
             "(SfM-sourced) |", "|---|---:|---:|---:|---:|---:|"]
    for texture in TEXTURES:
        mine = [r for r in rows if r["texture"] == texture]
        if not mine:
            continue
        ok = [r for r in mine if "error" not in r]
        within = sum(abs(r["rel_err"]) <= TOLERANCE for r in ok)
        sfm = [abs(r["rel_err"]) for r in ok if r["source"] == "sfm"]
        med = f"{100 * np.median([abs(r['rel_err']) for r in ok]):.1f}" if ok else "-"
        med_sfm = f"{100 * np.median(sfm):.1f}" if sfm else "-"
        lines.append(f"| {texture} | {len(mine)} | {within}/{len(mine)} ({100 * within / len(mine):.0f} %) | "
                     f"{len(sfm)}/{len(mine)} | {med} | {med_sfm} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fovs", type=float, nargs="+", default=FOVS)
    parser.add_argument("--clips", nargs="+", default=CLIPS, help="category:seed")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    where = machine()
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fov in args.fovs:
            fov = int(fov) if float(fov).is_integer() else fov
            for clip in args.clips:
                category, seed = clip.split(":")
                for texture in TEXTURES:
                    row = run_clip(Path(tmp), category, int(seed), fov, texture, args.frames)
                    rows.append(row)
                    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    total_min = (time.perf_counter() - t_start) / 60.0
    body = (f"## Focal length from the hand stage on synthetic clips of known field of view\n\n"
            f"Command: `nice .venv/bin/python benchmarks/bench_focal.py`. Machine: {where}; {total_min:.0f} min in "
            f"all. Clips: `hoirecon synth -c CAT --size {SIZE} --frames {args.frames} --fov F --texture T --seed S`; "
            f"then `hoirecon hand DIR --force` with defaults (structure from motion on the object's GT-masked pixels "
            f"for the focal, else the stage's default: {DEFAULT_FOCAL_PER_LONGER_SIDE} x the longer side, "
            f"{DEFAULT_FOCAL_PER_LONGER_SIDE * int(SIZE.split('x')[0]):.0f} px here). The same seed's printed and "
            f"plain clips share geometry, masks and camera path. Target: the "
            f"focal estimate within 15 % of the true focal for fields of view 40-90 degrees. Relative error = "
            f"(estimated - true) / true. Seconds: the whole hand stage (MediaPipe, IK, SfM).\n\n"
            + "\n".join(table(rows)) + "\n\n" + "\n".join(summary(rows)) + "\n")
    if not args.no_write:
        write_section("bench_focal", body)
    print(body)


if __name__ == "__main__":
    main()
