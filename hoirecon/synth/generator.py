"""Synthetic hand-object clips with exact ground truth (``hoirecon synth``).

A clip: a procedural object of a category (``hoirecon.synth.objects``) or a user mesh,
held by the right hand in a power grasp (``hoirecon.synth.grasp``); hand and object move
together (a rigid grasp) while the camera moves around them, and the viewing direction
relative to the object sweeps an arc of at most ``view_range_deg`` over the clip, so part
of the object is never seen (as in real clips). Frames are shaded (Lambert + ambient +
a little specular, skin-coloured hand, coloured/striped object, optionally printed
(``texture``), textured moving background, sensor noise) by an exact hard z-buffer (``hoirecon.render.raster``), so the
masks and depth are exact.

Only the relative motion of camera and hand-object is observable in a monocular clip, so
the clip is built from it directly: per frame, the camera centre sits on a smooth arc
of viewing directions around the object at a smoothly varying distance, looks at a
slowly drifting point near the hand-object centre, and rolls a little; the background
pans and the light drifts with the camera motion.

Output folder (``generate_clip``)::

    video.mp4                 the clip (H.264)
    boxes.json                first-frame hand/object boxes (pixels) beside the clip, which the
                              masks stage reads when the clip is run through the pipeline
    frames/                   NNNNNN.png + meta.json, committed as a done "frames" stage
    masks/                    hand/, object/ (visible, occlusion-aware: each pixel is one of
                              background, hand, object), quality.json (source "synth-gt"),
                              boxes.json (first-frame boxes), overlay.mp4; a done "masks" stage
    hand/hands.npz            the NOISY hand initialisation (``hoirecon.synth.noise``), a done
                              "hand" stage: K, T_cam_to_hand, articulation, shape, side, valid
    gt/gt.npz                 ground truth (keys below)
    gt/object.ply             the object mesh in the object frame (metres)
    gt/depth.npz              ``depth`` (T, H, W) float32 camera z in metres, 0 = background
    gt/info.json              the summary returned by ``generate_clip``

``gt.npz`` keys: ``K`` (3, 3); ``image_size`` (2,) = (W, H); ``T_cam_to_hand`` (T, 4, 4);
``T_hand_to_obj`` (T, 4, 4) (the same every frame: a rigid grasp); ``articulation``
(T, 45); ``wrist_rot`` (T, 3) zeros (the wrist rotation is folded into T_cam_to_hand);
``shape`` (10,); ``side`` ('right'); ``hand_model`` ('anny'); ``category``; ``penetration_mm`` (deepest hand
vertex inside the object); ``keypoints_cam`` (T, 21, 3) hand keypoints in the camera
frame (MediaPipe order, ``hoirecon.hand.MEDIAPIPE_KEYPOINT_NAMES``); ``keypoints_2d`` (T, 21, 2)
their pixel positions (x right, y down; ``K`` applied, visible or not); ``fps``; ``seed``;
``view_span_deg`` (largest angle between two viewing directions of the clip); ``fov_deg``,
``fov_y_deg`` (horizontal and vertical field of view). All float arrays are float32, metres,
OpenCV camera frame.

The true camera: ``K`` = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels, fx = fy =
W / 2 / tan(fov_deg / 2), (cx, cy) = ((W - 1) / 2, (H - 1) / 2); ``gt/info.json`` repeats it
as ``intrinsics`` {fx, fy, cx, cy, width, height, fov_deg, fov_y_deg}. Frames may be
non-square (``size`` "WxH").

The object's surface (``texture``): "plain" (smooth colour waves, often stripes: little for
feature matching to hold on to) or "printed" (the same, with a sharp-edged random print in
the object's own frame on top, like the labels and decals of real objects: blobs of a few
millimetres in two inks, which SIFT finds). The print draws from its own random stream, so a
seed's geometry, masks, hand pixels and "plain" frames are the same either way; ``gt/info.json``
records ``texture``. ``hand/hands.npz`` carries the same K (the hand stage of a synth
folder is done); the pipeline's own hand stage, rerun on the clip, knows nothing of it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import trimesh
from scipy.interpolate import CubicSpline

from hoirecon.categories import normalize_category
from hoirecon.errors import UserError
from hoirecon.geometry.rotations import rotation_about_axis
from hoirecon.hand import build_hand_model
from hoirecon.io.masks import overlay_masks
from hoirecon.io.threads import torch_threads
from hoirecon.io.video import write_png, write_video
from hoirecon.pipeline.hashing import file_digest
from hoirecon.pipeline.runner import commit_dir, output_lock, write_external_stage
from hoirecon.render.blend import LABEL_BG, LABEL_HAND, LABEL_OBJECT
from hoirecon.render.camera import project_points
from hoirecon.render.mesh import vertex_normals
from hoirecon.render.raster import interpolate, rasterize
from hoirecon.stages.outputs import FramesMeta, GroundTruth, HandsOutput, MasksOutput
from hoirecon.synth.grasp import GraspConfig, MeshSDF, mesh_grasp_candidates, search_grasp
from hoirecon.synth.noise import NoiseConfig, perturb_hand
from hoirecon.synth.objects import GraspRegion, load_object_mesh, make_object_info

__all__ = ["SynthScene", "build_scene", "render_scene", "generate_clip", "write_example"]

PRODUCER = "hoirecon synth"
# Horizontal field of view drawn per clip when none is given (deg).
FOV_RANGE_DEG = (50.0, 60.0)
# The fields of view ``fov_deg`` may ask for (deg): phone main cameras are ~65-75, action
# cameras up to ~120; below ~15 the camera would stand metres away from a hand-held object.
FOV_LIMITS_DEG = (15.0, 120.0)
# Fraction of the image width spanned by the hand-object bounding sphere's diameter; the
# masks' bounding box then spans roughly 40-70 % of the frame.
SPHERE_FILL_RANGE = (0.55, 0.8)
# The mean camera distance stays in this range (m) whatever the object's size (it then
# varies by +-5 % over the clip); a small object seen from 0.3 m fills less of the frame.
DISTANCE_RANGE_M = (0.3, 0.85)
# The object surfaces ``texture`` may ask for (see the module docstring).
TEXTURES = ("plain", "printed")
# Cell of the printed object's noise grid (m): its blobs and the gaps between them are about
# this size (5-9 mm: 10-20 px on a 640-pixel frame the object half fills).
PRINT_CELL_RANGE_M = (0.005, 0.009)
# Which way the thumb side of the palm points along the grasp axis, per category
# (bowls: fingers curl over the rim into the bowl; others: thumb towards the axis).
_THUMB_ALONG_AXIS = {"bowl": -1.0}


@dataclass
class SynthScene:
    """Geometry and cameras of a clip (everything but appearance).

    mesh: object mesh in the object frame (m), watertight.
    K: (3, 3) float64 intrinsics; image_size: (W, H).
    T_obj_to_cam: (T, 4, 4) float64.
    T_hand_to_obj: (4, 4) float64 (rigid grasp).
    articulation: (45,) float32; shape: (10,) float32.
    hand_verts: (V, 3) float64 hand mesh in the hand frame; hand_faces: (F, 3) int64.
    keypoints_hand: (21, 3) float64 hand keypoints in the hand frame (MediaPipe order).
    penetration_mm: deepest hand vertex inside the object mesh.
    contacts: fingers within 2 mm of the surface.
    view_span_deg: largest angle between two viewing directions (object frame).
    fov_deg: horizontal field of view (K[0, 0] = W / 2 / tan(fov_deg / 2)).
    category: canonical category name.
    grasp_tries: placements the grasp search made (``hoirecon.synth.grasp.search_grasp``).
    mesh_notes: what was done to a user's mesh file (repairs, rescaling), one sentence each.
    """

    mesh: trimesh.Trimesh
    K: np.ndarray
    image_size: tuple[int, int]
    T_obj_to_cam: np.ndarray
    T_hand_to_obj: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    hand_verts: np.ndarray
    hand_faces: np.ndarray
    keypoints_hand: np.ndarray
    penetration_mm: float
    contacts: list
    view_span_deg: float
    fov_deg: float
    category: str
    grasp_tries: int = 1
    mesh_notes: list = field(default_factory=list)

    @property
    def T_cam_to_hand(self) -> np.ndarray:
        """(T, 4, 4): camera -> object -> hand."""
        return np.linalg.inv(self.T_hand_to_obj)[None] @ np.linalg.inv(self.T_obj_to_cam)

    @property
    def num_frames(self) -> int:
        return len(self.T_obj_to_cam)


# ----------------------------------------------------------------------------- small helpers


def _streams(seed: int, category: str) -> list[np.random.Generator]:
    """Independent random streams of a clip: object, grasp, camera, appearance, noise, print.

    The category is part of the entropy so that clips of different categories with the
    same seed do not share colours, camera paths and noise. A spawned child depends only on
    its index, so the print (the sixth, added later) left the first five as they were.
    """
    seq = np.random.SeedSequence([int(seed), zlib.crc32(category.encode())])
    return [np.random.default_rng(s) for s in seq.spawn(6)]


def _smooth(rng: np.random.Generator, n: int, knots: int = 4) -> np.ndarray:
    """(n,) a smooth random curve in [-1, 1] (cubic spline through random knots)."""
    values = rng.uniform(-1.0, 1.0, size=knots)
    if n == 1:
        return values[:1]
    curve = CubicSpline(np.linspace(0.0, 1.0, knots), values, bc_type="natural")(np.linspace(0.0, 1.0, n))
    return np.clip(curve, -1.0, 1.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _random_perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    v = rng.normal(size=3)
    v -= (v @ d) * d
    return _unit(v)


def _apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """T (..., 4, 4) applied to points (..., N, 3)."""
    return points @ np.swapaxes(T[..., :3, :3], -1, -2) + T[..., None, :3, 3]


# ----------------------------------------------------------------------------- scene


@dataclass
class _Object:
    """The object of a clip: mesh (object frame, m), the signed distance the grasp search
    uses, the (region, thumb side) grasps to try in order, and notes on a user's mesh."""

    mesh: trimesh.Trimesh
    sdf: object
    grasp_candidates: list
    notes: list


