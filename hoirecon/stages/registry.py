"""The pipeline's stages in order. A stage whose ``run`` is None is not built yet."""

from __future__ import annotations

from hoirecon.pipeline.runner import StageDef
from hoirecon.stages import frames, masks

NOT_BUILT = {
    "hand": StageDef("hand", "0", ("frames", "masks"), None),
    "fit": StageDef("fit", "0", ("frames", "masks", "hand"), None),
    "export": StageDef("export", "0", ("fit",), None),
}

STAGES: dict[str, StageDef] = {
    "frames": frames.STAGE,
    "masks": masks.STAGE,
    **NOT_BUILT,
}
