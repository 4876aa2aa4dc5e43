"""Geometry renderings of a hand-object pair, as the diffusion prior sees them.

One encoding, shared by the training data (``hoirecon.prior.data``) and score distillation
(``hoirecon.prior.sds``), so that what the prior is asked to denoise at fit time looks like
what it was trained on. It is DiffHOI's own encoding (the one the authors' prior in
``hoirecon.backends.diffhoi_prior`` expects), so the same renderings can feed either prior.

Channels (square images, ``image_size`` px, 64 by default):

- object, ``OBJECT_CHANNELS`` (5): ``[mask, normal x, normal y, normal z, depth]``;
- hand, ``HAND_CHANNELS`` (7): ``[mask, normal x, normal y, normal z, depth, u, v]``.

Encoding of each quantity (``m`` = mask in [0, 1] of that part, amodal: the hand and the
object are each rendered alone, neither hides the other):

- mask: ``(2 m - 1) * 0.5`` (background -0.5, inside +0.5);
- normal: unit surface normal in camera axes x left, y up, z towards the camera (OpenCV
  camera-frame normal negated), times ``m`` (0 on the background);
- depth: ``(z - z_ref) * 10 * m``: camera depth relative to ``z_ref`` in decimetres, 0 on
  the background. ``z_ref`` is the mean camera depth of the hand's pixels (hard mask), the
  same for both images of a pair, so the depth channel says where the object is relative
  to the hand; where no hand pixel is in view it falls back to the distance of the view's
  look-at point. The hand is rigid w.r.t. the viewpoint sampling, so ``z_ref`` carries no
  gradient;
- uv: the hand's per-vertex surface coordinate (``HandModel.vert_uv`` in [0, 1]) mapped to
  [-1, 1] inside the hand, -1 on the background.

For hard (binary) masks this equals ``encode_object_geometry`` / ``encode_hand_condition``
of the DiffHOI backend. For soft masks (a volume-rendered SDF) we multiply by the soft
mask instead of thresholding it and do not re-normalise normals after masking, so that
the object image stays differentiable and continuous in the opacity.

Viewpoints (``sample_views``): a camera with a uniformly random rotation in SO(3) looking
at a centre point from a random distance, with a fixed pinhole (``ViewConfig``); metres,
OpenCV camera axes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hoirecon.geometry.rotations import random_rotation_matrix
from hoirecon.render.camera import make_intrinsics, pixel_directions, pixel_grid, pixel_rays, ray_t_to_camera_z
from hoirecon.render.mesh import vertex_normals
from hoirecon.render.raster import interpolate, rasterize
from hoirecon.render.volume import VolumeRenderConfig, render_sdf_volume

OBJECT_CHANNELS = ("obj_mask", "obj_normal_x", "obj_normal_y", "obj_normal_z", "obj_depth")
HAND_CHANNELS = (
    "hand_mask", "hand_normal_x", "hand_normal_y", "hand_normal_z", "hand_depth", "hand_uv_u", "hand_uv_v",
)  # fmt: skip
MASK_SCALE = 0.5
DEPTH_UNITS_PER_METRE = 10.0


@dataclass(frozen=True)
class ViewConfig:
    """Random viewpoints around a hand-object pair.

    image_size: side of the square renderings (px).
    focal_px: focal length (px) for ``image_size``; 120 px at 64 px is a 30 degree field
        of view: at 0.45 m the image spans 24 cm, a hand is ~45 px long, a mug ~25 px.
    distance_range_m: camera distance to the look-at point, uniform in this range.
    center_jitter_m: std of a Gaussian jitter of the look-at point (per axis).
    """

    image_size: int = 64
    focal_px: float = 120.0
    distance_range_m: tuple[float, float] = (0.40, 0.55)
    center_jitter_m: float = 0.01

    def intrinsics(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """(batch, 3, 3) pixel intrinsics, principal point at the image centre."""
        c = (self.image_size - 1) / 2.0
        return make_intrinsics(self.focal_px, self.focal_px, c, c, batch, device=device, dtype=dtype)


def sample_views(
    center: torch.Tensor, cfg: ViewConfig = ViewConfig(), generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random cameras looking at ``center`` (uniform SO(3) orientation, random distance).

    Args:
        center: (B, 3) look-at points in some frame ``f`` (e.g. the hand frame).
        cfg: view settings.
        generator: optional torch.Generator (CPU) for reproducibility.

    Returns:
        T_f_to_view: (B, 4, 4) maps frame-f points to the camera; the (jittered) look-at
            point lands on the optical axis at the sampled distance.
        K: (B, 3, 3) intrinsics.
    """
    if center.ndim != 2 or center.shape[-1] != 3:
        raise ValueError(f"view centre must have shape (B, 3), got {tuple(center.shape)}")
    B = center.shape[0]
    like = dict(dtype=center.dtype, device=center.device)
    # Draw on the CPU with the caller's generator, then move: reproducible on any device.
    R = random_rotation_matrix(B, generator=generator).to(**like)
    lo, hi = cfg.distance_range_m
    dist = (lo + (hi - lo) * torch.rand(B, generator=generator)).to(**like)
    jitter = (cfg.center_jitter_m * torch.randn(B, 3, generator=generator)).to(**like)
    target = center.detach() + jitter
    T = torch.zeros(B, 4, 4, **like)
    T[:, :3, :3] = R
    T[:, :3, 3] = -(R @ target[..., None])[..., 0]
    T[:, 2, 3] += dist
    T[:, 3, 3] = 1.0
    return T, cfg.intrinsics(B, **like)


