"""Automatic first-frame boxes (``--detector auto``): MediaPipe hand search + held object next to it.

IoU thresholds: 0.5, the usual criterion for a detection matching its ground-truth box
(PASCAL VOC). The synthetic GT hand box also holds the visible wrist stub, which the landmark
box leaves out, so a correct hand box scores 0.6-0.8 here (measured: benchmarks/bench_detect.py).
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import run_cli
from hoirecon.io.video import read_rgb, write_video
from hoirecon.pipeline.runner import read_manifest, run_pipeline
from hoirecon.segment.detect import (
    DetectConfig,
    detect_hand_box,
    detect_held_object_box,
    grid_rects,
    hand_region_from_keypoints,
)
from hoirecon.stages.frames import STAGE as FRAMES, FramesConfig
from hoirecon.stages.masks import STAGE as MASKS, MasksConfig, _first_frame_boxes
from hoirecon.stages.outputs import FramesMeta, MasksOutput

pytest.importorskip("ai_edge_litert")
pytest.importorskip("mediapipe")


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory):
    """Two 8-frame synthetic clips (mug seed 0, bottle seed 2) with their GT first-frame boxes."""
    from hoirecon.synth.generator import generate_clip

    out = {}
    for cat, seed in (("mug", 0), ("bottle", 2)):
        d = tmp_path_factory.mktemp(f"{cat}{seed}")
        generate_clip(cat, d, frames=8, size=256, seed=seed)
        frames = [read_rgb(p) for p in sorted((d / "frames").glob("*.png"))]
        out[cat] = (d, frames, json.loads((d / "boxes.json").read_text()))
    return out


def _textured_background(h=192, w=256, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = (rng.random((h // 16, w // 16, 3)) * 120 + 60).astype(np.uint8)
    img = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(img, (5, 5), 0)


def test_grid_covers_the_image():
    rects = grid_rects(480, 640, (0.45, 0.9), 0.5, (0.0, 90.0))
    centres = np.array([(r.cx, r.cy) for r in rects])
    sides = np.array([r.size for r in rects])
    small = sides == sides.min()
    # the small crops reach every border and neighbours overlap
    assert (centres[small, 0] - sides[small] / 2).min() <= 0 and (centres[small, 0] + sides[small] / 2).max() >= 639
    assert (centres[small, 1] - sides[small] / 2).min() <= 0 and (centres[small, 1] + sides[small] / 2).max() >= 479
    xs = np.unique(np.round(centres[small, 0]))
    assert np.diff(xs).max() <= 0.5 * sides.min() + 1
    assert len(rects) == 2 * len(np.unique(centres, axis=0))


def test_border_crops_are_centred_on_the_border():
    # a close hand entering from the frame's edge is only found in a crop centred on it
    rects = grid_rects(480, 640, (1.2,), 0.5, (0.0,), to_border=True)
    centres = np.array([(r.cx, r.cy) for r in rects]) + 0.5  # pixel centres -> pixel corners
    assert centres[:, 0].min() == 0 and centres[:, 0].max() == 640
    assert centres[:, 1].min() == 0 and centres[:, 1].max() == 480
    assert np.diff(np.unique(centres[:, 0])).max() <= 0.5 * rects[0].size + 1


@pytest.mark.parametrize("cat", ["mug", "bottle"])
def test_detects_hand_and_held_object_on_synthetic_clips(synth_clips, cat):
    _, frames, gt = synth_clips[cat]
    hand = detect_hand_box(frames[0])
    assert hand is not None and hand.presence >= DetectConfig().min_presence
    assert box_iou(hand.box, gt["hand"]) > 0.5
    obj = detect_held_object_box(frames, hand.keypoints_2d)
    assert obj is not None and 0.0 < obj[1] <= 1.0
    assert box_iou(obj[0], gt["object"]) > 0.5
    # the object box is not just the hand again
    assert box_iou(obj[0], hand.box) < 0.9


def test_hand_region_is_inside_the_landmarks_box(synth_clips):
    _, frames, _ = synth_clips["mug"]
    hand = detect_hand_box(frames[0])
    region = hand_region_from_keypoints(hand.keypoints_2d, frames[0].shape[:2])
    ys, xs = np.nonzero(region)
    x0, y0, x1, y1 = hand.box
    assert region.sum() > 100 and xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1


def test_no_hand_in_a_textured_background():
    assert detect_hand_box(_textured_background()) is None
    skin = np.full((160, 160, 3), (225, 170, 140), np.uint8)
    assert detect_hand_box(skin) is None


def test_user_boxes_win_over_auto():
    meta = FramesMeta(fps=10.0, num_frames=1, size=(256, 256), original_size=(512, 512), source="/nonexistent/clip.mp4")
    cfg = MasksConfig(hand_box=(0, 0, 100, 100), object_box=(100, 100, 200, 220), detector="auto")
    hand, obj, origin, detection = _first_frame_boxes(cfg, meta, [np.zeros((256, 256, 3), np.uint8)], "cpu")
    assert origin == "options" and detection is None
    assert hand == (0, 0, 50, 50) and obj == (50, 50, 100, 110)


def test_stage_auto_records_where_boxes_came_from(synth_clips, tmp_path):
    src, _, gt = synth_clips["mug"]
    clip = tmp_path / "clip.mp4"  # no boxes.json beside it: the detector must find them
    shutil.copy(src / "video.mp4", clip)
    out = tmp_path / "o"
    run_pipeline(out, [(FRAMES, FramesConfig(str(clip))), (MASKS, MasksConfig())])
    q = MasksOutput.load_quality(out / "masks")
    boxes = MasksOutput.load(out / "masks").boxes
    assert q["boxes_from"] == "auto" and boxes["boxes_from"] == "auto"
    assert q["detection"]["hand"]["presence"] >= 0.6 and "fill" in q["detection"]["object"]
    assert box_iou(boxes["hand"], gt["hand"]) > 0.5 and box_iou(boxes["object"], gt["object"]) > 0.5
    assert q["side"]["from"] == "auto" and q["side"]["side"] == "right" and q["side"]["readings"]


def test_stage_auto_follows_the_left_hand_of_a_mirrored_clip(synth_clips, tmp_path):
    _, frames, gt = synth_clips["mug"]
    clip = tmp_path / "mirrored.mp4"
    write_video(clip, [np.ascontiguousarray(f[:, ::-1]) for f in frames], fps=10)
    out = tmp_path / "o"
    run_pipeline(out, [(FRAMES, FramesConfig(str(clip))), (MASKS, MasksConfig())])
    q = MasksOutput.load_quality(out / "masks")
    assert q["side"]["side"] == "left" and q["side"]["right_probability"] < 0.4
    W = frames[0].shape[1]
    x0, y0, x1, y1 = gt["hand"]
    assert box_iou(MasksOutput.load(out / "masks").boxes["hand"], (W - 1 - x1, y0, W - 1 - x0, y1)) > 0.5


def test_stage_without_a_hand_fails_with_one_line(tmp_path):
    base = _textured_background()
    frames = [np.roll(base, 2 * t, axis=1) for t in range(4)]
    clip = tmp_path / "nohand.mp4"
    write_video(clip, frames, fps=10)
    out = tmp_path / "o"
    code, _, err = run_cli("run", str(clip), "--category", "mug", "--out", str(out), "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--hand-box" in err
    assert "no hand found in the first frame" in err
    assert read_manifest(out / "frames") is not None and read_manifest(out / "masks") is None


def test_a_still_band_inside_the_foreground_does_not_cut_the_object(synth_clips):
    # The motion cue can call part of a held object still (a handle spun about its own axis).
    # Inside the learned foreground that is only probable background: the object stays whole.
    from hoirecon.geometry.regions import mask_iou
    from hoirecon.segment.detect import ObjectDetectConfig, object_mask_near_hand

    d, frames, _ = synth_clips["bottle"]
    truth = MasksOutput.load(d / "masks", num_frames=8, size_wh=frames[0].shape[1::-1])
    hand = detect_hand_box(frames[0])
    obj = truth.obj[0]
    ys, xs = np.nonzero(obj)
    still = np.zeros_like(obj)
    still[:, xs.min():xs.max() + 1] = True
    still[: int(np.percentile(ys, 40))] = False
    still[int(np.percentile(ys, 60)):] = False  # a band across the object, and the wall beside it
    seen = object_mask_near_hand(frames[0], hand.keypoints_2d, ObjectDetectConfig(), still, truth.hand[0] | obj)
    assert mask_iou(seen, obj) > 0.7  # 0.84; 0.58 where the band was sure background
