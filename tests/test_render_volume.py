"""Tests of the VolSDF-style volume renderer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hoirecon.render.camera import make_intrinsics, pixel_grid, pixel_rays, ray_t_to_camera_z
from hoirecon.render.volume import (
    LaplaceDensity,
    VolumeRenderConfig,
    interval_optical_depth,
    laplace_cdf,
    laplace_density,
    ray_sphere_bounds,
    render_sdf_volume,
    sdf_with_gradient,
)


def sphere_sdf(center: torch.Tensor, radius: float):
    def fn(x: torch.Tensor):
        return (x - center).norm(dim=-1) - radius, x[:, :0]

    return fn


def camera_rays(H: int, focal: float):
    K = make_intrinsics(focal, focal, (H - 1) / 2, (H - 1) / 2)
    o, d = pixel_rays(pixel_grid(H, H)[None], K)
    return o[0], d[0]


def test_laplace_density_and_exact_interval_integral():
    beta = 0.05
    s = torch.tensor([-1.0, -0.05, 0.0, 0.05, 1.0])
    assert torch.allclose(laplace_cdf(torch.zeros(1), beta), torch.tensor([0.5]))
    dens = laplace_density(s, beta)
    assert torch.all(dens[:-1] >= dens[1:])  # more density deeper inside
    assert abs(dens[0].item() - 1 / beta) < 1e-3 / beta  # alpha = 1/beta deep inside
    # closed-form optical depth vs. a fine Riemann sum of the density along a linear SDF
    torch.manual_seed(0)
    s0, s1 = torch.randn(20) * 0.1, torch.randn(20) * 0.1
    s1[:3] = s0[:3] + 1e-5  # nearly constant SDF takes the midpoint branch
    length = torch.rand(20) * 0.05 + 0.001
    u = (torch.arange(20000) + 0.5) / 20000
    ref = (laplace_density(s0[:, None] + (s1 - s0)[:, None] * u, beta).mean(-1)) * length
    tau = interval_optical_depth(s0, s1, length, beta)
    assert torch.allclose(tau, ref, rtol=1e-3, atol=1e-6)


def test_ray_sphere_bounds():
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_sphere_bounds(o, d, torch.tensor([0.0, 0.0, 2.0]), 0.5)
    assert hit.tolist() == [True, False, True]
    assert torch.allclose(near[0], torch.tensor(1.5)) and torch.allclose(far[0], torch.tensor(2.5))
    assert torch.allclose(near[2], torch.tensor(0.0)) and torch.allclose(far[2], torch.tensor(0.5))


@pytest.mark.parametrize("n_coarse,n_importance", [(64, 64), (16, 16)])
def test_sphere_renders_disc_of_right_radius_and_depth(n_coarse, n_importance):
    d, r, H, focal = 0.5, 0.1, 48, 90.0
    c = torch.tensor([0.0, 0.0, d])
    o, dirs = camera_rays(H, focal)
    cfg = VolumeRenderConfig(n_coarse=n_coarse, n_importance=n_importance)
    out = render_sdf_volume(sphere_sdf(c, r), o, dirs, torch.tensor(1e-4), c, 1.5 * r, cfg)
    rad = focal * r / math.sqrt(d * d - r * r)
    area = out.opacity.sum().item()
    assert abs(area - math.pi * rad**2) / (math.pi * rad**2) < 0.02
    # exact per-pixel depth: ray-sphere intersection
    near, _, _ = ray_sphere_bounds(o, dirs, c, r)
    _, _, hit = ray_sphere_bounds(o, dirs, c, 0.98 * r)  # away from grazing rays
    assert hit.sum() > 100
    assert (out.opacity[hit] > 0.999).all()
    assert (out.depth[hit] - near[hit]).abs().max() < 1e-3
    z = ray_t_to_camera_z(out.depth, dirs).reshape(H, H)
    assert abs(z[H // 2 - 1 : H // 2 + 1, H // 2 - 1 : H // 2 + 1].mean().item() - (d - r)) < 5e-4
    n_centre = out.normal.reshape(H, H, 3)[H // 2, H // 2]
    assert torch.allclose(n_centre, torch.tensor([0.0, 0.0, -1.0]), atol=0.05)
    # rays far from the sphere see nothing
    assert out.opacity.reshape(H, H)[0, 0] < 1e-6


def _pe_mlp(seed: int = 0) -> nn.Module:
    """A tiny SDF network (4 x 64 Softplus, 6-frequency positional encoding) around a sphere."""
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("freq", 2.0 ** torch.arange(6) * math.pi)
            layers, dim = [], 39
            for _ in range(4):
                layers += [nn.Linear(dim, 64), nn.Softplus(beta=100)]
                dim = 64
            layers.append(nn.Linear(64, 3))
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            xf = (x[..., None] * self.freq).flatten(-2)
            y = self.net(torch.cat([x, xf.sin(), xf.cos()], -1))
            return x.norm(dim=-1) - 0.5 + 0.05 * y[:, 0], y[:, 1:]

    return Net()


def test_matches_dense_reference_on_a_network_sdf():
    net = _pe_mlp()
    torch.manual_seed(1)
    R = 64
    o = torch.zeros(R, 3)
    o[:, 2] = -2.0
    dirs = torch.randn(R, 3) * 0.2
    dirs[:, 2] = 1.0
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    beta = torch.tensor(0.005)
    with torch.no_grad():
        out = render_sdf_volume(net, o, dirs, beta, None, 1.0, VolumeRenderConfig(normal_mode="none"))
        # reference: the same quadrature on 2048 uniform samples
        ref = render_sdf_volume(
            net, o, dirs, beta, None, 1.0,
            VolumeRenderConfig(n_coarse=2, n_importance=2048, uniform_share=1.0, normal_mode="none"),
        )
    assert (ref.opacity > 0.99).sum() > 10 and (ref.opacity < 0.01).sum() > 5
    assert (out.opacity - ref.opacity).abs().max() < 0.01
    sel = ref.opacity > 0.99
    assert (out.depth[sel] - ref.depth[sel]).abs().max() < 2e-3
    assert torch.allclose(out.features[sel], ref.features[sel], atol=2e-3)


def test_gradients_reach_network_pose_and_beta_with_eikonal():
    net = _pe_mlp()
    density = LaplaceDensity(beta_init=0.01)
    R = 32
    o = torch.zeros(R, 3)
    o[:, 2] = -2.0
    shift = torch.zeros(3, requires_grad=True)  # stands in for an object pose
    dirs = torch.randn(R, 3) * 0.1
    dirs[:, 2] = 1.0
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    out = render_sdf_volume(net, o + shift, dirs, density.beta(), None, 1.0, VolumeRenderConfig(perturb=True))
    assert out.sdf_grad.shape == (R * 64, 3) and out.sdf_grad.requires_grad
    eikonal = ((out.sdf_grad.norm(dim=-1) - 1) ** 2).mean()
    loss = out.opacity.mean() + out.depth.mean() + eikonal + out.normal[:, 0].sum()
    loss.backward()
    assert density.beta_param.grad is not None and density.beta_param.grad != 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert shift.grad is not None and shift.grad.abs().sum() > 0
    # implicit-surface calculus: moving a ray origin by do moves its hit by dt = -(n . do) / (n . d);
    # it must hold also when beta is far below the sample spacing
    for beta in (1e-3, 1e-4):
        o2 = (o + shift).detach().requires_grad_(True)
        out2 = render_sdf_volume(net, o2, dirs, torch.tensor(beta), None, 1.0)
        hit = out2.opacity > 0.999
        assert hit.sum() > 20
        (g,) = torch.autograd.grad(out2.depth[hit].sum(), o2)
        n = out2.normal.detach()[hit]
        expected = -n / (n * dirs[hit]).sum(-1, keepdim=True)
        err = (g[hit] - expected).abs()
        assert err.max() < 0.06 and err.mean() < 0.01, beta


def test_normal_modes_agree_and_no_grad_mode_detaches():
    c = torch.tensor([0.1, -0.05, 0.0])
    fn = sphere_sdf(c, 0.5)
    x = torch.randn(100, 3)
    _, _, g_auto = sdf_with_gradient(fn, x, "autograd")
    _, _, g_fd = sdf_with_gradient(fn, x, "finite_difference", fd_step=1e-3)
    expected = (x - c) / (x - c).norm(dim=-1, keepdim=True)
    assert torch.allclose(g_auto, expected, atol=1e-5)
    assert torch.allclose(g_fd, expected, atol=1e-3)
    o, dirs = camera_rays(8, 10.0)
    with torch.no_grad():
        out = render_sdf_volume(_pe_mlp(), o - torch.tensor([0.0, 0.0, 2.0]), dirs, 0.01, None, 1.0)
    assert out.normal is not None and not out.normal.requires_grad and not out.opacity.requires_grad
    out_fd = render_sdf_volume(
        fn, o - torch.tensor([0.0, 0.0, 2.0]), dirs, 0.001, None, 1.0,
        VolumeRenderConfig(normal_mode="finite_difference")
    )
    out_ad = render_sdf_volume(fn, o - torch.tensor([0.0, 0.0, 2.0]), dirs, 0.001, None, 1.0)
    sel = out_ad.opacity > 0.99
    assert torch.allclose(out_fd.normal[sel], out_ad.normal[sel], atol=1e-3)


def test_missing_rays_and_shapes():
    fn = sphere_sdf(torch.zeros(3), 0.3)
    o = torch.tensor([[0.0, 0.0, -2.0], [5.0, 5.0, -2.0]])
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = render_sdf_volume(fn, o, dirs, 0.001, None, 0.5)
    assert out.hit.tolist() == [True, False]
    assert out.opacity.shape == (2,) and out.depth.shape == (2,) and out.normal.shape == (2, 3)
    assert out.features.shape == (2, 0) and out.t_samples.shape == (1, 64) and out.weights.shape == (1, 63)
    assert out.opacity[1] == 0 and out.depth[1] == 0 and out.normal[1].abs().sum() == 0
    assert abs(out.depth[0].item() - 1.7) < 1e-3
    none = render_sdf_volume(fn, o[1:], dirs[1:], 0.001, None, 0.5)
    assert none.opacity.shape == (1,) and none.opacity.item() == 0


def test_bad_inputs_raise_value_error():
    fn = sphere_sdf(torch.zeros(3), 0.3)
    o, d = torch.zeros(4, 3), torch.ones(4, 3)
    with pytest.raises(ValueError):
        render_sdf_volume(fn, o[:, :2], d, 0.01)
    with pytest.raises(ValueError):
        render_sdf_volume(fn, o, d, 0.01, cfg=VolumeRenderConfig(normal_mode="magic"))
    with pytest.raises(ValueError):
        render_sdf_volume(fn, o, d, -1.0)
    with pytest.raises(ValueError):
        render_sdf_volume(lambda x: (x, x), o, d, 0.01)