def _object(category: str, rng: np.random.Generator, object_mesh, object_size) -> _Object:
    """A procedural object of ``category`` or the user's mesh file."""
    if object_mesh is not None:
        loaded = load_object_mesh(object_mesh, object_size)
        thumb = 1.0 if rng.random() < 0.5 else -1.0
        return _Object(loaded.mesh, MeshSDF(loaded.mesh), mesh_grasp_candidates(loaded.mesh, thumb), loaded.notes)
    if category == "unknown":
        raise UserError("category 'unknown' has no procedural object; give --object-mesh FILE")
    info = make_object_info(category, rng)
    mesh, sdf, region = info.mesh, info.sdf, info.grasp
    if object_size is not None:
        if not object_size > 0:
            raise UserError(f"--object-size must be positive metres, got {object_size}")
        s = object_size / float(np.max(mesh.extents))
        mesh = mesh.copy()
        mesh.apply_scale(s)
        base_sdf = sdf

        def sdf(p, base_sdf=base_sdf, s=s):
            return s * base_sdf(np.asarray(p) / s)

        region = GraspRegion(region.name, region.point * s, region.approach, region.axis, region.width * s)
    sign = _THUMB_ALONG_AXIS.get(info.category, 1.0 if info.category != "toy_car" else rng.choice([-1.0, 1.0]))
    # The family's own grasp, retried with new random draws when one misses the limits.
    return _Object(mesh, sdf, [(region, float(sign))], [])


