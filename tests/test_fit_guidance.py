"""Tests of the score-distillation guidance term of the fit (hoirecon.fit.guidance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.errors import MissingWeightsError, UserError
from hoirecon.fit.guidance import (
    GuidanceConfig,
    PriorGuidance,
    build_guidance,
    camera_directions,
    mean_view_weight,
    sds_schedule,
    sphere_directions,
    unseen_view_weight,
)
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
    active = [s for s in range(0, 112) if g.active(s, 1500)]
    assert active == [100, 103, 106, 109]


def test_default_schedule_is_the_old_one():
    """Defaults (fade_from = end_fraction = 1, no view weighting) keep the old rule
    ``weight > 0 and step >= start_step and (step - start_step) % every == 0`` and factor 1."""
    for start, every, weight in ((100, 1, 1e-3), (100, 2, 1e-3), (0, 3, 2e-3), (100, 2, 0.0)):
        g = PriorGuidance(None, "mug", torch.zeros(1, 2),
                          GuidanceConfig(prior="hoirecon", start_step=start, every=every, weight=weight))
        for total in (7, 200, 1500):
            old = [s for s in range(total) if weight > 0 and s >= start and (s - start) % every == 0]
            assert [s for s in range(total) if g.active(s, total)] == old
            assert all(g.schedule(s, total) == 1.0 for s in range(start, total))
        assert not g.cfg.view_weighting


def test_annealed_end_is_constant_then_linear_then_zero():
    """As the docstring says: 0 before start_step, 1 until fade_from, linear to 0 at end_fraction."""
    total = 1000
    f = [sds_schedule(s, total, 100, 0.4, 0.7) for s in range(total)]
    assert f[99] == 0.0 and f[100] == 1.0 and f[399] == 1.0 and f[400] == 1.0
    assert f[550] == pytest.approx(0.5) and f[699] == pytest.approx(1 / 300)
    assert all(v == 0.0 for v in f[700:])
    assert all(a >= b for a, b in zip(f[100:], f[101:]))  # never rises again
    # a hard stop when the fall has no length
    assert [sds_schedule(s, 10, 0, 0.5, 0.5) for s in range(10)] == [1.0] * 5 + [0.0] * 5
    with pytest.raises(UserError):
        GuidanceConfig(prior="hoirecon", fade_from=0.8, end_fraction=0.6)


def test_no_sds_call_after_the_end(monkeypatch, scene):
    """Once the schedule is 0 the loop's guidance renders nothing and calls no prior."""
    import hoirecon.fit.guidance as guidance_mod

    calls = []
    monkeypatch.setattr(guidance_mod, "score_distillation_loss", lambda *a, **k: calls.append(1) or 1 / 0)
    g = PriorGuidance(None, "mug", torch.zeros(1, 2),
                      GuidanceConfig(prior="hoirecon", start_step=0, every=1, fade_from=0.2, end_fraction=0.5))
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    for step in range(50, 100):
        loss, info = g(scene, step, 100, gen)
        assert loss is None and info == PriorGuidance.idle_info()
    assert not calls and torch.equal(gen.get_state(), state)  # not even a random number drawn
    with pytest.raises(ZeroDivisionError):  # before the end it does call
        g(scene, 49, 100, gen)


