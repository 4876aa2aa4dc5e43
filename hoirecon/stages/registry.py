"""The pipeline's stages in order."""

from __future__ import annotations

from hoirecon.pipeline.runner import StageDef
from hoirecon.stages import export, fit, frames, hand, masks, pose

STAGES: dict[str, StageDef] = {
    "frames": frames.STAGE,
    "masks": masks.STAGE,
    "hand": hand.STAGE,
    "fit": fit.STAGE,
    "export": export.STAGE,
    "pose": pose.STAGE,  # off the main chain: frames, masks -> pose (a template mesh is needed)
}
