"""Differentiable rendering: pinhole camera, soft mesh rasterizer, SDF volume renderer, blending.

Conventions: metres, OpenCV camera frame (x right, y down, z forward), intrinsics K (B, 3, 3)
in pixels, pixel centres at integer coordinates. Renderers return a soft mask plus surface
values (depth, normal, attributes) that are not multiplied by the mask and are 0 where
nothing is hit.
"""

from hoirecon.render.blend import hard_blend_masks, normalized_nearness, soft_blend_masks
from hoirecon.render.camera import (
    make_intrinsics,
    pixel_directions,
    pixel_grid,
    pixel_rays,
    project_points,
    ray_t_to_camera_z,
    unproject_points,
)
from hoirecon.render.mesh import (
    MeshImageOutput,
    MeshPixelOutput,
    MeshRenderConfig,
    render_mesh_image,
    render_mesh_pixels,
    vertex_normals,
)
from hoirecon.render.volume import (
    LaplaceDensity,
    VolumeRenderConfig,
    VolumeRenderOutput,
    interval_optical_depth,
    laplace_cdf,
    laplace_density,
    ray_sphere_bounds,
    render_sdf_volume,
    sdf_with_gradient,
)

__all__ = [
    "LaplaceDensity",
    "MeshImageOutput",
    "MeshPixelOutput",
    "MeshRenderConfig",
    "VolumeRenderConfig",
    "VolumeRenderOutput",
    "hard_blend_masks",
    "interval_optical_depth",
    "laplace_cdf",
    "laplace_density",
    "make_intrinsics",
    "normalized_nearness",
    "pixel_directions",
    "pixel_grid",
    "pixel_rays",
    "project_points",
    "ray_sphere_bounds",
    "ray_t_to_camera_z",
    "render_mesh_image",
    "render_mesh_pixels",
    "render_sdf_volume",
    "sdf_with_gradient",
    "soft_blend_masks",
    "unproject_points",
    "vertex_normals",
]
