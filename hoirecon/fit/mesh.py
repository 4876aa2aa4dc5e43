"""Marching-cubes extraction of the object surface (object frame, metres).

The SDF is sampled on a cube [-radius, radius]^3 (``resolution`` nodes per side), meshed at
level 0 with PyMCubes, oriented outward (positive signed volume), and reduced to its
largest connected component (floaters left by unobserved space are dropped).
"""

from __future__ import annotations

from collections.abc import Callable

import mcubes
import numpy as np
import torch
import trimesh

from hoirecon.errors import RunError
from hoirecon.geometry.meshes import largest_component as keep_largest_component


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
    # PyMCubes treats values above the iso level as inside.
    verts, faces = mcubes.marching_cubes(-vals.astype(np.float64), 0.0)
    verts = verts * (2.0 * radius / (resolution - 1)) - radius
    mesh = trimesh.Trimesh(verts, faces.astype(np.int64), process=True)
    if largest_component:
        mesh = keep_largest_component(mesh)
    if mesh.volume < 0:
        mesh.invert()
    return mesh
