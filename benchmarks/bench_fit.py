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

``--clips tuning|heldout`` fits the real-object meshes of that set instead
(``benchmarks/object_meshes.json``, clips by ``hoirecon synth --object-mesh``, one clip per mesh and
``--seeds`` entry; ``benchmarks/object_meshes.py``); the held-out set is for reporting only.
``--priors none,hoirecon`` fits every clip once per prior and adds a per-clip F@10 comparison;
``--fit-args`` passes further ``hoirecon fit`` options to the fits with a prior (e.g. ``--sds-every 4``).
Every mean is printed with its spread (min / median / max).

Usage: .venv/bin/python benchmarks/bench_fit.py [--clips procedural|tuning|heldout] [--categories mug,...]
       [--seed0 0] [--seeds 7] [--jobs 2] [--frames 30] [--size 256] [--view-range 90] [--steps N]
       [--prior none | --priors none,hoirecon] [--fit-args "--sds-every 4"] [--paper-category mug] [--no-paper]
       [--no-write]
(``--prior`` other than none writes the section ``bench_fit_<prior>`` instead; the prior ablation
is ``benchmarks/bench_ablation.py``.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
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
from common import cpu_model, hand_penetration_mm, slug, write_section  # noqa: E402
from object_meshes import CLIP_SETS, BenchClip, benchmark_clips  # noqa: E402

from hoirecon.synth.objects import CATEGORIES  # noqa: E402
from hoirecon.stages.outputs import FitOutput  # noqa: E402



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
    # ru_maxrss is in kilobytes on Linux. CPU seconds do not grow with the load of other jobs, wall seconds do.
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 1e6}


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
        ("seconds", "fit wall time (s)", "{:.0f}"), ("cpu_seconds", "fit CPU time (s)", "{:.0f}"),
        ("peak_rss_gb", "fit peak RSS (GB)", "{:.2f}"))


def spread(vals, fmt: str = "{:.2f}") -> str:
    """'min / median / max' of a list of numbers, each written with ``fmt``."""
    return " / ".join(fmt.format(float(f(vals))) for f in (np.min, np.median, np.max))


def render_table(rows: list[dict], paper: dict | None, header: str) -> str:
    """Markdown in the layout of the seed's tables 6/7: metrics x clips (+ mean and min / median / max)."""
    cats = [r.get("name", r["category"]) for r in rows]
    text = (header + "\n\n| metric | " + " | ".join(cats) + " | mean | min / median / max |\n|---|"
            + "---|" * (len(cats) + 2) + "\n")
    for key, name, fmt in ROWS:
        vals = [r.get(key) for r in rows]
        if any(v is None for v in vals):
            continue
        agg = float(np.max(vals)) if key in ("pen_max_mm", "peak_rss_gb") else float(np.mean(vals))
        text += (f"| {name} | " + " | ".join(fmt.format(v) for v in vals) + " | " + fmt.format(agg)
                 + f" | {spread(vals, fmt)} |\n")
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
    s = FitOutput.summary(out / "fit")
    return float(s["optimize_seconds"]), int(s["steps"])


def machine() -> str:
    return f"{os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__}, 1 torch thread"


def compare_priors(results: dict[str, list[dict]]) -> str:
    """Per-clip F@10 of each prior run, the difference to the first one, and the fit wall times."""
    runs = list(results)
    names = [r.get("name", r["category"]) for r in results[runs[0]]]
    text = ("\n| clip | " + " | ".join(f"F@10 {k}" for k in runs) + " | "
            + " | ".join(f"{k} - {runs[0]}" for k in runs[1:]) + " | "
            + " | ".join(f"wall s {k}" for k in runs) + " | " + " | ".join(f"CPU s {k}" for k in runs)
            + " |\n|---|" + "---|" * (4 * len(runs) - 1) + "\n")
    for i, n in enumerate(names):
        f = [results[k][i]["f10"] for k in runs]
        text += (f"| {n} | " + " | ".join(f"{v:.3f}" for v in f) + " | "
                 + " | ".join(f"{v - f[0]:+.3f}" for v in f[1:]) + " | "
                 + " | ".join(f"{results[k][i]['seconds']:.0f}" for k in runs) + " | "
                 + " | ".join(f"{results[k][i].get('cpu_seconds', float('nan')):.0f}" for k in runs) + " |\n")
    f = {k: [r["f10"] for r in results[k]] for k in runs}
    t = {k: [r["seconds"] for r in results[k]] for k in runs}
    text += ("| **mean** (min / median / max) | " + " | ".join(f"{np.mean(f[k]):.3f} ({spread(f[k])})" for k in runs)
             + " | " + " | ".join(f"{np.mean(np.subtract(f[k], f[runs[0]])):+.3f} (worst "
                                   f"{np.min(np.subtract(f[k], f[runs[0]])):+.3f})" for k in runs[1:])
             + " | " + " | ".join(f"{np.mean(t[k]):.0f}" for k in runs) + " | "
             + " | ".join(f"{np.mean([r.get('cpu_seconds', np.nan) for r in results[k]]):.0f}" for k in runs) + " |\n")
    return text