def _camera_path(
    rng: np.random.Generator,
    n: int,
    centre: np.ndarray,
    radius: float,
    hand_side: np.ndarray,
    forearm: np.ndarray,
    fov_deg: float,
    view_range_deg: float,
) -> tuple[np.ndarray, float]:
    """Per-frame T_obj_to_cam (n, 4, 4) and the realised view span (deg).

    Viewing direction (object centre -> camera) d0 starts from the side of the hand
    (50-130 deg from the hand's direction, so the hand rarely hides the whole object),
    then sweeps an arc of 0.9 * view_range_deg with a small wobble off the arc.
    """
    deg = np.pi / 180.0
    for _ in range(1000):
        d0 = _unit(rng.normal(size=3))
        if 50 * deg <= np.arccos(np.clip(d0 @ hand_side, -1, 1)) <= 130 * deg:
            break
    tangent = _random_perpendicular(rng, d0)
    arc_axis = _unit(np.cross(d0, tangent))
    span = 0.9 * view_range_deg * deg
    wobble = min(6.0, 0.05 * view_range_deg) * deg
    progress = np.linspace(-0.5, 0.5, n) if n > 1 else np.zeros(1)
    phi = span * progress * rng.choice([-1.0, 1.0])
    omega = wobble * _smooth(rng, n)
    dirs = np.stack([rotation_about_axis(arc_axis, p) @ rotation_about_axis(tangent, w) @ d0
                     for p, w in zip(phi, omega)])

    fill = rng.uniform(*SPHERE_FILL_RANGE)
    tan_half = np.tan(0.5 * fov_deg * deg)
    r0 = np.clip(radius / (fill * tan_half), *DISTANCE_RANGE_M)
    dist = r0 * (1.0 + 0.05 * _smooth(rng, n))
    target = centre[None] + 0.08 * radius * np.stack([_smooth(rng, n) for _ in range(3)], 1)
    roll_wobble = 8.0 * deg * _smooth(rng, n)
    yaw_offset = rng.uniform(-60.0, 60.0) * deg

    T = np.tile(np.eye(4), (n, 1, 1))
    bases = []
    for i in range(n):
        z = -dirs[i]
        y = _unit(arc_axis - (arc_axis @ z) * z)
        bases.append((np.cross(y, z), y, z))
    # Roll so that the forearm (wrist -> elbow) points towards the bottom of the image,
    # give or take 60 deg, in the middle frame (the arm enters the frame from below).
    x_mid, y_mid, _ = bases[n // 2]
    alpha = np.arctan2(forearm @ y_mid, forearm @ x_mid)
    psi0 = alpha - 0.5 * np.pi - yaw_offset
    for i, (x, y, z) in enumerate(bases):
        psi = psi0 + roll_wobble[i]
        x_r = np.cos(psi) * x + np.sin(psi) * y
        y_r = -np.sin(psi) * x + np.cos(psi) * y
        R = np.stack([x_r, y_r, z])  # rows: camera axes in the object frame
        C = target[i] + dist[i] * dirs[i]
        T[i, :3, :3] = R
        T[i, :3, 3] = -R @ C
    cosines = np.clip(dirs @ dirs.T, -1.0, 1.0)
    return T, float(np.degrees(np.arccos(cosines.min())))


def build_scene(
    category: str,
    frames: int = 30,
    size: int | tuple[int, int] | str = 256,
    seed: int = 0,
    object_mesh: str | Path | None = None,
    object_size: float | None = None,
    view_range_deg: float = 90.0,
    grasp_cfg: GraspConfig = GraspConfig(),
    fov_deg: float | None = None,
) -> SynthScene:
    """Object, grasp, hand and camera path of a clip (no rendering). See ``generate_clip``."""
    image_size = parse_image_size(size)
    _check_args(frames, view_range_deg, fov_deg)
    category = normalize_category(category)
    rng_obj, rng_grasp, rng_cam = _streams(seed, category)[:3]
    obj = _object(category, rng_obj, object_mesh, object_size)

    hand = build_hand_model("anny")
    shape = np.clip(rng_grasp.normal(0.0, 0.8, size=10), -2.0, 2.0).astype(np.float32)
    mesh = obj.mesh
    found = search_grasp(hand, mesh, obj.sdf, obj.grasp_candidates, shape, rng_grasp, grasp_cfg)
    grasp, verts_obj = found.grasp, found.hand_verts_obj
    with torch.no_grad():
        out = hand(torch.from_numpy(grasp.articulation)[None], torch.zeros(1, 3), torch.from_numpy(shape)[None])
    hand_verts = out.verts[0].double().numpy()
    keypoints = out.keypoints[0].double().numpy()

    # Camera path around the union of hand and object.
    union = np.concatenate([np.asarray(mesh.vertices), verts_obj])
    centre = 0.5 * (union.min(0) + union.max(0))
    radius = float(np.linalg.norm(union - centre, axis=1).max())
    hand_side = _unit(verts_obj.mean(0) - np.asarray(mesh.vertices).mean(0))
    forearm = _unit(grasp.T_hand_to_obj[:3, :3] @ np.array([1.0, 0.0, 0.0]))
    # Drawn even when the fov is given, so the rest of the camera path stays the seed's.
    fov_random = rng_cam.uniform(*FOV_RANGE_DEG)
    fov = float(fov_random if fov_deg is None else fov_deg)
    K = intrinsics(fov, image_size)
    T_obj_to_cam, span = _camera_path(rng_cam, frames, centre, radius, hand_side, forearm,
                                      _narrow_fov_deg(K, image_size), view_range_deg)
    return SynthScene(
        mesh=mesh, K=K, image_size=image_size, T_obj_to_cam=T_obj_to_cam, T_hand_to_obj=grasp.T_hand_to_obj,
        articulation=grasp.articulation, shape=shape, hand_verts=hand_verts,
        hand_faces=hand.faces.numpy().astype(np.int64), keypoints_hand=keypoints, penetration_mm=found.penetration_mm,
        contacts=grasp.contacts, view_span_deg=span, fov_deg=fov, category=category,
        grasp_tries=found.tries, mesh_notes=list(obj.notes),
    )


def parse_image_size(size: int | tuple[int, int] | str) -> tuple[int, int]:
    """Frame size (W, H) from ``256`` (square), ``"640x480"`` (W x H) or a (W, H) pair.

    Raises:
        UserError: not of that form, or a side outside 32-2048 pixels.
    """
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2):
            raise UserError(f"--size must be N (square) or WxH in pixels, e.g. 256 or 640x480; got '{size}'")
        size = values[0] if len(values) == 1 else tuple(values)
    W, H = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    for name, v in (("width", W), ("height", H)):
        if not 32 <= v <= 2048:
            raise UserError(f"--size: the {name} must be between 32 and 2048 pixels, got {v}")
    return W, H


