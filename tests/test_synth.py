"""Tests of the synthetic clip generator (``hoirecon synth``): contracts, determinism, exactness."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from hoirecon.errors import UserError
from hoirecon.hand import build_hand_model
from hoirecon.io.masks import read_mask
from hoirecon.io.video import read_rgb
from hoirecon.pipeline.runner import read_manifest
from hoirecon.render.mesh import MeshRenderConfig, render_mesh_image
from hoirecon.stages.outputs import FramesMeta, GroundTruth, MasksOutput
from hoirecon.synth.generator import generate_clip
from hoirecon.synth.grasp import MeshSDF, penetration_depth, winding_number
from hoirecon.synth.noise import NoiseConfig, perturb_hand

FRAMES, SIZE = 6, 96


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "mug"
    generate_clip("mug", out, frames=FRAMES, size=SIZE, seed=3, view_range_deg=60)
    return out


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ----------------------------------------------------------------------------- layout / contracts


def test_stages_are_committed_as_done(clip):
    for stage in ("frames", "masks", "hand"):
        manifest = read_manifest(clip / stage)
        assert manifest is not None and manifest["status"] == "done" and manifest["external"]
    meta = json.loads((clip / "frames" / FramesMeta.FILE).read_text())
    assert meta["num_frames"] == FRAMES and meta["size"] == [SIZE, SIZE] and meta["fps"] > 0
    assert {"original_size", "stride", "source", "source_digest", "source_kind"} <= set(meta)
    assert len(list((clip / "frames").glob("*.png"))) == FRAMES
    assert (clip / "video.mp4").stat().st_size > 0
    quality = MasksOutput.load_quality(clip / "masks")
    assert quality["source"] == "synth-gt" and quality["passed"]
    masks = MasksOutput.load(clip / "masks", num_frames=FRAMES, size_wh=(SIZE, SIZE))
    hand, obj = masks.hand, masks.obj
    assert hand.any() and obj.any()


def test_hands_npz_follows_the_input_contract(clip):
    hands = _npz(clip / "hand" / "hands.npz")
    assert hands["K"].shape == (3, 3) and hands["K"].dtype == np.float32
    assert hands["T_cam_to_hand"].shape == (FRAMES, 4, 4) and hands["T_cam_to_hand"].dtype == np.float32
    assert hands["articulation"].shape == (FRAMES, 45)
    assert hands["shape"].shape == (10,)
    assert str(hands["side"]) == "right"
    assert hands["valid"].shape == (FRAMES,) and hands["valid"].dtype == bool
    R = hands["T_cam_to_hand"][:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    gt = _npz(GroundTruth.file(clip))
    # The initialisation is noisy, but not wildly so.
    assert not np.allclose(hands["T_cam_to_hand"], gt["T_cam_to_hand"])
    wrist, wrist_gt = np.linalg.inv(hands["T_cam_to_hand"])[:, :3, 3], np.linalg.inv(gt["T_cam_to_hand"])[:, :3, 3]
    err = np.linalg.norm(wrist - wrist_gt, axis=1)
    assert 0.0005 < err.mean() < 0.1


def test_gt_keys_and_shapes(clip):
    gt = _npz(GroundTruth.file(clip))
    assert gt["K"].shape == (3, 3)
    assert gt["T_cam_to_hand"].shape == gt["T_hand_to_obj"].shape == (FRAMES, 4, 4)
    assert gt["articulation"].shape == (FRAMES, 45) and gt["wrist_rot"].shape == (FRAMES, 3)
    assert not gt["wrist_rot"].any()
    assert gt["shape"].shape == (10,) and str(gt["side"]) == "right" and str(gt["category"]) == "mug"
    assert gt["keypoints_cam"].shape == (FRAMES, 21, 3)
    assert (gt["keypoints_cam"][..., 2] > 0.1).all()  # in front of the camera
    # A rigid grasp: the hand-object pose is the same in every frame.
    np.testing.assert_allclose(gt["T_hand_to_obj"], np.broadcast_to(gt["T_hand_to_obj"][:1], gt["T_hand_to_obj"].shape))
    assert 0 < float(gt["view_span_deg"]) <= 60.0
    assert 50.0 <= float(gt["fov_deg"]) <= 60.0
    depth = _npz(clip / GroundTruth.DIR / GroundTruth.DEPTH_FILE)["depth"]
    assert depth.shape == (FRAMES, SIZE, SIZE) and depth.dtype == np.float32
    mesh = trimesh.load(GroundTruth.mesh_file(clip), force="mesh")
    assert mesh.is_watertight and 0.05 < max(mesh.extents) < 0.2
    # Camera 0.25-0.9 m from the object, object + hand a good part of the frame.
    T_obj_to_cam = np.linalg.inv(gt["T_hand_to_obj"] @ gt["T_cam_to_hand"])
    dist = np.linalg.norm(T_obj_to_cam[:, :3, 3], axis=1)
    assert (dist > 0.25).all() and (dist < 0.9).all()
    info = json.loads((clip / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())
    assert 0.3 <= info["frame_fill"][1] <= 0.8


def test_keypoints_match_the_hand_model(clip):
    gt = _npz(GroundTruth.file(clip))
    hand = build_hand_model("anny")
    with torch.no_grad():
        kp = hand(torch.from_numpy(gt["articulation"]), torch.zeros(FRAMES, 3), torch.from_numpy(gt["shape"])).keypoints
    T = np.linalg.inv(gt["T_cam_to_hand"].astype(np.float64))
    kp_cam = kp.double().numpy() @ np.swapaxes(T[:, :3, :3], 1, 2) + T[:, None, :3, 3]
    np.testing.assert_allclose(kp_cam, gt["keypoints_cam"], atol=1e-5)


# ----------------------------------------------------------------------------- exactness


def test_masks_agree_with_depth(clip):
    depth = _npz(clip / GroundTruth.DIR / GroundTruth.DEPTH_FILE)["depth"]
    masks = MasksOutput.load(clip / "masks", num_frames=FRAMES)
    hand, obj = masks.hand, masks.obj
    assert not (hand & obj).any()  # each pixel is one class
    np.testing.assert_array_equal(hand | obj, depth > 0)


def _visible_masks(gt: dict, mesh: trimesh.Trimesh, size_wh: tuple[int, int] = (SIZE, SIZE)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hand/object visible masks and depth rendered from the GT poses with the soft renderer."""
    hand_model = build_hand_model("anny")
    n = gt["T_cam_to_hand"].shape[0]
    with torch.no_grad():
        out = hand_model(torch.from_numpy(gt["articulation"]), torch.zeros(n, 3), torch.from_numpy(gt["shape"]))
    T_hand_to_cam = torch.from_numpy(np.linalg.inv(gt["T_cam_to_hand"].astype(np.float64))).float()
    T_cam_to_obj = (gt["T_hand_to_obj"] @ gt["T_cam_to_hand"]).astype(np.float64)
    T_obj_to_cam = torch.from_numpy(np.linalg.inv(T_cam_to_obj)).float()
    hand_cam = out.verts @ T_hand_to_cam[:, :3, :3].transpose(1, 2) + T_hand_to_cam[:, None, :3, 3]
    obj_v = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    obj_cam = obj_v[None] @ T_obj_to_cam[:, :3, :3].transpose(1, 2) + T_obj_to_cam[:, None, :3, 3]
    K = torch.from_numpy(gt["K"]).float().expand(n, 3, 3)
    cfg = MeshRenderConfig(sigma=1e-6)  # hard edges: D < 0.3 beyond 0.001 px outside a face
    W, H = size_wh
    rh = render_mesh_image(hand_cam, out.faces, K, H, W, cfg)
    ro = render_mesh_image(obj_cam, torch.from_numpy(np.asarray(mesh.faces)), K, H, W, cfg)
    h_in = (rh.mask > 0.5).numpy()
    o_in = (ro.mask > 0.5).numpy()
    dh, do = rh.depth.numpy(), ro.depth.numpy()
    hand_vis = h_in & ~(o_in & (do < dh))
    obj_vis = o_in & ~(h_in & (dh <= do))
    depth = np.where(hand_vis, dh, np.where(obj_vis, do, 0.0))
    return hand_vis, obj_vis, depth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_gt_poses_reproject_onto_masks(clip):
    """Independent path: soft renderer + hand model from the saved GT vs. the saved masks."""
    gt = _npz(GroundTruth.file(clip))
    mesh = trimesh.load(GroundTruth.mesh_file(clip), force="mesh")
    hand_vis, obj_vis, depth = _visible_masks(gt, mesh)
    masks = MasksOutput.load(clip / "masks", num_frames=FRAMES)
    hand, obj = masks.hand, masks.obj
    for t in range(FRAMES):
        assert _iou(hand_vis[t], hand[t]) > 0.98, t
        assert _iou(obj_vis[t], obj[t]) > 0.98, t
    gt_depth = _npz(clip / GroundTruth.DIR / GroundTruth.DEPTH_FILE)["depth"]
    both = (depth > 0) & (gt_depth > 0)
    assert np.median(np.abs(depth[both] - gt_depth[both])) < 1e-4