def run_label(prior: str, fit_args: str, tag: str = "") -> str:
    """Name of one prior run in tables and result folders: the prior plus its extra fit options and tag."""
    label = prior if prior == "none" or not fit_args else f"{prior} {fit_args}"
    return f"{label} ({tag})" if tag and prior != "none" else label


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="procedural", choices=CLIP_SETS,
                    help="procedural categories, or the tuning / held-out real-object meshes (object_meshes.json)")
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--seed0", type=int, default=0, help="clip seed of the first category (i-th: seed0 + i)")
    ap.add_argument("--meshes", default=None, help="only these meshes of the set (comma-separated names)")
    ap.add_argument("--seeds", default="7", help="clip seeds of each real-object mesh (comma-separated)")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--view-range", type=float, default=90.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--prior", default="none", help="fit --prior (none | hoirecon | a .pt); the category is the clip's")
    ap.add_argument("--priors", default=None, help="several priors, comma-separated (e.g. none,hoirecon): each clip "
                                                   "is fitted once per prior and F@10 compared per clip")
    ap.add_argument("--fit-args", default="", help="further `hoirecon fit` options for the fits with a prior")
    ap.add_argument("--tag", default="", help="label of the fits with a prior (e.g. which code ran them: a run "
                                                   "with PYTHONPATH set to another checkout's hoirecon)")
    ap.add_argument("--work", default="/tmp/bench_fit")
    ap.add_argument("--fresh", action="store_true", help="refit clips whose results an earlier run kept")
    ap.add_argument("--paper-category", default="mug")
    ap.add_argument("--no-paper", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="fits run side by side")
    ap.add_argument("--paper-from", default=None, help="reuse a results_paper.json of an earlier run")
    ap.add_argument("--fast-from", default=None,
                    help="reuse the results_fast.json of an earlier run (its clips must still be in --work) and "
                         "run only the paper preset")
    ap.add_argument("--also-from", default=None,
                    help="a results_<clips>.json of an earlier run on the same clips: its prior runs are added as "
                         "further columns of the comparison (e.g. the code before a change, --tag)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    work = Path(args.work)
    priors = [p.strip() for p in (args.priors or args.prior).split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    clips = [] if args.fast_from else benchmark_clips(args.clips, work, args.frames, args.size, args.view_range,
                                                      seeds, args.categories.split(","), args.seed0,
                                                      args.meshes.split(",") if args.meshes else None)

    def one(job: tuple[str, BenchClip]) -> dict:
        prior, clip = job
        fit_args = shlex.split(args.fit_args) if prior != "none" else []
        label = run_label(prior, args.fit_args, args.tag)
        out = clip.out
        if len(priors) > 1 or args.clips != "procedural":  # each prior fits its own copy (no fit folder is
            # overwritten before scoring) and keeps its result (a rerun resumes)
            out = work / "runs" / slug(f"{label} steps{args.steps}") / clip.out.relative_to(work)
            done = out.with_name(out.name + ".json")
            if done.is_file() and not args.fresh:
                return json.loads(done.read_text())
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(clip.out, out, ignore=shutil.ignore_patterns("fit", "export", "eval"))
        m = {"name": clip.name, "category": clip.category, "seed": clip.seed, "prior": label,
             **run_fit_child(out, "fast", args.steps, extra=["--prior", prior, "--category", clip.category,
                                                             *fit_args])}
        m.update(score(out))
        m["optimize_seconds"], m["steps"] = optimize_seconds(out)
        print(json.dumps(m), flush=True)
        if len(priors) > 1 or args.clips != "procedural":
            out.with_name(out.name + ".json").write_text(json.dumps(m, indent=2))
        return m

    results: dict[str, list[dict]] = {}
    if args.fast_from:
        results[run_label(priors[0], args.fit_args, args.tag)] = json.loads(Path(args.fast_from).read_text())
    else:
        # --jobs > 1 runs fits side by side (each child keeps 1 torch thread); times then include
        # the contention, so they are upper bounds of a lone run's.
        jobs = [(p, c) for c in clips for p in priors]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = list(pool.map(one, jobs))
        for p in priors:
            results[run_label(p, args.fit_args, args.tag)] = [m for (q, _), m in zip(jobs, done) if q == p]
        (work / f"results_{args.clips}{'_' + slug(args.tag) if args.tag else ''}.json" if args.clips != "procedural"
         else work / "results_fast.json").write_text(json.dumps(done, indent=2))
    if args.also_from:
        names = [r.get("name") for r in next(iter(results.values()))]
        ran = set(results)  # a column of this run is never replaced by an earlier run's
        for row in json.loads(Path(args.also_from).read_text()):
            if row["prior"] not in ran and row.get("name") in names:
                results.setdefault(row["prior"], [None] * len(names))[names.index(row["name"])] = row
        results = {k: v for k, v in results.items() if all(r is not None for r in v)}
    rows = next(iter(results.values()))
    prior = priors[0]
    paper = json.loads(Path(args.paper_from).read_text()) if args.paper_from else None
    if (paper is None and not args.no_paper and args.clips == "procedural" and len(priors) == 1
            and args.paper_category in [r["category"] for r in rows]):
        fast = next(r for r in rows if r["category"] == args.paper_category)
        out = work / f"{fast['category']}_s{fast['seed']}"
        # Equal optimisation time: the paper schedule (50k steps) cut by `fit --time-budget` at
        # the fast run's optimisation seconds on this clip (both measured with 2 fits side by
        # side on the shared machine, so the loads are comparable, not identical).
        res = run_fit_child(out, "paper", None, extra=["--prior", prior, "--category", fast["category"],
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
    cmd = f"--clips {args.clips} " if args.clips != "procedural" else ""
    cmd += f"--seeds {args.seeds} " if args.clips != "procedural" else f"--seed0 {args.seed0} "
    cmd += f"--jobs {args.jobs} " + (f"--priors {args.priors}" if args.priors else f"--prior {args.prior}")
    cmd += f" --meshes {args.meshes}" if args.meshes else ""
    cmd += f" --frames {args.frames}" if args.frames != 30 else ""
    cmd += f" --steps {args.steps}" if args.steps is not None else ""
    cmd += f' --fit-args "{args.fit_args}"' if args.fit_args else ""
    cmd += f' --tag "{args.tag}"' if args.tag else ""
    cmd += f" --also-from {args.also_from}" if args.also_from else ""
    if args.clips == "procedural":
        what = f"category i uses clip seed {args.seed0}+i; tuning used seeds 100-105"
    else:
        what = (f"the {'held-out (reporting only, never tuned on)' if args.clips == 'heldout' else 'tuning'} "
                f"real-object meshes of benchmarks/object_meshes.json, `hoirecon synth --object-mesh` clip seed(s) "
                f"{args.seeds}, fit `--category` as listed there")
    header = (f"Command: `.venv/bin/python benchmarks/bench_fit.py {cmd}` "
              f"({args.frames} frames, {args.size} px, view range {args.view_range:g} deg, GT masks, noisy hand "
              f"init (synth defaults), fit `--preset fast`"
              f"{'' if args.steps is None else f' --steps {args.steps}'}, {what}). Machine: {machine()}. "
              f"Date: {datetime.date.today().isoformat()}. Wall time and peak RSS: the `hoirecon fit` child "
              f"process alone (os.wait4); {args.jobs} fit(s) ran side by side on a machine shared with other "
              f"jobs (load average at the end: {os.getloadavg()[0]:.1f}), so times are upper bounds.")
    if args.fast_from:
        header += (f" The `fast` rows are reused from an earlier run of this script (`--fast-from {args.fast_from}`, "
                   "same clips and fast preset); this run added the `paper` line.")
    if args.paper_from:
        header += (" The `paper` line is reused from an earlier run of this script on the same clip "
                   "(`--paper-from`; the paper preset did not change in between).")
    if len(results) == 1:
        text = render_table(rows, paper, header)
    else:
        text = header + "\n\nF@10 per clip, each prior run against the first:\n" + compare_priors(results)
        for label, rs in results.items():
            text += "\n" + render_table(rs, None, f"All metrics, `{label}`:")
    print(text)
    if args.no_write:
        return
    if args.clips == "procedural" and len(priors) == 1:
        write_section("bench_fit" if prior == "none" else f"bench_fit_{Path(prior).stem}", text)
    else:
        write_section(f"bench_fit_{args.clips}" + (f"_steps{args.steps}" if args.steps else ""), text)


if __name__ == "__main__":
    main()
