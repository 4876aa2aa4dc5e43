"""Marching-cubes extraction of the object surface (object frame, metres).

The SDF is sampled on a cube [-radius, radius]^3 (``resolution`` nodes per side), meshed at
level 0 with PyMCubes and oriented outward (positive signed volume).

Which connected components are the object: ``seen_components`` keeps those the masks see.
Keeping only the largest one (fit stage version 5 and before) dropped whole parts of real objects:
where the fit thins a neck between two parts (a gimbal's head and its body in the grasp),
the level set falls apart into pieces of similar size, and the one dropped was the part
the user could see in every frame (docs/experiments.md).
"""

from __future__ import annotations

from collections.abc import Callable

import mcubes
import numpy as np
import torch
import trimesh

from hoirecon.errors import RunError
from hoirecon.geometry.meshes import largest_component as keep_largest_component
from hoirecon.geometry.transforms import transform_points
from hoirecon.render.camera import project_points


@torch.no_grad()
def sample_sdf_grid(sdf_fn: Callable[[torch.Tensor], torch.Tensor], radius: float, resolution: int,
                    device: str | torch.device = "cpu", chunk: int = 262144) -> np.ndarray:
    """SDF on the nodes of the cube [-radius, radius]^3.

    Args:
        sdf_fn: x (N, 3) -> sdf (N,) (metres, object frame).
    Returns:
        (R, R, R) float32 array indexed [x, y, z].
    """
    lin = torch.linspace(-radius, radius, resolution, device=device)
    x, y, z = torch.meshgrid(lin, lin, lin, indexing="ij")
    pts = torch.stack([x, y, z], -1).reshape(-1, 3)
    vals = torch.cat([sdf_fn(pts[i:i + chunk]).reshape(-1) for i in range(0, pts.shape[0], chunk)])
    return vals.reshape(resolution, resolution, resolution).float().cpu().numpy()


