"""The pipeline's stages in order."""

from __future__ import annotations

from hoirecon.pipeline.runner import StageDef
from hoirecon.stages import export, fit, frames, hand, masks

STAGES: dict[str, StageDef] = {
    "frames": frames.STAGE,
    "masks": masks.STAGE,
    "hand": hand.STAGE,
    "fit": fit.STAGE,
    "export": export.STAGE,
}
