"""hoirecon.geometry.object_sfm on a synthetic clip whose object carries a print SIFT can find."""

from __future__ import annotations

import numpy as np
import pytest

from hoirecon.io.video import read_rgb
from hoirecon.stages.outputs import FramesMeta, MasksOutput
from hoirecon.synth.generator import generate_clip

pycolmap = pytest.importorskip("pycolmap")


def test_structure_from_motion_gives_the_same_result_on_every_run(tmp_path):
    from hoirecon.geometry.object_sfm import object_sfm

    out = tmp_path / "clip"
    generate_clip("mug", out, frames=8, size=256, seed=3, texture="printed")
    frames = [read_rgb(p) for p in FramesMeta.frame_paths(out / "frames")]
    masks = MasksOutput.load(out / "masks", num_frames=len(frames), size_wh=(256, 256))
    first = object_sfm(frames, masks.obj, tmp_path / "a")
    second = object_sfm(frames, masks.obj, tmp_path / "b")
    assert first.registered.sum() >= 3 and first.focal_px is not None
    assert first.focal_px == second.focal_px
    assert (first.registered == second.registered).all()
    np.testing.assert_array_equal(first.R_cam_from_obj, second.R_cam_from_obj)
