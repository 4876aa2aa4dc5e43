"""Animated binary glTF (``.glb``) of a hand-object clip, written with pygltflib.

Layout of the file (glTF 2.0, metres):

- node ``world`` (root): a fixed rotation ``T_world_to_display`` that turns the world frame
  so that viewers (which are Y-up and look down -Z) show the clip as the first camera saw
  it: the first camera's up (-y in OpenCV) becomes +Y, its viewing direction -Z. Its
  children are expressed in the world frame (the object frame or the first camera frame,
  see ``hoirecon.export.meshes``).
- node ``object``: the object mesh (object frame) with the pose ``T_obj_to_world``.
- node ``hand``: the hand mesh in the hand frame with the pose ``T_hand_to_world^t``. The
  articulation changes over the clip through morph targets: the base mesh is frame 0's
  hand; target k holds frame k's vertex (and normal) offsets from it, one target per
  exported frame (named ``frame_NNNNNN`` in ``mesh.extras.targetNames``, which Blender reads
  as shape-key names), so a one-hot weight vector selects a frame.
- node ``camera`` (optional): a perspective camera from ``K`` with the pose
  ``T_cam_to_world^t`` (OpenCV axes turned to glTF's: camera looks down -Z, +Y up), and a
  child ``camera_frustum`` line mesh so the camera is visible in viewers.
- one animation ``clip``: per exported frame one key at ``time = frame_index / fps``: the
  translation and rotation of the object, hand and camera nodes, and the hand's morph
  weights (one-hot on that frame's target). Interpolation ``LINEAR`` (default: between keys
  the hand's vertices blend linearly between consecutive frames and the poses slerp) or
  ``STEP`` (frames shown exactly, as a flip-book).

Materials: ``hand_skin`` and ``object`` (distinct PBR base colours; the hand is double
sided because the hand mesh is open at the wrist). All POSITION accessors (morph targets
included) carry ``min``/``max`` as the specification requires, and so does the animation's
time accessor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygltflib as gl
import torch

from hoirecon.errors import UserError
from hoirecon.geometry.rotations import matrix_to_quaternion
from hoirecon.render.mesh import vertex_normals

# OpenCV camera axes (x right, y down, z forward) -> glTF camera axes (x right, y up, z back).
OPENCV_TO_GLTF_CAMERA = np.diag([1.0, -1.0, -1.0]).astype(np.float32)
INTERPOLATIONS = ("LINEAR", "STEP")


@dataclass(frozen=True)
class Material:
    """A plain PBR material: base colour RGBA in [0, 1], metallic, roughness."""

    name: str
    base_color: tuple[float, float, float, float]
    metallic: float = 0.0
    roughness: float = 0.6
    double_sided: bool = False


SKIN = Material("hand_skin", (0.89, 0.66, 0.55, 1.0), 0.0, 0.75, True)
OBJECT = Material("object", (0.30, 0.52, 0.80, 1.0), 0.0, 0.45, False)
FRUSTUM = Material("camera_frustum", (0.1, 0.1, 0.1, 1.0), 0.0, 1.0, True)


def matrices_to_gltf_quaternions(R: np.ndarray) -> np.ndarray:
    """Rotation matrices -> glTF quaternions (x, y, z, w), signs made continuous over time.

    Consecutive keys are flipped into the same hemisphere (q and -q are the same rotation)
    so that viewers interpolating between keys take the short way round.

    Args:
        R: (T, 3, 3).
    Returns:
        (T, 4) float32 unit quaternions.
    """
    q = matrix_to_quaternion(torch.tensor(np.array(R, np.float64))).numpy()  # (w, x, y, z)
    for t in range(1, len(q)):
        if np.dot(q[t], q[t - 1]) < 0:
            q[t] = -q[t]
    return np.concatenate([q[:, 1:], q[:, :1]], axis=1).astype(np.float32)


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(B, V, 3), (F, 3) -> (B, V, 3) unit area-weighted normals (float32)."""
    n = vertex_normals(torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long))
    return n.numpy().astype(np.float32)


