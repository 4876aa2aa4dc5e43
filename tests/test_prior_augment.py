"""Shape augmentation of the prior's training objects (hoirecon.prior.augment)."""

from __future__ import annotations

import numpy as np
import pytest

from hoirecon.prior.augment import ShapeWarp, sample_warp, warp_grasp, warp_mesh, warp_sdf
from hoirecon.synth.objects import make_object_info


@pytest.fixture(scope="module")
def mug():
    return make_object_info("mug", 0)


def _warp(scale, taper=0.0, bend=0.0, along=2, bend_axis=0, half_length=0.05):
    return ShapeWarp(np.asarray(scale, dtype=np.float64), along, bend_axis, half_length, taper, bend, np.zeros(3))


def test_pure_scale_changes_the_extents_by_the_declared_factors(mug):
    scale = np.array([0.8, 1.25, 1.1])
    warped = warp_mesh(mug.mesh, _warp(scale))
    assert warped.is_watertight and warped.volume > 0
    np.testing.assert_allclose(warped.extents, mug.mesh.extents * scale, rtol=1e-9)


def test_sampled_warp_stays_watertight_centred_and_inverts_exactly(mug):
    v = np.asarray(mug.mesh.vertices)
    for seed in range(4):
        w = sample_warp(mug.mesh, np.random.default_rng(seed), (0.8, 1.25), 0.15, 0.1)
        assert ((w.scale >= 0.8) & (w.scale <= 1.25)).all() and abs(w.taper) <= 0.15 and abs(w.bend) <= 0.1
        warped = warp_mesh(mug.mesh, w)
        assert warped.is_watertight and warped.is_winding_consistent and warped.volume > 0
        assert np.allclose(warped.bounds.mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(w.invert(w.apply(v)), v, atol=1e-12)
        # the taper and bend move the surface by more than the scale alone would
        scaled = warp_mesh(mug.mesh, _warp(w.scale))
        assert np.abs(np.asarray(warped.vertices) - np.asarray(scaled.vertices) + w.shift).max() > 1e-3


def test_bend_moves_the_middle_of_the_length_sideways():
    w = _warp([1.0, 1.0, 1.0], bend=0.2, along=2, bend_axis=0, half_length=0.1)
    ends_and_middle = np.array([[0.0, 0.0, -0.1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    np.testing.assert_allclose(w.apply(ends_and_middle)[:, 0], [0.02, 0.0, 0.02], atol=1e-12)


def test_warped_sdf_and_grasp_follow_the_warped_mesh(mug):
    w = sample_warp(mug.mesh, np.random.default_rng(5), (0.8, 1.25), 0.15, 0.1)
    warped = warp_mesh(mug.mesh, w)
    sdf = warp_sdf(mug.sdf, w)
    assert np.percentile(np.abs(sdf(warped.vertices)), 99) < 5e-4
    assert (sdf(warped.vertices + 0.002 * warped.vertex_normals) > 0).mean() > 0.99
    assert (sdf(warped.vertices - 0.001 * warped.vertex_normals) < 0).mean() > 0.99
    g = warp_grasp(mug.grasp, w)
    assert sdf(g.point[None])[0] < 0 and sdf((g.point - 0.08 * g.approach)[None])[0] > 0
    for v in (g.approach, g.axis):
        assert abs(np.linalg.norm(v) - 1) < 1e-9
    assert 0.75 * mug.grasp.width < g.width < 1.35 * mug.grasp.width


def test_taper_of_one_or_more_is_refused(mug):
    with pytest.raises(ValueError, match="max_taper"):
        sample_warp(mug.mesh, np.random.default_rng(0), (0.8, 1.25), 1.0, 0.1)