def intrinsics(fov_deg: float, image_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) float64 pinhole intrinsics: horizontal field of view ``fov_deg`` over the width,
    square pixels (fy = fx), principal point at the image centre (pixel centres at integers)."""
    # numpy float64, not render.camera.make_intrinsics: the ground truth is numpy geometry kept in float64.
    W, H = image_size
    f = 0.5 * W / np.tan(0.5 * np.radians(fov_deg))
    return np.array([[f, 0.0, 0.5 * (W - 1)], [0.0, f, 0.5 * (H - 1)], [0.0, 0.0, 1.0]])


def _fov_y_deg(K: np.ndarray, image_size: tuple[int, int]) -> float:
    return float(np.degrees(2.0 * np.arctan(0.5 * image_size[1] / K[1, 1])))


def _narrow_fov_deg(K: np.ndarray, image_size: tuple[int, int]) -> float:
    """The smaller of the horizontal and vertical fields of view: the hand and object must
    fit the frame's shorter side (for a square frame: the horizontal fov, as before)."""
    fov_x = float(np.degrees(2.0 * np.arctan(0.5 * image_size[0] / K[0, 0])))
    return min(fov_x, _fov_y_deg(K, image_size))


def _check_args(frames: int, view_range_deg: float, fov_deg: float | None) -> None:
    if int(frames) < 1:
        raise UserError(f"--frames must be >= 1, got {frames}")
    if not 0.0 <= float(view_range_deg) <= 360.0:
        raise UserError(f"--view-range must be between 0 and 360 degrees, got {view_range_deg}")
    if fov_deg is not None and not FOV_LIMITS_DEG[0] <= float(fov_deg) <= FOV_LIMITS_DEG[1]:
        raise UserError(f"--fov must be between {FOV_LIMITS_DEG[0]:g} and {FOV_LIMITS_DEG[1]:g} degrees "
                        f"(horizontal), got {fov_deg}")


def _check_texture(texture: str) -> None:
    if texture not in TEXTURES:
        raise UserError(f"--texture must be one of {', '.join(TEXTURES)}, got '{texture}'")


# ----------------------------------------------------------------------------- appearance


def _value_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 4) -> np.ndarray:
    """(h, w) fractal value noise in about [-1, 1]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 3 * 2**o
        grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    return out / total


def _random_colour(rng: np.random.Generator, sat=(0.3, 0.85), val=(0.45, 0.9)) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _background(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w, 3) float32 in [0, 1]: a photo-like textured backdrop panning with the camera.

    A large texture (gradient between two colours, a "table edge" splitting two surfaces,
    fractal noise, and wood-like or tiled stripes) is cropped along a smooth path.
    """
    H, W = 2 * h, 2 * w
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    c1, c2 = _random_colour(rng, (0.05, 0.5), (0.3, 0.9)), _random_colour(rng, (0.05, 0.5), (0.3, 0.9))
    angle = rng.uniform(0, 2 * np.pi)
    g = (np.cos(angle) * xx / W + np.sin(angle) * yy / H)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    img = c1 * (1 - g[..., None]) + c2 * g[..., None]
    # A surface boundary (table edge / wall) with its own colour below it.
    edge_y = rng.uniform(0.3, 0.7) * H + np.tan(rng.uniform(-0.3, 0.3)) * (xx - W / 2)
    below = (yy > edge_y)[..., None]
    c3 = _random_colour(rng, (0.05, 0.6), (0.25, 0.8))
    img = np.where(below, 0.55 * img + 0.45 * c3, img)
    img *= 1.0 + 0.18 * _value_noise(rng, H, W)[..., None]
    if rng.random() < 0.5:  # wood-like grain
        freq = rng.uniform(8, 24) / W
        grain = np.sin(2 * np.pi * freq * (xx + 0.04 * W * _value_noise(rng, H, W)))
        img *= 1.0 + 0.04 * grain[..., None]
    else:  # tiles
        period = rng.uniform(0.08, 0.2) * W
        lines = (np.minimum(xx % period, yy % period) < 2.0)[..., None]
        img = np.where(lines, img * 0.8, img)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    ox = (0.5 + 0.45 * _smooth(rng, n)) * (W - w)
    oy = (0.5 + 0.45 * _smooth(rng, n)) * (H - h)
    return np.stack([img[int(y) : int(y) + h, int(x) : int(x) + w] for x, y in zip(ox, oy)])


def _texture_fn(rng: np.random.Generator, base: np.ndarray, scale_m: float):
    """Smooth 3D colour variation: p (N, 3) metres -> factor (N,) around 1."""
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.uniform(0.5, 2.0, size=4) / scale_m
    phases = rng.uniform(0, 2 * np.pi, size=4)

    def factor(p: np.ndarray) -> np.ndarray:
        return 1.0 + 0.25 * np.mean(np.sin(2 * np.pi * (p @ dirs.T) * freqs + phases), axis=1)

    return factor


