"""Export of a fitted hand-object clip: meshes, animated glTF, pictures.

Modules: ``meshes`` (object mesh, per-frame hand meshes, rigid transforms, mesh files),
``gltf`` (the animated ``.glb`` writer), ``views`` (turntable, side-by-side video frames,
summary page). The cached stage is ``hoirecon.stages.export``.
"""

from hoirecon.export.gltf import write_animated_glb
from hoirecon.export.meshes import hand_meshes_hand_frame, object_mesh_from_fit, write_mesh

__all__ = ["write_animated_glb", "hand_meshes_hand_frame", "object_mesh_from_fit", "write_mesh"]