def extract_mesh(sdf_fn: Callable[[torch.Tensor], torch.Tensor], radius: float, resolution: int = 128,
                 device: str | torch.device = "cpu", largest_component: bool = True) -> trimesh.Trimesh:
    """Zero level set of an SDF as a watertight-ish triangle mesh.

    Args:
        sdf_fn: x (N, 3) -> sdf (N,), negative inside (metres, object frame).
        radius: half side of the sampled cube (m). resolution: nodes per side.
        largest_component: keep only the largest connected component.
    Returns:
        trimesh.Trimesh in the object frame (m), faces wound outward.
    Raises:
        RunError when the level set is empty (the SDF has no inside within the cube).
    """
    vals = sample_sdf_grid(sdf_fn, radius, resolution, device)
    if not (vals.min() < 0 < vals.max()):
        raise RunError("the fitted object SDF has no surface inside its bounding box; the fit failed")
    # A positive border closes the surface where the object reaches the cube's faces, so that
    # every component is watertight (an open one has no volume to weigh it by).
    vals = np.pad(vals, 1, constant_values=float(vals.max()))
    # PyMCubes treats values above the iso level as inside.
    verts, faces = mcubes.marching_cubes(-vals.astype(np.float64), 0.0)
    verts = (verts - 1.0) * (2.0 * radius / (resolution - 1)) - radius
    mesh = trimesh.Trimesh(verts, faces.astype(np.int64), process=True)
    if largest_component:
        mesh = keep_largest_component(mesh)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def points_on_masks(points_obj: torch.Tensor, K: torch.Tensor, T_cam_to_obj: torch.Tensor, masks: torch.Tensor,
                    dilate_px: int = 0, frames_per_chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Where object-frame points land on per-frame masks.

    Args:
        points_obj: (N, 3) points in the object frame (m).
        K: (3, 3). T_cam_to_obj: (T, 4, 4) maps camera points to the object frame.
        masks: (T, H, W) bool.
        dilate_px: ``masks`` grow by this many pixels first.
        frames_per_chunk: frames projected at once (memory: chunk x N x 3 floats).
    Returns:
        on, inside: (T, N) bool. inside: in front of the camera and inside the image; on:
        inside and on a mask pixel.
    """
    T, H, W = masks.shape
    dev = points_obj.device
    if dilate_px > 0:
        k = 2 * dilate_px + 1
        masks = torch.nn.functional.max_pool2d(masks.float()[:, None], k, 1, dilate_px)[:, 0] > 0
    masks = masks.to(dev)
    T_obj_to_cam = torch.linalg.inv(T_cam_to_obj.double()).float().to(dev)
    K = K.float().to(dev)
    on, inside = [], []
    for f0 in range(0, T, frames_per_chunk):
        f = torch.arange(f0, min(T, f0 + frames_per_chunk), device=dev)
        pts_cam = transform_points(T_obj_to_cam[f], points_obj.float()[None].expand(len(f), -1, -1))
        pix = project_points(pts_cam, K[None].expand(len(f), -1, -1)).round().long()
        ins = (pts_cam[..., 2] > 0) & (pix[..., 0] >= 0) & (pix[..., 0] < W) & (pix[..., 1] >= 0) & (pix[..., 1] < H)
        u, v = pix[..., 0].clamp(0, W - 1), pix[..., 1].clamp(0, H - 1)
        on.append(masks[f[:, None], v, u] & ins)
        inside.append(ins)
    return torch.cat(on), torch.cat(inside)


def mask_share_per_point(points_obj: torch.Tensor, K: torch.Tensor, T_cam_to_obj: torch.Tensor,
                         masks: torch.Tensor) -> torch.Tensor:
    """(N,) share of the frames that see each point (``points_on_masks``' inside) in which it
    lands on ``masks``; 0 for a point no frame sees. Arguments as ``points_on_masks``."""
    on, inside = points_on_masks(points_obj, K, T_cam_to_obj, masks)
    return on.float().sum(0) / inside.float().sum(0).clamp_min(1)


def mask_support(points_obj: torch.Tensor, K: torch.Tensor, T_cam_to_obj: torch.Tensor,
                 support: torch.Tensor, min_inside: float = 0.5, dilate_px: int = 2) -> float:
    """Share of the points that land on ``support`` pixels, averaged over the frames that see them.

    Args:
        points_obj: (N, 3) points in the object frame (m).
        K: (3, 3). T_cam_to_obj: (T, 4, 4) maps camera points to the object frame.
        support: (T, H, W) bool, where the object may be (its mask, or the hand's in front of it).
        min_inside: a frame counts when at least this share of the points project in front of
            the camera and inside the image.
        dilate_px: ``support`` grows by this many pixels first (a surface's vertices lie on its
            silhouette's edge, which a mask traces only to a pixel or two).
    Returns:
        mean over the counted frames of the share on support (0 when no frame counts).
    """
    on, inside = points_on_masks(points_obj, K, T_cam_to_obj, support, dilate_px)
    counted = inside.float().mean(1) >= min_inside
    if not counted.any():
        return 0.0
    share = on.float().sum(1) / inside.float().sum(1).clamp_min(1)
    return float(share[counted].mean())


def seen_components(mesh: trimesh.Trimesh, K: torch.Tensor, T_cam_to_obj: torch.Tensor, support: torch.Tensor,
                    min_support: float = 0.5, min_volume: float = 0.2,
                    silhouettes: torch.Tensor | None = None) -> trimesh.Trimesh:
    """The connected components of ``mesh`` that are the object: the largest part, where its
    vertices land on ``silhouettes`` (default ``support``) at least ``min_support`` of the time
    (see ``mask_support``), and every closed part that lands on ``support`` that often and is at
    least ``min_volume`` x the largest such part. Floaters in front of the background and small
    pieces are dropped: a misplaced fit can put a small blob on the masks (a synthetic toy car's
    11 % piece did, and cost F@10 0.07), while the parts a thinned neck splits apart are of
    similar size (a gimbal's body: 88 % of its head). The seen parts are weighed against each
    other, not against the largest part: with the prior, a real clip's fit grew a blob 6x the
    gimbal's body, landing on the object masks a quarter of the time and on the hand the rest, and
    the body was dropped beside it (osmo_pocket, session 13). Where no part qualifies, the largest part is the object.

    Args:
        mesh: object-frame mesh (m). K, T_cam_to_obj, support: as ``mask_support`` (the object
            masks). silhouettes: (T, H, W) bool, where the object may be without being seen
            (the object masks with the hand's: a part behind the fingers).
    Returns:
        the kept components as one mesh (``mesh`` itself when it has one component).
    """
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    volume = np.array([abs(p.volume) if p.is_watertight else 0.0 for p in parts])
    size = volume if volume.max() > 0 else np.array([len(p.faces) for p in parts], float)
    largest = int(np.argmax(size))

    def lands_on(part: trimesh.Trimesh, where: torch.Tensor) -> bool:
        verts = torch.as_tensor(np.asarray(part.vertices), dtype=torch.float32)
        return mask_support(verts, K, T_cam_to_obj, where) >= min_support

    seen = np.array([size[i] > 0 and lands_on(p, support) for i, p in enumerate(parts)])
    keep = {largest} if lands_on(parts[largest], support if silhouettes is None else silhouettes) else set()
    if seen.any():
        keep |= {i for i in np.nonzero(seen)[0] if size[i] >= min_volume * size[seen].max()}
    keep = sorted(keep) or [largest]
    return parts[keep[0]] if len(keep) == 1 else trimesh.util.concatenate([parts[i] for i in keep])


def object_mesh(sdf_fn: Callable[[torch.Tensor], torch.Tensor], radius: float, resolution: int,
                K: torch.Tensor, T_cam_to_obj: torch.Tensor, obj_masks: torch.Tensor,
                device: str | torch.device = "cpu", hand_masks: torch.Tensor | None = None) -> trimesh.Trimesh:
    """The fitted object's surface: ``extract_mesh`` and then ``seen_components`` against the
    object masks (a part that only ever lies behind the hand is not evidence of the object,
    unless it is the largest part: the object itself, mostly in the hand).

    Args:
        sdf_fn, radius, resolution, device: as ``extract_mesh``.
        K: (3, 3). T_cam_to_obj: (T, 4, 4) fitted cameras. obj_masks, hand_masks: (T, H, W) bool
            (no hand masks: the largest part must be seen on the object masks too).
    """
    mesh = extract_mesh(sdf_fn, radius, resolution, device, largest_component=False)
    silhouettes = None if hand_masks is None else (obj_masks | hand_masks).cpu()
    return seen_components(mesh, K.cpu(), T_cam_to_obj.cpu(), obj_masks.cpu(), silhouettes=silhouettes)
