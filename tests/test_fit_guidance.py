"""Tests of the score-distillation guidance term of the fit (hoirecon.fit.guidance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.errors import MissingWeightsError, UserError
from hoirecon.fit.guidance import GuidanceConfig, PriorGuidance, build_guidance
from hoirecon.fit.optimize import InitConfig, build_initial_scene
from hoirecon.hand import build_hand_model

from conftest import look_at_np

SIZE = 48
N_FRAMES = 3


@pytest.fixture(scope="module")
def hand_model():
    return build_hand_model("anny")


@pytest.fixture(scope="module")
def scene(hand_model):
    """A small HOIScene: flat hand, object masks of a disc under the palm (the scene's own
    initialisation places and carves the object; SDS only needs a plausible object)."""
    art = np.zeros((N_FRAMES, 45), np.float32)
    with torch.no_grad():
        out = hand_model(torch.zeros(1, 45), torch.zeros(1, 3), torch.zeros(1, 10))
    palm = out.verts[0].double().mean(0).numpy()
    centre = palm + np.array([0.0, -0.05, 0.0])
    f = SIZE * 1.2
    K = np.array([[f, 0, SIZE / 2 - 0.5], [0, f, SIZE / 2 - 0.5], [0, 0, 1.0]])
    T_h2c = np.stack([look_at_np(centre + 0.45 * np.array([np.sin(a) * 0.8, -0.6, np.cos(a) * 0.8]), centre)
                      for a in np.deg2rad([-30.0, 0.0, 30.0])])
    # Object mask: projection of a 3 cm ball; hand mask: the projected palm neighbourhood.
    vs, us = np.mgrid[0:SIZE, 0:SIZE]
    obj, hand = [], []
    for T in T_h2c:
        def proj(p):
            c = T[:3, :3] @ p + T[:3, 3]
            return K[0, 0] * c[0] / c[2] + K[0, 2], K[1, 1] * c[1] / c[2] + K[1, 2], c[2]

        u, v, z = proj(centre)
        r_px = f * 0.03 / z
        obj.append((us - u) ** 2 + (vs - v) ** 2 < r_px**2)
        u, v, _ = proj(palm)
        hand.append(((us - u) ** 2 + (vs - v) ** 2 < (1.3 * r_px) ** 2) & ~obj[-1])
    init = InitConfig(sdf_kind="grid", grid_resolution=24, hull_resolution=24)
    sc, _ = build_initial_scene(hand_model, K, np.linalg.inv(T_h2c), art, np.zeros(10), "right", (SIZE, SIZE),
                                np.stack(hand), np.stack(obj), init)
    return sc


def test_none_gives_no_guidance(hand_model):
    assert build_guidance(GuidanceConfig(prior="none"), hand_model, "cpu") is None
    assert build_guidance(GuidanceConfig(prior="None", category="mug"), hand_model, "cpu") is None


def test_unknown_prior_and_bad_settings_are_user_errors(hand_model):
    with pytest.raises(UserError, match="unknown prior 'stable-diffusion'"):
        build_guidance(GuidanceConfig(prior="stable-diffusion", category="mug"), hand_model, "cpu")
    with pytest.raises(UserError, match="prior weights not found"):
        build_guidance(GuidanceConfig(prior="/nonexistent/prior.pt", category="mug"), hand_model, "cpu")
    # any object name is accepted: one outside the prior's vocabulary runs it category-agnostic
    guidance = build_guidance(GuidanceConfig(prior="hoirecon", category="spaceship"), hand_model, "cpu")
    assert guidance.category == "unknown"
    with pytest.raises(UserError):
        GuidanceConfig(prior="hoirecon", every=0)


def test_diffhoi_without_checkpoint_names_the_file(hand_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        build_guidance(GuidanceConfig(prior="diffhoi", category="mug"), hand_model, "cpu")
    msg = str(err.value)
    assert "diffhoi/ddpm2d/checkpoints/last.ckpt" in msg and "\n" not in msg


def test_schedule_start_step_and_every():
    g = PriorGuidance(prior=None, category="mug", hand_vert_uv=torch.zeros(1, 2),
                      cfg=GuidanceConfig(prior="hoirecon", start_step=100, every=3))
    active = [s for s in range(0, 112) if g.active(s)]
    assert active == [100, 103, 106, 109]


def test_sds_step_gives_finite_gradients_to_the_sdf_only(hand_model, scene):
    cfg = GuidanceConfig(prior="hoirecon", category="mug", start_step=100, every=1, weight=1e-3)
    guidance = build_guidance(cfg, hand_model, "cpu")
    assert isinstance(guidance, PriorGuidance)
    gen = torch.Generator().manual_seed(0)
    loss, info = guidance(scene, 99, 1500, gen)
    assert loss is None and info == PriorGuidance.idle_info() and set(info) == set(PriorGuidance.INFO_KEYS)

    torch.manual_seed(0)
    scene.zero_grad(set_to_none=True)
    loss, info = guidance(scene, 100, 1500, gen)
    assert loss is not None and loss.ndim == 0 and torch.isfinite(loss)
    assert set(info) == set(PriorGuidance.INFO_KEYS) and info["sds_grad"] > 0
    assert info["sds"] == pytest.approx(1e-3 * info["sds_raw"], rel=1e-5)
    assert 0 <= info["sds_t"] < 1000
    loss.backward()
    g = scene.sdf.values.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # Nothing but the SDF is pulled by the prior (pose, beta, hand, camera are detached).
    for name, p in scene.named_parameters():
        if not name.startswith("sdf."):
            assert p.grad is None or not p.grad.abs().any(), name

    before = scene.sdf.values.detach().clone()
    opt = torch.optim.Adam(scene.sdf.parameters(), lr=1e-3)
    opt.step()
    assert (scene.sdf.values.detach() - before).abs().max() > 1e-5


def test_every_scales_the_weight(hand_model, scene):
    """With every=N an SDS step carries N x weight (same time-averaged pull)."""
    base = GuidanceConfig(prior="hoirecon", category="unknown", start_step=0, every=1, weight=2e-3)
    g1 = build_guidance(base, hand_model, "cpu")
    g3 = PriorGuidance(g1.prior, g1.category, g1.hand_vert_uv,
                       GuidanceConfig(prior="hoirecon", category="unknown", start_step=0, every=3, weight=2e-3))
    outs = []
    for g in (g1, g3):
        torch.manual_seed(1)
        with torch.no_grad():
            loss, info = g(scene, 0, 100, torch.Generator().manual_seed(5))
        outs.append(info)
    assert outs[0]["sds_raw"] == pytest.approx(outs[1]["sds_raw"], rel=1e-5)
    assert outs[1]["sds"] == pytest.approx(3 * outs[0]["sds"], rel=1e-5)