class _BinaryBuilder:
    """Collects arrays into one binary buffer and creates bufferViews/accessors for them."""

    def __init__(self, gltf: gl.GLTF2):
        self.gltf = gltf
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, array: np.ndarray, accessor_type: str, target: int | None = None,
            with_bounds: bool = False, normalized: bool = False) -> int:
        """Append ``array`` (float32 or uint32) and return the index of its accessor."""
        array = np.ascontiguousarray(array)
        if array.dtype == np.float32:
            component = gl.FLOAT
        elif array.dtype == np.uint32:
            component = gl.UNSIGNED_INT
        else:
            raise TypeError(f"unsupported accessor dtype {array.dtype}")
        width = {gl.SCALAR: 1, gl.VEC2: 2, gl.VEC3: 3, gl.VEC4: 4}[accessor_type]
        count = array.size // width
        pad = (-self.size) % 4  # accessor offsets must be multiples of the component size
        if pad:
            self.chunks.append(b"\x00" * pad)
            self.size += pad
        data = array.tobytes()
        view = gl.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), target=target)
        self.chunks.append(data)
        self.size += len(data)
        self.gltf.bufferViews.append(view)
        acc = gl.Accessor(bufferView=len(self.gltf.bufferViews) - 1, byteOffset=0, componentType=component,
                          count=count, type=accessor_type, normalized=normalized or None)
        if with_bounds:
            flat = array.reshape(count, width)
            acc.min = [float(v) for v in flat.min(0)]
            acc.max = [float(v) for v in flat.max(0)]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def finish(self) -> None:
        pad = (-self.size) % 4
        blob = b"".join(self.chunks) + b"\x00" * pad
        self.gltf.buffers = [gl.Buffer(byteLength=len(blob))]
        self.gltf.set_binary_blob(blob)


def _material(gltf: gl.GLTF2, m: Material) -> int:
    gltf.materials.append(gl.Material(
        name=m.name, doubleSided=m.double_sided,
        pbrMetallicRoughness=gl.PbrMetallicRoughness(baseColorFactor=list(m.base_color), metallicFactor=m.metallic,
                                                     roughnessFactor=m.roughness)))
    return len(gltf.materials) - 1


def _matrix_node_fields(T: np.ndarray) -> dict:
    """Translation / rotation (x, y, z, w) of a rigid 4x4 for a glTF node."""
    q = matrices_to_gltf_quaternions(T[None, :3, :3])[0]
    return {"translation": [float(v) for v in T[:3, 3]], "rotation": [float(v) for v in q]}


def _frustum_lines(K: np.ndarray, image_size: tuple[int, int], depth: float) -> tuple[np.ndarray, np.ndarray]:
    """A camera pyramid in glTF camera axes: apex at the origin, image corners at ``depth``.

    Returns: verts (5, 3) float32, line indices (16,) uint32.
    """
    W, H = image_size
    corners = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]], np.float64)
    x = (corners[:, 0] - K[0, 2]) / K[0, 0] * depth
    y = (corners[:, 1] - K[1, 2]) / K[1, 1] * depth
    pts_cv = np.concatenate([np.zeros((1, 3)), np.stack([x, y, np.full(4, depth)], 1)])
    verts = (pts_cv @ OPENCV_TO_GLTF_CAMERA.T).astype(np.float32)
    lines = np.array([0, 1, 0, 2, 0, 3, 0, 4, 1, 2, 2, 3, 3, 4, 4, 1], np.uint32)
    return verts, lines


def write_animated_glb(
    path: Path,
    object_verts: np.ndarray,
    object_faces: np.ndarray,
    hand_verts: np.ndarray,
    hand_faces: np.ndarray,
    *,
    T_hand_to_world: np.ndarray,
    T_obj_to_world: np.ndarray,
    times: np.ndarray,
    T_world_to_display: np.ndarray | None = None,
    T_cam_to_world: np.ndarray | None = None,
    K: np.ndarray | None = None,
    image_size: tuple[int, int] | None = None,
    frame_names: list[str] | None = None,
    interpolation: str = "LINEAR",
) -> dict:
    """Write one ``.glb`` with the object and the hand animated over the clip (module docstring).

    Args:
        path: output file.
        object_verts: (Vo, 3) object frame. object_faces: (Fo, 3).
        hand_verts: (T, Vh, 3) hand frame, one mesh per exported frame. hand_faces: (Fh, 3).
        T_hand_to_world: (T, 4, 4). T_obj_to_world: (4, 4) or (T, 4, 4).
        times: (T,) seconds, strictly increasing.
        T_world_to_display: (4, 4) pose of the root node (default identity).
        T_cam_to_world: (T, 4, 4) camera poses (OpenCV axes); with K (3, 3) and image_size
            (W, H) adds the animated camera node. None: no camera.
        frame_names: T names of the morph targets (default ``frame_000000``...).
        interpolation: "LINEAR" or "STEP".
    Returns:
        dict: num_frames, num_targets, object_faces, hand_faces, bytes.
    """
    hand_verts, times, T_hand_to_world, T_obj_to_world = _clip_arrays(hand_verts, times, T_hand_to_world,
                                                                      T_obj_to_world, interpolation)
    T = hand_verts.shape[0]
    if T_cam_to_world is not None and (K is None or image_size is None):
        raise UserError("an animated camera needs K and image_size")

    gltf = gl.GLTF2(asset=gl.Asset(generator="hoirecon", version="2.0"))
    gltf.scenes, gltf.nodes, gltf.meshes, gltf.materials = [gl.Scene(name="clip", nodes=[0])], [], [], []
    gltf.accessors, gltf.bufferViews, gltf.animations, gltf.cameras = [], [], [], []
    gltf.scene = 0
    buf = _BinaryBuilder(gltf)
    mat_object, mat_skin = _material(gltf, OBJECT), _material(gltf, SKIN)
    # Buffer order (object, hand, camera, animation) is the file's byte layout: keep it.
    obj_f = _add_object_mesh(gltf, buf, object_verts, object_faces, mat_object)
    hand_f = _add_hand_mesh(gltf, buf, hand_verts, hand_faces, mat_skin,
                            frame_names or [f"frame_{t:06d}" for t in range(T)])

    display = np.eye(4, dtype=np.float32) if T_world_to_display is None else np.asarray(T_world_to_display, np.float32)
    gltf.nodes.append(gl.Node(name="world", children=[], **_matrix_node_fields(display)))
    gltf.nodes.append(gl.Node(name="object", mesh=0, **_matrix_node_fields(T_obj_to_world[0])))
    gltf.nodes.append(gl.Node(name="hand", mesh=1, **_matrix_node_fields(T_hand_to_world[0])))
    gltf.nodes[0].children = [1, 2]
    animated = {1: T_obj_to_world, 2: T_hand_to_world}
    if T_cam_to_world is not None:
        animated[3] = _add_camera(gltf, buf, np.asarray(T_cam_to_world, np.float32).reshape(T, 4, 4), K, image_size,
                                  T_obj_to_world)

    gltf.animations.append(_clip_animation(buf, animated, hand_node=2, times=times, interpolation=interpolation))
    buf.finish()
    path = Path(path)
    gltf.save_binary(str(path))
    return {"num_frames": T, "num_targets": T, "object_faces": int(len(obj_f)), "hand_faces": int(len(hand_f)),
            "bytes": path.stat().st_size}


