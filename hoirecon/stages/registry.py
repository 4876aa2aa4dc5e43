"""The pipeline's stages in order.

``STAGES[name]`` imports that stage's module on first use: a stage module imports the
libraries it runs (torch, trimesh, ...), and a command should pay only for the stages it
touches (``hoirecon frames`` never imports the fit).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from hoirecon.pipeline.runner import StageDef

_MODULES = {
    "frames": "hoirecon.stages.frames",
    "masks": "hoirecon.stages.masks",
    "hand": "hoirecon.stages.hand",
    "fit": "hoirecon.stages.fit",
    "export": "hoirecon.stages.export",
    "pose": "hoirecon.stages.pose",  # off the main chain: frames, masks -> pose (a template mesh is needed)
}


class _Stages(Mapping[str, StageDef]):
    """Read-only {stage name: StageDef}, each module imported when its stage is first looked up."""

    def __getitem__(self, name: str) -> StageDef:
        return importlib.import_module(_MODULES[name]).STAGE

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


STAGES: Mapping[str, StageDef] = _Stages()
