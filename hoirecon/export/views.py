"""Pictures of a reconstruction: turntable, side-by-side video frames, one-page summary.

Rendering uses the exact hard z-buffer of ``hoirecon.render.raster`` (no gradients needed
here): on this CPU it renders a 256 px view of a 40k-face object plus the hand about 4x
faster than the soft rasterizer of ``hoirecon.render.mesh``, whose soft band also blurs
silhouettes. Edges are anti-aliased by supersampling (``ssaa``). Shading: Lambert with a
light near the camera (two-sided, since the hand mesh is open at the wrist), flat
material colours (hand skin, object blue) matching the glb's materials.

All geometry is given in the object frame (metres); cameras are ``T_obj_to_cam`` (B, 4, 4)
with OpenCV axes and pixel intrinsics ``K`` (B, 3, 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hoirecon.export.gltf import OBJECT, SKIN
from hoirecon.geometry.transforms import invert_rigid
from hoirecon.render.camera import make_intrinsics
from hoirecon.render.mesh import vertex_normals
from hoirecon.render.raster import interpolate, rasterize

HAND_RGB = np.array(SKIN.base_color[:3], np.float32)
OBJECT_RGB = np.array(OBJECT.base_color[:3], np.float32)
# Direction from the surface towards the light, camera frame: above-left of the camera.
_LIGHT = np.array([-0.35, -0.5, -1.0]) / np.linalg.norm([-0.35, -0.5, -1.0])


@dataclass
class Rendered:
    """Renderings of a batch of views.

    rgb: (B, H, W, 3) float in [0, 1] (black background). alpha: (B, H, W) coverage in [0, 1].
    part: (B, H, W) int64: 0 background, 1 hand, 2 object (at the pixel centre).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    part: np.ndarray


@dataclass
class ClipGeometry:
    """What the pictures show, in the object frame.

    object_verts: (Vo, 3); object_faces: (Fo, 3) int64.
    hand_verts: (T, Vh, 3) hand mesh of each exported frame; hand_faces: (Fh, 3).
    T_cam_to_obj: (T, 4, 4) input camera of each exported frame; K: (3, 3); image_size (W, H).
    object_closed: the object mesh is watertight (its back faces can be culled).
    """

    object_verts: torch.Tensor
    object_faces: torch.Tensor
    hand_verts: torch.Tensor
    hand_faces: torch.Tensor
    T_cam_to_obj: torch.Tensor
    K: torch.Tensor
    image_size: tuple[int, int]
    object_closed: bool = False

    @property
    def up(self) -> torch.Tensor:
        """(3,) the first camera's up direction (-y) in the object frame."""
        return -self.T_cam_to_obj[0, :3, 1]

    @property
    def forward(self) -> torch.Tensor:
        """(3,) the first camera's viewing direction (+z) in the object frame."""
        return self.T_cam_to_obj[0, :3, 2]


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Cameras at ``eye`` looking at ``target`` with ``up`` pointing up in the image.

    Args:
        eye: (B, 3). target: (3,) or (B, 3). up: (3,). All in the world frame.
    Returns:
        T_world_to_cam: (B, 4, 4), OpenCV axes (x right, y down, z towards the target).
    """
    z = F.normalize(target - eye, dim=-1)
    down = -up.expand_as(z)
    y = down - (down * z).sum(-1, keepdim=True) * z
    # Looking straight along up: any perpendicular "down" will do.
    alt = torch.linalg.cross(z, torch.tensor([1.0, 0.0, 0.0], dtype=z.dtype, device=z.device).expand_as(z))
    y = torch.where(y.norm(dim=-1, keepdim=True) < 1e-6, alt, y)
    y = F.normalize(y, dim=-1)
    x = torch.linalg.cross(y, z, dim=-1)
    R = torch.stack([x, y, z], dim=-2)  # rows = camera axes in world coordinates
    T = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    T[:, :3, :3] = R
    T[:, :3, 3] = -(R @ eye[..., None])[..., 0]
    T[:, 3, 3] = 1.0
    return T


def rotate_about_axis(v: torch.Tensor, axis: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation of one vector by several angles.

    Args:
        v: (3,). axis: (3,) (normalised here). angles: (N,) radians.
    Returns:
        (N, 3).
    """
    # Rotates the vector directly (torch, float32, batched angles): the exported pictures' cameras
    # stay bit-identical, which building matrices with geometry.rotations would not keep.
    k = F.normalize(axis, dim=0)
    c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    return v * c + torch.linalg.cross(k.expand(len(angles), 3), v.expand(len(angles), 3), dim=-1) * s \
        + k * (k @ v) * (1 - c)


