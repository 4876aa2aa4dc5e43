"""Tests of hoirecon.fit.contact: the hand's last move out of the object after the fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.fit.contact import ContactConfig, push_out_of_sdf, resolve_hand_penetration
from hoirecon.fit.scene import HOIScene
from hoirecon.fit.sdf import GridSDF
from hoirecon.geometry.transforms import transform_points
from hoirecon.hand import build_hand_model


def _sphere(radius: float):
    return lambda x: x.norm(dim=-1) - radius


def _slab(half: float):
    """Infinite slab |x| <= half: inside points on both faces pull opposite ways."""
    return lambda x: x[..., 0].abs() - half


def test_push_out_brings_the_deepest_point_to_the_target():
    cfg = ContactConfig()
    sdf = _sphere(0.03)
    # Set 0: a patch 4 mm inside the sphere's +x side; set 1: outside, untouched.
    patch = torch.tensor([[0.026, 0.0, 0.0], [0.027, 0.003, 0.0], [0.027, -0.003, 0.0], [0.04, 0.0, 0.0]])
    points = torch.stack([patch, patch + torch.tensor([0.02, 0.0, 0.0])])
    shift = push_out_of_sdf(points, sdf, cfg)
    deepest = (-sdf(points + shift[:, None])).amax(1)
    assert deepest[0] <= cfg.target_depth + 2e-4 and deepest[0] >= 0.0  # out, still touching
    assert shift[0, 0] > 0.0 and shift[0, 1:].abs().max() < 1e-3  # outwards, along +x
    assert torch.equal(shift[1], torch.zeros(3))


def test_push_out_never_makes_a_set_deeper_and_respects_max_shift():
    cfg = ContactConfig(max_shift=0.005)
    # Points inside a 1 cm slab near both faces: no translation helps both, none is kept
    # that would leave the deepest deeper.
    points = torch.tensor([[[0.003, 0.0, 0.0], [-0.003, 0.0, 0.0]]])
    shift = push_out_of_sdf(points, _slab(0.005), cfg)
    before = (-_slab(0.005)(points)).amax()
    after = (-_slab(0.005)(points + shift[:, None])).amax()
    assert after <= before + 1e-6
    # A set 2 cm deep in a big sphere moves at most max_shift.
    deep = torch.tensor([[[0.0, 0.0, 0.03]]])
    shift = push_out_of_sdf(deep, _sphere(0.05), cfg)
    assert shift.norm() <= cfg.max_shift + 1e-6 and shift[0, 2] > 0.004


def _palm_in_sphere(object_in_camera: bool):
    """A flat hand whose palm a 3 cm sphere swallows (4+ mm deep), in 3 frames; (scene, hand verts)."""
    hand_model = build_hand_model("anny")
    T = 3
    art = torch.zeros(T, 45)
    with torch.no_grad():
        verts = hand_model(art, torch.zeros(T, 3), torch.zeros(1, 10)).verts
    palm = verts[0].mean(0)
    # Object frame = hand frame shifted so that a 3 cm sphere at its origin swallows part of the palm.
    T_h2o = torch.eye(4)
    T_h2o[:3, 3] = -(palm + torch.tensor([0.0, -0.035, 0.0]))
    sdf = GridSDF(radius=0.08, resolution=48)
    r = sdf.resolution
    sdf.set_values_m(sdf.node_points().norm(dim=-1).reshape(r, r, r) - 0.03)
    T_c2h = torch.eye(4).repeat(T, 1, 1)
    T_c2h[:, 2, 3] = -0.5
    T_c2h[1, 0, 3] = 0.01
    K = np.array([[100.0, 0, 40], [0, 100.0, 40], [0, 0, 1]])
    scene = HOIScene(sdf, hand_model, K, T_c2h, art, torch.zeros(10), "right", (80, 80), T_h2o, 0.01, 1e-4,
                     object_in_camera=object_in_camera)
    return scene, verts


@pytest.mark.parametrize("object_in_camera", [False, True])
def test_resolve_moves_the_hand_and_keeps_the_object_cameras(object_in_camera):
    scene, verts = _palm_in_sphere(object_in_camera)
    with torch.no_grad():
        T_c2o_before = scene.T_cam_to_obj().clone()
        T_h2o_before = scene.T_hand_to_obj().clone()
        depth_before = (-scene.sdf(transform_points(T_h2o_before, verts).reshape(-1, 3))).max()
    assert depth_before > 0.004  # the palm starts well inside
    report = resolve_hand_penetration(scene, ContactConfig(finger_steps=0))
    with torch.no_grad():
        T_h2o_after = scene.T_hand_to_obj()
        torch.testing.assert_close(scene.T_cam_to_obj(), T_c2o_before, atol=1e-5, rtol=0)
        # A pure translation of the hand in the object frame.
        torch.testing.assert_close(T_h2o_after[:, :3, :3], T_h2o_before[:, :3, :3], atol=1e-5, rtol=0)
        moved = T_h2o_after[:, :3, 3] - T_h2o_before[:, :3, 3]
        assert (moved.norm(dim=-1) > 1e-3).all()
    assert report["moved_frames"] == [0, 1, 2]
    assert max(report["deepest_after_mm"]) <= 2.0 < min(report["deepest_before_mm"])


def test_fingers_open_where_no_rigid_move_is_allowed():
    scene, _ = _palm_in_sphere(False)
    art_before = scene.articulation().detach().clone()
    report = resolve_hand_penetration(scene, ContactConfig(max_shift=1e-6))
    assert report["moved_frames"] == [] or max(report["moved_mm"]) < 1e-2
    assert report["fingers_opened_frames"] == [0, 1, 2]
    assert all(a < b for a, b in zip(report["deepest_after_mm"], report["deepest_before_mm"]))
    assert max(report["deepest_after_mm"]) <= ContactConfig().max_depth * 1000.0  # out, not only shallower
    assert (scene.articulation().detach() - art_before).abs().amax() > 1e-3
