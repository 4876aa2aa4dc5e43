"""Synthetic data: procedural objects of the paper's categories (and, later, scenes)."""

from hoirecon.synth.objects import (
    CATEGORIES,
    GraspRegion,
    LoadedMesh,
    ObjectInfo,
    load_object_mesh,
    make_object,
    make_object_info,
    object_sdf,
    sample_object_params,
)

__all__ = [
    "CATEGORIES",
    "GraspRegion",
    "LoadedMesh",
    "ObjectInfo",
    "load_object_mesh",
    "make_object",
    "make_object_info",
    "object_sdf",
    "sample_object_params",
]
