"""Stage `masks`: hand and object masks for every frame, with the forward-backward IoU filter.

Seed A.4: detect hand + held object in the first frame, segment them, track the masks
through the clip; track forward and backward and keep the clip only if the IoU between
the first-frame masks and the masks tracked back is above the threshold (40%) for both.

Backends (``--detector``, ``--segmenter``, ``--tracker``):
- first-frame boxes: user boxes (``--hand-box``/``--object-box``, ``--boxes boxes.json``,
  or a ``boxes.json`` next to the clip) always win; else ``auto`` (default, offline: MediaPipe
  hand landmarks searched over crops, the held object from the region next to the hand that
  stands out from the background, lies in the learned foreground and moves with the hand;
  ``hoirecon.segment.detect``), ``doh100`` (paper, needs weights), or ``boxes`` (boxes required).
- segmenter: ``grabcut`` (default, offline; with the ``foreground`` tracker the first frame is
  the learned foreground split by the hand's landmarks, and the box-only colour cut is the
  fallback where no landmarks are found) | ``pointrend`` (paper, needs weights).
- tracker: ``auto`` (default: runs ``foreground``, and ``flow`` from both first frames, the colour
  cut's and the foreground split's, and keeps the candidate whose masks pass the forward-backward
  check best; every candidate's IoUs are in quality.json ``candidates``, its name in ``kept``) | ``foreground``
  (every frame's own learned foreground, MediaPipe's selfie
  segmenter, split into hand and object by the hand's landmarks and a colour cut, kept
  consistent in time by the previous masks moved by optical flow; ``hoirecon.segment.foreground``;
  where that foreground does not see the first-frame hand and object, e.g. on renders, the clip
  falls back to ``flow``) | ``flow`` (DIS optical flow + GrabCut refinement) | ``stcn`` (paper,
  needs weights).
``--masks-dir`` bypasses all of it with user masks (validated for count, size, format).
A failed check still writes ``<out>/masks_failed/overlay.mp4`` and ``quality.json`` (``passed``
false) for the user to look at; ``--iou-threshold 0`` goes on with the masks as they are.

Artifacts in ``<out>/masks/`` (``hoirecon.stages.outputs.MasksOutput``): ``hand/NNNNNN.png``,
``object/NNNNNN.png`` (0/255),
``boxes.json`` (first-frame boxes in working-frame pixels, ``boxes_from`` and, for ``auto``,
``scores``), ``quality.json``
(``track_iou`` {hand, object}: first-frame vs. tracked-back IoU; ``per_frame_iou``: forward vs.
backward masks per frame; ``passed``; ``source``; ``candidates``; ``kept``; ``boxes_from``; ``detection``: the automatic
detection's scores or null; ``side``: the hand side followed, ``from`` "--side" or "auto", and for auto the
mean ``right_probability`` and the per-frame ``readings``), ``overlay.mp4``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from hoirecon.errors import RunError, UserError
from hoirecon.geometry.regions import mask_iou
from hoirecon.io.boxes import Box, check_box, read_boxes_file, sidecar_boxes
from hoirecon.io.masks import overlay_masks, read_mask_folder
from hoirecon.io.video import read_rgb, write_video
from hoirecon.pipeline.runner import StageContext
from hoirecon.segment.classic import FlowTracker, TrackerConfig, segment_hand_object
from hoirecon.segment.foreground import (background_plate, drop_still_background, fill_object_gaps,
                                         keep_near_foreground)
from hoirecon.stages.configs import SIDE_AUTO, MasksConfig
from hoirecon.stages.outputs import FramesMeta, MasksOutput
from hoirecon.stages.registry import STAGES

FAILED_DIR = MasksOutput.FAILED_DIR  # where a failed forward-backward check leaves its overlay and quality.json


def tracked_side(manifest: dict | None, quality: dict | None) -> Optional[str]:
    """The hand side (right/left) a committed masks stage followed with its hand landmarks, or
    None where no side played a part or none is known (no manifest, your own --masks-dir, masks
    written by ``synth``, STCN, landmarks off). manifest: the stage's manifest; quality: its
    ``MasksOutput.quality``."""
    cfg = (manifest or {}).get("config") or {}
    if manifest is None or manifest.get("external") or cfg.get("masks_dir") or not cfg.get("hand_landmarks", True) \
            or cfg.get("tracker") == "stcn":
        return None
    side = ((quality or {}).get("side") or {}).get("side") or cfg.get("side", "right")
    return side if side != SIDE_AUTO else None


def side_from_clip(frames: list[np.ndarray], hand_box: Optional[Box], report) -> dict:
    """quality.json's ``side`` for ``--side auto``: read from the clip from the first-frame
    ``hand_box`` (``hoirecon.handpose.handedness``), or a right hand where the clip does not tell
    (or no box), said in one line through ``report``."""
    from hoirecon.handpose.handedness import HandSideEstimate, estimate_hand_side

    estimate = estimate_hand_side(frames, hand_box) if hand_box is not None else HandSideEstimate(None, 0.5)
    info = {**estimate.as_dict(), "from": "auto"}
    if estimate.side is None:
        info["side"] = "right"
        report(f"[yellow]warning:[/yellow] the clip does not tell a right hand from a left one (mean P(right) "
               f"{estimate.right_probability:.2f} over {len(estimate.readings)} frames): following a right hand; "
               f"pass --side left if it is a left one")
    else:
        report(f"a {estimate.side} hand (mean P(right) {estimate.right_probability:.2f} over "
               f"{len(estimate.readings)} frames; --side overrides)")
    return info


def _hand_side(cfg: MasksConfig, frames: list[np.ndarray], hand_box: Box, report) -> dict:
    """The hand side to follow and where it came from (quality.json's ``side``): ``--side``, or
    for ``auto`` read from the clip (``side_from_clip``)."""
    if cfg.side != SIDE_AUTO:
        return {"side": cfg.side, "from": "--side"}
    return side_from_clip(frames, hand_box, report)


def _auto_boxes(frames: list[np.ndarray], hand: Optional[Box], obj: Optional[Box], side: str,
                read_side: Optional[Callable[[Box], str]] = None) -> tuple[Box, Box, dict]:
    """Offline first-frame detection (``--detector auto``) of a ``side`` hand; boxes already
    given are kept. For ``auto``, ``read_side`` gets the hand's box (given, else found side-blind)
    and says which side it is; the hand is then detected as that side: the detector prefers that
    side's hands (on toy_plane reversed the side-blind box left out the thumb and the fingertips)."""
    from hoirecon.segment.detect import DetectConfig, detect_hand_box, detect_held_object_box, landmarks_in_box

    first = frames[0]
    if side == SIDE_AUTO and read_side is not None:
        box = hand if hand is not None else getattr(detect_hand_box(first, DetectConfig(side=None)), "box", None)
        if box is not None:  # else no hand: the side-blind search below says so
            side = read_side(box)
    detect = DetectConfig(side=None if side == SIDE_AUTO else side)
    found = landmarks_in_box(first, hand, detect) if hand is not None else detect_hand_box(first, detect)
    if found is None:
        if hand is None:
            raise RunError("no hand found in the first frame: pass --hand-box x0,y0,x1,y1 (original video "
                           "pixels) or --boxes boxes.json")
        raise RunError("no hand landmarks found in --hand-box, so the held object cannot be located: "
                       "pass --object-box x0,y0,x1,y1 (original video pixels)")
    info = {"hand": {"presence": round(found.presence, 4), "score": round(found.score, 4), "source": found.source}}
    hand = hand if hand is not None else found.box
    if obj is None:
        held = detect_held_object_box(frames, found.keypoints_2d, foreground=_first_foreground(frames[0], found))
        if held is None:
            raise RunError("no held object found next to the hand in the first frame: pass --object-box "
                           "x0,y0,x1,y1 (original video pixels) or --boxes boxes.json")
        obj = held[0]
        info["object"] = {"fill": round(held[1], 4)}
    return hand, obj, info


def _first_foreground(first: np.ndarray, found) -> Optional[np.ndarray]:
    """Frame 0's learned foreground touching the hand (None where it misses the hand: the
    colour cut alone then decides)."""
    from hoirecon.segment.detect import hand_region_from_keypoints
    from hoirecon.segment.foreground import SelfieForeground, foreground_union

    hand = hand_region_from_keypoints(found.keypoints_2d, first.shape[:2])
    union = foreground_union(SelfieForeground()(first), hand)
    return union if (union & hand).sum() > 0.3 * hand.sum() else None


def _first_frame_boxes(cfg: MasksConfig, meta: FramesMeta, frames: list[np.ndarray], device: str,
                       report=lambda message: None,
                       read_side: Optional[Callable[[Box], str]] = None) -> tuple[Box, Box, str, Optional[dict]]:
    """First-frame (hand, object) boxes in working-frame pixels, where they came from, and the
    automatic detection's scores (None unless ``auto`` found a box).

    Where the two boxes came from different places (a boxes.json with only "hand", the object
    then detected), ``origin`` names both and ``report`` gets one line saying so.
    """
    given = {"hand": cfg.hand_box, "object": cfg.object_box}
    origins = {k: "options" for k, b in given.items() if b is not None}
    files = [(Path(cfg.boxes_file), "boxes file")] if cfg.boxes_file else []
    sidecar = sidecar_boxes(meta.source)
    files += [(sidecar, str(sidecar))] if sidecar is not None else []
    for path, name in files:
        if len(origins) == 2:
            break
        for key, box in zip(("hand", "object"), read_boxes_file(path)):
            if key not in origins and box is not None:
                given[key], origins[key] = box, name
    original_wh = meta.source_size
    for key in origins:  # boxes are checked in the pixels the user wrote them in
        check_box(tuple(given[key]), f"the {key} box (from {origins[key]})", original_wh)
    scale = np.array(meta.size * 2, float) / np.array(original_wh * 2, float)
    hand, obj = (tuple(np.asarray(given[k]) * scale) if given[k] is not None else None for k in ("hand", "object"))
    detection = None
    if hand is None or obj is None:
        missing = [k for k in ("hand", "object") if k not in origins]
        if cfg.detector == "doh100":
            from hoirecon.backends.doh100 import DOH100Detector

            det_hand, det_obj = DOH100Detector(device).first_frame_boxes(frames[0])
            hand, obj = hand or det_hand, obj or det_obj
        elif cfg.detector == "auto":
            hand, obj, detection = _auto_boxes(frames, hand, obj, cfg.side, read_side)
        if hand is None or obj is None:
            missing = " and ".join(n for n, b in (("hand", hand), ("object", obj)) if b is None)
            raise UserError(f"no first-frame {missing} box: pass --hand-box/--object-box x0,y0,x1,y1 "
                            f"(original video pixels), --boxes boxes.json, or --detector auto|doh100")
        origins.update({k: cfg.detector for k in missing})
        if len(missing) == 1:
            report(f"first-frame boxes: the {missing[0]} box was detected ({cfg.detector}); the other came "
                   f"from {origins['hand' if missing[0] == 'object' else 'object']}")
    if origins["hand"] == origins["object"]:
        origin = origins["hand"]
    else:
        origin = f"{origins['hand']} (hand), {origins['object']} (object)"
    return hand, obj, origin, detection  # type: ignore[return-value]


def _boxes_and_side(cfg: MasksConfig, meta: FramesMeta, frames: list[np.ndarray],
                    ctx: StageContext) -> tuple[MasksConfig, dict, tuple[Box, Box, str, Optional[dict]]]:
    """The config with its hand side resolved, where the side came from (``_hand_side``), and the
    first-frame boxes (``_first_frame_boxes``; automatic detection reads the side from the hand's
    box before it looks for the held object, see ``_auto_boxes``)."""
    side: dict = {}

    def read_side(hand_box: Box) -> str:
        side.update(_hand_side(cfg, frames, hand_box, ctx.reporter.info))
        return side["side"]

    boxes = _first_frame_boxes(cfg, meta, frames, ctx.device, ctx.reporter.info, read_side)
    if not side:
        read_side(boxes[0])
    return replace(cfg, side=side["side"]), side, boxes


def _first_masks(cfg: MasksConfig, split: Optional[tuple[np.ndarray, np.ndarray]], first: np.ndarray,
                 hand_box: Box, obj_box: Box, device: str) -> np.ndarray:
    """First-frame (hand, object) masks (2, H, W): PointRend's, else ``split`` (the learned
    foreground split by the hand's landmarks) where given, else one colour cut in the boxes."""
    if cfg.segmenter == "pointrend":
        from hoirecon.backends.pointrend import PointRendBox2Mask

        masks = PointRendBox2Mask(device).masks_for_boxes(first, np.array([hand_box, obj_box], np.float32))
        hand, obj = masks[0].astype(bool), masks[1].astype(bool)
    elif split is not None:
        hand, obj = split
    else:
        # One joint cut: each mask sees the other's colours as background, thin or mostly
        # hidden objects keep their pieces (see segment_hand_object).
        hand, obj = segment_hand_object(first, hand_box, obj_box)
    obj = obj & ~hand  # the hand is in front where a grasp overlaps the object
    for name, m in (("hand", hand), ("object", obj)):
        if m.sum() < 16:
            raise RunError(f"segmentation of the first-frame {name} box gave an empty mask; check the box "
                           f"or supply masks with --masks-dir")
    return np.stack([hand, obj])


def _first_foreground_split(frames: list[np.ndarray], probs: list[np.ndarray], first_mirror_prob: np.ndarray,
                            hand_box: Box, obj_box: Box, side: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(hand, object) from the learned foreground split by the hand's landmarks, or None where
    no landmarks are found in the hand box or the foreground misses the object (a white object
    on a white wall): the colour cut then decides."""
    from hoirecon.segment.detect import DetectConfig, landmarks_in_box
    from hoirecon.segment.foreground import (box_region, first_frame_split, hand_coloured, landmark_hand_seeds,
                                             static_foreground)

    first = frames[0]
    found = landmarks_in_box(first, hand_box, DetectConfig(side=side))
    if found is None:
        return None
    in_obj = box_region(first.shape[:2], obj_box)
    seeds = landmark_hand_seeds(first, found.keypoints_2d, np.zeros(in_obj.shape, bool),
                                hand_coloured(first, found.keypoints_2d, in_obj))
    hand, obj = first_frame_split(first, probs[0], static_foreground(frames, probs), seeds, hand_box, obj_box,
                                  mirror_prob=first_mirror_prob)
    if obj.sum() < 0.1 * in_obj.sum() or hand.sum() < 16:
        return None
    return hand, obj


def _foreground_sees(first_prob: np.ndarray, first: np.ndarray, min_fraction: float = 0.5) -> bool:
    """Whether the learned foreground (``first_prob``, frame 0's) covers at least ``min_fraction``
    of the first-frame hand and object (it is trained on people: a render without one, or an
    odd clip, may show nothing)."""
    both = first[0] | first[1]
    return bool((first_prob[both] > 0.5).mean() >= min_fraction) if both.any() else False


def _foreground_probs(frames: list[np.ndarray], mirrored: bool) -> tuple[list[np.ndarray], Optional[list[np.ndarray]]]:
    """Every frame's learned foreground, and with ``mirrored`` its mirror image's
    (``segment.foreground.hand_symmetric``; only the foreground tracker and its split use them)."""
    from hoirecon.segment.foreground import SelfieForeground

    foreground = SelfieForeground()
    return [foreground(f) for f in frames], [foreground.mirrored(f) for f in frames] if mirrored else None


def _track(cfg: MasksConfig, tracker_name: str, frames: list[np.ndarray], first: np.ndarray, device: str, task, *,
           probs: Optional[list[np.ndarray]], mirror_probs: Optional[list[np.ndarray]] = None,
           first_amodal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks (T, 2, H, W) tracked from ``first`` by ``tracker_name``, and the tracker's remembered
    full shapes at the last frame (flow tracker only; the backward pass starts from them so that
    an object hidden in the hand at the end can still be tracked back)."""
    if tracker_name == "stcn":
        from hoirecon.backends.stcn import STCNTracker

        out = np.asarray(STCNTracker(device).track(np.stack(frames), first)).astype(bool)
        task.advance(len(frames) - 1)
        return out, None
    if tracker_name == "foreground":
        return _track_foreground(cfg, frames, first, task, probs, mirror_probs), None
    anchors = None
    if cfg.hand_landmarks:
        from hoirecon.segment.anchor import HandLandmarkAnchor

        anchors = [HandLandmarkAnchor(side=cfg.side), None]
    tracker = FlowTracker(TrackerConfig())
    out = tracker.track(frames, first, on_frame=task.advance, anchors=anchors, first_amodal=first_amodal)
    return out, tracker.amodal


def _track_foreground(cfg: MasksConfig, frames: list[np.ndarray], first: np.ndarray, task,
                      probs: list[np.ndarray], mirror_probs: Optional[list[np.ndarray]]) -> np.ndarray:
    from hoirecon.segment.anchor import HandLandmarkAnchor
    from hoirecon.segment.foreground import ForegroundSplitTracker, SelfieForeground, landmark_hand_seeds

    anchor = HandLandmarkAnchor(side=cfg.side) if cfg.hand_landmarks else None

    def seeder(image, warped_hand, warped_object):
        if anchor is None or anchor(image, warped_hand, near=warped_object) is None:
            return None
        return landmark_hand_seeds(image, anchor.previous.keypoints_2d, warped_object & ~warped_hand)

    tracker = ForegroundSplitTracker(SelfieForeground())
    return tracker.track(frames, first, seeder, on_frame=task.advance, probs=probs, mirror_probs=mirror_probs)


def _write_failed_check(folder: Path, frames, hand: np.ndarray, obj: np.ndarray, quality: dict, fps: float) -> Path:
    """A failed check leaves its overlay and quality.json in ``folder`` (the stage's own folder
    only ever holds masks that passed); returns the overlay's path."""
    folder.mkdir(parents=True, exist_ok=True)
    MasksOutput.save_quality(folder, quality)
    overlay = folder / MasksOutput.OVERLAY_FILE
    write_video(overlay, (overlay_masks(f, h, o) for f, h, o in zip(frames, hand, obj)), fps=fps)
    return overlay


def _candidates(cfg: MasksConfig, split: Optional[tuple]) -> list[tuple[str, str, Optional[tuple]]]:
    """(name, tracker, first-frame split or None for the colour cut) of every candidate to run.

    ``auto`` runs the foreground tracker from the split, and the flow tracker from both first
    frames: the colour cut misplaces the hand/object border where the boxes are tight (a handle
    below a box that stops at the label), the split where the learned foreground takes clutter
    behind the object; the forward-backward check then tells which one held."""
    if cfg.tracker == "auto":
        runs = [("foreground", "foreground", split), ("flow", "flow", None)]
        return runs + ([("flow_from_split", "flow", split)] if split is not None else [])
    return [(cfg.tracker, cfg.tracker, split if cfg.tracker == "foreground" else None)]


def _tracked(cfg: MasksConfig, name: str, tracker: str, split: Optional[tuple], frames: list[np.ndarray],
             hand_box: Box, obj_box: Box, *, ctx: StageContext, probs: Optional[list[np.ndarray]],
             mirror_probs: Optional[list[np.ndarray]] = None) -> dict:
    """First-frame masks, forward and backward tracks (T, 2, H, W) and the forward-backward IoU
    of one candidate; ``probs``, ``mirror_probs``: every frame's learned foreground and its mirror
    image's, run once for all candidates (None for STCN, which uses none). ``fell_back``: the
    learned foreground did not see frame 0's hand and object, so the foreground tracker gave way
    to flow."""
    T = len(frames)
    first = _first_masks(cfg, split, frames[0], hand_box, obj_box, ctx.device)
    fell_back = tracker == "foreground" and not _foreground_sees(probs[0], first)
    if fell_back:
        ctx.reporter.info("the learned foreground does not see the hand and object in the first frame: "
                          "tracking them by optical flow instead")
        name = tracker = "flow"
    with ctx.reporter.task(f"tracking masks ({tracker}, forward + backward)", total=2 * (T - 1)) as task:
        fwd, amodal = _track(cfg, tracker, frames, first, ctx.device, task, probs=probs, mirror_probs=mirror_probs)
        bwd = _track(cfg, tracker, frames[::-1], fwd[-1], ctx.device, task,
                     probs=probs[::-1] if probs is not None else None,
                     mirror_probs=mirror_probs[::-1] if mirror_probs is not None else None,
                     first_amodal=amodal)[0][::-1]
    dropped = None  # share of object pixels that showed a still camera's background
    # What leaked far from every frame's own foreground goes, and the object parts neither mask
    # has (a dark cap, a label) join the object, both ways alike.
    if probs is not None and cfg.segmenter == "grabcut":
        fwd = fill_object_gaps(frames, keep_near_foreground(fwd, probs))
        bwd = fill_object_gaps(frames, keep_near_foreground(bwd, probs))
        first = fill_object_gaps(frames[:1], keep_near_foreground(first[None], probs[:1]))[0]
        # From a still camera, what shows the background's own colour is background.
        plate = background_plate(frames, fwd.any(axis=(0, 1)) | bwd.any(axis=(0, 1)))
        if plate is not None:
            before = int(fwd[:, 1].sum())
            fwd, bwd = drop_still_background(frames, fwd, plate), drop_still_background(frames, bwd, plate)
            first = drop_still_background(frames[:1], first[None], plate)[0]
            dropped = round(1.0 - int(fwd[:, 1].sum()) / max(before, 1), 4)
    track_iou = {"hand": mask_iou(first[0], bwd[0, 0]), "object": mask_iou(first[1], bwd[0, 1])}
    return {"name": name, "tracker": tracker, "fell_back": fell_back, "first": first, "fwd": fwd, "bwd": bwd,
            "track_iou": track_iou, "still_background_dropped": dropped}


def run_masks(ctx: StageContext, cfg: MasksConfig) -> dict:
    frames_dir = ctx.input_dir("frames")
    meta = FramesMeta.load(frames_dir)
    paths = FramesMeta.frame_paths(frames_dir)
    frames = [read_rgb(p) for p in paths]
    T = len(frames)
    if cfg.masks_dir:
        hand, obj = read_mask_folder(Path(cfg.masks_dir), num_frames=T, size_wh=meta.size)
        quality = {"source": "user", "passed": True, "track_iou": None, "per_frame_iou": None}
        boxes = {}
    else:
        cfg, side, (hand_box, obj_box, origin, detection) = _boxes_and_side(cfg, meta, frames, ctx)
        candidates: list[dict] = []
        probs, mirror_probs = (_foreground_probs(frames, mirrored=cfg.tracker in ("auto", "foreground"))
                               if cfg.tracker != "stcn" else (None, None))
        split = None
        if probs is not None and cfg.segmenter == "grabcut" and cfg.tracker in ("auto", "foreground"):
            split = _first_foreground_split(frames, probs, mirror_probs[0], hand_box, obj_box, cfg.side)
        for name, tracker, first_split in _candidates(cfg, split):
            candidates.append(_tracked(cfg, name, tracker, first_split, frames, hand_box, obj_box, ctx=ctx,
                                       probs=probs, mirror_probs=mirror_probs))
            if candidates[-1]["fell_back"]:
                break  # a foreground blind to frame 0 has no say in the other candidates either
        # The paper's own filter picks: the candidate whose masks come back best.
        best = max(candidates, key=lambda c: min(c["track_iou"].values()))
        tracker, first, fwd, bwd, track_iou = (best[k] for k in ("tracker", "first", "fwd", "bwd", "track_iou"))
        per_frame = [{"hand": mask_iou(fwd[t, 0], bwd[t, 0]), "object": mask_iou(fwd[t, 1], bwd[t, 1])}
                     for t in range(T)]
        passed = all(v >= cfg.iou_threshold for v in track_iou.values())
        quality = {"source": f"{cfg.segmenter}+{tracker}", "boxes_from": origin, "detection": detection, "side": side,
                   "passed": passed, "threshold": cfg.iou_threshold, "track_iou": track_iou,
                   "candidates": {c["name"]: c["track_iou"] for c in candidates}, "kept": best["name"],
                   "still_background_dropped": best["still_background_dropped"], "per_frame_iou": per_frame}
        hand, obj = fwd[:, 0], fwd[:, 1]
        if not passed:
            shown = _write_failed_check(ctx.out_root / FAILED_DIR, frames, hand, obj, quality, meta.fps)
            raise RunError(
                f"masks failed the forward-backward check: IoU hand {track_iou['hand']:.2f}, object "
                f"{track_iou['object']:.2f} (need >= {cfg.iou_threshold:.2f}); see {shown}; try other boxes, "
                f"--iou-threshold 0 to go on with these masks, or give your own with --masks-dir")
        boxes = {"hand": [float(v) for v in hand_box], "object": [float(v) for v in obj_box],
                 "boxes_from": origin, "scores": detection}
    shutil.rmtree(ctx.out_root / FAILED_DIR, ignore_errors=True)  # an earlier failure's pictures no longer apply
    MasksOutput(hand=hand, obj=obj, quality=quality, boxes=boxes).save(ctx.tmp_dir, frames=meta)
    write_video(ctx.tmp_dir / MasksOutput.OVERLAY_FILE, (overlay_masks(f, h, o) for f, h, o in zip(frames, hand, obj)),
                fps=meta.fps)
    return {"num_frames": T, "passed": quality["passed"], "track_iou": quality["track_iou"],
            "overlay": str(ctx.out_root / STAGE.name / MasksOutput.OVERLAY_FILE)}


STAGE = STAGES["masks"]
