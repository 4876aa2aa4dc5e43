"""The project's geometry diffusion prior: model, encoding, data, training, sampling, SDS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.categories import CATEGORIES
from hoirecon.errors import UserError
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.prior.geometry import (
    ViewConfig,
    decode_geometry,
    encode_hand,
    encode_object,
    render_object_mesh,
    render_object_sdf,
    sample_views,
)
from hoirecon.prior.model import GeometryPrior, PriorConfig, linear_alphas_cumprod, load_geometry_prior
from hoirecon.prior.sds import SDSConfig, sample_timesteps, sds_loss, sds_t_max, sds_weight, score_distillation_loss

TINY = PriorConfig(block_out_channels=(16, 16), category_dim=16, attention_head_dim=8, norm_num_groups=8)


@pytest.fixture(scope="module")
def hand():
    from hoirecon.hand import build_hand_model

    return build_hand_model("anny")


@pytest.fixture(scope="module")
def grasp_views(hand):
    """Four encoded views of one synthetic mug grasp (object, hand images)."""
    from hoirecon.prior.data import render_grasp_views
    from hoirecon.synth.grasp import place_grasp
    from hoirecon.synth.objects import make_object_info

    rng = np.random.default_rng(3)
    info = make_object_info("mug", rng)
    g = place_grasp(hand, info.sdf, info.grasp, np.zeros(10, np.float32), rng)
    hv = hand(torch.as_tensor(g.articulation)[None], torch.zeros(1, 3)).verts[0]
    T_o2h = invert_rigid(torch.as_tensor(g.T_hand_to_obj, dtype=torch.float32)[None])
    ov = transform_points(T_o2h, torch.as_tensor(np.asarray(info.mesh.vertices), dtype=torch.float32)[None])[0]
    gen = torch.Generator().manual_seed(0)
    return render_grasp_views(
        hv, hand.faces, hand.vert_uv, ov, torch.as_tensor(np.asarray(info.mesh.faces)), T_o2h[0, :3, 3], 4,
        ViewConfig(), gen
    )


# ----------------------------------------------------------------------------- model


def test_unet_and_scheduler_shapes():
    torch.manual_seed(0)
    model = GeometryPrior(TINY).eval()
    x = torch.randn(3, 5, 64, 64)
    hand = torch.randn(3, 7, 64, 64)
    with torch.no_grad():
        eps = model.predict_noise(x, torch.tensor([0, 500, 999]), hand, ["mug", "knife", "unknown"])
        eps_g = model.predict_noise_guided(x, 10, hand, "bowl")
    assert eps.shape == (3, 5, 64, 64) and eps_g.shape == (3, 5, 64, 64)
    assert torch.isfinite(eps).all() and torch.isfinite(eps_g).all()
    # the schedule is DDPM's linear one (diffusers' own), the DDIM grid starts at t = 999
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear").alphas_cumprod
    assert torch.allclose(model.alphas_cumprod, ref.float(), atol=1e-6)
    sched = model.ddim_scheduler(10)
    assert len(sched.timesteps) == 10 and int(sched.timesteps[0]) == 999
    with pytest.raises(UserError):
        model.predict_noise(x[:, :4], 1, hand, "mug")


def test_guidance_is_classifier_free_with_unknown_as_unconditional():
    torch.manual_seed(1)
    model = GeometryPrior(TINY).eval()
    # make the category matter (a fresh embedding init could already, but be sure)
    with torch.no_grad():
        model.category_embedding.weight.mul_(3.0)
    x, hand, t = torch.randn(2, 5, 64, 64), torch.randn(2, 7, 64, 64), torch.tensor([300, 700])
    with torch.no_grad():
        eps_c = model.predict_noise(x, t, hand, "knife")
        eps_u = model.predict_noise(x, t, hand, "unknown")
        guided = model.predict_noise(x, t, hand, "knife", guidance_scale=4.0)
    assert not torch.allclose(eps_c, eps_u)
    assert torch.allclose(guided, eps_u + 4.0 * (eps_c - eps_u), atol=1e-5)


def test_unknown_category_is_one_unguided_pass():
    """Guidance changes nothing for the unconditional branch, so the prior runs it once (B, not 2B)."""
    torch.manual_seed(1)
    model = GeometryPrior(TINY).eval()
    batches = []
    model.unet.register_forward_hook(lambda mod, args, out: batches.append(args[0].shape[0]))
    x, hand, t = torch.randn(2, 5, 64, 64), torch.randn(2, 7, 64, 64), torch.tensor([300, 700])
    with torch.no_grad():
        guided = model.predict_noise(x, t, hand, "unknown", guidance_scale=4.0)
        plain = model.predict_noise(x, t, hand, "unknown")
        model.predict_noise(x, t, hand, "knife", guidance_scale=4.0)
    assert torch.equal(guided, plain)
    assert batches == [2, 2, 4]


def test_category_only_prior_ignores_the_hand_and_roundtrips(tmp_path):
    from dataclasses import replace as dc_replace

    torch.manual_seed(2)
    model = GeometryPrior(dc_replace(TINY, hand_condition=False)).eval()
    x, t = torch.randn(1, 5, 64, 64), torch.tensor([400])
    with torch.no_grad():
        a = model.predict_noise(x, t, torch.randn(1, 7, 64, 64), "mug")
        b = model.predict_noise(x, t, torch.randn(1, 7, 64, 64), "mug")
    torch.testing.assert_close(a, b)
    full = GeometryPrior(TINY).eval()
    full.load_state_dict(model.state_dict())
    with torch.no_grad():
        c = full.predict_noise(x, t, torch.randn(1, 7, 64, 64), "mug")
    assert not torch.allclose(a, c)  # the same weights do look at the hand when the config says so
    assert PriorConfig.from_dict(model.config.to_dict()).hand_condition is False
    assert PriorConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "hand_condition"}).hand_condition


def test_category_names_and_ids():
    model = GeometryPrior(TINY)
    assert model.config.categories == CATEGORIES and "unknown" in CATEGORIES
    ids = model.category_ids(["cup", "toy car", "unknown"], 3)
    assert ids.tolist() == [CATEGORIES.index("mug"), CATEGORIES.index(CATEGORIES[5]), CATEGORIES.index("unknown")]
    assert model.category_ids("knife", 4).tolist() == [CATEGORIES.index("knife")] * 4
    with pytest.raises(UserError):
        model.category_ids("spaceship", 1)
    with pytest.raises(UserError):
        model.category_ids(["mug", "bowl"], 3)


# ----------------------------------------------------------------------------- encoding / rendering


def test_encoding_matches_the_diffhoi_backend_for_hard_masks():
    diffhoi = pytest.importorskip("hoirecon.backends.diffhoi_prior")
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    n = torch.nn.functional.normalize(torch.randn(2, 3, 8, 8, generator=g), dim=1)
    depth = 0.4 + 0.1 * torch.rand(2, 8, 8, generator=g)
    uv = torch.rand(2, 2, 8, 8, generator=g)
    hmask = (torch.rand(2, 8, 8, generator=g) > 0.3).float()
    z_ref = diffhoi.mean_masked_depth(depth[:, None], hmask[:, None]).reshape(2)
    ours_h = encode_hand(hmask, n, depth, uv, z_ref)
    theirs_h = diffhoi.encode_hand_condition(hmask[:, None], n, depth[:, None], uv)
    assert torch.allclose(ours_h, theirs_h, atol=1e-4)
    ours_o = encode_object(mask, n, depth, z_ref)
    theirs_o = diffhoi.encode_object_geometry(mask[:, None], n, depth[:, None], hmask[:, None], depth[:, None])
    assert torch.allclose(ours_o, theirs_o, atol=1e-4)
    dec = decode_geometry(ours_o)
    assert torch.allclose(dec.mask, mask)
    assert torch.allclose(dec.depth_rel_m, (depth - z_ref[:, None, None]) * mask, atol=1e-6)


def test_sdf_and_mesh_renderings_of_a_sphere_agree():
    """Training data (mesh, hard rasterizer) and SDS (SDF, volume renderer) use one encoding."""
    import trimesh

    radius = 0.05
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    verts = torch.as_tensor(sphere.vertices, dtype=torch.float32)
    faces = torch.as_tensor(sphere.faces, dtype=torch.long)
    gen = torch.Generator().manual_seed(2)
    T_obj_to_view, K = sample_views(torch.zeros(2, 3), ViewConfig(), gen)
    z_ref = T_obj_to_view[:, 2, 3] - 0.03
    mesh_img = render_object_mesh(transform_points(T_obj_to_view, verts.expand(2, -1, -1)), faces, K, 64, z_ref)
    sdf_img = render_object_sdf(
        lambda x: x.norm(dim=-1) - radius, 3e-4, invert_rigid(T_obj_to_view), K, 64, z_ref, torch.zeros(3), 0.08
    ).image.detach()
    m_mesh, m_sdf = decode_geometry(mesh_img).mask > 0.5, decode_geometry(sdf_img).mask > 0.5
    iou = (m_mesh & m_sdf).sum() / (m_mesh | m_sdf).sum()
    assert iou > 0.93
    both = (m_mesh & m_sdf)[:, None]
    cos = (mesh_img[:, 1:4] * sdf_img[:, 1:4]).sum(1, keepdim=True)[both]
    assert cos.mean() > 0.97  # same normal convention (DiffHOI axes, towards the camera)
    assert mesh_img[:, 3:4][both].mean() > 0.3  # visible surfaces face the camera (+z in DiffHOI axes)
    depth_err_m = (mesh_img[:, 4:5] - sdf_img[:, 4:5])[both].abs().mean() / 10.0
    assert depth_err_m < 0.003


def test_render_data_file_roundtrip(tmp_path):
    from hoirecon.prior.data import RenderDataConfig, load_prior_dataset, render_prior_dataset

    cfg = RenderDataConfig(categories=("knife",), shapes_per_category=1, grasps_per_shape=1, views_per_grasp=3)
    summary = render_prior_dataset(tmp_path / "d.npz", cfg)
    assert summary.num_pairs == 3 and summary.per_category == {"knife": 3}
    data = load_prior_dataset(tmp_path / "d.npz")
    assert data.object.shape == (3, 5, 64, 64) and data.hand.shape == (3, 7, 64, 64)
    assert data.categories == CATEGORIES and (data.category == CATEGORIES.index("knife")).all()
    obj = data.object.float()
    assert set(obj[:, 0].unique().tolist()) <= {-0.5, 0.5}
    assert (obj[:, 0] > 0).any(dim=(1, 2)).all() and (data.hand[:, 0] > 0).any(dim=(1, 2)).all()
    with pytest.raises(UserError):
        load_prior_dataset(tmp_path / "missing.npz")


def test_render_data_extra_meshes_train_their_category_or_the_unconditional_branch(tmp_path):
    import trimesh

    from hoirecon.prior.data import RenderDataConfig, load_prior_dataset, parse_mesh_spec, render_prior_dataset

    path = tmp_path / "tin.stl"
    trimesh.creation.cylinder(radius=0.033, height=0.12, sections=48).export(path)
    assert parse_mesh_spec(f"{path}:Cup") == (str(path), "mug")
    assert parse_mesh_spec(f"{path}:duck") == (str(path), "unknown")
    assert parse_mesh_spec(str(path)) == (str(path), "unknown")
    with pytest.raises(UserError, match="no such file"):
        parse_mesh_spec(str(tmp_path / "missing.obj:mug"))
    cfg = RenderDataConfig(categories=("knife",), shapes_per_category=1, grasps_per_shape=1, views_per_grasp=2,
                           wide_shapes=True, augment=True, copies_per_mesh=2,
                           meshes=(parse_mesh_spec(f"{path}:mug"), parse_mesh_spec(f"{path}:tin can")))
    summary = render_prior_dataset(tmp_path / "d.npz", cfg)
    assert summary.per_category == {"knife": 2, "mug": 4, "unknown": 4} and summary.failed_grasps == 0
    data = load_prior_dataset(tmp_path / "d.npz")
    names = [CATEGORIES[i] for i in data.category.tolist()]
    assert names == ["knife"] * 2 + ["mug"] * 4 + ["unknown"] * 4
    with np.load(tmp_path / "d.npz") as z:
        assert z["object_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    obj = data.object.float()
    assert (obj[:, 0] > 0).any(dim=(1, 2)).all() and (data.hand[:, 0] > 0).any(dim=(1, 2)).all()
    assert data.config["augment"] is True and data.config["meshes"][1][1] == "unknown"


def test_render_data_cli_help_states_the_config_defaults():
    """The options default to None (RenderDataConfig's value applies); their help names that value."""
    import re

    import typer

    from hoirecon.cli import app
    from hoirecon.prior.data import RenderDataConfig

    command = typer.main.get_command(app).commands["prior"].commands["render-data"]
    fields = {"shapes": "shapes_per_category", "mesh_copies": "copies_per_mesh", "grasps": "grasps_per_shape",
              "views": "views_per_grasp"}
    cfg = RenderDataConfig()
    for param in command.params:
        if param.name in fields:
            stated = re.search(r"\[default: (\d+)\]", param.help)
            assert param.default is None and int(stated.group(1)) == getattr(cfg, fields[param.name]), param.name
        if param.name in ("wide_shapes", "augment"):
            assert param.default is None and getattr(cfg, param.name) is False and "[default: off" in param.help


def test_render_data_cli_refuses_a_missing_mesh_in_one_line(tmp_path):
    from conftest import run_cli

    code, _, err = run_cli("prior", "render-data", "--out", str(tmp_path / "d.npz"), "--mesh",
                           str(tmp_path / "nope.obj"))
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "no such file" in lines[0], err
    assert not (tmp_path / "d.npz").exists()


# ----------------------------------------------------------------------------- training


def _tiny_dataset(views):
    from hoirecon.prior.data import PriorDataset

    n = views["object"].shape[0]
    return PriorDataset(
        views["object"].half(), views["hand"].half(), torch.full((n,), CATEGORIES.index("mug")), CATEGORIES, {}
    )


def test_training_steps_lower_the_loss(grasp_views):
    torch.manual_seed(0)
    model = GeometryPrior(TINY)
    x0, hand = grasp_views["object"], grasp_views["hand"]
    ids = torch.full((x0.shape[0],), CATEGORIES.index("mug"))

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(model.training_loss(x0, hand, ids, generator=torch.Generator().manual_seed(123)))

    before = fixed_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        loss = model.training_loss(x0, hand, ids, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.85 * before


def test_train_resume_equals_uninterrupted_and_exports(tmp_path, grasp_views):
    from hoirecon.prior.train import TrainConfig, export_weights, train_prior

    data = _tiny_dataset(grasp_views)
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, log_every=1, checkpoint_every=100, sample_every=0)
    straight = train_prior(data, tmp_path / "a.ckpt", cfg, TINY)
    first = train_prior(data, tmp_path / "b.ckpt", cfg, TINY, should_stop=lambda s: s == 2)
    assert first.step == 2
    resumed = train_prior(data, tmp_path / "b.ckpt", cfg)
    assert resumed.resumed_from == 2 and resumed.step == 4 == straight.step
    a = torch.load(tmp_path / "a.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b.ckpt", weights_only=True)
    for key in ("state_dict", "ema_state_dict"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), name
    assert torch.equal(a["history"], b["history"])
    rows = (tmp_path / "b.ckpt.loss.csv").read_text().strip().splitlines()
    assert rows[0] == "step,loss,lr,seconds" and len(rows) == 5
    path = export_weights(tmp_path / "a.ckpt", tmp_path / "w.pt", {"data_pairs": 4})
    model = load_geometry_prior(path)
    assert model.config == TINY and path.with_suffix(".json").is_file()
    for name, value in a["ema_state_dict"].items():
        assert torch.allclose(model.state_dict()[name], value, atol=1e-2, rtol=1e-2), name


def test_shipped_weights_load_and_sample():
    """The weights in weights/hoirecon/ are part of the repository: no skip."""
    from hoirecon.prior.model import default_weights_path
    from hoirecon.prior.sample import ddim_sample

    path = default_weights_path()
    assert path.stat().st_size < 8_000_000 and path.with_suffix(".json").is_file()
    model = load_geometry_prior(path)
    # every category the tool accepts reaches the shipped prior (a new one needs retraining)
    assert model.category_ids(list(CATEGORIES), len(CATEGORIES)).unique().numel() == len(CATEGORIES)
    hand = torch.zeros(2, 7, 64, 64)
    hand[:, 0] = -0.5
    hand[:, 5:] = -1.0
    out = ddim_sample(model, hand, ["mug", "knife"], num_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 5, 64, 64) and torch.isfinite(out).all()
    # the category-only twin (ablation benchmark) is blind to the hand
    blind = load_geometry_prior(path.with_name("prior_small_category_only.pt"))
    assert blind.config.hand_condition is False and model.config.hand_condition is True


# ----------------------------------------------------------------------------- SDS


def test_sds_gradient_is_the_weighted_noise_residual():
    torch.manual_seed(0)
    prior = GeometryPrior(TINY).eval()
    image = (0.3 * torch.randn(2, 5, 64, 64)).requires_grad_(True)
    hand = torch.randn(2, 7, 64, 64)
    cfg = SDSConfig(channel_weights=(1.0, 0.5, 2.0))
    out = sds_loss(prior, image, hand, "mug", cfg, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    ab = prior.alphas_cumprod[out.t].double()
    w = (ab * (1 - ab)).sqrt().float()[:, None, None, None]
    with torch.no_grad():
        eps_hat = prior.predict_noise(out.x_t, out.t, hand, "mug", guidance_scale=4.0)
    cw = torch.tensor([1.0, 0.5, 0.5, 0.5, 2.0])[None, :, None, None]
    assert torch.allclose(image.grad, w * (eps_hat - out.eps) * cw, atol=1e-5)
    assert ((out.t >= 20) & (out.t <= 979)).all()


def test_sds_noise_range_and_weights():
    assert sds_t_max(SDSConfig(), 0.7) == pytest.approx(0.98)
    for shape in ("linear", "exp", "cosine", "sqrt"):
        cfg = SDSConfig(anneal=shape)
        assert sds_t_max(cfg, 0.0) == pytest.approx(0.98) and sds_t_max(cfg, 1.0) == pytest.approx(0.5)
        assert 0.5 < sds_t_max(cfg, 0.5) < 0.98
    t = sample_timesteps(500, SDSConfig(anneal="linear"), 1.0, 1000, torch.Generator().manual_seed(0))
    assert int(t.min()) >= 20 and int(t.max()) <= 500
    ab = linear_alphas_cumprod()[[20, 500, 979]]
    assert torch.allclose(sds_weight(ab, "dreamfusion"), 1 - ab)
    with pytest.raises(UserError):
        SDSConfig(anneal="sideways")


def test_one_sds_step_updates_a_tiny_sdf(hand):
    """A small MLP SDF, volume-rendered at 64x64 from a random view, gets a finite gradient
    from the prior and one optimiser step changes it."""
    torch.manual_seed(0)
    prior = GeometryPrior(TINY).eval()
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Softplus(beta=50), torch.nn.Linear(32, 1))

    def sdf(x):  # a 4 cm sphere plus a small learned residual
        return x.norm(dim=-1) - 0.04 + 0.01 * mlp(x / 0.05)[:, 0]

    hv = hand(torch.zeros(1, 45), torch.zeros(1, 3)).verts
    T_hand_to_obj = torch.eye(4)[None].clone()
    T_hand_to_obj[0, 1, 3] = 0.06  # the sphere sits 6 cm off the palm (palm faces -y)
    before = [p.detach().clone() for p in mlp.parameters()]
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    out, r = score_distillation_loss(
        prior, "mug", sdf, 0.004, T_hand_to_obj, hv, hand.faces, hand.vert_uv, torch.zeros(3), 0.1,
        progress=0.0, generator=torch.Generator().manual_seed(0),
    )
    assert r.object_image.shape == (1, 5, 64, 64) and r.hand_cond.shape == (1, 7, 64, 64)
    assert r.object.mask.sum() > 50 and (r.hand_cond[:, 0] > 0).sum() > 50
    opt.zero_grad()
    out.loss.backward()
    grads = [p.grad for p in mlp.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, mlp.parameters()))