@dataclass
class _Print:
    """A sharp-edged random print in the object's frame (``texture`` "printed").

    Two octaves of value noise on a periodic 3D grid (cells of ``cell_m`` metres, trilinear),
    sampled at the object-frame point and thresholded: below ``low`` ink ``ink_dark``, above
    ``high`` ink ``ink_light``, in between the object's own albedo shows.
    """

    grid: np.ndarray  # (G, G, G) float64 in [-1, 1]
    cell_m: float
    offsets: np.ndarray  # (2, 3) per-octave shift, in cells
    low: float
    high: float
    ink_dark: np.ndarray
    ink_light: np.ndarray

    # Cells per side of the periodic grid: the print repeats every GRID cells (the finer octave
    # every GRID / 2: >= 24 cm), more than a hand-held object spans, so no patch of it recurs
    # on the object (repeated patterns would mislead feature matching).
    GRID = 96

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "_Print":
        grid = rng.uniform(-1.0, 1.0, size=(cls.GRID,) * 3)
        cell = rng.uniform(*PRINT_CELL_RANGE_M)
        offsets = rng.uniform(0.0, cls.GRID, size=(2, 3))
        ink_dark = _random_colour(rng, (0.2, 0.9), (0.08, 0.25))
        ink_light = _random_colour(rng, (0.05, 0.4), (0.85, 1.0))
        out = cls(grid, cell, offsets, 0.0, 0.0, ink_dark, ink_light)
        # Thresholds at the noise's own quantiles: about a third of the surface per ink.
        values = out.value(rng.uniform(-1.0, 1.0, size=(4096, 3)))
        out.low, out.high = (float(q) for q in np.quantile(values, [0.33, 0.67]))
        return out

    def _noise(self, q: np.ndarray) -> np.ndarray:
        """Trilinear value noise at q (N, 3) in cells (the grid repeats)."""
        i0 = np.floor(q).astype(np.int64)
        f = q - i0
        f = f * f * (3.0 - 2.0 * f)  # smoothstep: no creases at the cell faces
        out = np.zeros(len(q))
        for corner in range(8):
            d = np.array([(corner >> k) & 1 for k in range(3)])
            idx = (i0 + d) % self.GRID
            w = np.prod(np.where(d == 1, f, 1.0 - f), axis=1)
            out += w * self.grid[idx[:, 0], idx[:, 1], idx[:, 2]]
        return out

    def value(self, p: np.ndarray) -> np.ndarray:
        """p: (N, 3) object-frame points (m) -> (N,) noise."""
        q = np.asarray(p, np.float64) / self.cell_m
        return self._noise(q + self.offsets[0]) + 0.5 * self._noise(2.0 * q + self.offsets[1])

    def apply(self, p: np.ndarray, col: np.ndarray) -> np.ndarray:
        """(N, 3) albedo ``col`` at points p with the print on top."""
        v = self.value(p)[:, None]
        return np.where(v < self.low, self.ink_dark, np.where(v > self.high, self.ink_light, col))


@dataclass
class _Appearance:
    skin: np.ndarray
    obj_a: np.ndarray
    obj_b: np.ndarray
    stripe_dir: np.ndarray
    stripe_period: float
    stripes: bool
    obj_tex: object
    skin_tex: object
    light: np.ndarray
    light_drift: float
    ambient: float
    obj_spec: float
    noise_std: float
    print_layer: _Print | None = None  # texture "printed": set by render_scene from its own stream

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "_Appearance":
        light_skin, dark_skin = np.array([0.93, 0.78, 0.67]), np.array([0.45, 0.30, 0.21])
        u = rng.uniform(0.0, 1.0) ** 1.5
        base = _random_colour(rng)
        other = np.clip(base * rng.uniform(0.4, 0.7) + rng.uniform(0.2, 0.5) * _random_colour(rng), 0, 1)
        light = np.array([-0.35 + rng.uniform(-0.3, 0.3), -0.75 + rng.uniform(-0.2, 0.2), -0.55])
        return cls(
            skin=(1 - u) * light_skin + u * dark_skin, obj_a=base, obj_b=other,
            stripe_dir=_unit(rng.normal(size=3)), stripe_period=rng.uniform(0.012, 0.035),
            stripes=bool(rng.random() < 0.6), obj_tex=_texture_fn(rng, base, 0.08),
            skin_tex=_texture_fn(rng, base, 0.05), light=_unit(light), light_drift=rng.uniform(-0.25, 0.25),
            ambient=rng.uniform(0.3, 0.42), obj_spec=rng.uniform(0.05, 0.25), noise_std=rng.uniform(1.0, 2.5),
        )

    def object_albedo(self, p: np.ndarray) -> np.ndarray:
        """p: (N, 3) object-frame points -> (N, 3) RGB in [0, 1]."""
        col = np.repeat(self.obj_a[None], len(p), 0)
        if self.stripes:
            s = 0.5 + 0.5 * np.sin(2 * np.pi * (p @ self.stripe_dir) / self.stripe_period)
            s = np.clip((s - 0.35) * 4.0, 0.0, 1.0)[:, None]  # crisp-ish bands
            col = (1 - s) * col + s * self.obj_b
        if self.print_layer is not None:
            col = self.print_layer.apply(p, col)
        return col * (0.85 + 0.15 * self.obj_tex(p))[:, None]

    def skin_albedo(self, p: np.ndarray) -> np.ndarray:
        """p: (N, 3) hand-frame points -> (N, 3) RGB."""
        return self.skin[None] * (0.92 + 0.08 * self.skin_tex(p))[:, None]


# ----------------------------------------------------------------------------- rendering


@dataclass
class SceneRenders:
    """rgb (T, H, W, 3) uint8; label (T, H, W) uint8 (0 bg, 1 hand, 2 object); depth (T, H, W) float32 m."""

    rgb: np.ndarray
    label: np.ndarray
    depth: np.ndarray


