"""The pipeline's stages in order, declared without importing them.

A stage's declaration (version, inputs, config type, the outside files it reads) is light;
its ``run`` imports the stage's module on the first call. ``status`` and ``--help`` thus
load no torch, and a command pays only for the stages it runs (``hoirecon frames`` never
imports the fit). Bump a stage's version here whenever its outputs change: the cache then
recomputes it and everything downstream.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from hoirecon.errors import UserError
from hoirecon.io.folders import list_image_files
from hoirecon.pipeline.hashing import file_digest, tree_digest
from hoirecon.pipeline.runner import StageDef
from hoirecon.stages.configs import FramesConfig, MasksConfig


def _lazy(module: str, function: str) -> Callable[..., Any]:
    """``module.function``, imported when first called."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"hoirecon.stages.{module}"), function)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{function}"
    return call


def source_digest(source: Path) -> str:
    """sha256 of a video file, or of an image folder's images (names + contents)."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"input not found: {source}")
    if source.is_dir():
        h = hashlib.sha256()
        for p in list_image_files(source):
            h.update(p.name.encode() + file_digest(p).encode())
        return h.hexdigest()
    try:
        return file_digest(source)
    except OSError as err:
        raise UserError(f"cannot read {source}: {err.strerror}") from None


def _frames_external(cfg: FramesConfig) -> dict[str, str]:
    return {"source": source_digest(Path(cfg.source))}


def _masks_external(cfg: MasksConfig) -> dict[str, str]:
    digests = {}
    if cfg.boxes_file:
        digests["boxes_file"] = file_digest(Path(cfg.boxes_file))
    if cfg.masks_dir:
        digests["masks_dir"] = tree_digest(Path(cfg.masks_dir))
    return digests


def _fit_config_inputs(cfg) -> dict[str, str]:
    """The pose stage, when the fit starts from its poses (it is off the main chain). ``cfg``: a
    FitConfig, or the JSON dict a manifest recorded (``status`` checks without building one)."""
    if (cfg.get("init") if isinstance(cfg, dict) else cfg.init) != "pose":
        return {}
    from hoirecon.stages.outputs import PoseOutput

    return {"pose": f"{PoseOutput.MISSING_HINT} (fit --init pose starts from its object poses)"}


STAGES: Mapping[str, StageDef] = MappingProxyType({
    # 2: a clip longer than --frame-budget frames is subsampled
    "frames": StageDef("frames", "2", (), _lazy("frames", "run_frames"), _frames_external, FramesConfig,
                       outputs=("FramesMeta",)),
    # 18: every GrabCut seeded (the same clip gave other masks run to run); 17: --side auto
    "masks": StageDef("masks", "18", ("frames",), _lazy("masks", "run_masks"), _masks_external, MasksConfig,
                      outputs=("MasksOutput",)),
    "hand": StageDef("hand", "6", ("frames", "masks"), _lazy("hand", "run_hand"),  # 6: focal default 1.2 x long side
                     outputs=("HandsOutput",)),
    "fit": StageDef("fit", "16", ("frames", "masks", "hand"), _lazy("fit", "run_fit"),  # 16: SfM jumps decide
                    config_inputs=_fit_config_inputs, outputs=("FitPoses", "FitOutput")),
    "export": StageDef("export", "4", ("frames", "masks", "fit"), _lazy("export", "run_export"),  # 4: seen parts
                       outputs=("ExportOutput",)),
    # off the main chain: frames, masks -> pose (a template mesh is needed); its external
    # inputs load the template to check it, so they live with the stage
    "pose": StageDef("pose", "2", ("frames", "masks"), _lazy("pose", "run_pose"), _lazy("pose", "external_inputs"),
                     outputs=("PoseOutput",)),
})
