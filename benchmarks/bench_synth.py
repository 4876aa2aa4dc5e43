"""Benchmark ``hoirecon synth`` (clip generation) and ``hoirecon eval``; write the table into BENCHMARKS.md.

Run: ``.venv/bin/python benchmarks/bench_synth.py`` (``--categories mug`` for one,
``--no-write`` to only print).

Cases:
- ``generate_clip(category, frames=30, size=256, seed=0)`` for each category: wall and
  process CPU seconds, with the clip's own numbers (hand penetration, frame fill, camera
  distance, view span, object/hand pixels);
- ``evaluate`` (10,000 points, the default) of a prediction that is the ground truth moved
  by a random similarity (so the alignment has to search) and roughened by 1 mm vertex
  noise, plus the noisy hand initialisation of the clip;
- the size of the example folder ``write_example`` produces (30 frames, 256 x 256).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import trimesh

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, cpu_model, timed, write_section  # noqa: E402

from hoirecon.stages.evaluate import evaluate  # noqa: E402
from hoirecon.stages.outputs import GroundTruth  # noqa: E402
from hoirecon.synth.generator import generate_clip, write_example  # noqa: E402
from hoirecon.synth.objects import CATEGORIES  # noqa: E402

SECTION = "bench_synth"





def perturbed_prediction(synth: Path, out: Path, seed: int = 0) -> None:
    """A fit folder: the GT mesh under a random similarity with 1 mm vertex noise, GT poses."""
    rng = np.random.default_rng(seed)
    mesh = trimesh.load(GroundTruth.mesh_file(synth), force="mesh")
    mesh.vertices = mesh.vertices + rng.normal(0.0, 0.001, mesh.vertices.shape)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    T = trimesh.transformations.quaternion_matrix(q)
    T[:3, :3] *= 1.1
    T[:3, 3] = rng.normal(0.0, 0.02, 3)
    mesh.apply_transform(T)
    (out / "fit").mkdir(parents=True, exist_ok=True)
    mesh.export(out / "fit" / "object.ply")
    with np.load(GroundTruth.file(synth)) as gt:
        poses = {k: gt[k] for k in ("K", "T_cam_to_hand", "articulation", "shape", "side", "image_size")}
        # The fit's object frame is the moved one.
        poses["T_hand_to_obj"] = (T @ gt["T_hand_to_obj"].astype(np.float64)).astype(np.float32)
    np.savez(out / "fit" / "poses.npz", **poses)
    shutil.copytree(synth / "hand", out / "hand")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for eval (0 = torch's default; synth runs on one thread itself)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    rows, eval_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for category in args.categories:
            out = tmp / category
            s, wall, cpu = timed(lambda: generate_clip(category, out, frames=args.frames, size=args.size, seed=0))
            rows.append((category, wall, cpu, s))
            print(f"synth {category}: {wall:.1f} s wall, {cpu:.1f} s CPU, penetration {s['penetration_mm']} mm, "
                  f"fill {s['frame_fill']}, distance {s['camera_distance_m']}", flush=True)
        first = rows[0][0]
        pred = tmp / "pred"
        perturbed_prediction(tmp / first, pred)
        r, wall, cpu = timed(lambda: evaluate(pred, tmp / first))
        eval_rows.append((first, wall, cpu, r))
        print(f"eval {first}: {wall:.1f} s wall, {cpu:.1f} s CPU, F@10 {r['fit']['object']['f10']:.3f}", flush=True)
        example = write_example(tmp / "example", category="mug", seed=0, frames=args.frames, size=args.size)
        print(f"example: {example['bytes'] / 1e6:.2f} MB", flush=True)

    command = "python benchmarks/bench_synth.py" + (
        "" if args.categories == list(CATEGORIES) else " --categories " + " ".join(args.categories))
    lines = [
        "## Synthetic clips (`hoirecon synth`) and evaluation (`hoirecon eval`)",
        "",
        f"Machine: {os.cpu_count()} cores (`nproc`), {cpu_model()}, torch {torch.__version__}, torch threads: "
        f"synth 1 (set by `generate_clip`), eval {torch.get_num_threads()}; load average {load:.1f} at start; "
        f"date {datetime.date.today().isoformat()}; "
        f"command: `{command}`. Wall = wall-clock seconds; CPU = process CPU seconds (all threads; on a shared "
        "machine wall time grows with the load of others, CPU time does not). Targets: synth < 60 s, eval < 30 s.",
        "",
        f"| synth: category ({args.frames} frames, {args.size}x{args.size}, seed 0) | wall s | CPU s | "
        "penetration mm | frame fill (mean) | camera distance m | view span deg | object px | hand px |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for category, wall, cpu, s in rows:
        d = s["camera_distance_m"]
        lines.append(f"| {category} | {wall:.1f} | {cpu:.1f} | {s['penetration_mm']:.2f} | {s['frame_fill'][1]:.2f} | "
                     f"{d[0]:.2f}-{d[1]:.2f} | {s['view_span_deg']:.0f} | {s['object_pixels_mean']:.0f} | "
                     f"{s['hand_pixels_mean']:.0f} |")
    lines += [
        "",
        "| eval (10,000 points; prediction = GT under a random similarity + 1 mm noise) | wall s | CPU s | "
        "F@5 | F@10 | CD cm² | CD_h cm² | init: kp cam mm | init: kp root-rel mm | init: CD_h of the true object cm² |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for category, wall, cpu, r in eval_rows:
        f, i = r["fit"], r["init"]
        lines.append(f"| {category} | {wall:.1f} | {cpu:.1f} | {f['object']['f5']:.3f} | {f['object']['f10']:.3f} | "
                     f"{f['object']['cd']:.3f} | {f['cd_h']:.2f} | {i['hand']['kp_cam_mm']:.1f} | "
                     f"{i['hand']['kp_rel_mm']:.1f} | {i['cd_h_true_object']:.2f} |")
    lines += ["", f"Example folder (`write_example`, mug, {args.frames} frames): {example['bytes'] / 1e6:.2f} MB "
              f"({', '.join(f'{k}' for k in example['files'] if '/0' not in k)}, + {args.frames} hand and "
              f"{args.frames} object mask PNGs)."]
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    write_section(SECTION, table)
    print(f"wrote {BENCHMARKS}")


if __name__ == "__main__":
    main()