def test_sds_rendering_at_a_lower_size_is_the_full_size_one_upsampled(hand):
    """``SDSRenderConfig.render_size``: the same camera on 32 px, upsampled to the prior's 64 px,
    shows the object where the 64 px rendering does, and the SDS gradient reaches the SDF."""
    from hoirecon.prior.sds import SDSRenderConfig, render_sds_inputs

    radius = torch.tensor(0.04, requires_grad=True)
    hv = hand(torch.zeros(1, 45), torch.zeros(1, 3)).verts
    T_hand_to_obj = torch.eye(4)[None].clone()
    T_hand_to_obj[0, 1, 3] = 0.06
    images = {}
    for size in (None, 32):
        r = render_sds_inputs(lambda x: x.norm(dim=-1) - radius, 0.002, T_hand_to_obj, hv, hand.faces, hand.vert_uv,
                              torch.zeros(3), 0.1, SDSRenderConfig(render_size=size), torch.Generator().manual_seed(4))
        assert r.object_image.shape == (1, 5, 64, 64)
        images[size] = r.object_image
    assert tuple(r.object.mask.shape) == (1, 32, 32)
    full, small = (decode_geometry(images[k].detach()).mask > 0.5 for k in (None, 32))
    assert full.sum() > 100 and (full & small).sum() / (full | small).sum() > 0.85
    images[32][:, 0].sum().backward()
    assert radius.grad is not None and float(radius.grad) > 0  # a larger sphere covers more pixels


