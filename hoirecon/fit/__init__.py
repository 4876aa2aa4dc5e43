"""HOI scene optimisation (DiffHOI without the diffusion prior): object SDF + hand + poses.

Modules: ``sdf`` (object SDF representations), ``scene`` (the scene, rendering, save/load,
``load_object_sdf``), ``losses``, ``init`` (object centre, radius, visual hull),
``optimize`` (the loop), ``mesh`` (marching cubes).
"""

from hoirecon.fit.scene import HOIScene, load_object_sdf

__all__ = ["HOIScene", "load_object_sdf"]
