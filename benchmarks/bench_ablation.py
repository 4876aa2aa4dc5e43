"""Ablation of the fit on synthetic clips (issue 7): the layout of the seed's tables 6 and 7.

Variants (rows), each `hoirecon fit --preset fast` on the same six clips as
``bench_fit.py`` (category i: clip seed ``--seed0 + i``, 30 frames, 256 px, view range 90 deg,
GT masks, noisy hand init):

- no prior: ``--prior none``;
- hand prior: the shipped prior with the category withheld (``--category unknown``: the
  prior's unconditional category token, so only the hand rendering conditions it);
- cat. prior: a prior of the same architecture and recipe trained without the hand
  condition (``weights/hoirecon/prior_small_category_only.pt``, ``hoirecon prior train
  --no-hand-condition``), with the clip's category;
- w/o per-frame object pose: full prior, ``--shared-object-pose`` (seed B.3);
- hard blending: full prior, ``--blend hard`` (front surface wins + ordinal depth loss, B.4);
- full prior (ours): the shipped prior with the clip's category.

``--clips tuning|heldout`` runs the variants on the real-object meshes of that set instead
(``benchmarks/object_meshes.json``, ``benchmarks/object_meshes.py``; one clip per mesh and ``--seeds``
entry, each fitted with the ``category`` listed there); the held-out set is for reporting only. It
writes the section ``bench_ablation_<set>``.

``--masks tracked`` replaces each clip's ground-truth masks by the masks stage's own (``hoirecon masks``
from the clip's first-frame boxes, default tracker) before fitting, so the variants are compared where
mask errors are real (the seed's reason for the soft blend); a clip whose masks fail the
forward-backward check is reported and left out of that table. It writes its own section
(``bench_ablation_tracked``).

Every fit runs in a child process (``bench_fit.run_fit_child``); results are kept per
(variant, clip) under ``--work`` so an interrupted run resumes where it stopped
(``--fresh`` starts over). Writes the ``bench_ablation`` section of BENCHMARKS.md.

Usage: .venv/bin/python benchmarks/bench_ablation.py [--clips procedural|tuning|heldout] [--seeds 7]
       [--seed0 0] [--jobs 2] [--variants a,b] [--sds-every 1]
       [--no-prior-from /tmp/bench_fit/results_fast.json] [--masks gt|tracked] [--fresh] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit import machine, run_fit_child, score  # noqa: E402
from common import slug, write_section  # noqa: E402
from object_meshes import CLIP_SETS, benchmark_clips  # noqa: E402

from hoirecon.synth.objects import CATEGORIES  # noqa: E402

CATEGORY_ONLY_PRIOR = ROOT / "weights" / "hoirecon" / "prior_small_category_only.pt"
FULL = ["--prior", "hoirecon", "--category", "{cat}"]
VARIANTS = {
    "no prior": ["--prior", "none"],
    "hand prior": ["--prior", "hoirecon", "--category", "unknown"],
    "cat. prior": ["--prior", str(CATEGORY_ONLY_PRIOR), "--category", "{cat}"],
    "w/o per-frame object pose": FULL + ["--shared-object-pose"],
    "hard blending": FULL + ["--blend", "hard"],
    "full prior (ours)": FULL,
}


def track_masks(clip: Path, dst: Path) -> dict:
    """Copy of a synthetic clip with its masks replaced by ``hoirecon masks`` from its boxes.json.

    -> {"ok", "iou_hand", "iou_object" (mean per-frame IoU against the clip's GT masks), "message"}."""
    from bench_masks_synth import mean_mask_iou

    from hoirecon.stages.outputs import MasksOutput

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(clip, dst, ignore=shutil.ignore_patterns("fit", "export", "eval"))
    exe = Path(sys.executable).with_name("hoirecon")
    proc = subprocess.run([str(exe), "masks", str(dst), "--boxes", str(dst / "boxes.json"), "--force", "--quiet"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"ok": False, "message": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    gt, masks = MasksOutput.load(clip / "masks"), MasksOutput.load(dst / "masks")
    gt_hand, gt_obj, hand, obj = gt.hand, gt.obj, masks.hand, masks.obj
    return {"ok": True, "iou_hand": mean_mask_iou(hand, gt_hand), "iou_object": mean_mask_iou(obj, gt_obj),
            "message": ""}


def render_tables(results: dict[str, dict[str, dict]], cats: list[str], header: str) -> str:
    """Table 6 (F@5, F@10, CD per category + mean) and table 7 (CD_h) for the variants run."""
    text = header + "\n\nObject reconstruction (F-scores at 5 / 10 mm, CD in cm²; layout of the seed's table 6):\n\n"
    text += "| variant | " + " | ".join(f"{c} F@5 | {c} F@10 | {c} CD" for c in cats + ["mean"]) + " |\n"
    text += "|---|" + "---|" * (3 * (len(cats) + 1)) + "\n"
    for name, rows in results.items():
        cells = []
        for key_rows in [[rows.get(c)] for c in cats] + [[rows.get(c) for c in cats]]:
            if any(r is None for r in key_rows):
                cells += ["–"] * 3
                continue
            cells += [f"{np.mean([r['f5'] for r in key_rows]):.2f}", f"{np.mean([r['f10'] for r in key_rows]):.2f}",
                      f"{np.mean([r['cd'] for r in key_rows]):.2f}"]
        text += f"| {name} | " + " | ".join(cells) + " |\n"
    text += ("\nHand-object alignment CD_h (cm², layout of table 7), deepest hand vertex inside the object "
             "(mm, max over clips) and fit wall time (s per clip, mean):\n\n")
    text += "| variant | " + " | ".join(cats) + " | mean CD_h | max penetration (mm) | wall time (s) |\n"
    text += "|---|" + "---|" * (len(cats) + 3) + "\n"
    for name, rows in results.items():
        have = [rows[c] for c in cats if c in rows]
        cells = [f"{rows[c]['cd_h']:.1f}" if c in rows else "–" for c in cats]
        if len(have) == len(cats):
            cells += [f"{np.mean([r['cd_h'] for r in have]):.1f}", f"{max(r['pen_max_mm'] for r in have):.1f}",
                      f"{np.mean([r['seconds'] for r in have]):.0f}"]
        else:
            cells += ["–"] * 3
        text += f"| {name} | " + " | ".join(cells) + " |\n"
    first = next(iter(results.values()), {})
    if all(c in first for c in cats):
        mean_init = np.mean([first[c]['init_cd_h'] for c in cats])
        text += "\nCD_h of the noisy hand initialisation (visual hull): " + ", ".join(
            f"{c} {first[c]['init_cd_h']:.1f}" for c in cats) + f" (mean {mean_init:.1f}).\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="procedural", choices=CLIP_SETS,
                    help="procedural categories, or the tuning / held-out real-object meshes (object_meshes.json)")
    ap.add_argument("--seeds", default="7", help="clip seeds of each real-object mesh (comma-separated)")
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variant names")
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--view-range", type=float, default=90.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default="/tmp/bench_ablation")
    ap.add_argument("--fresh", action="store_true", help="discard the results of an earlier run")
    ap.add_argument("--sds-every", type=int, default=1, help="fit --sds-every for the variants with a prior")
    ap.add_argument("--no-prior-from", default=None,
                    help="take the 'no prior' row from a bench_fit.py results_fast.json (same clips and settings)")
    ap.add_argument("--masks", choices=("gt", "tracked"), default="gt",
                    help="fit on the clips' GT masks or on the masks stage's tracked masks")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if "cat. prior" in names and not CATEGORY_ONLY_PRIOR.is_file():
        raise SystemExit(f"missing {CATEGORY_ONLY_PRIOR}: train it with `hoirecon prior train --recipe small "
                         "--no-hand-condition` (see weights/README.md)")
    work = Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    # Columns are clip names (the category of a procedural clip, the mesh name of a real-object one).
    bench = benchmark_clips(args.clips, work / "clips", args.frames, args.size, args.view_range,
                            [int(x) for x in args.seeds.split(",")], args.categories.split(","), args.seed0)
    clips = {c.name: c.out for c in bench}
    fit_category = {c.name: c.category for c in bench}
    cats = list(clips)
    tracked: dict[str, dict] = {}
    if args.masks == "tracked":
        for cat in cats:
            info = work / "clips_tracked" / f"{clips[cat].name}.json"
            if not info.is_file():
                info.parent.mkdir(parents=True, exist_ok=True)
                info.write_text(json.dumps(track_masks(clips[cat], info.with_suffix(""))))
            tracked[cat] = json.loads(info.read_text())
            print(cat, tracked[cat], flush=True)
            if tracked[cat]["ok"]:
                clips[cat] = info.with_suffix("")
        cats = [c for c in cats if tracked[c]["ok"]]

    def one(job: tuple[str, str]) -> tuple[str, str, dict]:
        name, cat = job
        runs = work if args.masks == "gt" else work / "tracked_masks"
        done = runs / slug(name) / f"{slug(cat)}.json"
        if done.is_file():
            return name, cat, json.loads(done.read_text())
        out = runs / slug(name) / clips[cat].name
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(clips[cat], out, ignore=shutil.ignore_patterns("fit", "export", "eval"))
        extra = [a.replace("{cat}", fit_category[cat]) for a in VARIANTS[name]]
        if "none" not in extra:
            extra += ["--sds-every", str(args.sds_every)]
        m = {"variant": name, "category": cat, **run_fit_child(out, "fast", None, extra=extra), **score(out)}
        done.write_text(json.dumps(m, indent=2))
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()}), flush=True)
        return name, cat, m

    results: dict[str, dict[str, dict]] = {n: {} for n in names}
    if args.no_prior_from and "no prior" in names and args.masks == "gt" and args.clips == "procedural":
        for row in json.loads(Path(args.no_prior_from).read_text()):
            if row["category"] in cats and row["seed"] == args.seed0 + cats.index(row["category"]):
                results["no prior"][row["category"]] = row
    # Run order: the comparison that matters most first (an interrupted run still answers it).
    order = ["no prior", "full prior (ours)", "hand prior", "cat. prior", "hard blending", "w/o per-frame object pose"]
    jobs = [(n, c) for n in sorted(names, key=order.index) for c in cats if c not in results[n]]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for name, cat, m in pool.map(one, jobs):
            results[name][cat] = m
    results = {n: {c: rows[c] for c in cats if c in rows} for n, rows in results.items()}
    cmd = (f"--seed0 {args.seed0}" if args.clips == "procedural" else f"--clips {args.clips} --seeds {args.seeds}")
    cmd += f" --jobs {args.jobs} --sds-every {args.sds_every}"
    if args.no_prior_from:
        cmd += f" --no-prior-from {args.no_prior_from}"
    if args.masks == "tracked":
        cmd += " --masks tracked"
    if args.variants != ap.get_default("variants"):
        cmd += f' --variants "{args.variants}"'
    masks_note = "GT masks"
    if tracked:
        masks_note = ("masks from `hoirecon masks` on the clip's rendered frames with its boxes (mean IoU against GT, "
                      "hand / object: " +
                      ", ".join(f"{c} {t['iou_hand']:.2f} / {t['iou_object']:.2f}" if t["ok"] else
                                f"{c}: left out, {t['message']}" for c, t in tracked.items()) + ")")
    header = (f"Command: `.venv/bin/python benchmarks/bench_ablation.py {cmd}` "
              f"({args.frames} frames, {args.size} px, view range {args.view_range:g} deg, {masks_note}, "
              "noisy hand init; "
              + (f"category i uses clip seed {args.seed0}+i, the clips of `bench_fit.py`; "
                 if args.clips == "procedural"
                 else f"the {args.clips} real-object meshes of benchmarks/object_meshes.json "
                      f"(synth seed(s) {args.seeds}"
                      f"{'; reporting only, never tuned on' if args.clips == 'heldout' else ''}); ")
              + "every variant is "
              "`hoirecon fit --preset fast` with the options in `VARIANTS` of the script). Machine: "
              f"{machine()}. Date: {datetime.date.today().isoformat()}. {args.jobs} fits side by side on a shared "
              f"machine (load average at the end {os.getloadavg()[0]:.1f}): times are upper bounds.")
    text = render_tables(results, cats, header)
    print(text)
    if not args.no_write:
        section = "bench_ablation" if args.masks == "gt" else "bench_ablation_tracked"
        write_section(section if args.clips == "procedural" else f"{section}_{args.clips}", text)


if __name__ == "__main__":
    main()