def render_scene(scene: SynthScene, seed: int = 0, chunk: int = 6, texture: str = "plain") -> SceneRenders:
    """Shade every frame of ``scene`` with the exact hard z-buffer (appearance seeded by ``seed``;
    ``texture`` "printed" adds the object's print, from its own stream)."""
    _check_texture(texture)
    streams = _streams(seed, scene.category)
    rng = streams[3]
    look = _Appearance.sample(rng)
    if texture == "printed":
        look.print_layer = _Print.sample(streams[5])
    W, H = scene.image_size
    n = scene.num_frames
    background = _background(rng, n, H, W)
    sensor = rng.normal(0.0, look.noise_std, size=(n, H, W, 3)).astype(np.float32)

    obj_v = np.asarray(scene.mesh.vertices, dtype=np.float64)
    obj_f = np.asarray(scene.mesh.faces, dtype=np.int64)
    n_obj_v, n_obj_f = len(obj_v), len(obj_f)
    faces = torch.from_numpy(np.concatenate([obj_f, scene.hand_faces + n_obj_v]))
    local = np.concatenate([obj_v, scene.hand_verts])  # texture coordinates: own frames
    hand_in_obj = _apply(scene.T_hand_to_obj, scene.hand_verts)
    verts_obj = np.concatenate([obj_v, hand_in_obj])
    K = torch.from_numpy(scene.K).float()
    local_t = torch.from_numpy(local).float()[None]
    # The object is closed: its back faces are always hidden by its front faces. The hand
    # mesh is open at the wrist, so its back faces stay.
    cull = torch.zeros(len(faces), dtype=torch.bool)
    cull[:n_obj_f] = True

    rgb = np.zeros((n, H, W, 3), np.uint8)
    label = np.zeros((n, H, W), np.uint8)
    depth = np.zeros((n, H, W), np.float32)
    for s in range(0, n, chunk):
        idx = np.arange(s, min(n, s + chunk))
        vc = torch.from_numpy(_apply(scene.T_obj_to_cam[idx], verts_obj[None])).float()  # (B, V, 3)
        ras = rasterize(vc, faces, K.expand(len(idx), 3, 3), H, W, cull_back=cull)
        attrs = torch.cat([vertex_normals(vc, faces), vc, local_t.expand(len(idx), -1, -1)], dim=-1)
        attrs = interpolate(attrs, faces, ras).numpy()
        normals, points, tex = attrs[..., 0:3], attrs[..., 3:6], attrs[..., 6:9]
        fi = ras.face_index.numpy()
        for j, t in enumerate(idx):
            lab = np.where(fi[j] < 0, LABEL_BG, np.where(fi[j] < n_obj_f, LABEL_OBJECT, LABEL_HAND)).astype(np.uint8)
            label[t] = lab
            depth[t] = ras.depth[j].numpy()
            img = background[t].copy()
            hit = lab > 0
            if hit.any():
                img[hit] = _shade(look, lab[hit], normals[j][hit], points[j][hit], tex[j][hit], t / max(n - 1, 1))
            img = cv2.GaussianBlur(img, (3, 3), 0.6) * 255.0 + sensor[t]
            rgb[t] = np.clip(img, 0, 255).astype(np.uint8)
    return SceneRenders(rgb=rgb, label=label, depth=depth)


def _shade(look: _Appearance, lab, normal, point, tex, progress: float) -> np.ndarray:
    """Lambert + ambient + Blinn-Phong specular of the covered pixels -> (N, 3) RGB in [0, 1]."""
    normal = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    view = -point / np.maximum(np.linalg.norm(point, axis=1, keepdims=True), 1e-9)
    # Back faces (inside of the wrist opening) are lit as if they faced the camera.
    normal = np.where((normal * view).sum(1, keepdims=True) < 0, -normal, normal)
    light = rotation_about_axis(np.array([0.0, 1.0, 0.0]), look.light_drift * (progress - 0.5)) @ look.light
    diffuse = np.clip(normal @ light, 0.0, None)[:, None]
    half = _unit_rows(light[None] + view)
    spec = np.clip((normal * half).sum(1), 0.0, None)[:, None]
    is_obj = (lab == LABEL_OBJECT)[:, None]
    albedo = np.where(is_obj, look.object_albedo(tex), look.skin_albedo(tex))
    ks = np.where(is_obj, look.obj_spec, 0.04)
    shininess = np.where(is_obj, 40.0, 12.0)
    colour = albedo * (look.ambient + (1.0 - look.ambient) * diffuse) + ks * spec**shininess
    return colour.astype(np.float32)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


# ----------------------------------------------------------------------------- writing


def _boxes(hand: np.ndarray, obj: np.ndarray) -> dict:
    """First-frame boxes [x0, y0, x1, y1] of non-empty masks (pixels, inclusive corners)."""
    out = {}
    for name, m in (("hand", hand), ("object", obj)):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[name] = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    return out


def _intrinsics_record(K: np.ndarray, image_size: tuple[int, int]) -> dict:
    """The true camera of a clip for gt/info.json: fx, fy, cx, cy in pixels, fields of view in degrees."""
    return {"fx": round(float(K[0, 0]), 4), "fy": round(float(K[1, 1]), 4), "cx": round(float(K[0, 2]), 4),
            "cy": round(float(K[1, 2]), 4), "width": int(image_size[0]), "height": int(image_size[1]),
            "fov_deg": round(float(np.degrees(2.0 * np.arctan(0.5 * image_size[0] / K[0, 0]))), 4),
            "fov_y_deg": round(_fov_y_deg(K, image_size), 4)}


def _write_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


@dataclass
class _RenderedClip:
    """What ``generate_clip`` writes (T frames of W x H): the scene, its renderings, the noisy hand
    initialisation and the clip's settings.

    articulation (T, 45): the grasp's, every frame; keypoints_cam (T, 21, 3), keypoints_2d (T, 21, 2):
    the true hand keypoints; hand_mask, obj_mask (T, H, W) bool: the visible hand and object.
    """

    scene: SynthScene
    renders: SceneRenders
    init: dict
    articulation: np.ndarray
    keypoints_cam: np.ndarray
    keypoints_2d: np.ndarray
    hand_mask: np.ndarray
    obj_mask: np.ndarray
    fps: float
    seed: int
    noise: NoiseConfig
    texture: str


