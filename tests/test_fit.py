"""Tests of the HOI scene fit: mesh extraction, a tiny fit, resume == uninterrupted, the stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh

from hoirecon.fit.mesh import extract_mesh
from hoirecon.fit.optimize import (
    InitConfig,
    OptimizeConfig,
    PixelSampler,
    StopRequested,
    build_initial_scene,
    evaluate_masks,
    labels_from_masks,
    optimize_scene,
)
from hoirecon.fit.scene import load_object_sdf
from hoirecon.fit.sdf import GridSDF, MLPSDF, _central_gradient_norm, fit_sdf_to_grid, occupancy_variation
from hoirecon.hand import build_hand_model

from conftest import look_at_np
from hoirecon.render.mesh import render_mesh_image
from hoirecon.stages.outputs import FitOutput, FramesMeta, MasksOutput

SIZE = 80
N_FRAMES = 4


@pytest.fixture(scope="module")
def tiny_clip():
    """A 3 cm sphere on the palm side of a flat hand, seen by 4 orbiting cameras.

    Returns dict: hand_model, K, T_cam_to_hand (true), hand/obj masks, articulation, centre.
    """
    torch.manual_seed(0)
    hand_model = build_hand_model("anny")
    art = torch.zeros(N_FRAMES, 45)
    with torch.no_grad():
        out = hand_model(art, torch.zeros(N_FRAMES, 3), torch.zeros(1, 10))
    hv = out.verts[0].double().numpy()
    palm = hv.mean(0)
    radius = 0.03
    centre = palm + np.array([0.0, -(radius + 0.02), 0.0])  # palm faces -y
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    sphere.apply_translation(centre)
    f = SIZE * 1.2
    K = np.array([[f, 0, SIZE / 2 - 0.5], [0, f, SIZE / 2 - 0.5], [0, 0, 1.0]])
    target = 0.5 * (palm + centre)
    T_h2c = []
    for t in range(N_FRAMES):
        a = np.deg2rad(-40 + 80 * t / (N_FRAMES - 1))
        eye = target + 0.45 * np.array([np.sin(a) * 0.8, -0.6, np.cos(a) * 0.8])
        T_h2c.append(look_at_np(eye, target))
    T_h2c = np.stack(T_h2c)
    Kt = torch.as_tensor(K, dtype=torch.float32).expand(N_FRAMES, 3, 3)

    def to_cam(v):
        return torch.as_tensor(np.einsum("tij,nj->tni", T_h2c[:, :3, :3], v) + T_h2c[:, None, :3, 3],
                               dtype=torch.float32)

    with torch.no_grad():
        rh = render_mesh_image(to_cam(hv), out.faces, Kt, SIZE, SIZE)
        ro = render_mesh_image(to_cam(sphere.vertices), torch.as_tensor(sphere.faces), Kt, SIZE, SIZE)
    dh = np.where(rh.depth.numpy() > 0, rh.depth.numpy(), np.inf)
    do = np.where(ro.depth.numpy() > 0, ro.depth.numpy(), np.inf)
    mh, mo = rh.mask.numpy() > 0.5, ro.mask.numpy() > 0.5
    hand = mh & (~mo | (dh <= do))
    obj = mo & ~hand
    assert obj.sum(axis=(1, 2)).min() > 30 and hand.sum(axis=(1, 2)).min() > 30
    return {"hand_model": hand_model, "K": K, "T_cam_to_hand": np.linalg.inv(T_h2c), "hand": hand, "obj": obj,
            "articulation": art.numpy(), "centre": centre, "radius": radius}


def _scene(clip, sdf_kind="grid", sphere_init=True):
    init = InitConfig(sdf_kind=sdf_kind, grid_resolution=24, hull_resolution=32, mlp_prefit_steps=50)
    scene, info = build_initial_scene(clip["hand_model"], clip["K"], clip["T_cam_to_hand"], clip["articulation"],
                                      np.zeros(10), "right", (SIZE, SIZE), clip["hand"], clip["obj"], init)
    if sphere_init and isinstance(scene.sdf, GridSDF):
        # Start from the default small sphere, not the hull, so the fit has work to do.
        r = scene.sdf.resolution
        scene.sdf.set_values_m(scene.sdf.node_points().norm(dim=-1).reshape(r, r, r) - 0.3 * scene.sdf.radius)
    return scene, info


def _opt_cfg(steps, **kw):
    return replace(OptimizeConfig(), steps=steps, rays_per_step=512, frames_per_step=2, warmup_steps=5,
                   lr_sdf=2e-2, grid_schedule=((0.5, 32),), **kw)


def test_mesh_extraction_of_analytic_sdf_has_right_size():
    mesh = extract_mesh(lambda x: x.norm(dim=-1) - 0.04, radius=0.06, resolution=48)
    assert mesh.is_watertight and mesh.volume > 0
    np.testing.assert_allclose(mesh.extents, 0.08, rtol=0.02)
    # An object that reaches past the cube is closed on the cube's faces.
    clipped = extract_mesh(lambda x: x.norm(dim=-1) - 0.07, radius=0.06, resolution=32)
    assert clipped.is_watertight and clipped.volume > 0
    np.testing.assert_allclose(clipped.extents, 0.12, atol=0.12 / 31)  # within a cell of the cube
    # Box 6 x 4 x 2 cm, plus a small far-away floater that must be dropped.
    half = torch.tensor([0.03, 0.02, 0.01])

    def box(x):
        q = x.abs() - half
        d = q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
        floater = (x - torch.tensor([0.045, 0.045, 0.045])).norm(dim=-1) - 0.005
        return torch.minimum(d, floater)

    mesh = extract_mesh(box, radius=0.06, resolution=64)
    np.testing.assert_allclose(np.sort(mesh.extents), [0.02, 0.04, 0.06], atol=0.0025)


def test_init_places_object_near_truth(tiny_clip):
    scene, info = _scene(tiny_clip, sphere_init=False)
    centre = np.array(info["center_hand"])
    assert np.linalg.norm(centre - tiny_clip["centre"]) < 0.015
    assert tiny_clip["radius"] < info["radius"] < 4 * tiny_clip["radius"]
    assert 0.0 < info["hull_fraction"] < 0.5


def test_tiny_fit_raises_object_iou_and_lowers_loss(tiny_clip):
    torch.manual_seed(0)
    scene, _ = _scene(tiny_clip)
    labels = labels_from_masks(tiny_clip["hand"], tiny_clip["obj"])
    cfg = _opt_cfg(100)
    before = np.mean([r["iou_object"] for r in evaluate_masks(scene, labels, cfg, stride=1)])
    res = optimize_scene(scene, labels, cfg)
    after = np.mean([r["iou_object"] for r in evaluate_masks(scene, labels, cfg, stride=1)])
    mask_loss = np.array([h["mask"] for h in res.history])
    assert mask_loss[-20:].mean() < 0.6 * mask_loss[:10].mean()
    assert before < 0.6
    assert after > 0.75, (before, after)


def test_resume_after_kill_equals_uninterrupted(tiny_clip, tmp_path):
    labels = labels_from_masks(tiny_clip["hand"], tiny_clip["obj"])
    cfg = replace(_opt_cfg(30), checkpoint_every=10, grid_schedule=((0.8, 32),))

    scene_a, _ = _scene(tiny_clip)
    optimize_scene(scene_a, labels, cfg)

    ckpt = tmp_path / "ck.pt"
    scene_b, _ = _scene(tiny_clip)
    with pytest.raises(StopRequested):
        optimize_scene(scene_b, labels, cfg, ckpt, should_stop=lambda step: step == 20)
    assert ckpt.is_file()
    scene_c, _ = _scene(tiny_clip)  # a fresh process would rebuild the scene from scratch
    res = optimize_scene(scene_c, labels, cfg, ckpt)
    assert res.resumed_from == 20 and len(res.history) == 30
    sa, sc = scene_a.state_dict(), scene_c.state_dict()
    assert sa.keys() == sc.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sc[k], rtol=1e-5, atol=1e-6, msg=k)


def test_mlp_sdf_prefits_hull_and_renders(tiny_clip):
    scene, info = _scene(tiny_clip, sdf_kind="mlp")
    assert isinstance(scene.sdf, MLPSDF)
    assert info["prefit_error_m"] < 0.3 * info["radius"]
    labels = labels_from_masks(tiny_clip["hand"], tiny_clip["obj"])
    cfg = replace(_opt_cfg(3), rays_per_step=64)
    cfg = replace(cfg, vol=replace(cfg.vol, normal_mode="autograd", n_coarse=16, n_importance=16))
    res = optimize_scene(scene, labels, cfg)
    assert res.last_terms["eikonal"] >= 0 and np.isfinite(res.history[-1]["total"])


def test_fit_stage_writes_contract(tiny_clip, tmp_path):
    import cv2

    from hoirecon.pipeline.runner import run_stage, write_external_stage
    from hoirecon.stages.fit import STAGE, FitConfig

    out = tmp_path / "clip"

    def frames(d: Path):
        for t in range(N_FRAMES):
            cv2.imwrite(str(FramesMeta.frame_path(d, t)), np.zeros((SIZE, SIZE, 3), np.uint8))
        FramesMeta(fps=10, num_frames=N_FRAMES, size=(SIZE, SIZE)).save(d)

    def hands(d: Path):
        np.savez(d / "hands.npz", K=tiny_clip["K"].astype(np.float32),
                 T_cam_to_hand=tiny_clip["T_cam_to_hand"].astype(np.float32),
                 articulation=tiny_clip["articulation"], shape=np.zeros(10, np.float32), side=np.array("right"),
                 valid=np.ones(N_FRAMES, bool))

    write_external_stage(out, "frames", frames, "test")
    masks = MasksOutput(hand=tiny_clip["hand"], obj=tiny_clip["obj"])
    write_external_stage(out, "masks", masks.save, "test")
    write_external_stage(out, "hand", hands, "test")
    res = run_stage(out, STAGE, FitConfig(steps=12, rays_per_step=256, mesh_resolution=40, preview_every=6,
                                          checkpoint_every=5))
    fit = out / "fit"
    poses = np.load(fit / "poses.npz")
    assert poses["T_cam_to_hand"].shape == (N_FRAMES, 4, 4) and poses["T_hand_to_obj"].shape == (N_FRAMES, 4, 4)
    assert poses["articulation"].shape == (N_FRAMES, 45) and poses["shape"].shape == (10,)
    assert str(poses["side"]) == "right" and tuple(poses["image_size"]) == (SIZE, SIZE)
    mesh = trimesh.load(fit / "object.ply", force="mesh")
    assert len(mesh.faces) > 50
    sdf = load_object_sdf(fit / FitOutput.SCENE)
    d = sdf(torch.as_tensor(mesh.vertices[:100], dtype=torch.float32))
    assert d.abs().max() < 0.01  # the mesh lies on the SDF's zero level
    rows = (fit / "losses.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("step,mask")
    assert (fit / "preview" / "step_00006.png").is_file() and (fit / "preview" / "step_00012.png").is_file()
    summary = json.loads((fit / "summary.json").read_text())
    assert len(summary["mask_iou"]) == N_FRAMES and summary["steps"] == 12
    assert res.status == "ran" and not any((out / ".work").glob("fit-*"))


def test_fit_sdf_to_grid_mlp_matches_sphere():
    torch.manual_seed(0)
    mlp = MLPSDF(radius=0.05)
    pts = GridSDF(0.05, 24).node_points()
    target = (pts.norm(dim=-1) - 0.02).reshape(24, 24, 24)
    err = fit_sdf_to_grid(mlp, target, steps=150, generator=torch.Generator().manual_seed(0))
    assert err < 0.004


def test_grid_area_regularizer_measures_and_flattens():
    # A sphere of half the radius, measured on its surface offset by AREA_OFFSET occupancy
    # widths: radius 0.5 + offset (units of radius; the smoothing adds a few % at 48^3).
    grid = GridSDF(0.05, 48)
    offset = GridSDF.AREA_OFFSET * GridSDF.OCCUPANCY_WIDTH * 2.0 / 47
    np.testing.assert_allclose(float(grid.surface_area().detach()), 4 * np.pi * (0.5 + offset) ** 2, rtol=0.06)
    # Its gradient lowers the area (shrinks the surface) while the eikonal term stays sane.
    opt = torch.optim.Adam(grid.parameters(), lr=2e-3)
    for _ in range(20):
        opt.zero_grad()
        (grid.surface_area() + 0.1 * grid.regularizers()["eikonal"]).backward()
        opt.step()
    assert float(grid.surface_area().detach()) < 0.97 * float(GridSDF(0.05, 48).surface_area().detach())


def _grid_of(sdf_in_radius_units) -> GridSDF:
    grid = GridSDF(1.0, 48)
    grid.set_values_m(sdf_in_radius_units(GridSDF._coords(48)))
    return grid


def test_grid_area_counts_both_faces_of_a_thin_sheet():
    # A sheet thinner than a node is as costly as a slab: both faces of the disk the bounding
    # sphere cuts from the plane z = 0 (area pi each), plus the slab's rim. Measured on the zero
    # level set, the sheet counted once and hollowing a solid into a shell paid.
    sheet = float(_grid_of(lambda x: x[..., 2].abs() - 0.01).surface_area().detach())
    slab = float(_grid_of(lambda x: x[..., 2].abs() - 0.3).surface_area().detach())
    assert 2 * np.pi * 0.9 < sheet < 2 * np.pi * 1.15
    assert sheet < slab < sheet + 2 * np.pi * 0.6 + 1.0


def test_grid_area_counts_the_part_that_reaches_the_bounding_sphere():
    # A solid filling the whole grid is not free: its surface is the bounding sphere (area 4 pi).
    full = float(_grid_of(lambda x: torch.full(x.shape[:-1], -0.5)).surface_area().detach())
    np.testing.assert_allclose(full, 4 * np.pi, rtol=0.1)



def test_occupancy_variation_gradient_is_autograds():
    """The hand-written backward equals autograd through the plain formula (float64)."""
    torch.manual_seed(0)
    v = (torch.randn(7, 8, 9, dtype=torch.float64) * 0.3).requires_grad_()
    mask = torch.rand(7, 8, 9, dtype=torch.float64)
    offset, eps, h = 0.1, 0.2, 0.25

    def plain(v):
        occ = F.pad(torch.sigmoid((offset - v) / eps) * mask, (1, 1, 1, 1, 1, 1))
        return _central_gradient_norm(occ, h).sum() * h ** 3

    torch.testing.assert_close(occupancy_variation(v, mask, offset, eps, h), plain(v))
    assert torch.autograd.gradcheck(lambda x: occupancy_variation(x, mask, offset, eps, h), (v,))
    torch.testing.assert_close(torch.autograd.grad(occupancy_variation(v, mask, offset, eps, h), v)[0],
                               torch.autograd.grad(plain(v), v)[0])

def test_grid_volume_measures_a_sphere_and_weighs_its_nodes():
    # The default grid is a sphere of half the radius: volume 4/3 pi 0.5^3 (units of radius^3); the
    # 1.5-node logistic occupancy adds 4 pi r (pi^2 / 3) eps^2 = 0.085 at 48^3 (16 %).
    grid = GridSDF(0.05, 48)
    eps = 1.5 * 2 / 47
    smoothed = 4 / 3 * np.pi * 0.5 ** 3 + 4 * np.pi * 0.5 * np.pi ** 2 / 3 * eps ** 2
    np.testing.assert_allclose(float(grid.volume().detach()), smoothed, rtol=0.02)
    # Weighted: only the half x > 0 counts, and only its surface nodes get the gradient.
    x = grid.node_points()[:, 0]
    half = (x > 0).float()
    np.testing.assert_allclose(float(grid.volume(half).detach()), smoothed / 2, rtol=0.05)
    grid.volume(half).backward()
    g = grid.values.grad.reshape(-1)
    r = grid.node_points().norm(dim=-1) / grid.radius
    shell = (r - 0.5).abs() < 0.03
    assert float(g[shell & (x > 0.1 * grid.radius)].max()) < 0  # lowering the volume raises the SDF there
    assert float(g[x < 0].abs().max()) == 0
    assert float(g[r < 0.2].abs().max()) < 0.05 * float(g.abs().max())  # logistic tail at 4.7 eps


def test_hidden_weights_ramp():
    from hoirecon.fit.losses import hidden_weights

    w = hidden_weights(torch.tensor([0.0, 0.5, 0.75, 0.875, 1.0]), 0.75, 1.0)
    np.testing.assert_allclose(w.numpy(), [0, 0, 0, 0.5, 1], atol=1e-6)


def test_mask_share_per_point_counts_only_the_frames_that_see_a_point():
    from hoirecon.fit.mesh import mask_share_per_point

    K = torch.tensor([[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]])
    T_cam_to_obj = torch.eye(4).repeat(3, 1, 1)
    T_cam_to_obj[:, 2, 3] = -1.0  # the camera 1 m behind the object-frame origin, looking along +z
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, 4:6, 4:6] = True  # frame 0 sees the origin on the mask, frames 1-2 off it
    masks[1, 0, 0] = True
    pts = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]])  # the second point is outside every image
    T_far = T_cam_to_obj.clone()
    np.testing.assert_allclose(mask_share_per_point(pts, K, T_far, masks).numpy(), [1 / 3, 0.0], atol=1e-6)
    masks[1:, 4:6, 4:6] = True
    np.testing.assert_allclose(mask_share_per_point(pts, K, T_far, masks).numpy(), [1.0, 0.0], atol=1e-6)


def test_invalid_frames_weaken_the_pull_to_the_init(tiny_clip):
    from hoirecon.fit.optimize import scene_losses

    init = InitConfig(sdf_kind="grid", grid_resolution=16, hull_resolution=16, invalid_trust=0.1)
    valid = np.ones(N_FRAMES, bool)
    valid[1] = False
    scene, _ = build_initial_scene(tiny_clip["hand_model"], tiny_clip["K"], tiny_clip["T_cam_to_hand"],
                                   tiny_clip["articulation"], np.zeros(10), "right", (SIZE, SIZE), tiny_clip["hand"],
                                   tiny_clip["obj"], init, valid=valid)
    np.testing.assert_allclose(scene.init_trust.numpy(), [1.0, 0.1, 1.0, 1.0])
    cfg = replace(_opt_cfg(1), rays_per_step=16)
    frames, pix = torch.tensor([0]), torch.full((1, 16, 2), 40.0)
    labels = torch.zeros(1, 16, dtype=torch.long)
    priors = []
    for t in (0, 1):  # the same articulation change on a valid and on an invalid frame
        with torch.no_grad():
            scene.artic_delta.zero_()
            scene.artic_delta[t] = 0.1
        _, terms = scene_losses(scene, frames, pix, labels, cfg, torch.Generator().manual_seed(0))
        priors.append(terms["artic_prior"])
    assert priors[1] < 0.2 * priors[0]


def test_hard_blending_and_ordinal_depth_loss():
    from hoirecon.fit.losses import ordinal_depth_loss
    from hoirecon.fit.scene import BlendConfig, blend_semantic

    m_h = torch.tensor([0.9, 0.9, 0.0, 0.9])
    m_o = torch.tensor([0.9, 0.9, 0.9, 0.0])
    d_h = torch.tensor([0.50, 0.60, 0.0, 0.5])  # 0 = the hand misses that pixel
    d_o = torch.tensor([0.55, 0.55, 0.4, 0.0])
    p = blend_semantic(m_h, d_h, m_o, d_o, BlendConfig(mode="hard"))
    torch.testing.assert_close(p.sum(-1), torch.ones(4))
    assert p[0].argmax() == 1 and p[1].argmax() == 2  # the front surface takes the label
    assert p[2].argmax() == 2 and p[3].argmax() == 1  # a missed surface never wins
    labels = torch.tensor([1, 1, 2, 1])
    d_h.requires_grad_(True)
    loss = ordinal_depth_loss(labels, m_h, d_h, m_o, d_o, radius=0.05)
    # only pixel 1 is wrong (observed hand, hand 5 cm behind the object): 0.05 / 4 / 0.05
    assert abs(float(loss.detach()) - 0.25) < 1e-6
    loss.backward()
    assert d_h.grad[1] > 0 and d_h.grad[0] == 0


def test_shared_object_pose_keeps_the_per_frame_deltas_at_zero(tiny_clip):
    labels = labels_from_masks(tiny_clip["hand"], tiny_clip["obj"])
    for per_frame in (False, True):
        scene, _ = _scene(tiny_clip)
        base0 = scene.obj_rot_base.detach().clone()
        optimize_scene(scene, labels, _opt_cfg(12, per_frame_object_pose=per_frame,
                                                blend=replace(OptimizeConfig().blend, mode="hard")))
        moved = float(scene.obj_rot.detach().abs().max() + scene.obj_trans.detach().abs().max())
        assert (moved > 0) == per_frame, (per_frame, moved)
        assert not torch.equal(scene.obj_rot_base.detach(), base0)  # the shared pose is optimised either way


def test_time_budget_stops_early_and_reports_the_steps_done(tiny_clip):
    labels = labels_from_masks(tiny_clip["hand"], tiny_clip["obj"])
    scene, _ = _scene(tiny_clip)
    res = optimize_scene(scene, labels, _opt_cfg(10_000, max_seconds=0.5))
    assert 1 <= res.steps_done < 10_000 and len(res.history) == res.steps_done
    assert res.history[-1]["seconds"] >= 0.5


def test_corrupt_checkpoint_or_scene_file_is_one_clear_error(tiny_clip, tmp_path):
    from hoirecon.errors import UserError

    labels = labels_from_masks(tiny_clip["hand"], tiny_clip["obj"])
    scene, _ = _scene(tiny_clip)
    ck = tmp_path / "fit.ckpt"
    ck.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="cannot read fit checkpoint"):
        optimize_scene(scene, labels, _opt_cfg(5), checkpoint_path=ck)
    (tmp_path / FitOutput.SCENE).write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError, match="cannot read fitted scene"):
        load_object_sdf(tmp_path / FitOutput.SCENE)


def test_pixel_sampler_follows_class_probabilities():
    labels = torch.zeros(2, 64, 64, dtype=torch.uint8)
    labels[:, 20:30, 20:30] = 2
    labels[:, 30:34, 20:30] = 1
    probs = np.array([0.5, 0.2, 0.3])
    pix, lab = PixelSampler(labels).sample(torch.tensor([0, 1]), 100, probs, torch.Generator().manual_seed(0))
    assert pix.shape == (2, 100, 2) and lab.shape == (2, 100)
    for t in range(2):
        assert [int((lab[t] == c).sum()) for c in range(3)] == [50, 20, 30]
        u, v = pix[t, :, 0].long(), pix[t, :, 1].long()
        assert torch.equal(labels[t][v, u].long(), lab[t])  # each sample carries its pixel's label
    # a class absent from a frame gives its share to the others
    labels[1, 30:34, 20:30] = 0
    _, lab = PixelSampler(labels).sample(torch.tensor([1]), 100, probs, torch.Generator().manual_seed(0))
    assert int((lab == 1).sum()) == 0 and int((lab == 0).sum()) + int((lab == 2).sum()) == 100


def test_deep_penetration_loss_by_hand():
    from hoirecon.fit.losses import deep_penetration_loss

    sdf = torch.tensor([[-0.01, 0.02, -0.02], [0.0, 0.01, 0.03]])  # frame 1 has nothing inside
    # frame 0: (0.1^2 + 0.2^2) with radius 0.1; frame 1: 0; mean over frames.
    assert float(deep_penetration_loss(sdf, 0.1)) == pytest.approx((0.01 + 0.04) / 2)


def test_hand_penetration_moves_the_hand_and_never_the_object(tiny_clip):
    from hoirecon.fit.losses import LossWeights
    from hoirecon.fit.optimize import hand_penetration_ramp, scene_losses

    init = InitConfig(sdf_kind="grid", grid_resolution=16, hull_resolution=16)
    scene, _ = build_initial_scene(tiny_clip["hand_model"], tiny_clip["K"], tiny_clip["T_cam_to_hand"],
                                   tiny_clip["articulation"], np.zeros(10), "right", (SIZE, SIZE), tiny_clip["hand"],
                                   tiny_clip["obj"], init)
    # A sloped field with the whole hand inside: every vertex has a non-zero push outwards.
    r = scene.sdf.radius
    scene.sdf.set_values_m((scene.sdf.node_points().norm(dim=-1) - 3 * r).reshape((scene.sdf.resolution,) * 3))
    only = LossWeights(mask=0, eikonal=0, sdf_smooth=0, sdf_area=0, penetration=0, temporal_artic=0, temporal_cam=0,
                       temporal_obj=0, artic_prior=0, cam_prior=0, hand_penetration=1.0)
    cfg = replace(_opt_cfg(100), weights=only, rays_per_step=16, hand_penetration_start=0.5)
    assert hand_penetration_ramp(10, cfg) == 0.0 and hand_penetration_ramp(99, cfg) == 1.0
    frames, pix = torch.tensor([0, 2]), torch.full((2, 8, 2), 40.0)
    labels = torch.zeros(2, 8, dtype=torch.long)
    _, terms_early = scene_losses(scene, frames, pix, labels, cfg, torch.Generator().manual_seed(0), step=10)
    assert terms_early["hand_penetration"] == 0.0
    total, terms = scene_losses(scene, frames, pix, labels, cfg, torch.Generator().manual_seed(0), step=99)
    assert terms["hand_penetration"] > 0
    total.backward()
    assert scene.sdf.values.grad is None or float(scene.sdf.values.grad.abs().max()) == 0.0
    assert float(scene.artic_delta.grad[[0, 2]].abs().sum()) > 0
    assert float(scene.obj_trans.grad[[0, 2]].abs().sum()) > 0
    # Default "frame_pose": the shared object pose is held (it moved whole objects off the hand).
    assert scene.obj_trans_base.grad is None or float(scene.obj_trans_base.grad.abs().max()) == 0.0
    scene.zero_grad(set_to_none=True)
    total, _ = scene_losses(scene, frames, pix, labels, replace(cfg, hand_penetration_moves="pose"),
                            torch.Generator().manual_seed(0), step=99)
    total.backward()
    assert float(scene.obj_trans_base.grad.abs().sum()) > 0
    # With the object pose held too, only the fingers (articulation, shape) move.
    scene.zero_grad(set_to_none=True)
    cfg_fingers = replace(cfg, hand_penetration_moves="hand")
    total, _ = scene_losses(scene, frames, pix, labels, cfg_fingers, torch.Generator().manual_seed(0), step=99)
    total.backward()
    assert scene.obj_trans.grad is None or float(scene.obj_trans.grad.abs().max()) == 0.0
    assert float(scene.artic_delta.grad[[0, 2]].abs().sum()) > 0


def test_seen_components_keep_every_part_the_masks_see():
    """Two object parts the fit split apart are both kept; a floater over the background and a
    crumb are dropped (only the largest part was kept before)."""
    from hoirecon.fit.mesh import seen_components
    from hoirecon.render.raster import rasterize

    def box(centre, size):
        mesh = trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))
        return mesh.subdivide().subdivide()

    head, body = box([0, -0.04, 0], [0.04, 0.04, 0.04]), box([0, 0.03, 0], [0.035, 0.06, 0.03])
    # The floater is big enough to be weighed by what the masks see (>= 20 % of the largest part).
    floater, crumb = box([0.075, 0.0, 0], [0.035, 0.035, 0.035]), box([0, 0.0, 0], [0.004, 0.004, 0.004])
    mesh = trimesh.util.concatenate([head, body, floater, crumb])
    K = torch.tensor([[150.0, 0, 63.5], [0, 150.0, 63.5], [0, 0, 1]])
    T_obj_to_cam = torch.stack([torch.as_tensor(look_at_np(np.array([0.4 * np.sin(a), 0.0, -0.4 * np.cos(a)]),
                                                           np.zeros(3)), dtype=torch.float32)
                                for a in (-0.3, 0.0, 0.3)])
    obj = trimesh.util.concatenate([head, body])
    v_cam = torch.as_tensor(obj.vertices, dtype=torch.float32) @ T_obj_to_cam[:, :3, :3].transpose(1, 2) \
        + T_obj_to_cam[:, None, :3, 3]
    masks = rasterize(v_cam, torch.as_tensor(obj.faces), K[None].expand(3, 3, 3), 128, 128).covered
    kept = seen_components(mesh, K, torch.linalg.inv(T_obj_to_cam), masks)
    assert len(kept.split(only_watertight=False)) == 2
    np.testing.assert_allclose(kept.volume, head.volume + body.volume, rtol=1e-6)
    # A blob larger than both seen parts, which no object mask sees (a real fit's was behind the
    # hand), is not the object; it does not make the seen parts small either.
    blob = box([-0.12, 0.0, 0.0], [0.07, 0.07, 0.07])
    with_blob = trimesh.util.concatenate([head, body, blob, crumb])
    kept = seen_components(with_blob, K, torch.linalg.inv(T_obj_to_cam), masks)
    np.testing.assert_allclose(kept.volume, head.volume + body.volume, rtol=1e-6)
    # Where the hand covers it in every frame, the largest part may be the object held in the
    # hand: it is kept, and the seen parts still are.
    v_blob = torch.as_tensor(blob.vertices, dtype=torch.float32) @ T_obj_to_cam[:, :3, :3].transpose(1, 2) \
        + T_obj_to_cam[:, None, :3, 3]
    hand = rasterize(v_blob, torch.as_tensor(blob.faces), K[None].expand(3, 3, 3), 128, 128).covered
    kept = seen_components(with_blob, K, torch.linalg.inv(T_obj_to_cam), masks, silhouettes=masks | hand)
    np.testing.assert_allclose(kept.volume, head.volume + body.volume + blob.volume, rtol=1e-6)


def test_hidden_node_weights_follow_the_hand_masks(tiny_clip):
    from hoirecon.fit.optimize import hidden_node_weights
    from hoirecon.render.blend import LABEL_HAND, LABEL_OBJECT

    scene, _ = _scene(tiny_clip)
    T, H, W = tiny_clip["hand"].shape
    cfg = _opt_cfg(1)
    all_hand = torch.full((T, H, W), LABEL_HAND, dtype=torch.uint8)
    w = hidden_node_weights(scene, all_hand, cfg)
    assert w.shape == (scene.sdf.values.numel(),) and float(w.max()) == 1.0  # seen only through the hand
    assert float(hidden_node_weights(scene, torch.full((T, H, W), LABEL_OBJECT, dtype=torch.uint8), cfg).max()) == 0
    # The term then lowers the volume where the weights are: one step of it alone raises the SDF there.
    before = scene.sdf.values.detach().clone().reshape(-1)
    scene.sdf.volume(w).backward()
    g = scene.sdf.values.grad.reshape(-1)
    near = (before.abs() < 0.05) & (w > 0.5)
    assert near.any() and float(g[near].max()) < 0
    off = replace(cfg, weights=replace(cfg.weights, hidden_volume=0.0))
    assert hidden_node_weights(scene, all_hand, off) is None


def test_label_rows_say_where_the_object_disagrees():
    from hoirecon.fit.optimize import _label_ious

    observed = np.zeros((4, 10), np.uint8)
    observed[:, :5] = 2  # 20 object pixels
    pred = observed.copy()
    pred[0, :5] = 0  # 5 missed to the background
    pred[1, :2] = 1  # 2 drawn as hand
    pred[3, 5:] = 2  # 5 drawn where the masks see none
    row = _label_ious(7, pred, observed)
    assert row["frame"] == 7 and row["object_missed"] == 0.25 and row["object_under_hand"] == 0.1
    assert row["object_extra"] == 0.25 and abs(row["iou_object"] - 13 / 25) < 1e-9
