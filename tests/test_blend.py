"""Tests of hand/object mask blending by depth (DiffHOI eq. 1-2)."""

from __future__ import annotations

import pytest
import torch

from hoirecon.render.blend import hard_blend_masks, soft_blend_masks

BG, HAND, OBJ = 0, 1, 2


def eq2_global_max(m_h, m_o, d_h, d_o, gamma, d_near, d_far, eps):
    """Eq. 1-2 written literally, with the max over all pixels (float64 reference)."""
    z_h = m_h * (d_far - d_h) / (d_far - d_near)
    z_o = m_o * (d_far - d_o) / (d_far - d_near)
    z_max = torch.maximum(torch.cat([z_h, z_o]).max(), torch.tensor(eps, dtype=z_h.dtype))
    w_h = m_h * torch.exp((z_h - z_max) / gamma)
    w_o = m_o * torch.exp((z_o - z_max) / gamma)
    w_bg = torch.exp((eps - z_max) / gamma) * torch.ones_like(w_h)
    return torch.stack([w_bg, w_h, w_o], -1) / (w_bg + w_h + w_o)[..., None]


def test_front_surface_label_wins():
    # pixel 0: object in front of hand; 1: hand in front; 2: hand only; 3: object only; 4: nothing
    m_h = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    m_o = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    d_h = torch.tensor([0.60, 0.40, 0.50, 0.0, 0.0])
    d_o = torch.tensor([0.45, 0.55, 0.0, 0.50, 0.0])
    p = soft_blend_masks(m_h, m_o, d_h, d_o, gamma=1e-4, d_near=0.0, d_far=2.0)
    assert p.shape == (5, 3)
    assert torch.allclose(p.sum(-1), torch.ones(5))
    assert p.argmax(-1).tolist() == [OBJ, HAND, HAND, OBJ, BG]
    assert p[0, OBJ] > 0.999 and p[1, HAND] > 0.999 and p[4, BG] == 1.0
    hard = hard_blend_masks(m_h, m_o, d_h, d_o)
    assert hard.argmax(-1).tolist() == [OBJ, HAND, HAND, OBJ, BG]
    assert torch.allclose(hard.sum(-1), torch.ones(5))


def test_matches_literal_equation_where_representable():
    torch.manual_seed(0)
    shape = (2, 7, 5)
    m_h, m_o = torch.rand(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)
    d_h, d_o = 0.4 + 0.2 * torch.rand(shape, dtype=torch.float64), 0.4 + 0.2 * torch.rand(shape, dtype=torch.float64)
    args = dict(gamma=0.05, d_near=0.1, d_far=1.5, eps=1e-3)
    p = soft_blend_masks(m_h, m_o, d_h, d_o, **args)
    ref = eq2_global_max(m_h.flatten(), m_o.flatten(), d_h.flatten(), d_o.flatten(), **args)
    assert p.shape == (*shape, 3)
    assert torch.allclose(p.reshape(-1, 3), ref, atol=1e-12)


def test_sharp_gamma_stays_finite_where_global_max_underflows():
    # one pixel very near the camera makes the literal batch-wide max underflow the others
    m = torch.ones(3)
    d_h = torch.tensor([0.05, 1.5, 1.6])
    d_o = torch.tensor([2.0, 1.6, 1.5])
    literal = eq2_global_max(m, m, d_h, d_o, 1e-4, 0.0, 2.0, 1e-3)
    assert torch.isnan(literal[1:]).all()
    p = soft_blend_masks(m, m, d_h, d_o, gamma=1e-4, d_near=0.0, d_far=2.0)
    assert torch.isfinite(p).all()
    assert p.argmax(-1).tolist() == [HAND, HAND, OBJ]


def test_gradients_flow_to_masks_and_depths():
    # near-tie in nearness z = m (d_far - d) / (d_far - d_near): both about 0.45
    m_h = torch.tensor([0.9], requires_grad=True)
    m_o = torch.tensor([0.9], requires_grad=True)
    d_h = torch.tensor([0.5002], requires_grad=True)
    d_o = torch.tensor([0.5000], requires_grad=True)
    p = soft_blend_masks(m_h, m_o, d_h, d_o, gamma=1e-3, d_near=0.0, d_far=1.0)
    p[0, OBJ].backward()
    assert d_o.grad < 0  # pushing the object back lowers its probability
    assert d_h.grad > 0
    assert m_o.grad > 0 and m_h.grad < 0
    # hard blending: no depth gradient, mask gradients kept
    m_h.grad = m_o.grad = None
    hard = hard_blend_masks(m_h, m_o, d_h, d_o)
    hard[0, OBJ].backward()
    assert m_o.grad.item() == pytest.approx(1.0) and m_h.grad.item() == 0.0
    assert torch.allclose(hard[0], torch.tensor([0.01, 0.09, 0.9]), atol=1e-6)


def test_bad_inputs_raise_value_error():
    x = torch.ones(4)
    with pytest.raises(ValueError):
        soft_blend_masks(x, x, x, torch.ones(3))
    with pytest.raises(ValueError):
        soft_blend_masks(x, x, x, x, gamma=0.0)
    with pytest.raises(ValueError):
        soft_blend_masks(x, x, x, x, d_near=1.0, d_far=1.0)
