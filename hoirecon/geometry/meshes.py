"""Small helpers on triangle meshes (trimesh)."""

from __future__ import annotations

import trimesh


def largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The connected component with the most faces (floaters dropped); ``mesh`` itself when it
    has only one."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    return max(parts, key=lambda m: len(m.faces))