def square_intrinsics(size: int, fov_deg: float, batch: int, device=None) -> torch.Tensor:
    """(batch, 3, 3) pinhole intrinsics of a square ``size`` image with field of view ``fov_deg``."""
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    c = (size - 1) / 2.0
    return make_intrinsics(f, f, c, c, batch, device=device)


def scale_intrinsics(K: torch.Tensor, scale: float) -> torch.Tensor:
    """Intrinsics of the same camera on an image resized by ``scale`` (pixel centres at integers).

    Args:
        K: (..., 3, 3). Returns: (..., 3, 3).
    """
    S = K.clone()
    S[..., :2, :2] *= scale
    S[..., :2, 2] = (K[..., :2, 2] + 0.5) * scale - 0.5
    return S


def orbit_distance(radius: float, fov_deg: float, margin: float = 1.15) -> float:
    """Camera distance at which a sphere of ``radius`` fills a view of ``fov_deg`` (with margin)."""
    return margin * radius / math.sin(math.radians(fov_deg) / 2)


def bounding_sphere(points: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Centre of the bounding box and the radius around it. points: (N, 3) -> ((3,), r)."""
    center = 0.5 * (points.amin(0) + points.amax(0))
    return center, float((points - center).norm(dim=-1).max())


@torch.no_grad()
def render_parts(hand_verts: torch.Tensor, hand_faces: torch.Tensor, object_verts: torch.Tensor,
                 object_faces: torch.Tensor, T_obj_to_cam: torch.Tensor, K: torch.Tensor, *, height: int, width: int,
                 ssaa: int = 2, cull_object_backfaces: bool = False) -> Rendered:
    """Shaded renderings of hand + object, one view at a time.

    Args:
        hand_verts: (B, Vh, 3) object frame. hand_faces: (Fh, 3).
        object_verts: (Vo, 3) object frame. object_faces: (Fo, 3) wound outward.
        T_obj_to_cam: (B, 4, 4). K: (B, 3, 3) for an image of (height, width).
        ssaa: supersampling factor per side (1 = none).
        cull_object_backfaces: drop object faces turned away from the camera before
            rasterizing (exact for a closed mesh, and about halves the work).
    Returns:
        Rendered with arrays of shape (B, height, width[, 3]).
    """
    B = T_obj_to_cam.shape[0]
    dev, dtype = hand_verts.device, hand_verts.dtype
    Vh = hand_verts.shape[1]
    hand_faces = hand_faces.to(dev).long()
    object_faces = object_faces.to(dev).long()
    object_verts = object_verts.to(hand_verts)
    # The object is rigid: its normals are computed once and rotated with it.
    object_normals = vertex_normals(object_verts[None], object_faces)[0]
    R, t = T_obj_to_cam[:, :3, :3], T_obj_to_cam[:, :3, 3]
    hand_cam = hand_verts @ R.transpose(-1, -2) + t[:, None]
    hand_normals = vertex_normals(hand_cam, hand_faces)
    Ks = scale_intrinsics(K, float(ssaa)) if ssaa > 1 else K
    Hs, Ws = height * ssaa, width * ssaa
    light = torch.as_tensor(_LIGHT, dtype=dtype, device=dev)
    colours = torch.stack([torch.as_tensor(HAND_RGB, device=dev), torch.as_tensor(OBJECT_RGB, device=dev)])
    rgb_all, alpha_all, part_all = [], [], []
    for b in range(B):
        obj_cam = object_verts @ R[b].T + t[b]
        faces_o = object_faces
        if cull_object_backfaces:
            v0, v1, v2 = (obj_cam[object_faces[:, k]] for k in range(3))
            facing = (torch.linalg.cross(v1 - v0, v2 - v0, dim=-1) * v0).sum(-1) < 0
            faces_o = object_faces[facing]
        verts = torch.cat([hand_cam[b], obj_cam])[None]
        faces = torch.cat([hand_faces, faces_o + Vh])
        raster = rasterize(verts, faces, Ks[b:b + 1], Hs, Ws)
        normals = torch.cat([hand_normals[b], object_normals @ R[b].T])
        n = F.normalize(interpolate(normals, faces, raster)[0], dim=-1, eps=1e-12)  # (Hs, Ws, 3)
        covered = raster.covered[0]
        is_object = (raster.face_index[0] >= len(hand_faces)).long()
        lambert = (n @ light).abs()  # two-sided: the hand mesh is open at the wrist
        rgb = colours[is_object] * (0.28 + 0.72 * lambert[..., None]) * covered[..., None]
        rgb_all.append(rgb)
        alpha_all.append(covered.to(dtype))
        part_all.append(torch.where(covered, 1 + is_object, 0))
    rgb, alpha, part = torch.stack(rgb_all), torch.stack(alpha_all), torch.stack(part_all)
    if ssaa > 1:
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), ssaa).permute(0, 2, 3, 1)
        alpha = F.avg_pool2d(alpha[:, None], ssaa)[:, 0]
        part = part[:, ssaa // 2::ssaa, ssaa // 2::ssaa]
    return Rendered(rgb.clamp(0, 1).cpu().numpy(), alpha.cpu().numpy(), part.cpu().numpy())


def _batched_render(hand_verts: torch.Tensor, geom: ClipGeometry, T_obj_to_cam: torch.Tensor, K: torch.Tensor,
                    *, height: int, width: int, ssaa: int, batch: int) -> Rendered:
    outs = [render_parts(hand_verts[s:s + batch], geom.hand_faces, geom.object_verts, geom.object_faces,
                         T_obj_to_cam[s:s + batch], K[s:s + batch], height=height, width=width, ssaa=ssaa,
                         cull_object_backfaces=geom.object_closed)
            for s in range(0, T_obj_to_cam.shape[0], batch)]
    return Rendered(*(np.concatenate([getattr(o, f) for o in outs]) for f in ("rgb", "alpha", "part")))


def to_uint8(rgb: np.ndarray, alpha: np.ndarray, background: float = 1.0) -> np.ndarray:
    """(H, W, 3) premultiplied colour + (H, W) coverage over a grey level -> (H, W, 3) uint8."""
    out = rgb + (1.0 - alpha[..., None]) * background
    return (out.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def overlay(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, opacity: float = 0.7) -> np.ndarray:
    """Blend a rendering onto an input frame: (H, W, 3) uint8, (H, W, 3) float, (H, W) -> uint8."""
    a = opacity * alpha[..., None]
    out = frame.astype(np.float32) / 255.0 * (1 - a) + opacity * rgb
    return (out.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def put_label(image: np.ndarray, text: str, scale: float = 0.4) -> np.ndarray:
    """Write ``text`` in white on a dark box in the top-left corner (in place). Returns the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 6), (30, 30, 30), -1)
    cv2.putText(image, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def turntable(geom: ClipGeometry, frame: int, *, views: int = 36, size: int = 256, fov_deg: float = 35.0,
              ssaa: int = 2, batch: int = 6) -> list[np.ndarray]:
    """Hand + object of exported frame ``frame`` seen from ``views`` cameras around them.

    The cameras turn about the first input camera's up axis through the centre of the
    hand + object, starting from the input camera's viewing direction.

    Returns:
        ``views`` (size, size, 3) uint8 images (white background).
    """
    hand = geom.hand_verts[frame]
    center, radius = bounding_sphere(torch.cat([geom.object_verts.to(hand), hand]))
    dist = orbit_distance(radius, fov_deg)
    angles = torch.arange(views, dtype=torch.float32, device=hand.device) * (2 * math.pi / views)
    eyes = center + rotate_about_axis(-dist * geom.forward.to(hand), geom.up.to(hand), angles)
    T = look_at(eyes, center, geom.up.to(hand))
    K = square_intrinsics(size, fov_deg, views, hand.device)
    r = _batched_render(hand[None].expand(views, -1, -1), geom, T, K, height=size, width=size, ssaa=ssaa, batch=batch)
    return [to_uint8(r.rgb[i], r.alpha[i]) for i in range(views)]


def novel_camera(geom: ClipGeometry, degrees: float, size: int, fov_deg: float = 35.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed camera turned by ``degrees`` about the up axis from the first input view, framing
    the object and the hand of every exported frame.

    Returns:
        T_obj_to_cam (1, 4, 4), K (1, 3, 3) for a square image of ``size``.
    """
    pts = torch.cat([geom.object_verts, geom.hand_verts.reshape(-1, 3)])
    center, radius = bounding_sphere(pts)
    dist = orbit_distance(radius, fov_deg)
    eye = center + rotate_about_axis(-dist * geom.forward, geom.up,
                                     torch.tensor([math.radians(degrees)], device=pts.device))
    return look_at(eye, center, geom.up), square_intrinsics(size, fov_deg, 1, pts.device)


def scaled_size(image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(w, h) of an image of ``image_size`` (W, H) resized by ``scale`` (at least 2 px)."""
    W, H = image_size
    return max(2, int(round(W * scale))), max(2, int(round(H * scale)))


def input_views(geom: ClipGeometry, scale: float, ssaa: int = 2, index: list[int] | None = None,
                batch: int = 6) -> tuple[Rendered, tuple[int, int]]:
    """The reconstruction of exported frames seen from their input cameras.

    Args:
        scale: image scale relative to the working frames (<= 1 shrinks).
        index: positions among the exported frames to render (default all: N = T).
    Returns:
        Rendered (N, h, w, ...) and (w, h).
    """
    idx = torch.as_tensor(range(geom.hand_verts.shape[0]) if index is None else index, dtype=torch.long)
    w, h = scaled_size(geom.image_size, scale)
    T_obj_to_cam = invert_rigid(geom.T_cam_to_obj[idx])
    K = scale_intrinsics(geom.K.expand(len(idx), 3, 3), w / geom.image_size[0])
    rendered = _batched_render(geom.hand_verts[idx], geom, T_obj_to_cam, K, height=h, width=w, ssaa=ssaa, batch=batch)
    return rendered, (w, h)


def novel_views(geom: ClipGeometry, degrees: float, size: int, ssaa: int = 2, index: list[int] | None = None,
                batch: int = 6) -> Rendered:
    """Exported frames (``index``, default all) from one fixed novel camera (``novel_camera``):
    (N, size, size, ...)."""
    idx = torch.as_tensor(range(geom.hand_verts.shape[0]) if index is None else index, dtype=torch.long)
    cam, K = novel_camera(geom, degrees, size)
    n = len(idx)
    return _batched_render(geom.hand_verts[idx], geom, cam.expand(n, 4, 4), K.expand(n, 3, 3), height=size,
                           width=size, ssaa=ssaa, batch=batch)


def side_by_side_frame(frame: np.ndarray, recon_rgb: np.ndarray, recon_alpha: np.ndarray,
                       novel: np.ndarray, labels: bool = True) -> np.ndarray:
    """input | reconstruction over the input | novel view, one row (uint8, heights padded to match).

    Args:
        frame: (h, w, 3) uint8 input at the panel size. recon_rgb, recon_alpha: its rendering.
        novel: (s, s, 3) uint8 novel view.
    """
    panels = [frame.copy(), overlay(frame, recon_rgb, recon_alpha), novel.copy()]
    if labels:
        for p, text in zip(panels, ("input", "reconstruction", "novel view")):
            put_label(p, text)
    h = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(panels, 1)


def text_panel(lines: list[str], width: int, line_height: int = 18, scale: float = 0.45) -> np.ndarray:
    """White (n*line_height + pad, width, 3) uint8 panel with one line of black text per entry."""
    img = np.full((line_height * len(lines) + 12, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (8, 6 + line_height * (i + 1) - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (20, 20, 20), 1, cv2.LINE_AA)
    return img


def text_width(lines: list[str], scale: float = 0.45) -> int:
    """Pixels needed by the longest line in ``text_panel`` (margins included)."""
    return max((cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines), default=0) + 16


def contact_sheet(rows: list[list[np.ndarray]], header: list[str], tile_height: int | None = None,
                  gap: int = 4) -> np.ndarray:
    """A page: the header text, then rows of image tiles resized to a common height.

    Args:
        rows: rows of (h, w, 3) uint8 tiles.
        header: text lines above the tiles.
        tile_height: height of every tile (default: the tallest tile's).
    Returns:
        (H, W, 3) uint8, white background.
    """
    tile_h = tile_height or max(t.shape[0] for row in rows for t in row)

    def fit(t: np.ndarray) -> np.ndarray:
        if t.shape[0] == tile_h:
            return t
        interp = cv2.INTER_AREA if t.shape[0] > tile_h else cv2.INTER_LINEAR
        return cv2.resize(t, (max(1, round(t.shape[1] * tile_h / t.shape[0])), tile_h), interpolation=interp)

    built = []
    for row in rows:
        parts = []
        for t in row:
            parts += [fit(t), np.full((tile_h, gap, 3), 255, np.uint8)]
        built.append(np.concatenate(parts[:-1], 1))
    width = max([r.shape[1] for r in built] + [text_width(header)])
    built = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in built]
    return np.concatenate([text_panel(header, width)] + built, 0)
