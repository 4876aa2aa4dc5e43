"""Benchmark of the pose network (Liu et al.) on held-out synthetic clips: the layout of the
paper's Tables 2/3 (mean hand joint error, mean object control-point error, in mm).

Clips: `hoirecon synth` folders (20 frames, 256 px, view range 180 deg). In-domain held-out: the
training categories (mug, bottle, kettle, bowl) with seeds 5000-5007 (meshes not used in
training); cross-domain: categories not in training (knife, toy_car), seeds 6000-6007.
Training clips: seeds 1000+ (recipe in weights/pose/README.md); unlabelled clips for the
semi-supervised phase: knife/toy_car seeds 7000-7011.

Errors per frame, averaged over frames then clips: hand: mean 3D distance of the 21 keypoints
after aligning the wrists (root-relative) and without alignment (absolute, camera frame);
object: mean 3D distance of the template's 21 control points under the predicted and the
true object pose (camera frame). Frames where PnP fails are counted ("PnP failures") and left
out of the means.

Usage: python benchmarks/bench_pose.py --data DIR --weights sup.pt [--weights semi.pt ...] [--baseline]

`--fit-init WORK` measures instead the issue's target "the object pose error is below what the
fit's visual-hull initialisation gives on the same clips" (section `pose-fit-init`): on the first
`--fit-clips` clips of each set, copied into WORK, the object poses of (a) the pose stage (first
`--weights`), (b) the fit's start with `--init default` and with `--init pose`, and with
`--fit-final`, (c) the fit's end from each (`--preset fast --prior none`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from hoirecon.hand import build_hand_model  # noqa: E402
from hoirecon.pose.data import load_clip  # noqa: E402
from hoirecon.pose.predict import predict_clip  # noqa: E402
from hoirecon.pose.train import load_pose_net  # noqa: E402
from hoirecon.stages.outputs import FitOutput  # noqa: E402


def shift_domain(src: Path, dst: Path, seed: int) -> Path:
    """Copy a synth clip folder with another look: the background (pixels of neither mask)
    replaced by a saturated checker-and-stripes pattern with noise, and a colour cast over the
    whole frame. The labels are unchanged. (The synth generator's backgrounds are smooth
    photo-like textures; this is the 'backgrounds differ' part of the cross-domain set.)"""
    import shutil

    import cv2

    from hoirecon.io.video import read_rgb, write_png
    from hoirecon.stages.outputs import FramesMeta, GroundTruth, MasksOutput

    if GroundTruth.file(dst).is_file():
        return dst
    rng = np.random.default_rng(seed)
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # Not the clip's video nor its noisy hand stage (top level only: masks/hand stays).
    shutil.copytree(src, tmp,
                    ignore=lambda d, names: [n for n in names if Path(d) == src and n in ("video.mp4", "hand")])
    paths = FramesMeta.frame_paths(tmp / "frames")
    first = read_rgb(paths[0])
    H, W = first.shape[:2]
    masks = MasksOutput.load(tmp / "masks", num_frames=len(paths), size_wh=(W, H))
    hand, obj = masks.hand, masks.obj
    colours = rng.uniform(0, 255, (2, 3))
    period = rng.uniform(6, 20)
    angle = rng.uniform(0, np.pi)
    cast = rng.uniform(0.7, 1.3, 3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for t, p in enumerate(paths):
        shift = 2.0 * t  # the pattern pans with the clip
        u = (np.cos(angle) * (xx + shift) + np.sin(angle) * yy) / period
        checker = ((np.floor(u) + np.floor((yy + shift) / (2 * period))) % 2)[..., None]
        bg = colours[0] * checker + colours[1] * (1 - checker) + rng.normal(0, 12, (H, W, 3))
        img = read_rgb(p).astype(np.float32)
        fg = cv2.dilate((hand[t] | obj[t]).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        img = np.where(fg[..., None], img, bg) * cast
        write_png(p, np.clip(img, 0, 255).astype(np.uint8))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def clip_errors(poses, clip) -> dict:
    lab = clip.labels
    v = poses.valid
    kp_true = lab["keypoints_cam"][v].astype(np.float64)
    kp_pred = poses.keypoints_cam[v]
    rel = np.linalg.norm((kp_pred - kp_pred[:, :1]) - (kp_true - kp_true[:, :1]), axis=-1).mean()
    absolute = np.linalg.norm(kp_pred - kp_true, axis=-1).mean()
    cp = clip.control_3d
    T_true, T_pred = lab["T_obj_to_cam"][v], poses.T_obj_to_cam[v]
    p_true = cp @ T_true[:, :3, :3].transpose(0, 2, 1) + T_true[:, None, :3, 3]
    p_pred = cp @ T_pred[:, :3, :3].transpose(0, 2, 1) + T_pred[:, None, :3, 3]
    per_frame = np.linalg.norm(p_pred - p_true, axis=-1).mean(-1)
    obj = per_frame.mean()
    uv_true = p_true @ clip.K.T
    uv_true = uv_true[..., :2] / uv_true[..., 2:3]
    kp_uv = kp_true @ clip.K.T
    kp_uv = kp_uv[..., :2] / kp_uv[..., 2:3]
    return {"hand_rel_mm": 1000 * rel, "hand_abs_mm": 1000 * absolute, "object_mm": 1000 * obj,
            "object_median_mm": 1000 * float(np.median(per_frame)),
            "hand_2d_px": np.linalg.norm(poses.joints_2d[v] - kp_uv, axis=-1).mean(),
            "object_2d_px": np.linalg.norm(poses.control_2d[v] - uv_true, axis=-1).mean(),
            "failed": int((~v).sum()), "frames": len(v)}


def evaluate(weights: Path, folders: list[Path], hand) -> dict:
    net, recipe = load_pose_net(weights)
    rows, seconds, frames = [], 0.0, 0
    for f in folders:
        clip = load_clip(f)
        t0 = time.perf_counter()
        poses = predict_clip(net, clip, hand)
        seconds += time.perf_counter() - t0
        frames += len(clip.images)
        rows.append({"clip": f.name, **clip_errors(poses, clip)})
    keys = ("hand_rel_mm", "hand_abs_mm", "object_mm", "object_median_mm", "hand_2d_px", "object_2d_px")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return {"rows": rows, "mean": mean, "failed": sum(r["failed"] for r in rows), "s_per_frame": seconds / frames,
            "name": weights.stem}


def baseline_hand(folders: list[Path]) -> dict:
    """MediaPipe + IK (the hand stage) on the same clips, at the clips' true focal length."""
    import shutil
    import tempfile

    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.hand import STAGE, HandConfig
    from hoirecon.stages.outputs import GroundTruth

    rel, ab = [], []
    for f in folders:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f.name
            shutil.copytree(f, out,
                            ignore=lambda d, names: [n for n in names if Path(d) == f and n in ("hand", "video.mp4")])
            gt = GroundTruth.load(f / GroundTruth.DIR)
            run_stage(out, STAGE, HandConfig(focal_px=float(gt.K[0, 0])))
            h = np.load(out / "hand" / "hands.npz")
            hand = build_hand_model("anny")
            with torch.no_grad():
                o = hand(torch.as_tensor(h["articulation"]), torch.zeros(len(h["articulation"]), 3),
                         torch.as_tensor(h["shape"]))
            T_h2c = np.linalg.inv(h["T_cam_to_hand"].astype(np.float64))
            kp = o.keypoints.double().numpy() @ T_h2c[:, :3, :3].transpose(0, 2, 1) + T_h2c[:, None, :3, 3]
            kt = gt["keypoints_cam"].astype(np.float64)
            rel.append(np.linalg.norm((kp - kp[:, :1]) - (kt - kt[:, :1]), axis=-1).mean() * 1000)
            ab.append(np.linalg.norm(kp - kt, axis=-1).mean() * 1000)
    return {"hand_rel_mm": float(np.mean(rel)), "hand_abs_mm": float(np.mean(ab))}


