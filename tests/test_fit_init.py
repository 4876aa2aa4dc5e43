"""Tests of the fit's initialisation helpers (``hoirecon.fit.init``)."""

from __future__ import annotations

import numpy as np
import torch

from hoirecon.fit.init import visual_hull_sdf
from hoirecon.render.raster import rasterize

from conftest import look_at_np


def test_visual_hull_keeps_the_object_not_the_space_no_view_sees():
    """A close camera sees only the middle of the cube: the space outside its view is never
    carved and is a bigger piece than the object. The hull must be the object's piece (the
    one at the cube's centre), not the largest."""
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.03)
    radius, H, W = 0.15, 64, 64
    K = torch.tensor([[60.0, 0, 31.5], [0, 60.0, 31.5], [0, 0, 1]])
    poses = [look_at_np(np.array([np.sin(a), 0.0, -np.cos(a)]) * 0.2, np.zeros(3)) for a in (-0.2, 0.0, 0.2)]
    T_obj_to_cam = torch.as_tensor(np.stack(poses), dtype=torch.float32)
    verts = torch.as_tensor(ball.vertices, dtype=torch.float32)
    v_cam = verts @ T_obj_to_cam[:, :3, :3].transpose(1, 2) + T_obj_to_cam[:, None, :3, 3]
    masks = rasterize(v_cam, torch.as_tensor(ball.faces), K[None].expand(3, 3, 3), H, W).covered
    sdf = visual_hull_sdf(masks, torch.zeros_like(masks), K, torch.linalg.inv(T_obj_to_cam), radius, 33,
                          dilate_px=1, max_carve_votes=0)
    assert sdf[16, 16, 16] < 0  # the centre node is inside
    inside = (sdf < 0).float().mean()
    ball_share = (4 / 3 * np.pi * 0.03**3) / (2 * radius) ** 3
    assert inside < 10 * ball_share  # the cones through the ball, not the unseen space