def test_unseen_view_weight_on_toy_directions():
    """0 at (and within view_seen_deg of) an observed direction, 1 opposite to it and from
    view_unseen_deg on, smooth and monotone in between."""
    observed = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]), dim=-1)

    def at(deg):  # directions at `deg` from the first observed one, away from the second
        a = torch.deg2rad(torch.as_tensor(deg, dtype=torch.float32))
        return torch.stack([-torch.sin(a), torch.zeros_like(a), torch.cos(a)], -1)

    w = unseen_view_weight(torch.cat([observed, -observed]), observed, 0.0, 60.0)
    assert w[:2].tolist() == pytest.approx([0.0, 0.0], abs=1e-6) and w[2:].tolist() == [1.0, 1.0]
    w = unseen_view_weight(at([0.0, 10.0, 19.9, 40.0, 60.0, 90.0, 180.0]), observed, 20.0, 60.0)
    assert w[:3].tolist() == [0.0, 0.0, 0.0] and w[3] == pytest.approx(0.5, abs=1e-4)
    assert w[4:].tolist() == pytest.approx([1.0, 1.0, 1.0])
    ramp = unseen_view_weight(at(torch.linspace(20, 60, 41)), observed, 20.0, 60.0)
    assert (ramp[1:] >= ramp[:-1]).all()
    # the nearest observed camera counts: 45 deg from the first is 0 deg from the second
    assert float(unseen_view_weight(observed[1:], observed[:1], 0.0, 90.0)[0]) == pytest.approx(0.5, abs=1e-4)
    # camera directions: from the object-frame origin to the camera centre, whatever the rotation
    T = torch.eye(4).repeat(2, 1, 1)
    T[0, :3, 3] = torch.tensor([0.0, 0.0, 0.4])
    T[1, :3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    T[1, :3, 3] = torch.tensor([0.0, -0.5, 0.0])
    assert camera_directions(T).tolist() == [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]


def test_view_weighting_skips_views_next_to_the_input_cameras(hand_model, scene):
    """With view weighting a view the masks see (seen_deg 180: every view) costs no rendering;
    the weight applied is the view's ``unseen_view_weight`` and the view is the one rendered
    without the weighting (same random numbers)."""
    g1 = build_guidance(GuidanceConfig(prior="hoirecon", category="mug", start_step=0), hand_model, "cpu")

    def with_cfg(**kw):
        cfg = GuidanceConfig(prior="hoirecon", start_step=0, **kw)
        return PriorGuidance(g1.prior, g1.category, g1.hand_vert_uv, cfg)

    loss, info = with_cfg(view_seen_deg=179.0, view_unseen_deg=180.0)(scene, 0, 100, torch.Generator().manual_seed(3))
    assert loss is None and info["sds_w"] == 0.0
    outs = []
    for g in (g1, with_cfg(view_seen_deg=0.0, view_unseen_deg=180.0, view_keep_pull=False),
              with_cfg(view_seen_deg=0.0, view_unseen_deg=180.0)):
        torch.manual_seed(1)
        with torch.no_grad():
            outs.append(g(scene, 0, 100, torch.Generator().manual_seed(5))[1])
    assert outs[0]["sds_w"] == 1.0 and 0.0 < outs[1]["sds_w"] < 1.0
    for out in outs[1:]:
        assert out["sds_raw"] == pytest.approx(outs[0]["sds_raw"], rel=1e-5)
        assert out["sds"] == pytest.approx(out["sds_w"] * outs[0]["sds"], rel=1e-5)
    # keep_pull: the same view's weight over the mean weight of all directions (floored at 0.5)
    observed = camera_directions(scene.T_cam_to_obj().detach())
    mean = float(mean_view_weight(observed, 0.0, 180.0))
    assert 0.0 < mean < 1.0 and outs[2]["sds_w"] == pytest.approx(outs[1]["sds_w"] / max(mean, 0.5), rel=1e-5)


def test_mean_view_weight_is_the_mean_over_the_sphere():
    d = sphere_directions(2000)
    assert torch.allclose(d.norm(dim=-1), torch.ones(2000)) and d.mean(0).abs().max() < 1e-3
    # one camera, a ramp over the whole half-turn: symmetric about 90 deg, so exactly half
    z = torch.tensor([[0.0, 0.0, 1.0]])
    assert float(mean_view_weight(z, 0.0, 180.0)) == pytest.approx(0.5, abs=2e-3)
    # a hard cap of 60 deg (1 - cos 60) / 2 = 1/4 of the sphere at weight 0
    assert float(mean_view_weight(z, 59.99, 60.0)) == pytest.approx(0.75, abs=2e-3)


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
    assert info["sds"] == pytest.approx(1e-3 * info["sds_raw"], rel=1e-5) and info["sds_w"] == 1.0
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


def test_view_at_an_input_camera_gets_no_pull_and_the_opposite_view_does(monkeypatch, hand_model, scene):
    """On the toy scene: an SDS camera placed at input camera 0 is skipped (weight 0, nothing
    rendered); the same camera turned 180 deg about the object's centre (the side no input
    camera saw) is rendered and weighs 1 / mean_view_weight, with gradients to the SDF."""
    import hoirecon.fit.guidance as guidance_mod
    from hoirecon.geometry.rotations import axis_angle_to_matrix
    from hoirecon.geometry.transforms import invert_rigid
    from hoirecon.prior.sds import SDSViews, draw_sds_views

    g1 = build_guidance(GuidanceConfig(prior="hoirecon", category="mug", start_step=0), hand_model, "cpu")
    g = PriorGuidance(g1.prior, g1.category, g1.hand_vert_uv,
                      GuidanceConfig(prior="hoirecon", start_step=0, view_seen_deg=20.0, view_unseen_deg=60.0))
    with torch.no_grad():
        T_cam0_to_obj = scene.T_cam_to_obj(torch.tensor([0]))[0]
        c = T_cam0_to_obj[:3, 3]
        axis = torch.nn.functional.normalize(torch.linalg.cross(c, torch.tensor([0.0, 1.0, 0.0])), dim=0)
        turn = torch.eye(4)
        turn[:3, :3] = axis_angle_to_matrix(torch.pi * axis)
        observed = camera_directions(scene.T_cam_to_obj())

    def views_from(T_view_to_obj):
        def draw(T_hand_to_obj, *args, **kwargs):
            v = draw_sds_views(T_hand_to_obj, *args, **kwargs)
            return SDSViews(invert_rigid(T_view_to_obj[None]) @ T_hand_to_obj, v.K, v.center)
        return draw

    monkeypatch.setattr(guidance_mod, "draw_sds_views", views_from(T_cam0_to_obj))
    loss, info = g(scene, 10, 100, torch.Generator().manual_seed(0))
    assert loss is None and info["sds_w"] == 0.0

    monkeypatch.setattr(guidance_mod, "draw_sds_views", views_from(turn @ T_cam0_to_obj))
    scene.zero_grad(set_to_none=True)
    loss, info = g(scene, 10, 100, torch.Generator().manual_seed(0))
    assert info["sds_w"] == pytest.approx(1.0 / max(float(mean_view_weight(observed, 20.0, 60.0)), 0.5), rel=1e-4)
    loss.backward()
    assert scene.sdf.values.grad.abs().sum() > 0