def _control_points_in_camera(T_obj_to_cam: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(T, 4, 4), (N, 3) -> (T, N, 3)."""
    return points @ T_obj_to_cam[:, :3, :3].transpose(0, 2, 1) + T_obj_to_cam[:, None, :3, 3]


def _frame_alignment(T_pred: np.ndarray, T_true: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(4, 4) the one rigid map of the true object frame into the predicted one that best lays
    the predicted control points of every frame on the true ones (least squares): the fit's
    default object frame (axes from the hand, origin at its centre estimate) is its own."""
    from hoirecon.eval.align import umeyama

    true_in_pred = _control_points_in_camera(np.linalg.inv(T_pred) @ T_true, points).reshape(-1, 3)
    _, R, t = umeyama(np.tile(points, (len(T_pred), 1))[None], true_in_pred[None], with_scale=False)
    A = np.eye(4)
    A[:3, :3], A[:3, 3] = R[0], t[0]
    return A


def object_pose_errors(T_pred: np.ndarray, T_true: np.ndarray, points: np.ndarray, align: bool) -> dict:
    """Mean over frames of the rotation (deg), translation of the template's origin (mm) and
    control-point (mm) errors of object poses T_obj_to_cam (T, 4, 4); ``align``: in the predicted
    frame after ``_frame_alignment`` (fitted to the truth: an oracle, in the fit's favour)."""
    from hoirecon.geometry.rotations import rotation_angle_deg

    T_pred = T_pred @ _frame_alignment(T_pred, T_true, points) if align else T_pred
    rot = rotation_angle_deg(T_pred[:, :3, :3].transpose(0, 2, 1) @ T_true[:, :3, :3])
    trans = np.linalg.norm(T_pred[:, :3, 3] - T_true[:, :3, 3], axis=-1)
    cp = np.linalg.norm(_control_points_in_camera(T_pred, points) - _control_points_in_camera(T_true, points), axis=-1)
    return {"rot_deg": float(rot.mean()), "trans_mm": 1000 * float(trans.mean()), "cp_mm": 1000 * float(cp.mean())}


def _fit_object_poses(out: Path, init: str, final: bool) -> dict[str, np.ndarray]:
    """{"start": (T, 4, 4)[, "end": ...]} object-in-camera poses of the fit run from ``init``
    (``--preset fast --prior none``; one step when only the start is asked for)."""
    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.fit import STAGE, FitConfig
    from hoirecon.stages.outputs import FitPoses, HandsOutput

    cfg = FitConfig(preset="fast", prior="none", init=init, **({} if final else {"steps": 1, "mesh_resolution": 32}))
    run_stage(out, STAGE, cfg, force=True)
    T_cam_to_hand = HandsOutput.load(out / "hand").T_cam_to_hand.astype(np.float64)
    start = FitOutput.initial_T_hand_to_obj(out / "fit").astype(np.float64)
    poses = {"start": np.linalg.inv(start @ T_cam_to_hand)}
    if final:
        fitted = FitPoses.load(out / "fit")
        poses["end"] = np.linalg.inv(fitted.T_hand_to_obj.astype(np.float64) @ fitted.T_cam_to_hand.astype(np.float64))
    return poses


def fit_init_clip(src: Path, work: Path, weights: Path, final: bool) -> dict:
    """Object pose errors of the pose stage and of the fit's start (and end) from each init."""
    import shutil

    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.evaluate import load_ground_truth
    from hoirecon.stages.outputs import GroundTruth, PoseOutput
    from hoirecon.stages.pose import STAGE as POSE, PoseConfig

    out = work / src.name
    if not out.is_dir():
        shutil.copytree(src, out, ignore=lambda d, names: [n for n in names if Path(d) == src and n == "video.mp4"])
    gt, _ = load_ground_truth(out)
    T_true = np.linalg.inv(gt.T_hand_to_obj.astype(np.float64) @ gt.T_cam_to_hand.astype(np.float64))
    run_stage(out, POSE, PoseConfig(object_mesh=str(GroundTruth.mesh_file(out)), weights=str(weights),
                                    focal_px=float(gt.K[0, 0])))
    pose = PoseOutput.load(out / "pose")
    points = pose.control_points_3d.astype(np.float64)
    v = pose.valid
    rows = {("pose network", "-"): {"as_is": object_pose_errors(pose.T_obj_to_cam[v].astype(np.float64), T_true[v],
                                                                points, False),
                                    "aligned": object_pose_errors(pose.T_obj_to_cam[v].astype(np.float64), T_true[v],
                                                                  points, True), "failed": int((~v).sum())}}
    for init in ("default", "pose"):
        for when, T_pred in _fit_object_poses(out, init, final).items():
            rows[(f"fit {when}", init)] = {
                "as_is": object_pose_errors(T_pred, T_true, points, False) if init == "pose" else None,
                "aligned": object_pose_errors(T_pred, T_true, points, True), "failed": 0}
    return rows


def fit_init_table(data: Path, work: Path, weights: Path, sets: list[str], clips: int, final: bool) -> str:
    """The markdown table of ``fit_init_clip`` averaged over clips, per set."""
    keys = ("rot_deg", "trans_mm", "cp_mm")
    lines = ["| set | poses | fit --init | rotation (deg) | translation (mm) | control points (mm) | aligned: rotation "
             "(deg) | aligned: translation (mm) | aligned: control points (mm) | PnP failures |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in sets:
        # Every other clip: the sets hold two clips of each category in name order.
        folders = sorted((data / name).iterdir())[::2][:clips]
        per_clip = [fit_init_clip(f, work / name, weights, final) for f in folders]
        print(json.dumps([{f"{k[0]} / {k[1]}": v for k, v in r.items()} for r in per_clip], indent=1))
        for key in per_clip[0]:
            cells = []
            for kind in ("as_is", "aligned"):
                got = [r[key][kind] for r in per_clip]
                cells += ["-"] * 3 if got[0] is None else [f"{np.mean([g[k] for g in got]):.1f}" for k in keys]
            failed = sum(r[key]["failed"] for r in per_clip)
            lines.append(f"| {name} ({len(folders)} clips) | {key[0]} | {key[1]} | {' | '.join(cells)} | {failed} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="folder with test/ and cross/ clip folders")
    ap.add_argument("--weights", type=Path, action="append", required=True)
    ap.add_argument("--baseline", action="store_true", help="also run MediaPipe + IK (slow; its numbers are kept "
                                                             "in DATA/baseline_hand.json and reused)")
    ap.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    ap.add_argument("--fit-init", type=Path, metavar="WORK", help="compare the fit's object pose initialisations "
                                                                   "instead (clips copied into WORK)")
    ap.add_argument("--fit-clips", type=int, default=4, help="clips per set for --fit-init")
    ap.add_argument("--fit-sets", default="test,cross", help="sets for --fit-init, comma-separated")
    ap.add_argument("--fit-final", action="store_true", help="with --fit-init: also run the whole fits")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.fit_init:
        return fit_init_main(args)
    hand = build_hand_model("anny")
    sets = {name: sorted((args.data / name).iterdir()) for name in ("test", "cross", "cross_shift")
            if (args.data / name).is_dir()}
    results = {w: {s: evaluate(w, fs, hand) for s, fs in sets.items()} for w in args.weights}
    base = None
    if args.baseline:
        cache = args.data / "baseline_hand.json"
        base = json.loads(cache.read_text()) if cache.is_file() else {}
        for s, fs in sets.items():
            if s not in base:
                base[s] = baseline_hand(fs)
                cache.write_text(json.dumps(base, indent=1))
    print(json.dumps({str(k): v for k, v in results.items()}, indent=1, default=float))
    if base:
        print(json.dumps(base, indent=1))
    lines = ["| model | set | hand joints, root-relative (mm) | hand joints, absolute (mm) "
             "| object control points (mm) | object, median frame (mm) | hand joints 2D (px) "
             "| object control points 2D, voted (px) "
             "| PnP failures | s / frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w, per in results.items():
        for s, r in per.items():
            m = r["mean"]
            lines.append(f"| `{w.name}` | {s} ({len(sets[s])} clips) | {m['hand_rel_mm']:.1f} | "
                         f"{m['hand_abs_mm']:.1f} | {m['object_mm']:.1f} | {m['object_median_mm']:.1f} | "
                         f"{m['hand_2d_px']:.1f} | {m['object_2d_px']:.1f} | "
                         f"{r['failed']} | {r['s_per_frame']:.3f} |")
    if base:
        for s, m in base.items():
            lines.append(f"| MediaPipe + IK (hand stage, true focal) | {s} | {m['hand_rel_mm']:.1f} | "
                         f"{m['hand_abs_mm']:.1f} | - | - | - | - | - | - |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("pose", "## Pose network (`hoirecon pose`, Liu et al.; the paper's Tables 2/3 layout)\n\n"
                      f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, 1 torch thread, nice 19, machine shared "
                      "with other jobs. `python benchmarks/bench_pose.py --data DATA --weights W ... --baseline "
                      "--write`. Held-out synth clips (20 frames, 256 px, view range 180 deg), meshes not used in "
                      "training: `test` = the training categories (mug, bottle, kettle, bowl), seeds 5000-5007; "
                      "`cross` = other categories (knife, toy_car), seeds 6000-6007; `cross_shift` = the `cross` "
                      "clips with other backgrounds and a colour cast (`shift_domain`). Errors: mean over frames, "
                      "then clips; hand: 21 keypoints, root-relative (wrists aligned) and absolute (camera frame); "
                      "object: the template's 21 control points under the predicted vs true pose (camera frame). "
                      "Boxes from the GT masks; true intrinsics. s / frame: network + PnP + hand model, without "
                      "reading frames.\n\n" + table + "\n")


def fit_init_main(args) -> None:
    command = " ".join(["python benchmarks/bench_pose.py"] + sys.argv[1:])
    started = machine()
    table = fit_init_table(args.data, args.fit_init, args.weights[0], args.fit_sets.split(","), args.fit_clips,
                           args.fit_final)
    print(table)
    if args.write:
        # The whole fits take minutes per clip: fewer clips, their own section.
        section, title = (("pose-fit-final", "after the whole fit") if args.fit_final
                          else ("pose-fit-init", "the fit's initialisation"))
        write_section(section, f"## Pose network vs {title} (`fit --init pose`, issue 24)\n\n"
                      f"Measured {time.strftime('%Y-%m-%d')} on {started}, 1 torch thread, machine shared with other "
                      f"jobs. `{command}`. Every other clip of the sets of the `pose` section "
                      f"(one per category; held out; "
                      f"20 frames, 256 px). Object poses (template frame, camera): the pose stage "
                      f"(`{args.weights[0].name}`, true focal; frames where PnP failed left out), and the poses the "
                      "fit starts from (`fit/init.npz` with the hand stage's cameras) with `--init default` (centre "
                      "from the masks, axes from the hand: the synth clips have no structure-from-motion cameras) "
                      "and `--init pose`" + (", and where the fit ends (`--preset fast --prior none`, 1500 steps)"
                                            if args.fit_final else "") + ". Errors: mean over frames, then clips: "
                      "rotation angle, distance of the template's origin, mean distance of the template's 21 "
                      "control points. The first three columns compare the template's frame as is (only the pose "
                      "network's frame is the template's); the `aligned` columns first map the true object frame "
                      "into the method's frame by the one rigid transform per clip that fits the control points "
                      "of all frames best (fitted to the truth: an oracle that favours the default init, whose "
                      "object frame is its own).\n\n" + table + "\n")


if __name__ == "__main__":
    main()
