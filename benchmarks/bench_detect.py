"""Automatic first-frame boxes (``hoirecon masks --detector auto``) against reference boxes.

Run: ``.venv/bin/python benchmarks/bench_detect.py`` (``--no-write`` to only print;
``--data DIR`` for the real clips, default ``../shared/data/real``; ``--real-frames N`` limits
the frames the masks stage tracks on the real clips, default 30).

Synthetic: the six categories (seeds 0-5, 30 frames, 256 px, default view range), the
clip's video alone (no boxes.json beside it) through frames + masks with the default
``auto`` detector; IoU of the auto boxes against the generator's GT first-frame boxes, and
whether the masks stage then passes its forward-backward check. Real: toy_plane and hand_fan
(640x480) against hand-drawn boxes on frame 0 (original pixels). Detection time is the
detection alone (one thread); the masks stage time includes segmentation and tracking.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HOIRECON_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

import torch  # noqa: E402

from hoirecon.errors import RunError  # noqa: E402
from hoirecon.geometry.regions import box_iou  # noqa: E402
from hoirecon.io.video import read_rgb  # noqa: E402
from hoirecon.pipeline.runner import run_pipeline  # noqa: E402
from hoirecon.segment.detect import detect_hand_box, detect_held_object_box  # noqa: E402
from hoirecon.stages.frames import STAGE as FRAMES, FramesConfig  # noqa: E402
from hoirecon.stages.outputs import FramesMeta, MasksOutput  # noqa: E402
from hoirecon.stages.masks import STAGE as MASKS, MasksConfig  # noqa: E402
from hoirecon.synth.generator import generate_clip  # noqa: E402

SECTION = "bench_detect"
CATEGORIES = ("mug", "bottle", "kettle", "bowl", "knife", "toy_car")
# Hand-drawn boxes on frame 0 (x0, y0, x1, y1, original pixels). toy_plane has two object
# references: the loose box and the tighter one of benchmarks/bench_masks_hand.py.
REAL = {
    "toy_plane": {"hand": (380, 40, 640, 330), "object": (130, 80, 510, 440), "object_tight": (290, 170, 520, 440)},
    "hand_fan": {"hand": (250, 160, 535, 480), "object": (230, 20, 415, 425)},
}


def run_clip(video: Path, work: Path, refs: dict, max_frames: int | None) -> dict:
    """Detection alone on the working frames, then frames + masks with the auto detector."""
    clip = work / "clip.mp4"  # alone in its folder: no sidecar boxes.json
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(video, clip)
    out = work / "out"
    run_pipeline(out, [(FRAMES, FramesConfig(str(clip), max_frames=max_frames))])
    meta = FramesMeta.load(out / "frames")
    scale = meta.size[0] / meta.source_size[0]
    frames = [read_rgb(p) for p in FramesMeta.frame_paths(out / "frames")[:4]]
    t0 = time.perf_counter()
    hand = detect_hand_box(frames[0])
    t_hand = time.perf_counter() - t0
    obj = detect_held_object_box(frames, hand.keypoints_2d) if hand is not None else None
    row = {"detect_s": time.perf_counter() - t0, "hand_s": t_hand,
           "presence": hand.presence if hand else None, "hand_from": hand.source if hand else "-"}
    for name, ref in refs.items():
        det = hand.box if name == "hand" else (obj[0] if obj else None)
        row[f"iou_{name}"] = box_iou([v / scale for v in det], ref) if det is not None else 0.0
    t0 = time.perf_counter()
    try:
        run_pipeline(out, [(FRAMES, FramesConfig(str(clip), max_frames=max_frames)), (MASKS, MasksConfig())])
        q = MasksOutput.load_quality(out / "masks")
        row["masks"] = f"passed ({q['track_iou']['hand']:.2f} / {q['track_iou']['object']:.2f})"
    except RunError as e:
        # the stage's message up to its advice: "masks failed the forward-backward check: IoU ..."
        row["masks"] = "failed: " + str(e).split(";")[0].replace("masks failed the forward-backward check: ", "")
    row["masks_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "real"))
    ap.add_argument("--real-frames", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    header = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, cat in enumerate(CATEGORIES):
            src = Path(tmp) / f"{cat}_src"
            generate_clip(cat, src, frames=30, size=256, seed=seed)
            gt = json.loads((src / "boxes.json").read_text())
            row = run_clip(src / "video.mp4", Path(tmp) / f"{cat}_run", {"hand": gt["hand"], "object": gt["object"]},
                           None)
            rows.append((f"{cat} (seed {seed})", row))
            print(rows[-1], flush=True)
        for name, refs in REAL.items():
            video = Path(args.data) / name / "video.mp4"
            if not video.is_file():
                print(f"skipping {name}: {video} not found", flush=True)
                continue
            rows.append((name, run_clip(video, Path(tmp) / name, refs, args.real_frames)))
            print(rows[-1], flush=True)

    lines = ["## Automatic first-frame boxes (`--detector auto`)", "",
             f"Command: `.venv/bin/python benchmarks/bench_detect.py` ({header}; 1 thread).",
             "Synthetic clips: 30 frames, 256 px, GT boxes from the generator; real clips: "
             f"640x480, first {args.real_frames} frames tracked, hand-drawn reference boxes on frame 0. "
             "IoU = box IoU of the auto box vs the reference; `hand from`: palm detector proposal "
             "or crop-grid search; masks = the masks stage with the auto boxes (forward-backward "
             "IoU hand / object).", "",
             "| clip | hand IoU | object IoU | presence | hand from | detect s | masks stage | masks s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        obj = f"{r['iou_object']:.2f}"
        if "iou_object_tight" in r:
            obj += f" (tight box: {r['iou_object_tight']:.2f})"
        pres = f"{r['presence']:.2f}" if r["presence"] is not None else "no hand"
        lines.append(f"| {name} | {r['iou_hand']:.2f} | {obj} | {pres} | {r['hand_from']} | {r['detect_s']:.1f} | "
                     f"{r['masks']} | {r['masks_s']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
