"""Benchmark of `hoirecon fit` (issue 5): object F@5/F@10/CD and CD_h on synthetic clips.

For each of the six categories: ``hoirecon.synth.generator.generate_clip`` (GT masks,
noisy hand initialisation, a limited view range, seed ``--seed0 + i`` for the i-th
category), then ``hoirecon fit`` in a child process (its wall time and peak RSS are the
fit's alone, read with ``os.wait4``), then ``hoirecon.stages.evaluate.evaluate`` (the
paper's metrics; also the visual-hull initialisation's CD_h and the deepest hand vertex
inside the fitted object per frame). Then the ``paper`` preset on one category for the
same optimisation wall time as ``fast`` there: a short probe run measures its time per
iteration, and the step count is the fast run's optimisation seconds over it.
Writes its table into BENCHMARKS.md between the ``bench_fit`` markers.

Tuning was done on other seeds (100-105); the default report seeds are 0-5.

Usage: .venv/bin/python benchmarks/bench_fit.py [--categories mug,...] [--seed0 0] [--jobs 2] [--frames 30]
       [--size 256] [--view-range 90] [--steps N] [--prior none] [--paper-category mug] [--no-paper]
       [--no-write]
(``--prior`` other than none writes the section ``bench_fit_<prior>`` instead; the prior ablation
is ``benchmarks/bench_ablation.py``.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, hand_penetration_mm, write_section  # noqa: E402

from hoirecon.synth.objects import CATEGORIES  # noqa: E402



def run_fit_child(out: Path, preset: str, steps: int | None, threads: int = 1,
                  extra: list[str] | None = None) -> dict:
    """``hoirecon fit`` (plus ``extra`` options) in a child process -> {seconds, peak_rss_gb} of that
    process alone."""
    exe = Path(sys.executable).with_name("hoirecon")
    cmd = [str(exe), "fit", str(out), "--preset", preset, "--force", "--quiet", *(extra or [])]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    env = {**os.environ, "HOIRECON_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"fit failed on {out} (exit {proc.returncode}): {err[-2000:]}")
    # ru_maxrss is in kilobytes on Linux.
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1e6}


def score(out: Path) -> dict:
    from hoirecon.stages.evaluate import evaluate

    r = evaluate(out, out)
    fit, init = r["fit"], r["init"]
    pen = hand_penetration_mm(out / "fit")
    return {"f5": fit["object"]["f5"], "f10": fit["object"]["f10"], "cd": fit["object"]["cd"],
            "cd_h": fit["cd_h"], "init_cd_h": init["cd_h"], "init_f10": init["object"]["f10"],
            "cd_h_true_obj": fit["cd_h_true_object"], "init_cd_h_true_obj": init["cd_h_true_object"],
            "kp_cam_mm": fit["hand"]["kp_cam_mm"], "init_kp_cam_mm": init["hand"]["kp_cam_mm"],
            "pen_max_mm": float(pen.max()), "pen_frames_over_5mm": int((pen > 5.0).sum())}


ROWS = (("f5", "F@5 ↑", "{:.3f}"), ("f10", "F@10 ↑", "{:.3f}"), ("cd", "CD (cm²) ↓", "{:.2f}"),
        ("cd_h", "CD_h (cm²) ↓", "{:.1f}"), ("init_cd_h", "CD_h of the init (cm²)", "{:.1f}"),
        ("init_f10", "F@10 of the init (visual hull)", "{:.2f}"),
        ("cd_h_true_obj", "CD_h true object, fitted hand (cm²)", "{:.1f}"),
        ("init_cd_h_true_obj", "CD_h true object, init hand (cm²)", "{:.1f}"),
        ("kp_cam_mm", "hand kp error, camera (mm)", "{:.1f}"), ("init_kp_cam_mm", "  ... of the init (mm)", "{:.1f}"),
        ("pen_max_mm", "deepest hand vertex in object (mm)", "{:.1f}"),
        ("seconds", "fit wall time (s)", "{:.0f}"), ("peak_rss_gb", "fit peak RSS (GB)", "{:.2f}"))


def render_table(rows: list[dict], paper: dict | None, header: str) -> str:
    """Markdown in the layout of the seed's tables 6/7: metrics x categories (+ mean)."""
    cats = [r["category"] for r in rows]
    text = header + "\n\n| metric | " + " | ".join(cats) + " | mean |\n|---|" + "---|" * (len(cats) + 1) + "\n"
    for key, name, fmt in ROWS:
        vals = [r.get(key) for r in rows]
        if any(v is None for v in vals):
            continue
        agg = float(np.max(vals)) if key in ("pen_max_mm", "peak_rss_gb") else float(np.mean(vals))
        text += f"| {name} | " + " | ".join(fmt.format(v) for v in vals) + " | " + fmt.format(agg) + " |\n"
    text += "\n(mean column: max for peak RSS and penetration)\n"
    if paper:
        text += ("\n`paper` preset (MLP SDF, 1024 rays, lr 5e-4) on "
                 f"{paper['category']} for the fast preset's optimisation time there "
                 f"({paper['budget_s']:.0f} s, `fit --preset paper --time-budget`; it used "
                 f"{paper['steps'] * paper['sec_per_iter']:.0f} s): {paper['steps']} of its 50k steps at "
                 f"{paper['sec_per_iter']:.3f} s/iteration "
                 f"(fast: {paper['fast_sec_per_iter']:.3f} s/iteration) -> F@5 {paper['f5']:.2f}, "
                 f"F@10 {paper['f10']:.2f}, CD {paper['cd']:.2f} cm², CD_h {paper['cd_h']:.1f} cm² "
                 f"(fast, same clip: F@10 {paper['fast_f10']:.2f}; paper init (MLP pre-fit to the visual hull): "
                 f"F@10 {paper['init_f10']:.2f}). The full paper schedule (50k steps) would take "
                 f"~{paper['sec_per_iter'] * 50000 / 3600:.1f} h on this machine.\n")
    return text


