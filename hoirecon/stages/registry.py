"""The pipeline's stages in order. A stage whose ``run`` is None is not built yet."""

from __future__ import annotations

from hoirecon.pipeline.runner import StageDef
from hoirecon.stages import frames, hand, masks

NOT_BUILT = {
    "fit": StageDef("fit", "0", ("frames", "masks", "hand"), None),
    "export": StageDef("export", "0", ("fit",), None),
}

STAGES: dict[str, StageDef] = {
    "frames": frames.STAGE,
    "masks": masks.STAGE,
    "hand": hand.STAGE,
    **NOT_BUILT,
}