def _clip_arrays(hand_verts, times, T_hand_to_world, T_obj_to_world,
                 interpolation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked float32 (hand_verts (T, Vh, 3), times (T,), T_hand_to_world (T, 4, 4),
    T_obj_to_world (T, 4, 4), a fixed pose repeated); UserError on a bad interpolation or times."""
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"unknown interpolation '{interpolation}': choose one of {', '.join(INTERPOLATIONS)}")
    hand_verts = np.asarray(hand_verts, np.float32)
    T = hand_verts.shape[0]
    times = np.asarray(times, np.float32).reshape(-1)
    if T < 1 or times.shape[0] != T or np.any(np.diff(times) <= 0):
        raise UserError(f"need one strictly increasing key time per frame: {T} frames, {times.shape[0]} times")
    T_hand_to_world = np.asarray(T_hand_to_world, np.float32).reshape(T, 4, 4)
    T_obj_to_world = np.asarray(T_obj_to_world, np.float32)
    if T_obj_to_world.ndim == 2:
        T_obj_to_world = np.broadcast_to(T_obj_to_world, (T, 4, 4))
    return hand_verts, times, T_hand_to_world, T_obj_to_world


def _add_object_mesh(gltf: gl.GLTF2, buf: "_BinaryBuilder", verts: np.ndarray, faces: np.ndarray,
                     material: int) -> np.ndarray:
    """Append mesh ``object`` (verts (V, 3), faces (F, 3), with normals); returns the faces as uint32."""
    obj_v = np.asarray(verts, np.float32)
    obj_f = np.asarray(faces, np.uint32)
    obj_prim = gl.Primitive(
        attributes=gl.Attributes(POSITION=buf.add(obj_v, gl.VEC3, gl.ARRAY_BUFFER, with_bounds=True),
                                 NORMAL=buf.add(_vertex_normals(obj_v[None], obj_f)[0], gl.VEC3, gl.ARRAY_BUFFER)),
        indices=buf.add(obj_f.reshape(-1), gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER), material=material, mode=gl.TRIANGLES)
    gltf.meshes.append(gl.Mesh(name="object", primitives=[obj_prim]))
    return obj_f


def _add_hand_mesh(gltf: gl.GLTF2, buf: "_BinaryBuilder", hand_verts: np.ndarray, faces: np.ndarray, material: int,
                   frame_names: list[str]) -> np.ndarray:
    """Append mesh ``hand``: base = frame 0 of ``hand_verts`` (T, V, 3), one morph target per frame
    (vertex and normal offsets from the base), weights one-hot on frame 0; returns the faces as uint32."""
    T = hand_verts.shape[0]
    hand_f = np.asarray(faces, np.uint32)
    hand_n = _vertex_normals(hand_verts, hand_f)
    targets = []
    for t in range(T):
        targets.append(gl.Attributes(
            POSITION=buf.add(hand_verts[t] - hand_verts[0], gl.VEC3, gl.ARRAY_BUFFER, with_bounds=True),
            NORMAL=buf.add(hand_n[t] - hand_n[0], gl.VEC3, gl.ARRAY_BUFFER)))
    hand_prim = gl.Primitive(
        attributes=gl.Attributes(POSITION=buf.add(hand_verts[0], gl.VEC3, gl.ARRAY_BUFFER, with_bounds=True),
                                 NORMAL=buf.add(hand_n[0], gl.VEC3, gl.ARRAY_BUFFER)),
        indices=buf.add(hand_f.reshape(-1), gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER), material=material,
        mode=gl.TRIANGLES, targets=targets)
    weights0 = [0.0] * T
    weights0[0] = 1.0
    gltf.meshes.append(gl.Mesh(name="hand", primitives=[hand_prim], weights=weights0,
                               extras={"targetNames": list(frame_names)}))
    return hand_f


def _add_camera(gltf: gl.GLTF2, buf: "_BinaryBuilder", T_cam_to_world: np.ndarray, K: np.ndarray,
                image_size: tuple[int, int], T_obj_to_world: np.ndarray) -> np.ndarray:
    """Append the input camera (node 3) with a child frustum line mesh (node 4, sized to 0.3 of the
    median camera-object distance) under the root.

    T_cam_to_world: (T, 4, 4) OpenCV axes; K (3, 3); image_size (W, H); T_obj_to_world (T, 4, 4).
    Returns the camera's (T, 4, 4) poses in glTF camera axes, to animate.
    """
    K = np.asarray(K, np.float64)
    W, H = (int(v) for v in image_size)
    # glTF cameras cannot carry a principal point off-centre; yfov/aspect from fy, W, H.
    gltf.cameras.append(gl.Camera(name="input_camera", type="perspective", perspective=gl.Perspective(
        yfov=float(2.0 * np.arctan(H / (2.0 * K[1, 1]))), aspectRatio=float(W / H), znear=0.01, zfar=100.0)))
    T_cam = T_cam_to_world.copy()
    T_cam[:, :3, :3] = T_cam[:, :3, :3] @ OPENCV_TO_GLTF_CAMERA
    depth = 0.3 * float(np.median(np.linalg.norm(T_cam[:, :3, 3] - T_obj_to_world[:, :3, 3], axis=1)))
    f_verts, f_lines = _frustum_lines(K, (W, H), max(depth, 1e-3))
    mat_frustum = _material(gltf, FRUSTUM)
    gltf.meshes.append(gl.Mesh(name="camera_frustum", primitives=[gl.Primitive(
        attributes=gl.Attributes(POSITION=buf.add(f_verts, gl.VEC3, gl.ARRAY_BUFFER, with_bounds=True)),
        indices=buf.add(f_lines, gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER), material=mat_frustum, mode=gl.LINES)]))
    gltf.nodes.append(gl.Node(name="camera", camera=0, children=[4], **_matrix_node_fields(T_cam[0])))
    gltf.nodes.append(gl.Node(name="camera_frustum", mesh=len(gltf.meshes) - 1))
    gltf.nodes[0].children.append(3)
    return T_cam


def _clip_animation(buf: "_BinaryBuilder", animated: dict[int, np.ndarray], hand_node: int, times: np.ndarray,
                    interpolation: str) -> gl.Animation:
    """Animation ``clip``: one key per exported frame for every channel, sharing one time accessor:
    translation and rotation of each node in ``animated`` ({node: (T, 4, 4) poses}), and the hand's
    morph weights (key t one-hot on target t)."""
    T = times.shape[0]
    time_acc = buf.add(times, gl.SCALAR, with_bounds=True)
    samplers, channels = [], []
    for node, poses in animated.items():
        for path_name, values in (("translation", np.ascontiguousarray(poses[:, :3, 3], np.float32)),
                                  ("rotation", matrices_to_gltf_quaternions(poses[:, :3, :3]))):
            acc = buf.add(values, gl.VEC3 if path_name == "translation" else gl.VEC4)
            samplers.append(gl.AnimationSampler(input=time_acc, output=acc, interpolation=interpolation))
            channels.append(gl.AnimationChannel(sampler=len(samplers) - 1,
                                                target=gl.AnimationChannelTarget(node=node, path=path_name)))
    weights = np.eye(T, dtype=np.float32).reshape(-1)
    samplers.append(gl.AnimationSampler(input=time_acc, output=buf.add(weights, gl.SCALAR),
                                        interpolation=interpolation))
    channels.append(gl.AnimationChannel(sampler=len(samplers) - 1,
                                        target=gl.AnimationChannelTarget(node=hand_node, path="weights")))
    return gl.Animation(name="clip", samplers=samplers, channels=channels)