def optimize_seconds(out: Path) -> tuple[float, int]:
    s = json.loads((out / "fit" / "summary.json").read_text())
    return float(s["optimize_seconds"]), int(s["steps"])


def machine() -> str:
    return f"{os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__}, 1 torch thread"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--seed0", type=int, default=0, help="clip seed of the first category (i-th: seed0 + i)")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--view-range", type=float, default=90.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--prior", default="none", help="fit --prior (none | hoirecon | a .pt); the category is the clip's")
    ap.add_argument("--work", default="/tmp/bench_fit")
    ap.add_argument("--paper-category", default="mug")
    ap.add_argument("--no-paper", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="fits run side by side")
    ap.add_argument("--paper-from", default=None, help="reuse a results_paper.json of an earlier run")
    ap.add_argument("--fast-from", default=None,
                    help="reuse the results_fast.json of an earlier run (its clips must still be in --work) and "
                         "run only the paper preset")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from hoirecon.synth.generator import generate_clip

    torch.set_num_threads(1)
    work = Path(args.work)
    cats = args.categories.split(",")
    clips = []
    for i, cat in enumerate(cats if not args.fast_from else []):
        out = work / f"{cat}_s{args.seed0 + i}"
        generate_clip(cat, out, frames=args.frames, size=args.size, seed=args.seed0 + i,
                      view_range_deg=args.view_range)
        clips.append((cat, args.seed0 + i, out))

    def one(clip) -> dict:
        cat, seed, out = clip
        m = {"category": cat, "seed": seed,
             **run_fit_child(out, "fast", args.steps, extra=["--prior", args.prior, "--category", cat])}
        m.update(score(out))
        m["optimize_seconds"], m["steps"] = optimize_seconds(out)
        print(json.dumps(m), flush=True)
        return m

    if args.fast_from:
        rows = json.loads(Path(args.fast_from).read_text())
    else:
        # --jobs > 1 runs fits side by side (each child keeps 1 torch thread); times then include
        # the contention, so they are upper bounds of a lone run's.
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(one, clips))
        (work / "results_fast.json").write_text(json.dumps(rows, indent=2))
    paper = json.loads(Path(args.paper_from).read_text()) if args.paper_from else None
    if paper is None and not args.no_paper and args.paper_category in [r["category"] for r in rows]:
        fast = next(r for r in rows if r["category"] == args.paper_category)
        out = work / f"{fast['category']}_s{fast['seed']}"
        # Equal optimisation time: the paper schedule (50k steps) cut by `fit --time-budget` at
        # the fast run's optimisation seconds on this clip (both measured with 2 fits side by
        # side on the shared machine, so the loads are comparable, not identical).
        res = run_fit_child(out, "paper", None, extra=["--prior", args.prior, "--category", fast["category"],
                                                       "--time-budget", f"{fast['optimize_seconds']:.1f}"])
        opt_s, steps = optimize_seconds(out)
        paper = {"category": fast["category"], "budget_s": fast["optimize_seconds"], "steps": steps,
                 "sec_per_iter": opt_s / steps, "fast_sec_per_iter": fast["optimize_seconds"] / fast["steps"],
                 "fast_f10": fast["f10"], **res, **score(out)}
        print(json.dumps(paper), flush=True)
        (work / "results_paper.json").write_text(json.dumps(paper, indent=2))
    if paper is not None:  # compare with this run's fast result on that clip
        same = [r for r in rows if r["category"] == paper["category"]]
        if same:
            paper["fast_f10"] = same[0]["f10"]
    header = (f"Command: `.venv/bin/python benchmarks/bench_fit.py --seed0 {args.seed0} --jobs {args.jobs} --prior {args.prior}` "
              f"({args.frames} frames, {args.size} px, view range {args.view_range:g} deg, GT masks, noisy hand "
              f"init (synth defaults), fit `--preset fast --prior {args.prior}`"
              f"{'' if args.steps is None else f' --steps {args.steps}'}, "
              f"category i uses clip seed {args.seed0}+i; tuning used seeds 100-105). Machine: {machine()}. "
              f"Date: {datetime.date.today().isoformat()}. Wall time and peak RSS: the `hoirecon fit` child "
              f"process alone (os.wait4); {args.jobs} fit(s) ran side by side on a machine shared with other "
              f"jobs (load average at the end: {os.getloadavg()[0]:.1f}), so times are upper bounds.")
    if args.fast_from:
        header += (f" The `fast` rows are reused from an earlier run of this script (`--fast-from {args.fast_from}`, "
                   "same clips and fast preset); this run added the `paper` line.")
    if args.paper_from:
        header += (" The `paper` line is reused from an earlier run of this script on the same clip "
                   "(`--paper-from`; the paper preset did not change in between).")
    if not args.no_write:
        write_section("bench_fit" if args.prior == "none" else f"bench_fit_{Path(args.prior).stem}",
                      render_table(rows, paper, header))


if __name__ == "__main__":
    main()
