"""Tests of the exact hard z-buffer rasterizer (``hoirecon.render.raster``)."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from hoirecon.render.mesh import MeshRenderConfig, render_mesh_image
from hoirecon.render.raster import interpolate, rasterize, strided_silhouettes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_rasterizer_matches_soft_renderer_and_has_no_holes():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    v = torch.tensor(mesh.vertices, dtype=torch.float32)[None] + torch.tensor([0.01, -0.005, 0.3])
    f = torch.tensor(mesh.faces)
    K = torch.tensor([[120.0, 0, 39.5], [0, 120.0, 31.5], [0, 0, 1]])[None]
    hard = rasterize(v, f, K, 64, 80)
    culled = rasterize(v, f, K, 64, 80, cull_back=torch.ones(len(f), dtype=torch.bool))
    torch.testing.assert_close(hard.depth, culled.depth)
    soft = render_mesh_image(v, f, K, 64, 80, MeshRenderConfig(sigma=1e-6))
    a, b = hard.covered[0].numpy(), (soft.mask[0] > 0.5).numpy()
    assert _iou(a, b) > 0.99
    both = torch.from_numpy(a & b)
    assert (hard.depth[0][both] - soft.depth[0][both]).abs().max() < 1e-5
    # Barycentrics interpolate positions exactly: z of the interpolated point == depth.
    pts = interpolate(v, f, hard)
    torch.testing.assert_close(pts[..., 2][hard.covered], hard.depth[hard.covered], atol=1e-6, rtol=0)
    # Two triangles tiling a plane cover every pixel (shared edges leave no holes).
    quad = torch.tensor([[[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]])
    tiles = rasterize(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]), K, 64, 80)
    assert tiles.covered.all()


def test_hand_object_labels_show_the_nearer_surface():
    from hoirecon.render.raster import hand_object_labels

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    v = torch.tensor(sphere.vertices, dtype=torch.float32)
    f = torch.tensor(sphere.faces)
    K = torch.tensor([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]])[None]
    near, far = v + torch.tensor([0.02, 0.0, 0.4]), v + torch.tensor([-0.02, 0.0, 0.5])
    labels = hand_object_labels(near[None], f, far[None], f, K, 64, 64)[0]
    obj_alone = rasterize(near[None], f, K, 64, 64).covered[0]
    hand_alone = rasterize(far[None], f, K, 64, 64).covered[0]
    assert torch.equal(labels == 2, obj_alone)  # the object is nearer: all of it shows
    assert torch.equal(labels == 1, hand_alone & ~obj_alone)
    assert torch.equal(labels == 0, ~(obj_alone | hand_alone))
    swapped = hand_object_labels(far[None], f, near[None], f, K, 64, 64)[0]
    assert torch.equal(swapped == 1, obj_alone)


def test_strided_silhouettes_are_the_full_silhouettes_every_stride_pixels():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    v = torch.tensor(mesh.vertices, dtype=torch.float32)[None] + torch.tensor([0.01, -0.005, 0.3])
    v = torch.cat([v, v + torch.tensor([0.02, 0.0, 0.05])])  # two meshes, one camera
    f = torch.tensor(mesh.faces)
    K = torch.tensor([[120.0, 0, 39.5], [0, 120.0, 31.5], [0, 0, 1]])
    full = rasterize(v, f, K.expand(2, 3, 3), 63, 80).covered
    strided = strided_silhouettes(v, f, K, 63, 80, 3)
    assert strided.shape == (2, 21, 27) and strided.dtype == torch.bool
    assert torch.equal(strided, full[:, ::3, ::3])
