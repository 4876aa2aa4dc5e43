"""Meshes of the export stage: the object mesh, per-frame hand meshes, files.

Frames (``T_a_to_b`` maps points of frame a into frame b, metres, OpenCV camera axes):

- object frame: where the fitted SDF lives; the object mesh is always written in it.
- hand frame: the hand model's output with ``wrist_rot = 0`` and no translation (the wrist
  rotation is folded into ``T_cam_to_hand``, as in the fit stage).
- world frame of the exported clip: the object frame (default) or the first frame's
  camera frame; both are static frames in which the object does not move:
  ``T_obj_to_world`` is the identity or ``inv(T_cam_to_obj^0)``.

Rigid transforms (inverse, applying one to points): ``hoirecon.geometry.transforms``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh

from hoirecon.errors import RunError, UserError
from hoirecon.stages.outputs import FitOutput

MESH_FORMATS = ("glb", "obj", "ply")


def object_mesh_from_fit(fit_dir: Path, resolution: int | None, device: str | torch.device = "cpu",
                         T_cam_to_obj: torch.Tensor | None = None, obj_masks: np.ndarray | None = None,
                         K: torch.Tensor | None = None,
                         hand_masks: np.ndarray | None = None) -> tuple[trimesh.Trimesh, str]:
    """The object surface of a finished fit (object frame, metres): the parts the masks see.

    Args:
        fit_dir: ``<out>/fit``.
        resolution: marching-cubes nodes per side to re-extract the surface from the fitted SDF
            (``scene.pt``), keeping the parts that the fitted cameras ``T_cam_to_obj`` (T, 4, 4)
            and intrinsics ``K`` (3, 3) see on ``obj_masks`` (T, H, W) bool (``hand_masks``: where
            the largest part may hide; ``hoirecon.fit.mesh.seen_components``); None reuses the
            fit's ``object.ply`` (whose parts the fit chose the same way).
        device: where the SDF is evaluated.
    Returns:
        (mesh with outward faces, source description).
    """
    fit_dir = Path(fit_dir)
    if resolution is not None:
        if not (fit_dir / FitOutput.SCENE).is_file():
            raise UserError(f"--resolution needs the fitted SDF {fit_dir / FitOutput.SCENE}, which is missing; "
                            f"rerun `hoirecon fit` or export without --resolution (uses object.ply)")
        from hoirecon.fit.mesh import object_mesh
        from hoirecon.fit.scene import load_object_sdf

        sdf_fn = load_object_sdf(fit_dir / FitOutput.SCENE, device)
        mesh = object_mesh(sdf_fn, float(sdf_fn.radius), int(resolution), K, T_cam_to_obj,
                           torch.as_tensor(obj_masks), device,
                           hand_masks=None if hand_masks is None else torch.as_tensor(hand_masks))
        source = f"scene.pt marching cubes at {int(resolution)}^3"
    else:
        path = fit_dir / FitOutput.MESH
        if not path.is_file():
            raise UserError(f"no object mesh at {path}; run `hoirecon fit` first")
        try:
            mesh = trimesh.load(path, file_type="ply", process=False, force="mesh")
        except (ValueError, OSError, KeyError) as err:
            raise UserError(f"cannot read object mesh {path}: {err}") from None
        source = "fit/object.ply"
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise RunError(f"the fitted object mesh ({source}) is empty; the fit failed")
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    return mesh, source


@torch.no_grad()
def hand_meshes_hand_frame(hand_model, articulation: torch.Tensor, shape: torch.Tensor, side: str,
                           chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame hand meshes in the hand frame (``wrist_rot = 0``, no translation).

    Args:
        hand_model: a ``hoirecon.hand.HandModel``.
        articulation: (T, 45). shape: (10,). side: 'right' | 'left'.
        chunk: frames per forward call (bounds memory on long clips).
    Returns:
        verts (T, V, 3) and faces (F, 3) int64 (outward winding for ``side``).
    """
    verts, faces = [], None
    for s in range(0, articulation.shape[0], chunk):
        art = articulation[s:s + chunk]
        out = hand_model(art, torch.zeros(art.shape[0], 3, dtype=art.dtype, device=art.device),
                         shape.reshape(1, -1), None, side=side)
        verts.append(out.verts)
        faces = out.faces
    return torch.cat(verts), faces


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray) -> Path:
    """Write a triangle mesh; the format follows the suffix (.obj, .ply, .glb).

    Args:
        verts: (V, 3) metres. faces: (F, 3) int.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise UserError(f"unknown mesh format '{fmt}': choose one of {', '.join(MESH_FORMATS)}")
    mesh = trimesh.Trimesh(np.asarray(verts, np.float64), np.asarray(faces, np.int64), process=False)
    if fmt == "obj":
        # Vertex normals make smooth shading in viewers; no material file for a bare mesh.
        data = trimesh.exchange.obj.export_obj(mesh, include_normals=True, include_texture=False,
                                               write_texture=False, header=None)
        path.write_text(data)
    else:
        mesh.export(path, file_type=fmt)
    return path