def test_mirroring_a_pair_equals_rendering_the_reflected_scene(grasp_views):
    """A left hand is shown to the (right-hand) prior mirrored: flipping the encoded images
    must equal rendering the scene reflected across the camera's y-z plane."""
    import trimesh

    from hoirecon.prior.sds import mirror_geometry

    x = grasp_views["hand"]
    assert torch.equal(mirror_geometry(mirror_geometry(x)), x)
    mesh = trimesh.creation.box(extents=(0.06, 0.03, 0.02))
    mesh.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 1, 0]))
    verts = torch.as_tensor(mesh.vertices, dtype=torch.float32)[None] + torch.tensor([0.03, -0.01, 0.45])
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    K = ViewConfig().intrinsics(1)  # principal point at the image centre: u -> 63 - u
    z_ref = torch.tensor([0.44])
    img = render_object_mesh(verts, faces, K, 64, z_ref)
    reflected = render_object_mesh(verts * torch.tensor([-1.0, 1.0, 1.0]), faces[:, [0, 2, 1]], K, 64, z_ref)
    both = (img[:, :1] > 0) & (mirror_geometry(reflected)[:, :1] > 0)
    assert (mirror_geometry(reflected)[:, 0] == img[:, 0]).float().mean() > 0.99
    sel = both.expand(-1, 4, -1, -1)
    assert torch.allclose(mirror_geometry(reflected)[:, 1:][sel], img[:, 1:][sel], atol=1e-3)
