"""Tests of the pinhole camera helpers and the soft mesh rasterizer."""

from __future__ import annotations

import math

import pytest
import torch

from hoirecon.render.camera import (
    make_intrinsics,
    pixel_directions,
    pixel_grid,
    pixel_rays,
    project_points,
    ray_t_to_camera_z,
    unproject_points,
)
from hoirecon.render.mesh import (
    MeshRenderConfig,
    _candidate_pairs,
    render_mesh_image,
    render_mesh_pixels,
    vertex_normals,
)


def uv_sphere(n_lat: int = 24, n_lon: int = 24, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit UV sphere with outward counter-clockwise faces: verts (V, 3), faces (F, 3)."""
    verts = [[0.0, 0.0, 1.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)])
    verts.append([0.0, 0.0, -1.0])
    last = len(verts) - 1
    faces = [[0, 1 + j, 1 + (j + 1) % n_lon] for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = 1 + i * n_lon + j, 1 + i * n_lon + (j + 1) % n_lon
            faces += [[a, a + n_lon, b + n_lon], [a, b + n_lon, b]]
    base = 1 + (n_lat - 2) * n_lon
    faces += [[base + j, last, base + (j + 1) % n_lon] for j in range(n_lon)]
    return torch.tensor(verts, dtype=dtype), torch.tensor(faces)


def tri_scene(z0: float = 2.0):
    """One triangle facing the camera at depth z0; K with f=100, c=(32, 32)."""
    verts = torch.tensor([[[-0.2, -0.2, z0], [0.2, -0.2, z0], [0.0, 0.2, z0]]])
    faces = torch.tensor([[0, 1, 2]])
    K = make_intrinsics(100.0, 100.0, 32.0, 32.0)
    return verts, faces, K


# ---------------------------------------------------------------- camera


def test_project_unproject_roundtrip():
    torch.manual_seed(0)
    K = torch.tensor([[[500.0, 2.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]]]).repeat(2, 1, 1)
    pts = torch.randn(2, 50, 3) * 0.2 + torch.tensor([0.0, 0.0, 1.0])
    pix = project_points(pts, K)
    back = unproject_points(pix, pts[..., 2], K)
    assert torch.allclose(back, pts, atol=1e-5)
    # the principal point sees the optical axis
    assert torch.allclose(project_points(torch.tensor([[[0.0, 0.0, 3.0]]]), K[:1]), torch.tensor([[[320.0, 240.0]]]))


def test_pixel_rays_and_camera_z():
    K = make_intrinsics(100.0, 100.0, 32.0, 32.0, batch=1)
    pix = torch.tensor([[[10.0, 50.0], [32.0, 32.0]]])
    o, d = pixel_rays(pix, K)
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 2))
    t = torch.tensor([[2.0, 3.0]])
    z = ray_t_to_camera_z(t, d)
    pts = o + t[..., None] * d
    assert torch.allclose(project_points(pts, K), pix, atol=1e-4)
    assert torch.allclose(z, pts[..., 2])
    # with a pose: rays in another frame map back onto the same camera points
    T = torch.eye(4)[None]
    T[0, :3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    T[0, :3, 3] = torch.tensor([0.1, 0.2, 0.3])
    o_w, d_w = pixel_rays(pix, K, T)
    pts_w = o_w + t[..., None] * d_w
    pts_c = (pts_w - T[0, :3, 3]) @ T[0, :3, :3]  # inverse rigid transform
    assert torch.allclose(pts_c, pts, atol=1e-5)
    assert torch.allclose(pixel_directions(pix, K, normalize=False)[..., 2], torch.ones(1, 2))


# ---------------------------------------------------------------- mesh


def test_flat_triangle_silhouette_inside_outside_edge():
    verts, faces, K = tri_scene()
    cfg = MeshRenderConfig(sigma=0.5)
    # triangle in pixels: (22, 22), (42, 22), (32, 42); edge y = 22 between x 22..42
    pix = torch.tensor([[[32.0, 28.0], [5.0, 5.0], [32.0, 22.0], [32.0, 21.0], [32.0, 23.0]]])
    out = render_mesh_pixels(verts, faces, K, pix, cfg)
    m = out.mask[0]
    assert m[0] > 0.999 and m[1] == 0.0
    assert abs(m[2] - 0.5) < 1e-5  # on the edge: sigmoid(0)
    assert abs(m[3] - torch.sigmoid(torch.tensor(-1.0 / 0.5))) < 1e-5  # 1 px outside
    assert abs(m[4] - torch.sigmoid(torch.tensor(1.0 / 0.5))) < 1e-5  # 1 px inside
    assert torch.allclose(out.depth[0, [0, 2, 3, 4]], torch.full((4,), 2.0))
    assert out.depth[0, 1] == 0.0 and out.face_index[0, 1] == -1 and out.face_index[0, 0] == 0


def test_sloped_triangle_perspective_correct_depth_and_attrs():
    # a plane tilted in depth: interpolation must be perspective-correct to land on it
    verts = torch.tensor([[[-0.5, -0.4, 1.0], [0.6, -0.3, 3.0], [0.0, 0.6, 2.0]]])
    faces = torch.tensor([[0, 1, 2]])
    K = make_intrinsics(100.0, 100.0, 32.0, 32.0)
    pix = torch.rand(1, 300, 2) * 64
    out = render_mesh_pixels(verts, faces, K, pix, vert_attrs=verts[0], return_normals=True)
    inside = out.mask[0] > 0.999
    assert inside.sum() > 30
    pts = unproject_points(pix, out.depth, K)[0]
    # attrs = vertex positions: their interpolation is the 3D surface point itself
    assert torch.allclose(out.attrs[0][inside], pts[inside], atol=1e-4)
    n = torch.cross(verts[0, 1] - verts[0, 0], verts[0, 2] - verts[0, 0], dim=0)
    n = n / n.norm()
    assert ((pts[inside] - verts[0, 0]) @ n).abs().max() < 1e-4  # on the plane
    assert torch.allclose(out.normal[0][inside], n.expand(int(inside.sum()), 3), atol=1e-5)


def test_nearest_face_wins_and_masks_aggregate():
    verts = torch.tensor(
        [[[-0.2, -0.2, 2.0], [0.2, -0.2, 2.0], [0.0, 0.2, 2.0], [-0.2, -0.2, 1.0], [0.2, -0.2, 1.0], [0.0, 0.2, 1.0]]]
    )
    verts[0, 3:, :2] *= 0.5  # the near triangle projects to the same place
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    K = make_intrinsics(100.0, 100.0, 32.0, 32.0)
    cfg = MeshRenderConfig(sigma=1.0)
    pix = torch.tensor([[[32.0, 30.0], [32.0, 21.0]]])
    out = render_mesh_pixels(verts, faces, K, pix, cfg)
    assert out.face_index[0, 0] == 1 and abs(out.depth[0, 0] - 1.0) < 1e-6
    # 1 px outside the shared lower edge both faces give sigmoid(-1): 1 - (1 - D)^2
    d = torch.sigmoid(torch.tensor(-1.0))
    assert abs(out.mask[0, 1] - (1 - (1 - d) ** 2)) < 1e-5
    # outside every triangle the depth comes from the nearest face in 2D (a tie here)
    assert out.depth[0, 1] in (1.0, 2.0)


def test_sphere_image_disc_radius_depth_and_normal():
    v, f = uv_sphere(24, 24)
    r, d = 0.1, 0.5
    verts = (v * r + torch.tensor([0.0, 0.0, d]))[None]
    H = 64
    focal = 120.0
    K = make_intrinsics(focal, focal, 31.5, 31.5)
    out = render_mesh_image(verts, f, K, H, H, MeshRenderConfig(sigma=0.1), vert_attrs=v)
    rad = focal * r / math.sqrt(d * d - r * r)
    # SoftRas aggregation over many sliver faces at the limb grows the soft area a little
    assert abs(out.mask.sum().item() - math.pi * rad**2) / (math.pi * rad**2) < 0.03
    # the 0.5 level crosses the x axis at radius rad (the mesh is inscribed: slightly inside)
    row = out.mask[0, 31]
    k = 31 + torch.nonzero(row[31:] < 0.5)[0, 0].item()  # first pixel right of centre below 0.5
    crossing = k - 1 + (row[k - 1] - 0.5).item() / (row[k - 1] - row[k]).item()
    assert abs((crossing - 31.5) - rad) < 0.75
    assert abs(out.depth[0, 31:33, 31:33].mean().item() - (d - r)) < 1e-3
    assert torch.allclose(out.normal[0, :, 31, 31], torch.tensor([0.0, 0.0, -1.0]), atol=0.05)
    assert torch.allclose(out.attrs[0, :, 31, 31], torch.tensor([0.0, 0.0, -1.0]), atol=0.05)
    assert out.depth[0, 0, 0] == 0 and out.normal[0, :, 0, 0].abs().sum() == 0
    assert out.normal.shape == (1, 3, H, H) and out.attrs.shape == (1, 3, H, H)


def test_pixels_api_matches_image_api_and_batch_matches_single():
    v, f = uv_sphere(12, 12)
    torch.manual_seed(1)
    verts = torch.stack([v * 0.1 + torch.tensor([0.02, 0.0, 0.5]), v * 0.08 + torch.tensor([-0.03, 0.01, 0.4])])
    verts = verts + 0.005 * torch.randn_like(verts)
    K = torch.stack([make_intrinsics(100.0, 100.0, 16.0, 16.0)[0], make_intrinsics(90.0, 95.0, 15.0, 17.0)[0]])
    img = render_mesh_image(verts, f, K, 32, 32, vert_attrs=v)
    grid = pixel_grid(32, 32).expand(2, -1, -1)
    pix = render_mesh_pixels(verts, f, K, grid, vert_attrs=v, return_normals=True)
    assert torch.allclose(img.mask.reshape(2, -1), pix.mask, atol=1e-6)
    assert torch.allclose(img.depth.reshape(2, -1), pix.depth, atol=1e-6)
    assert torch.equal(img.face_index.reshape(2, -1), pix.face_index)
    for b in range(2):
        single = render_mesh_image(verts[b : b + 1], f, K[b : b + 1], 32, 32, vert_attrs=v)
        assert torch.allclose(single.mask[0], img.mask[b], atol=1e-6)
        assert torch.allclose(single.depth[0], img.depth[b], atol=1e-6)
        assert torch.allclose(single.normal[0], img.normal[b], atol=1e-6)
        assert torch.allclose(single.attrs[0], img.attrs[b], atol=1e-6)


def test_gradients_match_finite_differences():
    v, f = uv_sphere(5, 6, dtype=torch.float64)
    torch.manual_seed(2)
    verts = (v * 0.1 + torch.tensor([0.01, 0.02, 0.5], dtype=torch.float64)) + 0.01 * torch.randn_like(v)
    verts = verts[None].requires_grad_(True)
    K = make_intrinsics(150.0, 150.0, 32.0, 32.0, dtype=torch.float64)
    pix = torch.rand(1, 100, 2, dtype=torch.float64) * 70 - 3
    # prob_eps tiny: no pair enters or leaves the candidate set under the FD steps
    cfg = MeshRenderConfig(sigma=2.0, prob_eps=1e-12)
    attrs = torch.randn(v.shape[0], 2, dtype=torch.float64)

    m = render_mesh_pixels(verts, f, K, pix, cfg).mask
    assert (m > 0.99).any() and (m == 0).any() and ((m > 0.05) & (m < 0.95)).sum() > 10
    # random projections of all outputs summed: one backward pass per gradcheck evaluation
    names = ("mask", "depth", "normal", "attrs")
    ref = render_mesh_pixels(verts, f, K, pix, cfg, attrs, True)
    proj = {n: torch.randn_like(getattr(ref, n)) for n in names}

    def fn(x):
        o = render_mesh_pixels(x, f, K, pix, cfg, attrs, True)
        return sum((getattr(o, n) * proj[n]).sum() for n in names)

    assert torch.autograd.gradcheck(fn, (verts,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_faces_behind_camera_are_dropped_and_empty_render():
    verts, faces, K = tri_scene(z0=-1.0)
    out = render_mesh_pixels(verts, faces, K, torch.tensor([[[32.0, 30.0]]]))
    assert out.mask.item() == 0.0 and out.depth.item() == 0.0 and out.face_index.item() == -1
    img = render_mesh_image(verts, faces, K, 8, 8)
    assert img.mask.abs().sum() == 0


def test_vertex_normals_point_outward():
    v, f = uv_sphere(10, 10)
    n = vertex_normals(v[None] * 2.0, f)[0]
    assert torch.allclose(n.norm(dim=-1), torch.ones(len(v)))
    assert (n * v).sum(-1).min() > 0.98  # outward, close to the sphere normal


def test_bad_inputs_raise_value_error():
    verts, faces, K = tri_scene()
    with pytest.raises(ValueError):
        render_mesh_pixels(verts[0], faces, K, torch.zeros(1, 3, 2))
    with pytest.raises(ValueError):
        render_mesh_pixels(verts, faces, K, torch.zeros(1, 3))
    with pytest.raises(ValueError):
        render_mesh_pixels(verts, faces, K[0], torch.zeros(1, 3, 2))
    with pytest.raises(ValueError):
        render_mesh_pixels(verts, faces, K, torch.zeros(1, 3, 2), MeshRenderConfig(sigma=0.0))
    with pytest.raises(ValueError):
        render_mesh_image(verts, faces, K, 0, 8)
    with pytest.raises(ValueError):
        render_mesh_image(verts, faces, K, 8, 8, vert_attrs=torch.zeros(5, 2))


@pytest.mark.parametrize("tile", [1, 8, 64])
def test_candidate_pairs_are_every_pixel_in_every_grown_face_box(tile):
    gen = torch.Generator().manual_seed(0)
    B, F, P, radius = 3, 40, 60, 1.5
    centres = torch.rand(B, F, 1, 2, generator=gen) * 100
    tri = centres + torch.randn(B, F, 3, 2, generator=gen) * 6
    tri[0, 0] = torch.tensor([[-1e6, -1e6], [1e6, -1e6], [0.0, 1e6]])  # a face near the camera plane
    face_ok = torch.rand(B, F, generator=gen) > 0.2
    pix = torch.rand(B, P, 2, generator=gen) * 110 - 5
    pix[2] *= 30  # widely spread pixels grow the tiles
    pair_pix, pair_face = _candidate_pairs(tri, face_ok, pix, radius, tile)
    lo, hi = tri.amin(2) - radius, tri.amax(2) + radius  # (B, F, 2)
    inside = ((pix[:, :, None] >= lo[:, None]) & (pix[:, :, None] <= hi[:, None])).all(-1) & face_ok[:, None]
    b, p, f = torch.nonzero(inside, as_tuple=True)
    expected = sorted(zip((b * P + p).tolist(), (b * F + f).tolist()))
    assert sorted(zip(pair_pix.tolist(), pair_face.tolist())) == expected
    assert len(expected) > 0