def test_frames_are_shaded_footage(clip):
    frame = read_rgb(clip / "frames" / "000000.png").astype(np.float32)
    hand = read_mask(clip / "masks" / "hand" / "000000.png")
    obj = read_mask(clip / "masks" / "object" / "000000.png")
    bg = ~(hand | obj)
    # Textured background, shaded (not flat) hand and object.
    assert frame[bg].std(0).mean() > 3.0
    assert frame[hand].std(0).mean() > 3.0 and frame[obj].std(0).mean() > 3.0
    assert abs(frame[hand].mean() - frame[bg].mean()) > 1.0 or abs(frame[obj].mean() - frame[bg].mean()) > 1.0


def test_grasp_touches_without_penetrating(clip):
    gt = _npz(GroundTruth.file(clip))
    assert float(gt["penetration_mm"]) < 3.0
    mesh = trimesh.load(GroundTruth.mesh_file(clip), force="mesh")
    hand = build_hand_model("anny")
    with torch.no_grad():
        verts = hand(torch.from_numpy(gt["articulation"][:1]), torch.zeros(1, 3),
                     torch.from_numpy(gt["shape"])).verts[0]
    T = gt["T_hand_to_obj"][0].astype(np.float64)
    verts_obj = verts.double().numpy() @ T[:3, :3].T + T[:3, 3]
    depth = penetration_depth(mesh, verts_obj)
    assert depth.max() * 1000 < 3.0
    assert abs(depth.max() * 1000 - float(gt["penetration_mm"])) < 0.05
    # In contact: a good number of hand vertices within 2 mm of the surface.
    dist = np.abs(MeshSDF(mesh)(verts_obj))
    assert (dist < 0.002).sum() >= 20


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_clip(clip, tmp_path):
    again = tmp_path / "again"
    generate_clip("mug", again, frames=FRAMES, size=SIZE, seed=3, view_range_deg=60)
    for name in ("gt/gt.npz", "hand/hands.npz"):
        a, b = _npz(clip / name), _npz(again / name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    np.testing.assert_array_equal(_npz(clip / "gt/depth.npz")["depth"], _npz(again / "gt/depth.npz")["depth"])
    for t in range(FRAMES):
        frame = FramesMeta.frame_path
        assert frame(clip / "frames", t).read_bytes() == frame(again / "frames", t).read_bytes()
        assert (clip / f"masks/object/{t:06d}.png").read_bytes() == (again / f"masks/object/{t:06d}.png").read_bytes()


def test_printed_texture_changes_only_the_object(clip, tmp_path):
    """texture "printed" draws a print on the object from its own stream: the same seed's masks,
    geometry and every pixel away from the object stay as they were; the object's pixels change."""
    import cv2

    printed = tmp_path / "printed"
    generate_clip("mug", printed, frames=FRAMES, size=SIZE, seed=3, view_range_deg=60, texture="printed")
    assert json.loads((printed / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())["texture"] == "printed"
    assert json.loads((clip / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())["texture"] == "plain"
    for name in ("gt/gt.npz", "gt/depth.npz", "hand/hands.npz"):
        a, b = _npz(clip / name), _npz(printed / name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    changed_share = []
    for t in range(FRAMES):
        for kind in ("hand", "object"):
            assert (clip / f"masks/{kind}/{t:06d}.png").read_bytes() == \
                (printed / f"masks/{kind}/{t:06d}.png").read_bytes()
        obj = read_mask(clip / f"masks/object/{t:06d}.png")
        hand = read_mask(clip / f"masks/hand/{t:06d}.png")
        plain_rgb = read_rgb(FramesMeta.frame_path(clip / "frames", t)).astype(int)
        printed_rgb = read_rgb(FramesMeta.frame_path(printed / "frames", t)).astype(int)
        # The frames are blurred by 3x3 after shading: only pixels next to the object may change.
        near_obj = cv2.dilate(obj.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        np.testing.assert_array_equal(plain_rgb[~near_obj], printed_rgb[~near_obj])
        assert (hand & ~near_obj).any()
        changed_share.append((np.abs(plain_rgb - printed_rgb)[obj].max(-1) > 10).mean())
    assert np.mean(changed_share) > 0.3, changed_share
    with pytest.raises(UserError, match="--texture"):
        generate_clip("mug", tmp_path / "bad", frames=2, size=SIZE, texture="glossy")
    assert not (tmp_path / "bad").exists()


def test_user_mesh(tmp_path):
    """A user mesh (a cylinder, scaled to 12 cm) is grasped and rendered."""
    mesh = trimesh.creation.cylinder(radius=0.5, height=2.0, sections=48)
    path = tmp_path / "thing.obj"
    mesh.export(path)
    out = tmp_path / "user"
    summary = generate_clip("bottle", out, frames=3, size=64, seed=0, object_mesh=path, object_size=0.12)
    assert summary["penetration_mm"] <= 1.0 and len(summary["contacts"]) >= 3
    assert any("--object-size" in note for note in summary["object_mesh_notes"])
    gt_mesh = trimesh.load(GroundTruth.mesh_file(out), force="mesh")
    assert max(gt_mesh.extents) == pytest.approx(0.12, rel=1e-3)
    masks = MasksOutput.load(out / "masks", num_frames=3)
    hand, obj = masks.hand, masks.obj
    assert hand.any() and obj.any()


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError):
        generate_clip("mug", tmp_path / "a", frames=0)
    with pytest.raises(UserError):
        generate_clip("spaceship", tmp_path / "b", frames=2)
    with pytest.raises(UserError):
        generate_clip("unknown", tmp_path / "c", frames=2)
    with pytest.raises(UserError):
        generate_clip("mug", tmp_path / "d", frames=2, view_range_deg=400)
    with pytest.raises(UserError):
        generate_clip("mug", tmp_path / "e", frames=2, object_mesh=tmp_path / "missing.ply")


# ----------------------------------------------------------------------------- noise


def _random_poses(n: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=1).as_matrix()
    T[:, :3, 3] = rng.uniform(-0.05, 0.05, (n, 3)) + [0, 0, 0.4]
    return np.linalg.inv(T)  # T_cam_to_hand


def test_noise_levels_and_seed():
    rng = np.random.default_rng(0)
    n = 2000
    T = _random_poses(n, rng)
    art = rng.normal(0, 0.3, (n, 45))
    shape = rng.normal(0, 1, 10)
    none = perturb_hand(T, art, shape, NoiseConfig.none(), 0)
    np.testing.assert_allclose(none["T_cam_to_hand"], T, atol=1e-5)
    np.testing.assert_allclose(none["articulation"], art, atol=1e-6)
    assert none["valid"].all()

    cfg = NoiseConfig(articulation_bias_deg=0, articulation_jitter_deg=5, rotation_bias_deg=0,
                      rotation_jitter_deg=4, translation_bias_mm=0, translation_jitter_mm=3,
                      depth_bias_pct=0, depth_jitter_pct=5)
    noisy = perturb_hand(T, art, shape, cfg, 7)
    d_art = np.degrees(noisy["articulation"] - art)
    assert d_art.std() == pytest.approx(5.0, rel=0.05)
    t_true = np.linalg.inv(T)[:, :3, 3]
    t_noisy = np.linalg.inv(noisy["T_cam_to_hand"].astype(np.float64))[:, :3, 3]
    ratio = t_noisy[:, 2] / t_true[:, 2] - 1
    assert ratio.std() * 100 == pytest.approx(5.0, rel=0.1)
    # x/y: scaled with depth, plus the image-plane shift.
    shift = t_noisy[:, :2] - t_true[:, :2] * (1 + ratio[:, None])
    assert shift.std() * 1000 == pytest.approx(3.0, rel=0.1)
    R_err = np.linalg.inv(noisy["T_cam_to_hand"].astype(np.float64))[:, :3, :3] @ T[:, :3, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(R_err, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    # |N(0, s^2 I_3)| has mean s * sqrt(8 / pi).
    assert angle.mean() == pytest.approx(4.0 * np.sqrt(8 / np.pi), rel=0.1)
    again = perturb_hand(T, art, shape, cfg, 7)
    for k in noisy:
        np.testing.assert_array_equal(noisy[k], again[k])


def test_noise_bias_is_shared_by_frames():
    rng = np.random.default_rng(1)
    T = _random_poses(50, rng)
    art = np.zeros((50, 45))
    cfg = NoiseConfig(articulation_bias_deg=10, articulation_jitter_deg=0)
    out = perturb_hand(T, art, np.zeros(10), cfg, 3)
    np.testing.assert_allclose(out["articulation"], np.broadcast_to(out["articulation"][:1], (50, 45)), atol=1e-6)


def test_invalid_frames_are_interpolated():
    rng = np.random.default_rng(2)
    T = _random_poses(20, rng)
    art = np.linspace(0, 1, 20)[:, None] * np.ones((1, 45))
    out = perturb_hand(T, art, np.zeros(10), dataclasses.replace(NoiseConfig.none(), invalid_fraction=0.25), 0)
    assert (~out["valid"]).sum() == 5
    # Articulation is linear in time, so interpolation reproduces it.
    np.testing.assert_allclose(out["articulation"][1:-1], art[1:-1], atol=1e-5)
    with pytest.raises(UserError):
        NoiseConfig(depth_bias_pct=-1)


# ----------------------------------------------------------------------------- geometry helpers


def test_winding_number_and_penetration_depth():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.05)
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.045], [0.0, 0.06, 0.0], [0.2, 0.0, 0.0]])
    w = winding_number(mesh.vertices, mesh.faces, pts)
    np.testing.assert_allclose(w, [1, 1, 0, 0], atol=1e-6)
    depth = penetration_depth(mesh, pts)
    assert depth[0] == pytest.approx(0.05, abs=5e-4) and depth[1] == pytest.approx(0.005, abs=5e-4)
    assert depth[2] == depth[3] == 0.0
    sdf = MeshSDF(mesh)(pts)
    assert np.sign(sdf).tolist() == [-1, -1, 1, 1]


# ----------------------------------------------------------------------------- camera: fov, non-square frames


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory) -> Path:
    """A landscape 120x80 clip seen through a 40-degree lens."""
    out = tmp_path_factory.mktemp("synth") / "wide"
    generate_clip("bottle", out, frames=3, size="120x80", seed=2, fov_deg=40.0)
    return out


def test_recorded_intrinsics_project_the_hand_joints(wide_clip):
    gt = _npz(GroundTruth.file(wide_clip))
    cam = json.loads((wide_clip / GroundTruth.DIR / GroundTruth.INFO_FILE).read_text())["intrinsics"]
    assert (cam["width"], cam["height"]) == (120, 80) and gt["image_size"].tolist() == [120, 80]
    assert cam["fov_deg"] == pytest.approx(40.0) and float(gt["fov_deg"]) == pytest.approx(40.0)
    assert cam["fx"] == pytest.approx(60.0 / np.tan(np.radians(20.0)), rel=1e-5) and cam["fy"] == cam["fx"]
    assert (cam["cx"], cam["cy"]) == (59.5, 39.5)
    assert cam["fov_y_deg"] == pytest.approx(np.degrees(2 * np.arctan(40.0 / cam["fx"])), abs=1e-3)
    np.testing.assert_allclose(gt["K"], [[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1]], rtol=1e-6)
    # fx, fy, cx, cy put the GT 3D joints on their GT 2D positions ...
    kp = gt["keypoints_cam"].astype(np.float64)
    uv = np.stack([cam["fx"] * kp[..., 0] / kp[..., 2] + cam["cx"],
                   cam["fy"] * kp[..., 1] / kp[..., 2] + cam["cy"]], -1)
    np.testing.assert_allclose(uv, gt["keypoints_2d"], atol=1e-3)
    # ... and those lie on the rendered hand (or on the object in front of it): checked
    # against the frames' own masks, not against the projection that wrote keypoints_2d.
    masks = MasksOutput.load(wide_clip / "masks", num_frames=3, size_wh=(120, 80))
    hand, obj = masks.hand, masks.obj
    px = np.round(uv).astype(int)
    inside = (px[..., 0] >= 0) & (px[..., 0] < 120) & (px[..., 1] >= 0) & (px[..., 1] < 80)
    assert inside.mean() > 0.9
    t_idx = np.broadcast_to(np.arange(3)[:, None], px.shape[:2])[inside]
    on_hand = hand[t_idx, px[inside][:, 1], px[inside][:, 0]]
    on_either = on_hand | obj[t_idx, px[inside][:, 1], px[inside][:, 0]]
    assert on_either.mean() > 0.95 and on_hand.mean() > 0.5
    # A wrong focal (the default 50-60 degree lens) puts them elsewhere.
    f_wrong = 60.0 / np.tan(np.radians(27.5))
    wrong = np.stack([f_wrong * kp[..., 0] / kp[..., 2] + cam["cx"], f_wrong * kp[..., 1] / kp[..., 2] + cam["cy"]], -1)
    assert np.linalg.norm(wrong - gt["keypoints_2d"], axis=-1).mean() > 2.0


def test_non_square_frames_masks_and_depth(wide_clip):
    meta = json.loads((wide_clip / "frames" / FramesMeta.FILE).read_text())
    assert meta["size"] == meta["original_size"] == [120, 80]
    assert read_rgb(wide_clip / "frames" / "000000.png").shape == (80, 120, 3)
    assert _npz(wide_clip / GroundTruth.DIR / GroundTruth.DEPTH_FILE)["depth"].shape == (3, 80, 120)
    assert _npz(wide_clip / "hand" / "hands.npz")["image_size"].tolist() == [120, 80]
    # The soft renderer, given the recorded K and the GT poses, draws the same masks.
    gt = _npz(GroundTruth.file(wide_clip))
    mesh = trimesh.load(GroundTruth.mesh_file(wide_clip), force="mesh")
    hand_vis, obj_vis, _ = _visible_masks(gt, mesh, (120, 80))
    masks = MasksOutput.load(wide_clip / "masks", num_frames=3, size_wh=(120, 80))
    hand, obj = masks.hand, masks.obj
    for t in range(3):
        assert _iou(hand_vis[t], hand[t]) > 0.97 and _iou(obj_vis[t], obj[t]) > 0.97, t


def test_fov_keeps_the_seeds_camera_path(clip, tmp_path):
    """--fov changes the lens only: same grasp, same viewing directions as the seed's own clip."""
    out = tmp_path / "narrow"
    generate_clip("mug", out, frames=FRAMES, size=SIZE, seed=3, view_range_deg=60, fov_deg=40.0)
    a, b = _npz(GroundTruth.file(clip)), _npz(GroundTruth.file(out))
    np.testing.assert_array_equal(a["T_hand_to_obj"], b["T_hand_to_obj"])
    np.testing.assert_array_equal(a["articulation"], b["articulation"])
    assert float(b["fov_deg"]) == pytest.approx(40.0) and b["K"][0, 0] > a["K"][0, 0]
    for bad in (5.0, 170.0, float("nan")):
        with pytest.raises(UserError, match="--fov"):
            generate_clip("mug", tmp_path / "x", frames=2, size=SIZE, fov_deg=bad)
    for bad in ("640x", "0x480", "64x48x2", "abc", 16):
        with pytest.raises(UserError, match="--size"):
            generate_clip("mug", tmp_path / "y", frames=2, size=bad)


# ----------------------------------------------------------------------------- grasp limits on any mesh


def test_grasp_search_retries_until_the_limits_hold(tmp_path):
    """A 15 cm box whose first grasps miss the limits (seed 6: two misses): the search tries again."""
    from hoirecon.synth.generator import build_scene

    trimesh.creation.box((1.0, 1.0, 1.0)).export(tmp_path / "box.obj")
    scene = build_scene("unknown", frames=2, size=64, seed=6, object_mesh=tmp_path / "box.obj")
    assert scene.grasp_tries >= 2
    assert scene.penetration_mm <= 1.0 and len(scene.contacts) >= 3
    assert any("rescaled" in note for note in scene.mesh_notes)


def test_a_clip_missing_the_grasp_limits_is_never_written(tmp_path):
    from hoirecon.errors import RunError
    from hoirecon.synth.grasp import GraspConfig

    out = tmp_path / "never"
    with pytest.raises(RunError, match="no grasp") as err:
        generate_clip("mug", out, frames=2, size=64, seed=3, grasp_cfg=GraspConfig(min_contacts=6, max_tries=2))
    assert "\n" not in str(err.value)
    assert not out.exists()
