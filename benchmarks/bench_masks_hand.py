"""Benchmark the `masks` + `hand` stages on the real clips; write the table into BENCHMARKS.md.

Run: ``.venv/bin/python benchmarks/bench_masks_hand.py`` (``--clips toy_plane,hand_fan``,
``--data DIR`` for the clips' folder, default ``../shared/data/real``; ``--sheets DIR`` to
also write overlay contact sheets; ``--no-write`` to only print).

Per clip: frames, masks (GrabCut + flow tracking from hand-drawn first-frame boxes) and
hand (MediaPipe landmarks on mask crops + IK + eq. 4 + smoothing, default settings) run
in-process through the stage runner, each forced. Reported: wall and process CPU seconds
per stage, the masks' forward-backward IoUs, and the hand stage's own quality numbers
(frames with a hand, median reprojection error of the final hand keypoints against the
MediaPipe landmarks, median IoU of the rendered hand against the hand mask with object
pixels ignored, mean keypoint acceleration as a jitter measure).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, cpu_model, timed, write_section  # noqa: E402

from hoirecon.geometry.transforms import transform_points  # noqa: E402
from hoirecon.hand import build_hand_model  # noqa: E402
from hoirecon.pipeline.runner import run_stage  # noqa: E402
from hoirecon.stages.frames import STAGE as FRAMES, FramesConfig  # noqa: E402
from hoirecon.stages.hand import STAGE as HAND, HandConfig  # noqa: E402
from hoirecon.stages.masks import STAGE as MASKS, MasksConfig  # noqa: E402
from hoirecon.stages.outputs import FramesMeta, HandsOutput, MasksOutput, read_json  # noqa: E402

SECTION = "bench_masks_hand"

# First-frame boxes (x0, y0, x1, y1, original pixels), drawn by hand on frame 0.
CLIPS = {
    "toy_plane": {"hand": (380, 40, 640, 330), "object": (290, 170, 520, 440)},
    "hand_fan": {"hand": (250, 160, 535, 480), "object": (230, 20, 415, 425)},
}





def keypoint_jitter_cm(hands: dict) -> float:
    """Mean |second difference| of the 21 camera-frame hand keypoints (cm / frame^2)."""
    hand = build_hand_model(str(hands["hand_model"]))
    T_h2c = torch.tensor(np.linalg.inv(hands["T_cam_to_hand"]))
    n = T_h2c.shape[0]
    with torch.no_grad():
        kp = hand(torch.tensor(hands["articulation"]), torch.zeros(n, 3), torch.tensor(hands["shape"])[None]).keypoints
    kp = transform_points(T_h2c, kp)
    if n < 3:
        return 0.0
    return float((kp[2:] - 2 * kp[1:-1] + kp[:-2]).norm(dim=-1).mean() * 100)


def contact_sheet(video: Path, dest: Path, count: int = 8, cols: int = 4, width: int = 240) -> None:
    """A grid of ``count`` evenly spaced frames of a video, as a palette PNG (small)."""
    import cv2
    import imageio.v3 as iio
    from PIL import Image

    frames = iio.imread(video)
    idx = np.linspace(0, len(frames) - 1, count).astype(int)
    height = int(round(width * frames.shape[1] / frames.shape[2]))
    tiles = []
    for i in idx:
        tile = cv2.resize(frames[i], (width, height), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
        cv2.putText(tile, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
        tiles.append(tile)
    rows = [np.concatenate(tiles[r:r + cols], 1) for r in range(0, len(tiles), cols)]
    sheet = Image.fromarray(np.concatenate(rows, 0))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)


def run_clip(name: str, video: Path, out: Path) -> dict:
    boxes = CLIPS[name]
    res = {}
    _, res["frames_s"], res["frames_cpu"] = timed(lambda: run_stage(out, FRAMES, FramesConfig(str(video)), force=True))
    masks, res["masks_s"], res["masks_cpu"] = timed(lambda: run_stage(
        out, MASKS, MasksConfig(hand_box=boxes["hand"], object_box=boxes["object"]), force=True))
    hand, res["hand_s"], res["hand_cpu"] = timed(lambda: run_stage(out, HAND, HandConfig(), force=True))
    meta = FramesMeta.load(out / "frames")
    quality = read_json(out / "hand", HandsOutput.QUALITY)
    res.update(
        num_frames=meta.num_frames, size=list(meta.size), track_iou=masks.summary["track_iou"],
        valid=quality["valid_frames"], reproj=quality["reprojection_px_median"],
        mask_iou=quality["mask_iou_median"],
        jitter=keypoint_jitter_cm(dict(np.load(out / "hand" / "hands.npz"))),
    )
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="toy_plane", help=f"comma-separated, from {', '.join(CLIPS)}")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "real"))
    parser.add_argument("--sheets", default=None, help="write hand_overlay_<clip>.png contact sheets here")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips.split(","):
            video = Path(args.data) / name / "video.mp4"
            if not video.is_file():
                sys.exit(f"clip not found: {video} (pass --data)")
            out = Path(tmp) / name
            rows[name] = run_clip(name, video, out)
            print(name, rows[name], flush=True)
            if args.sheets:
                contact_sheet(out / "hand" / HandsOutput.OVERLAY, Path(args.sheets) / f"hand_overlay_{name}.png")
                contact_sheet(out / "masks" / MasksOutput.OVERLAY_FILE, Path(args.sheets) / f"masks_overlay_{name}.png")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "## Masks + hand on the real clips (`hoirecon masks`, `hoirecon hand`)",
        "",
        f"Machine: {os.cpu_count()} cores (`nproc`), {cpu_model()}, torch {torch.__version__}, "
        f"torch threads: {torch.get_num_threads()} (the hand stage runs its IK on 1), load average {load:.1f} at "
        f"start; date {datetime.date.today().isoformat()}; command: `.venv/bin/python benchmarks/bench_masks_hand.py "
        f"--clips {args.clips}`. Wall = wall-clock seconds; CPU = process CPU seconds (all threads; on a shared "
        f"machine wall time grows with the load of others, CPU time does not). Default settings: masks GrabCut + "
        f"flow from hand-drawn first-frame boxes; hand: MediaPipe landmarks on mask crops, IK, eq. 4 with focal 1, "
        f"smoothing weight 1. Target: masks + hand < 2 min for a 30-frame 640x480 clip on 2 cores. "
        f"Peak RSS of the whole run: {peak_mb:.0f} MB.",
        "",
        "| clip | frames | masks wall s | masks CPU s | hand wall s | hand CPU s | masks + hand wall s | "
        "track IoU hand / object | hand found | reproj px (median) | hand mask IoU (median) | jitter cm/frame² |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['num_frames']} ({r['size'][0]}x{r['size'][1]}) | {r['masks_s']:.1f} | "
            f"{r['masks_cpu']:.1f} | "
            f"{r['hand_s']:.1f} | {r['hand_cpu']:.1f} | {r['masks_s'] + r['hand_s']:.1f} | "
            f"{r['track_iou']['hand']:.2f} / {r['track_iou']['object']:.2f} | {r['valid']}/{r['num_frames']} | "
            f"{r['reproj']:.1f} | {r['mask_iou']:.2f} | {r['jitter']:.2f} |")
    lines += [
        "",
        "reproj px: final hand keypoints (after eq. 4 and smoothing, projected with K) vs. the MediaPipe 2D "
        "landmarks; part of it is a fixed difference between MediaPipe's palm landmarks and the model's joints. "
        "hand mask IoU: rendered hand vs. the tracked hand mask, object pixels ignored (fingers behind the object).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    write_section(SECTION, table)
    print(f"wrote {BENCHMARKS}")


if __name__ == "__main__":
    main()