# ----------------------------------------------------------------------------- encoding


def encode_mask(mask: torch.Tensor) -> torch.Tensor:
    """mask (B, H, W) in [0, 1] -> (B, 1, H, W) in [-0.5, 0.5]."""
    return ((2.0 * mask - 1.0) * MASK_SCALE)[:, None]


def reference_depth(hand_depth: torch.Tensor, hand_mask: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Mean camera depth of the hand's pixels (the depth origin of a pair), no gradient.

    Args:
        hand_depth: (B, H, W) metres; hand_mask: (B, H, W) in [0, 1];
        fallback: (B,) depth used where no hand pixel is in view (the look-at distance).

    Returns:
        z_ref: (B,) metres, detached.
    """
    hard = (hand_mask.detach() > 0.5).to(hand_depth.dtype)
    count = hard.sum(dim=(1, 2))
    mean = (hand_depth.detach() * hard).sum(dim=(1, 2)) / count.clamp_min(1.0)
    return torch.where(count > 0, mean, fallback.to(mean))


def encode_object(mask: torch.Tensor, normal_cv: torch.Tensor, depth: torch.Tensor,
                  z_ref: torch.Tensor) -> torch.Tensor:
    """The object image (x_0 of the diffusion), see the module docstring.

    Args:
        mask: (B, H, W) in [0, 1] (soft allowed); normal_cv: (B, 3, H, W) unit normals in
        the OpenCV camera frame; depth: (B, H, W) camera z (m); z_ref: (B,) metres.

    Returns:
        (B, 5, H, W) in ``OBJECT_CHANNELS`` order.
    """
    m = mask[:, None]
    rel = (depth - z_ref[:, None, None])[:, None] * DEPTH_UNITS_PER_METRE
    return torch.cat([encode_mask(mask), -normal_cv * m, rel * m], dim=1)


def encode_hand(
    mask: torch.Tensor, normal_cv: torch.Tensor, depth: torch.Tensor, uv: torch.Tensor, z_ref: torch.Tensor
) -> torch.Tensor:
    """The hand condition image, see the module docstring.

    Args:
        mask: (B, H, W) in [0, 1]; normal_cv: (B, 3, H, W); depth: (B, H, W) m;
        uv: (B, 2, H, W) in [0, 1]; z_ref: (B,) metres.

    Returns:
        (B, 7, H, W) in ``HAND_CHANNELS`` order.
    """
    m = mask[:, None]
    rel = (depth - z_ref[:, None, None])[:, None] * DEPTH_UNITS_PER_METRE
    uv_enc = m * (2.0 * uv - 1.0) + (m - 1.0)
    return torch.cat([encode_mask(mask), -normal_cv * m, rel * m, uv_enc], dim=1)


@dataclass
class DecodedGeometry:
    """An encoded image turned back into quantities (for figures and checks).

    mask: (B, H, W) in [0, 1]; normal_cv: (B, 3, H, W) OpenCV camera-frame normals (not
    re-normalised); depth_rel_m: (B, H, W) depth relative to z_ref in metres (0 outside);
    uv: (B, 2, H, W) in [0, 1] or None (object images).
    """

    mask: torch.Tensor
    normal_cv: torch.Tensor
    depth_rel_m: torch.Tensor
    uv: torch.Tensor | None = None


def decode_geometry(image: torch.Tensor) -> DecodedGeometry:
    """Invert ``encode_object`` (5 channels) or ``encode_hand`` (7 channels).

    Args:
        image: (B, 5, H, W) or (B, 7, H, W).
    """
    if image.ndim != 4 or image.shape[1] not in (5, 7):
        raise ValueError(f"expected a (B, 5|7, H, W) geometry image, got {tuple(image.shape)}")
    mask = (image[:, 0] / MASK_SCALE + 1.0).mul(0.5).clamp(0.0, 1.0)
    uv = None
    if image.shape[1] == 7:
        uv = ((image[:, 5:7] + 1.0) * 0.5).clamp(0.0, 1.0)
    return DecodedGeometry(mask, -image[:, 1:4], image[:, 4] / DEPTH_UNITS_PER_METRE, uv)


# ----------------------------------------------------------------------------- rendering


@dataclass
class MeshGeometry:
    """Hard rasterization of a mesh (no gradient).

    mask: (B, H, W) float {0, 1}; depth: (B, H, W) camera z (m), 0 outside;
    normal_cv: (B, 3, H, W) unit OpenCV camera-frame normals (outward), 0 outside;
    attrs: (B, C, H, W) interpolated vertex attributes or None.
    """

    mask: torch.Tensor
    depth: torch.Tensor
    normal_cv: torch.Tensor
    attrs: torch.Tensor | None


@torch.no_grad()
def rasterize_mesh_geometry(
    verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, image_size: int,
    vert_attrs: torch.Tensor | None = None
) -> MeshGeometry:
    """Mask, depth, normals (and vertex attributes) of a mesh, exact hard z-buffer.

    Uses ``hoirecon.render.raster`` (about 10-20x faster than the soft rasterizer at 64 px,
    and exact coverage): the prior's inputs need no gradient on the mesh side.

    Args:
        verts_cam: (B, V, 3) camera-frame vertices; faces: (F, 3) outward winding;
        K: (B, 3, 3); image_size: output side (px); vert_attrs: optional (V, C) or (B, V, C).
    """
    raster = rasterize(verts_cam, faces, K, image_size, image_size)
    normals = vertex_normals(verts_cam, faces.to(verts_cam.device))
    n_img = F.normalize(interpolate(normals, faces, raster), dim=-1, eps=1e-12).permute(0, 3, 1, 2)
    attrs = None
    if vert_attrs is not None:
        attrs = interpolate(vert_attrs.to(verts_cam), faces, raster).permute(0, 3, 1, 2)
    mask = raster.covered.to(verts_cam.dtype)
    return MeshGeometry(mask=mask, depth=raster.depth, normal_cv=n_img * mask[:, None], attrs=attrs)


@dataclass
class HandCondition:
    """The hand side of a pair.

    image: (B, 7, H, W) encoded hand condition; z_ref: (B,) depth origin (m);
    geometry: the raw rasterization (MeshGeometry, uv in ``attrs``).
    """

    image: torch.Tensor
    z_ref: torch.Tensor
    geometry: MeshGeometry


def render_hand_condition(
    hand_verts_cam: torch.Tensor,
    faces: torch.Tensor,
    vert_uv: torch.Tensor,
    K: torch.Tensor,
    image_size: int,
    fallback_depth: torch.Tensor,
) -> HandCondition:
    """Render and encode the hand condition (no gradient).

    Args:
        hand_verts_cam: (B, V, 3) hand vertices in the camera frame; faces: (F, 3);
        vert_uv: (V, 2) in [0, 1]; K: (B, 3, 3); image_size: px;
        fallback_depth: (B,) z_ref where no hand pixel is in view (the look-at distance).
    """
    geom = rasterize_mesh_geometry(hand_verts_cam, faces, K, image_size, vert_uv)
    z_ref = reference_depth(geom.depth, geom.mask, fallback_depth)
    image = encode_hand(geom.mask, geom.normal_cv, geom.depth, geom.attrs, z_ref)
    return HandCondition(image=image, z_ref=z_ref, geometry=geom)


def render_object_mesh(
    obj_verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, image_size: int, z_ref: torch.Tensor
) -> torch.Tensor:
    """Encoded object image of a mesh (training data; no gradient).

    Args:
        obj_verts_cam: (B, V, 3); faces: (F, 3); K: (B, 3, 3); z_ref: (B,) from the hand.

    Returns:
        (B, 5, H, W).
    """
    geom = rasterize_mesh_geometry(obj_verts_cam, faces, K, image_size)
    return encode_object(geom.mask, geom.normal_cv, geom.depth, z_ref)


SDFCallable = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def as_volume_sdf(sdf_fn: SDFCallable) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Adapt ``x (N, 3) -> sdf (N,)`` (or ``(N, 1)``) to the volume renderer's
    ``x -> (sdf (N,), feature (N, 0))``; callables that already return a pair pass through."""

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = sdf_fn(x)
        if isinstance(out, tuple):
            return out
        sdf = out.reshape(x.shape[0])
        return sdf, sdf.new_zeros(x.shape[0], 0)

    return fn


def default_sds_volume_config() -> VolumeRenderConfig:
    """Volume sampling for score-distillation views: 24 coarse + 16 fine samples, jittered,
    finite-difference normals (no double backward through the SDF network).

    Why so few: the fine samples gather within a few beta of the surface (``render_sdf_volume``),
    and with finite differences each fine sample costs 5 SDF evaluations with gradient, the
    bulk of an SDS step (benchmarks/bench_sds.py: 64 px with 32 + 32 samples 159 ms CPU per
    step, 32 px with 24 + 16 samples 51 ms; issue 22)."""
    return VolumeRenderConfig(n_coarse=24, n_importance=16, perturb=True, normal_mode="finite_difference")


@dataclass
class ObjectSDFRendering:
    """Differentiable renderings of an SDF at every pixel of a batch of views.

    image: (B, 5, H, W) encoded object image (differentiable w.r.t. the SDF, beta and the
    object pose); mask: (B, H, W) opacity; depth: (B, H, W) camera z (m);
    normal_cv: (B, 3, H, W) OpenCV camera-frame normals; sdf_grad: SDF gradients at the
    fine samples (for an eikonal term) or None.
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    normal_cv: torch.Tensor
    sdf_grad: torch.Tensor | None = field(default=None, repr=False)


def render_object_sdf(
    sdf_fn: SDFCallable,
    beta: torch.Tensor | float,
    T_view_to_obj: torch.Tensor,
    K: torch.Tensor,
    image_size: int,
    z_ref: torch.Tensor,
    sphere_center: torch.Tensor | None = None,
    sphere_radius: float = 1.0,
    volume_cfg: VolumeRenderConfig | None = None,
) -> ObjectSDFRendering:
    """Volume-render an object SDF (object frame) at every pixel and encode it.

    Args:
        sdf_fn: ``x (N, 3) -> sdf (N,)`` or ``-> (sdf, feature)`` in the object frame (m).
        beta: VolSDF Laplace scale (e.g. ``LaplaceDensity().beta()``).
        T_view_to_obj: (B, 4, 4) camera -> object frame (gradients flow into it).
        K: (B, 3, 3); image_size: px; z_ref: (B,) depth origin from the hand (m).
        sphere_center: (3,) object-frame bounding sphere centre; sphere_radius: its radius.
        volume_cfg: sampling (default ``default_sds_volume_config()``).

    Returns:
        ObjectSDFRendering; rays that miss the sphere are background.
    """
    B = T_view_to_obj.shape[0]
    H = W = image_size
    pix = pixel_grid(H, W, device=T_view_to_obj.device, dtype=T_view_to_obj.dtype).expand(B, -1, -1)
    origins, dirs = pixel_rays(pix, K, T_view_to_obj)  # object frame, unit dirs: t is metric
    dirs_cam = pixel_directions(pix, K, normalize=True)
    out = render_sdf_volume(
        as_volume_sdf(sdf_fn),
        origins.reshape(-1, 3),
        dirs.reshape(-1, 3),
        beta,
        sphere_center,
        sphere_radius,
        volume_cfg or default_sds_volume_config(),
    )
    mask = out.opacity.reshape(B, H, W)
    depth = ray_t_to_camera_z(out.depth.reshape(B, H * W), dirs_cam).reshape(B, H, W)
    if out.normal is None:
        raise ValueError("score distillation needs normals: use a volume normal_mode other than 'none'")
    R_obj_to_view = T_view_to_obj[:, :3, :3].transpose(1, 2)
    normal = (out.normal.reshape(B, H * W, 3) @ R_obj_to_view.transpose(1, 2)).reshape(B, H, W, 3)
    normal = normal.permute(0, 3, 1, 2)
    image = encode_object(mask, normal, depth, z_ref)
    return ObjectSDFRendering(image=image, mask=mask, depth=depth, normal_cv=normal, sdf_grad=out.sdf_grad)


# ----------------------------------------------------------------------------- figures


def geometry_panels(image: torch.Tensor) -> np.ndarray:
    """Visualise encoded images as rows of panels (normal, depth, mask[, uv]).

    Args:
        image: (B, 5, H, W) object or (B, 7, H, W) hand images.

    Returns:
        (B, R, H, W, 3) uint8, R = 3 (object) or 4 (hand): normals as RGB (0.5 + 0.5 n,
        DiffHOI axes), depth as a blue (near) to red (far) ramp over +-1.5 dm, mask grey,
        uv as (u, v, 0.5).
    """
    img = image.detach().float().cpu()
    dec = decode_geometry(img)
    m = dec.mask[:, None]
    normal_rgb = (0.5 + 0.5 * img[:, 1:4]).clamp(0, 1) * m + (1 - m)
    d = (img[:, 4:5] / 3.0 + 0.5).clamp(0, 1)  # encoded depth (dm) in [-1.5, 1.5] -> [0, 1]
    depth_rgb = torch.cat([d, 0.3 * torch.ones_like(d), 1 - d], dim=1) * m + (1 - m)
    mask_rgb = m.expand(-1, 3, -1, -1)
    rows = [normal_rgb, depth_rgb, mask_rgb]
    if dec.uv is not None:
        rows.append(torch.cat([dec.uv, 0.5 * torch.ones_like(dec.uv[:, :1])], dim=1) * m + (1 - m))
    panels = torch.stack(rows, dim=1).permute(0, 1, 3, 4, 2)
    return (panels.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def overlay_masks(hand: torch.Tensor, obj: torch.Tensor) -> np.ndarray:
    """Hand (blue) and object (red) masks over white, object drawn over the hand.

    Args:
        hand: (B, 7, H, W); obj: (B, 5, H, W) encoded images.

    Returns:
        (B, H, W, 3) uint8.
    """
    mh = decode_geometry(hand.detach().float().cpu()).mask[..., None]
    mo = decode_geometry(obj.detach().float().cpu()).mask[..., None]
    white = torch.ones(3)
    out = white * (1 - mh) + torch.tensor([0.25, 0.45, 0.95]) * mh
    out = out * (1 - mo) + torch.tensor([0.95, 0.3, 0.25]) * mo
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
