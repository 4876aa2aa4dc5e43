"""Stage `frames`: decode a clip (video file or image folder) into numbered PNGs.

Artifacts in ``<out>/frames/``: the numbered PNGs (RGB, working size) and their meta, both
described by ``hoirecon.stages.outputs.FramesMeta``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hoirecon.io.video import check_frame_count, iter_clip, write_png
from hoirecon.pipeline.runner import StageContext
from hoirecon.stages.configs import FramesConfig
from hoirecon.stages.outputs import FramesMeta
from hoirecon.stages.registry import STAGES, source_digest


def working_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(W, H) after shrinking so the longer side is at most ``size`` (even numbers, for H.264)."""
    if size is None or max(width, height) <= size:
        return width, height
    scale = size / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def frame_stride(cfg: FramesConfig, declared_frames: int | None) -> int:
    """The stride to keep: ``--stride``; else 1, or for a clip of more than ``frame_budget``
    frames (as its container declares) without ``--max-frames`` the smallest that keeps at most
    that many."""
    if cfg.stride is not None:
        return cfg.stride
    if cfg.max_frames is not None or not declared_frames or declared_frames <= cfg.frame_budget:
        return 1
    return -(-declared_frames // cfg.frame_budget)


def run_frames(ctx: StageContext, cfg: FramesConfig) -> dict:
    """Decode, subsample, resize and write the frames of ``cfg.source``."""
    source = Path(cfg.source)
    info, frames = iter_clip(source)
    w, h = working_size(info.width, info.height, cfg.size)
    stride = frame_stride(cfg, info.declared_frames)
    warnings = []
    if stride > 1 and cfg.stride is None:
        warnings.append(f"the clip has {info.declared_frames} frames, more than --frame-budget {cfg.frame_budget}: "
                        f"one in {stride} is kept (--stride 1 keeps them all)")
        ctx.reporter.info(f"[yellow]note:[/yellow] {warnings[-1]}")
    total = info.declared_frames
    if total is not None:
        total = (total + stride - 1) // stride
        if cfg.max_frames:
            total = min(total, cfg.max_frames)
    decoded = written = 0
    with ctx.reporter.task("frames", total=total) as task:
        for i, frame in enumerate(frames):
            decoded += 1
            if i % stride:
                continue
            if cfg.max_frames is not None and written >= cfg.max_frames:
                continue  # keep decoding so that truncation is still detected
            if (frame.shape[1], frame.shape[0]) != (w, h):
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            write_png(FramesMeta.frame_path(ctx.tmp_dir, written), np.asarray(frame))
            written += 1
            task.advance()
    check_frame_count(source, info, decoded)
    if written == 1:
        # Said here because later stages look fine on one frame (the masks' forward-backward
        # IoU is 1 by construction) while nothing is tracked and the fit sees a single view.
        warnings.append("the clip has 1 frame: nothing is tracked and the object is seen from one view only")
        ctx.reporter.info(f"[yellow]warning:[/yellow] {warnings[-1]}")
    meta = FramesMeta(fps=info.fps / stride, num_frames=written, original_size=(info.width, info.height),
                      size=(w, h), stride=stride, source=str(source), source_digest=source_digest(source),
                      source_kind="images" if source.is_dir() else "video")
    meta.save(ctx.tmp_dir)
    return {"num_frames": written, "size": [w, h], "fps": meta.fps, **({"warnings": warnings} if warnings else {})}


STAGE = STAGES["frames"]