def _render_clip(category: str, *, frames: int, size: int | tuple[int, int] | str, seed: int,
                 object_mesh: str | Path | None, object_size: float | None, view_range_deg: float,
                 noise: NoiseConfig, fps: float, grasp_cfg: GraspConfig, fov_deg: float | None,
                 texture: str) -> _RenderedClip:
    """The scene, rendered, with its true keypoints and the noisy hand initialisation."""
    with torch_threads(1):
        scene = build_scene(category, frames, size, seed, object_mesh, object_size, view_range_deg, grasp_cfg,
                            fov_deg)
        renders = render_scene(scene, seed, texture=texture)
    noise_rng = _streams(seed, scene.category)[4]
    T_cam_to_hand = scene.T_cam_to_hand
    n = scene.num_frames
    articulation = np.repeat(scene.articulation[None], n, 0)
    init = perturb_hand(T_cam_to_hand, articulation, scene.shape, noise, noise_rng)
    keypoints_cam = _apply(np.linalg.inv(T_cam_to_hand), scene.keypoints_hand[None])
    K_batch = torch.from_numpy(scene.K).expand(n, 3, 3)
    keypoints_2d = project_points(torch.from_numpy(keypoints_cam), K_batch).numpy()
    return _RenderedClip(scene=scene, renders=renders, init=init, articulation=articulation,
                         keypoints_cam=keypoints_cam, keypoints_2d=keypoints_2d,
                         hand_mask=renders.label == LABEL_HAND, obj_mask=renders.label == LABEL_OBJECT,
                         fps=fps, seed=seed, noise=noise, texture=texture)


def _clip_summary(clip: _RenderedClip, out_dir: Path, object_mesh: str | Path | None,
                  view_range_deg: float) -> dict:
    """The JSON-able summary of ``gt/info.json`` (without its ``seconds``)."""
    scene, renders = clip.scene, clip.renders
    W, H = scene.image_size
    fills = []
    for m in renders.label > 0:
        ys, xs = np.nonzero(m)
        fills.append(max((np.ptp(xs) + 1) / W, (np.ptp(ys) + 1) / H) if len(xs) else 0.0)
    dist = np.linalg.norm(np.linalg.inv(scene.T_obj_to_cam)[:, :3, 3], axis=1)
    return {
        "out": str(out_dir),
        "category": scene.category,
        "object": str(object_mesh) if object_mesh else "procedural",
        "texture": clip.texture,
        "frames": scene.num_frames,
        "size": [W, H],
        "seed": int(clip.seed),
        "fps": float(clip.fps),
        "fov_deg": round(scene.fov_deg, 3),
        "intrinsics": _intrinsics_record(scene.K, scene.image_size),
        "camera_distance_m": [round(float(dist.min()), 4), round(float(dist.max()), 4)],
        "view_range_deg": float(view_range_deg),
        "view_span_deg": round(scene.view_span_deg, 3),
        "frame_fill": [round(float(min(fills)), 3), round(float(np.mean(fills)), 3), round(float(max(fills)), 3)],
        "hand_pixels_mean": float(clip.hand_mask.sum((1, 2)).mean()),
        "object_pixels_mean": float(clip.obj_mask.sum((1, 2)).mean()),
        "penetration_mm": round(scene.penetration_mm, 3),
        "contacts": scene.contacts,
        "grasp_tries": scene.grasp_tries,
        "object_mesh_notes": scene.mesh_notes,
        "object_extent_m": [round(float(v), 4) for v in scene.mesh.extents],
        "noise": asdict(clip.noise),
    }


def _write_clip_stages(clip: _RenderedClip, out_dir: Path) -> None:
    """``video.mp4`` and ``boxes.json``, and the frames, masks and hand stages (committed as done)."""
    renders, hand_mask, obj_mask, fps = clip.renders, clip.hand_mask, clip.obj_mask, clip.fps
    n = clip.scene.num_frames
    W, H = clip.scene.image_size
    video = out_dir / "video.mp4"
    tmp_video = out_dir / f".video.tmp-{os.getpid()}.mp4"
    write_video(tmp_video, renders.rgb, fps=fps)
    os.replace(tmp_video, video)
    # First-frame boxes beside the clip: the masks stage picks them up when the clip is
    # run through the whole pipeline (``hoirecon run video.mp4``).
    (out_dir / "boxes.json").write_text(json.dumps(_boxes(hand_mask[0], obj_mask[0]), indent=2))

    def write_frames(d: Path) -> None:
        for t, img in enumerate(renders.rgb):
            write_png(FramesMeta.frame_path(d, t), img)
        FramesMeta(fps=float(fps), num_frames=n, original_size=(W, H), size=(W, H), stride=1,
                   source=str(video.resolve()), source_digest=file_digest(video), source_kind="video",
                   synthetic=True).save(d)

    def write_masks(d: Path) -> None:
        quality = {"source": "synth-gt", "passed": True, "track_iou": None, "per_frame_iou": None}
        MasksOutput(hand=hand_mask, obj=obj_mask, quality=quality,
                    boxes=_boxes(hand_mask[0], obj_mask[0])).save(d, disjoint=True)
        write_video(d / MasksOutput.OVERLAY_FILE,
                    (overlay_masks(f, h, o) for f, h, o in zip(renders.rgb, hand_mask, obj_mask)),
                    fps=fps)

    def write_hand(d: Path) -> None:
        init = clip.init
        HandsOutput(K=clip.scene.K.astype(np.float32), T_cam_to_hand=init["T_cam_to_hand"],
                    articulation=init["articulation"], shape=init["shape"], side="right",
                    valid=init["valid"], image_size=np.array([W, H], np.int64),
                    hand_model="anny").save(d, compressed=True)

    stage_summary = {"num_frames": n, "seed": int(clip.seed)}
    write_external_stage(out_dir, "frames", write_frames, PRODUCER, stage_summary)
    write_external_stage(out_dir, "masks", write_masks, PRODUCER, {**stage_summary, "source": "synth-gt"})
    write_external_stage(out_dir, "hand", write_hand, PRODUCER, {**stage_summary, "noise": asdict(clip.noise)})


