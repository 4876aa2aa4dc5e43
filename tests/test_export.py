"""Export stage: meshes, animated glb, poses, pictures — from a fake fit folder made here.

The fake clip: an analytic sphere (radius 4 cm, object frame origin at its centre) held
near the palm of the Anny hand, a camera ~45 cm away; frames and masks are drawn
independently of the export code (ray-sphere test for the object, the hard rasterizer
for the hand), so conventions (poses, intrinsics, image scaling) are checked for real.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pygltflib
import pytest
import torch
import trimesh

from hoirecon.errors import UserError
from hoirecon.export.gltf import matrices_to_gltf_quaternions
from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.io.video import write_png
from hoirecon.pipeline.runner import run_stage, write_external_stage
from hoirecon.render.camera import pixel_directions, pixel_grid
from hoirecon.stages.configs import parse_frames
from hoirecon.stages.export import STAGE, ExportConfig, select_frames
from hoirecon.render.raster import rasterize
from hoirecon.stages.outputs import ExportOutput, FitPoses, FramesMeta, MasksOutput

SPHERE_R = 0.04


def _pose(rotvec, trans) -> torch.Tensor:
    T = torch.eye(4)
    T[:3, :3] = axis_angle_to_matrix(torch.tensor(rotvec, dtype=torch.float32))
    T[:3, 3] = torch.tensor(trans, dtype=torch.float32)
    return T


def make_fake_clip(root: Path, T: int = 8, W: int = 96, H: int = 72, fps: float = 10.0,
                   with_scene: bool = True) -> dict:
    """frames + masks + fit (poses.npz, object.ply, scene.pt) as committed stages under ``root``."""
    from hoirecon.fit.sdf import GridSDF
    from hoirecon.hand import build_hand_model

    g = torch.Generator().manual_seed(0)
    art = 0.25 * torch.rand(45, generator=g)[None] * torch.linspace(0, 1, T)[:, None]
    shape = torch.zeros(10)
    hand = build_hand_model("anny")
    verts_h = hand(art, torch.zeros(T, 3), shape[None]).verts  # (T, V, 3) hand frame
    faces = hand.faces
    centre_h = torch.tensor([-0.07, -0.06, 0.0])  # palm side of the hand frame
    T_hand_to_obj = torch.stack([_pose([0.0, 0.0, 0.04 * t], [0, 0, 0]) @ _pose([0, 0, 0], (-centre_h).tolist())
                                 for t in range(T)])
    look = torch.tensor([-0.05, -0.03, 0.0])
    T_hand_to_cam = []
    for t in range(T):
        Rt = _pose([1.2, 0.1 * t, 0.0], [0, 0, 0])
        T_hand_to_cam.append(_pose([0, 0, 0], (-(Rt[:3, :3] @ look) + torch.tensor([0, 0, 0.45])).tolist()) @ Rt)
    T_hand_to_cam = torch.stack(T_hand_to_cam)
    T_cam_to_hand = invert_rigid(T_hand_to_cam)
    K = torch.tensor([[1.1 * W, 0, W / 2 - 0.5], [0, 1.1 * W, H / 2 - 0.5], [0, 0, 1.0]])

    # Masks: the sphere by a ray test, the hand by hard rasterization, depth-ordered.
    verts_cam = transform_points(T_hand_to_cam, verts_h)
    ras = rasterize(verts_cam, faces, K.expand(T, 3, 3), H, W)
    dirs = pixel_directions(pixel_grid(H, W)[None], K[None])[0]  # (HW, 3)
    c_cam = transform_points(T_hand_to_cam, centre_h.expand(T, 1, 3))[:, 0]  # (T, 3)
    along = c_cam @ dirs.T  # (T, HW)
    d2 = (c_cam ** 2).sum(-1, keepdim=True) - along ** 2
    hit = d2 < SPHERE_R ** 2
    z_obj = ((along - torch.sqrt((SPHERE_R ** 2 - d2).clamp_min(0))) * dirs[:, 2]).reshape(T, H, W)
    hit = hit.reshape(T, H, W)
    hand_front = ras.covered & (~hit | (ras.depth < z_obj))
    obj_m, hand_m = (hit & ~hand_front).numpy(), hand_front.numpy()

    frames = np.full((T, H, W, 3), 90, np.uint8)
    frames[hand_m] = (225, 170, 140)
    frames[obj_m] = (70, 120, 200)

    def write_frames(d: Path) -> None:
        for t in range(T):
            write_png(FramesMeta.frame_path(d, t), frames[t])
        FramesMeta(fps=fps, num_frames=T, size=(W, H), original_size=(W, H), stride=1, source="fake").save(d)

    def write_fit(d: Path) -> None:
        FitPoses(K=K.numpy(), T_cam_to_hand=T_cam_to_hand.numpy(), T_hand_to_obj=T_hand_to_obj.numpy(),
                 articulation=art.numpy(), shape=shape.numpy(), side="right", image_size=np.array([W, H])).save(d)
        trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_R).export(d / "object.ply")
        if with_scene:
            sdf = GridSDF(radius=2 * SPHERE_R, resolution=32)  # default init: sphere of half the radius
            torch.save({"sdf_spec": sdf.spec(), "sdf_state": sdf.state_dict()}, d / "scene.pt")
        (d / "summary.json").write_text(json.dumps({"preset": "fast", "steps": 10, "mean_iou_object": 0.9,
                                                    "mean_iou_hand": 0.8}))

    write_external_stage(root, "frames", write_frames, "test")
    write_external_stage(root, "masks", lambda d: MasksOutput(hand=hand_m, obj=obj_m).save(d), "test")
    write_external_stage(root, "fit", write_fit, "test")
    return {"T": T, "W": W, "H": H, "fps": fps, "K": K, "T_cam_to_hand": T_cam_to_hand,
            "T_hand_to_obj": T_hand_to_obj, "verts_hand": verts_h, "faces": faces, "hand_mask": hand_m,
            "object_mask": obj_m}


def _video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    n = sum(1 for _ in gen)
    return n, tuple(meta["size"])


def _accessor_array(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc.type]
    dtype = {pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_INT: np.uint32}[acc.componentType]
    start = view.byteOffset + (acc.byteOffset or 0)
    assert start % 4 == 0
    assert acc.count * width * 4 <= view.byteLength
    assert view.byteOffset + view.byteLength <= len(blob)
    return np.frombuffer(blob, dtype, acc.count * width, start).reshape(acc.count, width)


def _quat_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    return trimesh.transformations.quaternion_matrix(np.roll(np.asarray(q_xyzw, np.float64), 1))[:3, :3]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    info = make_fake_clip(root)
    return root, info


def test_glb_export_structure_pictures_and_poses(clip, tmp_path):
    root, info = clip
    T = info["T"]
    cfg = ExportConfig(format="glb", turntable_views=12, view_size=64, panel_size=96)
    res = run_stage(root, STAGE, cfg, force=True)
    out = root / "export"
    for p in res.summary["outputs"].values():
        assert Path(p).exists(), p
    assert res.summary["num_frames"] == T

    gltf = pygltflib.GLTF2().load(str(out / ExportOutput.GLB))
    meshes = {m.name: m for m in gltf.meshes}
    assert {"object", "hand"} <= set(meshes)
    obj_prim, hand_prim = meshes["object"].primitives[0], meshes["hand"].primitives[0]
    obj_pos = _accessor_array(gltf, obj_prim.attributes.POSITION)
    assert len(obj_pos) > 100 and np.allclose(np.linalg.norm(obj_pos, axis=1), SPHERE_R, atol=2e-3)
    idx = _accessor_array(gltf, obj_prim.indices)
    assert idx.max() < len(obj_pos) and len(idx) % 3 == 0
    # Materials: distinct for hand and object.
    assert obj_prim.material != hand_prim.material
    m_obj, m_hand = gltf.materials[obj_prim.material], gltf.materials[hand_prim.material]
    assert m_hand.name == "hand_skin" and m_obj.name == "object"
    assert m_hand.pbrMetallicRoughness.baseColorFactor != m_obj.pbrMetallicRoughness.baseColorFactor
    # Every POSITION accessor (morph targets included) has correct min/max.
    positions = [p.attributes.POSITION for m in gltf.meshes for p in m.primitives]
    target_pos = [t["POSITION"] if isinstance(t, dict) else t.POSITION for t in hand_prim.targets]
    positions += target_pos
    for a in positions:
        acc, arr = gltf.accessors[a], _accessor_array(gltf, a)
        assert acc.min is not None and acc.max is not None
        assert np.allclose(acc.min, arr.min(0)) and np.allclose(acc.max, arr.max(0))
    # One morph target per frame; base + target t reproduces frame t's hand (hand frame).
    assert len(hand_prim.targets) == T
    base = _accessor_array(gltf, hand_prim.attributes.POSITION)
    for t in (0, T - 1):
        morphed = base + _accessor_array(gltf, target_pos[t])
        assert np.allclose(morphed, info["verts_hand"][t].numpy(), atol=1e-6)
    # Animation: one key per frame on every channel, at frame / fps.
    nodes = {n.name: i for i, n in enumerate(gltf.nodes)}
    assert {"world", "object", "hand", "camera"} <= set(nodes)
    anim = gltf.animations[0]
    targets = {(c.target.node, c.target.path): anim.samplers[c.sampler] for c in anim.channels}
    for name in ("object", "hand", "camera"):
        for path in ("translation", "rotation"):
            sampler = targets[(nodes[name], path)]
            assert gltf.accessors[sampler.output].count == T
    weights = targets[(nodes["hand"], "weights")]
    times = _accessor_array(gltf, weights.input)[:, 0]
    assert np.allclose(times, np.arange(T) / info["fps"])
    assert gltf.accessors[weights.input].min == [0.0]
    w = _accessor_array(gltf, weights.output).reshape(T, T)
    assert np.array_equal(w, np.eye(T))
    # The hand node's keys are the poses T_hand_to_obj (world = object frame).
    trans = _accessor_array(gltf, targets[(nodes["hand"], "translation")].output)
    rot = _accessor_array(gltf, targets[(nodes["hand"], "rotation")].output)
    assert np.allclose(trans, info["T_hand_to_obj"][:, :3, 3].numpy(), atol=1e-5)
    q = matrices_to_gltf_quaternions(info["T_hand_to_obj"][:, :3, :3].numpy())
    assert np.allclose(rot, q, atol=1e-5)
    # The camera keys are the input cameras (OpenCV axes turned to glTF's), and the root node
    # turns the world so that the first camera looks down -Z with +Y up, as viewers expect.
    cam_rot = _accessor_array(gltf, targets[(nodes["camera"], "rotation")].output)
    T_cam_to_obj = (info["T_hand_to_obj"] @ info["T_cam_to_hand"]).numpy()
    flip = np.diag([1.0, -1.0, -1.0])
    for t in (0, T - 1):
        assert np.allclose(_quat_matrix(cam_rot[t]), T_cam_to_obj[t, :3, :3] @ flip, atol=1e-5)
    root = _quat_matrix(np.array(gltf.nodes[nodes["world"]].rotation))
    assert np.allclose(root @ _quat_matrix(cam_rot[0]), np.eye(3), atol=1e-5)
    # trimesh reads it as a scene with the object and the hand.
    scene = trimesh.load(out / ExportOutput.GLB, force="scene")
    assert len(scene.geometry) >= 2
    sizes = sorted(len(g.vertices) for g in scene.geometry.values() if hasattr(g, "faces"))
    assert len(obj_pos) in sizes and len(base) in sizes
    assert isinstance(trimesh.load(out / ExportOutput.object_file("glb"), force="mesh"), trimesh.Trimesh)

    # poses.json == poses.npz, and they match the fit.
    doc = json.loads((out / ExportOutput.POSES_JSON).read_text())
    with np.load(out / ExportOutput.POSES_NPZ) as z:
        assert np.allclose(doc["K"], z["K"]) and list(z["image_size"]) == doc["image_size"] == [info["W"], info["H"]]
        assert len(doc["frames"]) == T and list(z["exported_frames"]) == doc["exported_frames"] == list(range(T))
        for t in range(T):
            f = doc["frames"][t]
            assert f["index"] == t
            for key in ("T_cam_to_hand", "T_hand_to_obj", "T_cam_to_obj", "articulation"):
                assert np.allclose(f[key], z[key][t], atol=1e-7), key
        assert np.allclose(z["T_cam_to_hand"], info["T_cam_to_hand"].numpy(), atol=1e-6)
        assert np.allclose(z["T_cam_to_obj"], (info["T_hand_to_obj"] @ info["T_cam_to_hand"]).numpy(), atol=1e-5)
        assert np.allclose(z["T_obj_to_world"], np.eye(4))

    # Pictures: frame counts and sizes.
    n, size = _video_frames(out / ExportOutput.TURNTABLE)
    assert n == 12 and size == (64, 64)
    n, size = _video_frames(out / ExportOutput.SIDE_BY_SIDE)
    assert n == T and size == (2 * info["W"] + info["H"], info["H"])  # novel view: square
    from hoirecon.io.video import read_rgb

    sheet = read_rgb(out / ExportOutput.SUMMARY)
    assert sheet.shape[1] >= 4 * info["W"] and sheet.shape[0] > 3 * info["H"]


def test_obj_camera_world_subsampled_from_sdf(clip):
    root, info = clip
    cfg = ExportConfig(format="obj", frames=3, resolution=48, world="camera", pictures=False)
    res = run_stage(root, STAGE, cfg, force=True)
    out = root / "export"
    sel = [0, 4, 7]
    assert res.summary["num_frames"] == 3 and "scene.pt" in res.summary["mesh_source"]
    obj = trimesh.load(out / ExportOutput.object_file("obj"), force="mesh")
    # The fake SDF is a sphere of radius 4 cm; marching cubes at 48^3 of a 32^3 grid.
    r = np.linalg.norm(obj.vertices, axis=1)
    assert abs(r.mean() - SPHERE_R) < 2e-3 and r.std() < 1e-3
    T_obj_to_cam0 = invert_rigid(info["T_hand_to_obj"][0] @ info["T_cam_to_hand"][0])
    obj_cam = trimesh.load(out / ExportOutput.object_file("obj", camera=True), force="mesh")
    assert np.allclose(obj_cam.vertices, transform_points(T_obj_to_cam0, torch.tensor(obj.vertices).float()),
                       atol=1e-5)
    files = sorted(p.name for p in (out / ExportOutput.HANDS_DIR).iterdir())
    assert files == [f"{t:06d}.obj" for t in sel]
    for t in sel:
        hand = trimesh.load(out / ExportOutput.hand_file(t, "obj"), force="mesh", process=False)
        expected = transform_points(T_obj_to_cam0 @ info["T_hand_to_obj"][t], info["verts_hand"][t])
        assert np.allclose(hand.vertices, expected.numpy(), atol=1e-5)
        assert len(hand.faces) == len(info["faces"])
    with np.load(out / ExportOutput.POSES_NPZ) as z:
        assert list(z["exported_frames"]) == sel and str(z["world"]) == "camera"
        assert np.allclose(z["T_obj_to_world"], T_obj_to_cam0.numpy(), atol=1e-5)
    assert not (out / ExportOutput.GLB).exists() and not (out / ExportOutput.TURNTABLE).exists()


def test_ply_object_world(clip):
    root, info = clip
    res = run_stage(root, STAGE, ExportConfig(format="ply", frames=2, pictures=False), force=True)
    out = root / "export"
    assert res.summary["mesh_source"] == "fit/object.ply"
    hand = trimesh.load(out / ExportOutput.hand_file(info["T"] - 1, "ply"), process=False)
    expected = transform_points(info["T_hand_to_obj"][-1], info["verts_hand"][-1])
    assert np.allclose(hand.vertices, expected.numpy(), atol=1e-5)
    assert isinstance(trimesh.load(out / ExportOutput.object_file("ply")), trimesh.Trimesh)


def test_input_view_renders_align_with_masks(clip):
    """The reconstruction rendered from the input cameras (at half size) covers the input masks."""
    from hoirecon.export.views import ClipGeometry, input_views

    _, info = clip
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_R)
    hand_obj = transform_points(info["T_hand_to_obj"], info["verts_hand"])
    geom = ClipGeometry(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces), hand_obj,
                        info["faces"], info["T_hand_to_obj"] @ info["T_cam_to_hand"], info["K"],
                        (info["W"], info["H"]))
    for scale in (1.0, 0.5):
        rendered, (w, h) = input_views(geom, scale, ssaa=1)
        assert (w, h) == (round(info["W"] * scale), round(info["H"] * scale))
        step = round(1 / scale)
        for part, mask in ((1, info["hand_mask"]), (2, info["object_mask"])):
            m = mask[:, step // 2::step, step // 2::step] if step > 1 else mask
            got = rendered.part == part
            iou = (got & m).sum() / (got | m).sum()
            assert iou > (0.9 if step == 1 else 0.75), (scale, part, iou)


def test_select_and_parse_frames():
    assert parse_frames("all") is None and parse_frames("5") == 5 and parse_frames(3) == 3
    for bad in ("x", "0", "-2"):
        with pytest.raises(UserError):
            parse_frames(bad)
    assert list(select_frames(10, None)) == list(range(10))
    assert list(select_frames(10, 4)) == [0, 3, 6, 9]
    assert list(select_frames(3, 10)) == [0, 1, 2]


def test_bad_config_and_missing_inputs(tmp_path):
    with pytest.raises(UserError):
        ExportConfig(format="stl")
    with pytest.raises(UserError):
        ExportConfig(world="hand")
    with pytest.raises(UserError):
        ExportConfig(resolution=4)
    assert ExportConfig(interpolation="step").interpolation == "STEP"
    with pytest.raises(UserError, match="needs stage"):
        run_stage(tmp_path, STAGE, ExportConfig())
    make_fake_clip(tmp_path, T=3, W=32, H=24, with_scene=False)
    with pytest.raises(UserError, match="scene.pt"):
        run_stage(tmp_path, STAGE, ExportConfig(resolution=32, pictures=False))
    with pytest.raises(UserError, match="turntable-frame"):
        run_stage(tmp_path, STAGE, ExportConfig(turntable_frame=5))
    assert not (tmp_path / "export").exists()
    assert math.isfinite(run_stage(tmp_path, STAGE, ExportConfig(format="ply", pictures=False)).seconds)
