"""Real everyday clips end to end: `hoirecon run` on every clip of ../shared/data/real/, twice.

Once with automatic first-frame boxes and once with the boxes drawn by hand in 100DOH's
style (the object box around the whole object, the part behind the fingers included), kept
in ``benchmarks/real/<clip>.boxes.json``; per-clip settings (which hand, category) are in
``benchmarks/real/clips.json`` (the hand's side there is the truth the run's own reading,
``--side auto``, is checked against). No ground truth exists for these clips, so the table reports
self-consistency:

- masks: whether the forward-backward check passed, and its IoUs;
- silhouette IoU of the fitted object and hand, rendered with the fitted cameras, against
  the masks: median and worst frame. The object is the mesh the user gets (``object.ply``,
  fit stage 6 and later); the volume rendering's median is in brackets;
- deepest hand vertex inside the fitted object (mm), share of frames in contact (some hand
  vertex within 5 mm of the object surface);
- object pose jitter: mean acceleration of the object centre in the camera (mm / frame²)
  and mean change of its angular velocity (degrees / frame²);
- the focal length used and where it came from; frames registered by structure from
  motion and the largest angle between the fitted and the SfM object rotations;
- wall time and peak memory of the whole `hoirecon run` process.

It also saves each run's summary picture as ``docs/images/real_<clip>_<boxes>.jpg``.

    .venv/bin/python benchmarks/bench_real.py [--clips toy_plane,hand_fan] [--prior none]
    .venv/bin/python benchmarks/bench_real.py --variants mirror,reverse,portrait

The clips as filmed are the tuning set. ``--variants`` runs the held-out variants of
``bench_masks_real`` instead (mirrored: a left hand; time-reversed: automatic boxes only;
cropped to portrait), on which no setting was tuned; their table is a section of its own, and
their pictures stay in the work folder.

Without ``--prior`` each run uses `hoirecon run`'s own default prior, as a user's run does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_masks_real import VARIANTS, make_variant  # noqa: E402
from common import hand_object_signed_distance, machine, write_section  # noqa: E402

from hoirecon.geometry.rotations import rotation_angle_deg  # noqa: E402
from hoirecon.settings import user_settings  # noqa: E402
from hoirecon.stages.configs import FitConfig  # noqa: E402
from hoirecon.stages.outputs import ExportOutput, FitOutput, HandsOutput, MasksOutput, read_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
SETTINGS = Path(__file__).resolve().parent / "real"
IMAGES = ROOT / "docs" / "images"
CONTACT_MM = 5.0
RUN_PRIOR = next(s.default for s in user_settings(FitConfig) if s.name == "prior")  # the command line's default


def run_clip(video: Path, out: Path, settings: dict, boxes: Path | None, prior: str | None) -> dict:
    """`hoirecon run` in a child process -> exit code, last error line, wall seconds, peak RSS
    (``prior`` None: the run's own default, what a user gets)."""
    exe = Path(sys.executable).with_name("hoirecon")
    cmd = [str(exe), "run", str(video), "--category", settings.get("category", "unknown"), "--out", str(out),
           "--quiet"]  # no --side: the run reads it from the clip, as a user's does
    cmd += ["--prior", prior] if prior is not None else []
    if boxes is not None:
        cmd += ["--boxes", str(boxes)]
    else:
        cmd += ["--detector", "auto"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
    return {"exit": os.waitstatus_to_exitcode(status), "error": err[-1] if err else "",
            "seconds": time.perf_counter() - t0, "peak_rss_gb": usage.ru_maxrss / 1e6}


def pose_jitter(fit_dir: Path) -> tuple[float, float]:
    """Mean object-centre acceleration in the camera (mm) and mean angular-velocity change (deg)."""
    poses = np.load(fit_dir / "poses.npz")
    T_c2o = poses["T_hand_to_obj"].astype(np.float64) @ poses["T_cam_to_hand"].astype(np.float64)
    T_o2c = np.linalg.inv(T_c2o)
    centre = T_o2c[:, :3, 3]
    R = T_o2c[:, :3, :3]
    if len(R) < 3:
        return 0.0, 0.0
    accel = np.linalg.norm(centre[2:] - 2 * centre[1:-1] + centre[:-2], axis=-1).mean() * 1000.0
    step = np.transpose(R[:-1], (0, 2, 1)) @ R[1:]
    change = np.transpose(step[:-1], (0, 2, 1)) @ step[1:]
    return float(accel), float(rotation_angle_deg(change).mean())


def score(out: Path, run: dict) -> dict:
    row = dict(run)
    q = MasksOutput.load_quality(out / "masks")
    if q is None:
        q = MasksOutput.load_quality(out / MasksOutput.FAILED_DIR)
    if q is not None:
        row["masks_passed"] = q.get("passed")
        row["fb_iou"] = q.get("track_iou")
        row["side_found"] = (q.get("side") or {}).get("side")
    c = read_json(out / "hand", HandsOutput.CAMERA)
    if c is not None:
        row["focal_px"], row["focal_source"] = c["focal_px"], c["source"]
        row["sfm_registered"] = (c.get("sfm") or {}).get("registered_frames")
    if not (out / "fit" / FitOutput.SUMMARY).is_file():
        return row
    s = FitOutput.summary(out / "fit")
    # What the user gets: the extracted object mesh and the hand meshes (fit stage 6 and later);
    # the volume rendering's object IoU beside it.
    scored = s.get("mesh_mask_iou", s["mask_iou"])
    obj = np.array([r["iou_object"] for r in scored])
    hand = np.array([r["iou_hand"] for r in scored])
    row.update(obj_iou_median=float(np.median(obj)), obj_iou_worst=float(obj.min()),
               hand_iou_median=float(np.median(hand)), hand_iou_worst=float(hand.min()),
               obj_iou_volume_median=float(np.median([r["iou_object"] for r in s["mask_iou"]])))
    if "object_missed" in scored[0]:  # fit 14 on: where the object's pixels disagree
        row["obj_error_shares"] = [float(np.median([r[k] for r in scored]))
                                   for k in ("object_missed", "object_under_hand", "object_extra")]
    row["sfm_rotation_max_deg"] = s.get("cameras", {}).get("fitted_vs_sfm_rotation_deg_max")
    d = hand_object_signed_distance(out / "fit")
    row["deepest_mm"] = float(max(0.0, -d.min()) * 1000.0)
    row["contact_share"] = float((d.min(1) * 1000.0 < CONTACT_MM).mean())
    row["jitter_mm"], row["jitter_deg"] = pose_jitter(out / "fit")
    return row


def save_jpeg(png: Path, jpg: Path, quality: int = 85) -> None:
    """The summary picture as a JPEG (a tenth of the PNG's size in the repository)."""
    import cv2

    cv2.imwrite(str(jpg), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, quality])


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def side_cell(row: dict) -> str:
    """The side the run found, marked where it is not the clip's (``side``: the hand filmed)."""
    found = row.get("side_found")
    return "—" if found is None else found if found == row["side"] else f"**{found}** (filmed: {row['side']})"


def table(rows: list[dict]) -> str:
    head = ("| clip | variant | boxes | exit | hand side found | masks passed (IoU hand / object) | "
            "object IoU median / worst (volume) | "
            "object missed / under hand / extra (median % of its mask) | hand IoU median / worst | "
            "deepest hand vertex (mm) | contact frames | jitter (mm / deg) | "
            "focal (px, source) | SfM frames, max rot. error (deg) | wall (s) | peak RSS (GB) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        fb = r.get("fb_iou") or {}
        masks = (f"{r.get('masks_passed')} ({fmt(fb.get('hand'), '.2f')} / {fmt(fb.get('object'), '.2f')})"
                 if fb else str(r.get("masks_passed")))
        lines.append(
            f"| {r['clip']} | {r['variant']} | {r['boxes']} | {r['exit']} | {side_cell(r)} | {masks} | "
            f"{fmt(r.get('obj_iou_median'), '.2f')} / {fmt(r.get('obj_iou_worst'), '.2f')} "
            f"({fmt(r.get('obj_iou_volume_median'), '.2f')}) | "
            f"{' / '.join(f'{100 * v:.0f}' for v in r['obj_error_shares']) if 'obj_error_shares' in r else '—'} | "
            f"{fmt(r.get('hand_iou_median'), '.2f')} / {fmt(r.get('hand_iou_worst'), '.2f')} | "
            f"{fmt(r.get('deepest_mm'), '.1f')} | {fmt(r.get('contact_share'), '.0%')} | "
            f"{fmt(r.get('jitter_mm'), '.1f')} / {fmt(r.get('jitter_deg'), '.1f')} | "
            f"{fmt(r.get('focal_px'), '.0f')} ({r.get('focal_source', '—')}) | "
            f"{fmt(r.get('sfm_registered'), 'd')}, {fmt(r.get('sfm_rotation_max_deg'), '.1f')} | "
            f"{r['seconds']:.0f} | {r['peak_rss_gb']:.2f} |")
    errors = [f"- {r['clip']} {r['variant']} ({r['boxes']}): {r['error']}" for r in rows if r["exit"] != 0]
    return head + "\n".join(lines) + ("\n\nFailed runs:\n" + "\n".join(errors) if errors else "") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default=None, help="comma-separated clip names (default: every clip)")
    ap.add_argument("--boxes", default="auto,drawn", help="auto, drawn or both")
    ap.add_argument("--prior", default=None, help="fit --prior for every run (default: the run's own, "
                                                   f"{RUN_PRIOR!r}, what a user gets)")
    ap.add_argument("--variants", default="original",
                    help=f"comma-separated, of {', '.join(VARIANTS)}: original is the tuning set, the others are "
                         f"held out and get a table of their own")
    ap.add_argument("--work", default="/tmp/bench_real")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    settings = json.loads((SETTINGS / "clips.json").read_text())
    names = args.clips.split(",") if args.clips else sorted(p.name for p in REAL.iterdir() if p.is_dir())
    variants = args.variants.split(",")
    held_out = variants != ["original"]
    started = machine()
    options = (("prior", args.prior), ("variants", args.variants if held_out else None))
    command = "".join(f" --{k} {v}" for k, v in options if v is not None)
    prior_used = args.prior if args.prior is not None else f"{RUN_PRIOR} (the run's default)"
    section = "bench_real_variants" if held_out else "bench_real"
    title = ("Real clips end to end, held-out variants (`bench_real --variants`)" if held_out
             else "Real clips end to end (`bench_real`)")
    rows = []
    for name in names:
        drawn = json.loads((SETTINGS / f"{name}.boxes.json").read_text())
        for variant in variants:
            clip_dir = Path(args.work) / f"{name}-{variant}-clip"
            shutil.rmtree(clip_dir, ignore_errors=True)
            made = make_variant(variant, REAL / name / "video.mp4", drawn, settings.get(name, {}).get("side", "right"),
                                clip_dir)
            if made is None:
                continue
            video, boxes, side = made
            for mode in args.boxes.split(","):
                if mode == "drawn" and boxes is None:
                    continue
                out = Path(args.work) / (f"{name}-{mode}" if variant == "original" else f"{name}-{variant}-{mode}")
                shutil.rmtree(out, ignore_errors=True)
                boxes_file = None
                if mode == "drawn":
                    boxes_file = clip_dir / "boxes.json"
                    clip_dir.mkdir(parents=True, exist_ok=True)
                    boxes_file.write_text(json.dumps(boxes))
                run = run_clip(video, out, settings.get(name, {}), boxes_file, args.prior)
                row = {"clip": name, "variant": variant, "boxes": mode, "side": side, **score(out, run)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                picture = out / "export" / ExportOutput.SUMMARY
                if picture.is_file() and not args.no_write and variant == "original":
                    save_jpeg(picture, IMAGES / f"real_{name}_{mode}.jpg")
                # Written after every clip: a long run stopped half-way still leaves its rows.
                body = (f"## {title}\n\n"
                        f"`.venv/bin/python benchmarks/bench_real.py{command}`; prior: {prior_used}; "
                        f"machine: {started}. "
                        f"No ground truth: IoUs are of the fit's renderings against the masks it was fitted to. "
                        + ("Held out: no setting was tuned on these variants; pictures stay in the work folder."
                           if held_out else "Summary pictures: `docs/images/real_<clip>_<boxes>.jpg`.")
                        + "\n\n" + table(rows))
                if not args.no_write:
                    write_section(section, body)
    print(body)


if __name__ == "__main__":
    main()