def _write_ground_truth(clip: _RenderedClip, out_dir: Path, summary: dict, t0: float) -> None:
    """``gt/``: gt.npz, object.ply, depth.npz and info.json (``summary`` with the seconds since
    ``t0``), committed at once."""
    scene, n = clip.scene, clip.scene.num_frames
    W, H = scene.image_size
    gt_tmp = out_dir / f".gt.tmp-{os.getpid()}"
    shutil.rmtree(gt_tmp, ignore_errors=True)
    gt_tmp.mkdir()
    try:
        GroundTruth(
            K=scene.K.astype(np.float32),
            image_size=np.array([W, H], np.int64),
            T_cam_to_hand=scene.T_cam_to_hand.astype(np.float32),
            T_hand_to_obj=np.repeat(scene.T_hand_to_obj[None], n, 0).astype(np.float32),
            articulation=clip.articulation.astype(np.float32),
            wrist_rot=np.zeros((n, 3), np.float32),
            shape=scene.shape.astype(np.float32),
            side="right",
            hand_model="anny",
            category=str(scene.category),
            penetration_mm=np.float32(scene.penetration_mm),
            keypoints_cam=clip.keypoints_cam.astype(np.float32),
            keypoints_2d=clip.keypoints_2d.astype(np.float32),
            fps=np.float32(clip.fps),
            seed=np.int64(clip.seed),
            view_span_deg=np.float32(scene.view_span_deg),
            fov_deg=np.float32(scene.fov_deg),
            fov_y_deg=np.float32(_fov_y_deg(scene.K, scene.image_size)),
        ).save(gt_tmp)
        scene.mesh.export(gt_tmp / GroundTruth.MESH_FILE)
        _write_npz(gt_tmp / GroundTruth.DEPTH_FILE, depth=clip.renders.depth)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        (gt_tmp / GroundTruth.INFO_FILE).write_text(json.dumps(summary, indent=2))
        commit_dir(gt_tmp, out_dir / GroundTruth.DIR)
    except BaseException:
        shutil.rmtree(gt_tmp, ignore_errors=True)
        raise


def generate_clip(
    category: str,
    out_dir: str | Path,
    *,
    frames: int = 30,
    size: int | tuple[int, int] | str = 256,
    seed: int = 0,
    object_mesh: str | Path | None = None,
    object_size: float | None = None,
    view_range_deg: float = 90.0,
    noise: NoiseConfig = NoiseConfig(),
    fps: float = 15.0,
    grasp_cfg: GraspConfig = GraspConfig(),
    fov_deg: float | None = None,
    texture: str = "plain",
) -> dict:
    """Generate a synthetic clip with ground truth into ``out_dir`` (see the module docstring).

    Args:
        category: object category (``hoirecon.categories``; "unknown" needs ``object_mesh``).
        out_dir: output folder; its frames/masks/hand stages are replaced (as done, external).
        frames: number of frames T.
        size: frame size: N (N x N pixels), "WxH" or (W, H) (``parse_image_size``).
        seed: everything (object, grasp, camera path, appearance, noise) follows from it.
        object_mesh: a mesh file to use instead of the procedural object.
        object_size: largest extent of the object in metres (default: the family's own
            size; a mesh file keeps its own when it is a hand-held size in metres, else
            0.15 m: ``load_object_mesh``).
        view_range_deg: the viewing directions relative to the object span at most this arc.
        noise: noise of the hand initialisation written to ``hand/hands.npz``.
        fps: frame rate of video.mp4 and frames/meta.json.
        grasp_cfg: hand placement settings and the limits every clip's grasp meets.
        fov_deg: horizontal field of view in degrees (default: drawn in ``FOV_RANGE_DEG``
            from the seed). The true intrinsics are in ``gt/gt.npz`` (``K``) and
            ``gt/info.json`` (``intrinsics``).
        texture: the object's surface, one of ``TEXTURES``: "plain" or "printed" (see the
            module docstring).

    Returns:
        A JSON-able summary (also in ``gt/info.json``).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if fps <= 0:
        raise UserError(f"--fps must be positive, got {fps}")
    _check_texture(texture)
    clip = _render_clip(category, frames=frames, size=size, seed=seed, object_mesh=object_mesh,
                        object_size=object_size, view_range_deg=view_range_deg, noise=noise, fps=fps,
                        grasp_cfg=grasp_cfg, fov_deg=fov_deg, texture=texture)
    summary = _clip_summary(clip, out_dir, object_mesh, view_range_deg)
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir):
        _write_clip_stages(clip, out_dir)
        _write_ground_truth(clip, out_dir, summary, t0)
    return summary


# Files of a synthetic clip kept in an example folder (small: no PNG frames, no depth).
EXAMPLE_FILES = ("video.mp4", "boxes.json", f"{GroundTruth.DIR}/{GroundTruth.FILE}",
                 f"{GroundTruth.DIR}/{GroundTruth.MESH_FILE}", f"{GroundTruth.DIR}/{GroundTruth.INFO_FILE}")


def write_example(dest: str | Path, category: str = "mug", seed: int = 0, frames: int = 30, size: int = 256) -> dict:
    """Write a small example clip with its ground truth into ``dest`` (e.g. ``examples/mug``).

    Keeps ``EXAMPLE_FILES`` (the clip, its first-frame ``boxes.json`` beside it, so that
    ``hoirecon run dest/video.mp4 --category mug`` needs no detector, and the ground truth
    for ``hoirecon eval``) plus the GT masks ``masks/hand``, ``masks/object`` (usable with
    ``--masks-dir``). The PNG frames and the depth maps are left out to keep it small;
    ``generate_clip`` with the same arguments reproduces them.

    Returns:
        {"dest": str, "bytes": total size, "files": {relative path: bytes}}.
    """
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        generate_clip(category, tmp, frames=frames, size=size, seed=seed)
        src = Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        for rel in EXAMPLE_FILES:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
        for kind in ("hand", "object"):
            shutil.rmtree(dest / "masks" / kind, ignore_errors=True)
            shutil.copytree(src / "masks" / kind, dest / "masks" / kind)
    files = {p.relative_to(dest).as_posix(): p.stat().st_size for p in sorted(dest.rglob("*")) if p.is_file()}
    return {"dest": str(dest), "bytes": sum(files.values()), "files": files}
