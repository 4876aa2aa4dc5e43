"""Exact hard z-buffer rasterizer for ground-truth renderings (masks, depth, shading).

``hoirecon.render.mesh`` is a *soft* rasterizer built for gradients: its silhouette is a
SoftRas probability and it gives depth to pixels in a band just outside the silhouette,
so it cannot say exactly which pixel a mesh covers. Ground truth needs that exact
answer: a pixel is covered by a face when its centre lies inside (or on an edge of) the
face's projection, and it shows the covering face nearest to the camera. This module does
only that, without gradients, and returns the chosen face and perspective-correct
barycentrics so that callers can interpolate any vertex attribute (normals, object-frame
positions for textures, uv).

Conventions as in ``hoirecon.render.camera``: OpenCV camera frame, pixel centres at
integer coordinates ``(u, v) = (column, row)``. Faces with a vertex at ``z <= znear`` are
dropped (no clipping). Ties (a pixel centre on an edge shared by faces at the same depth)
go to the smallest face index, so the result does not depend on enumeration order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hoirecon.render.camera import project_points, strided_grid
from hoirecon.render.mesh import check_mesh_inputs, grid_pixel_face_pairs

__all__ = ["RasterOutput", "rasterize", "strided_silhouettes", "interpolate", "hand_object_labels"]


@dataclass
class RasterOutput:
    """Hard rasterization of a batch of meshes.

    face_index: (B, H, W) int64 index of the visible face, -1 where no face covers the pixel.
    bary: (B, H, W, 3) perspective-correct barycentrics of the pixel centre on that face
        (weights of the face's vertices 0, 1, 2; 0 for background).
    depth: (B, H, W) camera z of the visible surface (metres), 0 for background.
    """

    face_index: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def covered(self) -> torch.Tensor:
        """(B, H, W) bool: pixels covered by some face."""
        return self.face_index >= 0


@torch.no_grad()
def rasterize(
    verts_cam: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    height: int,
    width: int,
    znear: float = 1e-3,
    cull_back: torch.Tensor | None = None,
) -> RasterOutput:
    """Hard z-buffer rasterization (no gradient).

    Args:
        verts_cam: (B, V, 3) vertices in the camera frame (metres, OpenCV axes).
        faces: (F, 3) int64 vertex indices shared by the batch.
        K: (B, 3, 3) intrinsics in pixels.
        height, width: image size.
        znear: faces with any vertex at camera z <= znear are dropped.
        cull_back: optional (F,) bool, faces that are skipped when they face away from the
            camera. Safe for the faces of a closed mesh
            with outward winding: a front face of the same mesh always hides them. Halves
            the work for closed meshes; leave open meshes (a hand open at the wrist) out.

    Returns:
        RasterOutput with face_index (B, H, W), bary (B, H, W, 3), depth (B, H, W).
    """
    check_mesh_inputs(verts_cam, faces, K)
    B, V = verts_cam.shape[:2]
    Fn = faces.shape[0]
    device, dtype = verts_cam.device, verts_cam.dtype
    faces = faces.to(device=device, dtype=torch.long)
    uv = project_points(verts_cam, K)
    z = verts_cam[..., 2]
    tri_uv = uv[:, faces]  # (B, F, 3, 2)
    tri_z = z[:, faces]  # (B, F, 3)
    face_ok = (tri_z > znear).all(-1) & torch.isfinite(tri_uv).all(-1).all(-1)
    if cull_back is not None:
        e1 = tri_uv[:, :, 1] - tri_uv[:, :, 0]
        e2 = tri_uv[:, :, 2] - tri_uv[:, :, 0]
        # A face seen from its outer side winds counter-clockwise on screen; with the image
        # v axis pointing down that is a negative signed area in (u, v).
        area2 = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
        face_ok = face_ok & ~(cull_back.to(device)[None] & (area2 >= 0))
    pair_pix, pair_face = grid_pixel_face_pairs(tri_uv, face_ok, height, width, radius=0.0)

    n_pix = B * height * width
    face_index = torch.full((n_pix,), -1, dtype=torch.long, device=device)
    bary_out = torch.zeros(n_pix, 3, dtype=dtype, device=device)
    depth_out = torch.zeros(n_pix, dtype=dtype, device=device)
    if pair_pix.numel():
        tri = tri_uv.reshape(B * Fn, 3, 2)[pair_face]  # (N, 3, 2)
        local = pair_pix % (height * width)
        p = torch.stack([(local % width).to(dtype), (local // width).to(dtype)], dim=-1)
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]

        def edge(p0, p1, q):
            return (p1[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (q[:, 0] - p0[:, 0])

        area = edge(a, b, c)
        w0, w1, w2 = edge(b, c, p), edge(c, a, p), edge(a, b, p)  # weights of a, b, c
        sign = torch.sign(area)
        inside = (w0 * sign >= 0) & (w1 * sign >= 0) & (w2 * sign >= 0) & (area != 0)
        idx = torch.nonzero(inside).squeeze(1)
        pair_pix, pair_face = pair_pix[idx], pair_face[idx]
        bary = torch.stack([w0[idx], w1[idx], w2[idx]], -1) / area[idx, None]
        inv_z = bary / tri_z.reshape(B * Fn, 3)[pair_face]
        inv_z_sum = inv_z.sum(-1)
        depth = 1.0 / inv_z_sum
        best = torch.full((n_pix,), float("inf"), dtype=dtype, device=device)
        best = best.scatter_reduce(0, pair_pix, depth, reduce="amin", include_self=True)
        nearest = depth == best[pair_pix]
        none = B * Fn
        cand = torch.where(nearest, pair_face, torch.full_like(pair_face, none))
        chosen = torch.full((n_pix,), none, dtype=torch.long, device=device)
        chosen = chosen.scatter_reduce(0, pair_pix, cand, reduce="amin", include_self=True)
        win = torch.nonzero(nearest & (pair_face == chosen[pair_pix])).squeeze(1)
        hit = pair_pix[win]
        face_index[hit] = pair_face[win] % Fn
        bary_out[hit] = inv_z[win] / inv_z_sum[win, None]
        depth_out[hit] = depth[win]
    return RasterOutput(
        face_index=face_index.reshape(B, height, width),
        bary=bary_out.reshape(B, height, width, 3),
        depth=depth_out.reshape(B, height, width),
    )


@torch.no_grad()
def strided_silhouettes(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                        stride: int) -> torch.Tensor:
    """Which pixels of every ``stride``-th row and column each mesh covers (one camera for all).

    Args:
        verts_cam: (B, V, 3) camera-frame vertices; faces: (F, 3); K: (3, 3) intrinsics of the
            full ``height`` x ``width`` image.
    Returns:
        (B, h, w) bool on the CPU, the size of ``image[::stride, ::stride]``.
    """
    K_grid, h, w = strided_grid(K.float().cpu(), height, width, stride)
    B = verts_cam.shape[0]
    return rasterize(verts_cam.float().cpu(), faces.cpu(), K_grid.expand(B, 3, 3), h, w).covered


def interpolate(vert_attrs: torch.Tensor, faces: torch.Tensor, raster: RasterOutput) -> torch.Tensor:
    """Interpolate per-vertex attributes at the visible surface of each pixel.

    Args:
        vert_attrs: (V, C) or (B, V, C) attributes.
        faces: (F, 3) int64, the faces that were rasterized.
        raster: output of ``rasterize`` for the same faces.

    Returns:
        (B, H, W, C) interpolated attributes, 0 for background pixels.
    """
    B, H, W = raster.face_index.shape
    if vert_attrs.ndim == 2:
        vert_attrs = vert_attrs.expand(B, *vert_attrs.shape)
    V, C = vert_attrs.shape[1:]
    faces = faces.to(device=vert_attrs.device, dtype=torch.long)
    fi = raster.face_index.reshape(B, -1)
    out = torch.zeros(B, H * W, C, dtype=vert_attrs.dtype, device=vert_attrs.device)
    bidx, pidx = torch.nonzero(fi >= 0, as_tuple=True)
    vid = faces[fi[bidx, pidx]]  # (M, 3)
    vals = vert_attrs[bidx[:, None], vid]  # (M, 3, C)
    w = raster.bary.reshape(B, -1, 3)[bidx, pidx].to(vert_attrs.dtype)
    out[bidx, pidx] = (w[..., None] * vals).sum(1)
    return out.reshape(B, H, W, C)


@torch.no_grad()
def hand_object_labels(obj_verts_cam: torch.Tensor, obj_faces: torch.Tensor, hand_verts_cam: torch.Tensor,
                       hand_faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                       hand_label: int = 1, object_label: int = 2) -> torch.Tensor:
    """Which surface each pixel shows, the hand or the object (the nearer where both cover it).

    Args:
        obj_verts_cam: (B, Vo, 3); hand_verts_cam: (B, Vh, 3) camera-frame vertices (m).
        obj_faces: (Fo, 3); hand_faces: (Fh, 3). K: (B, 3, 3). height, width: image size.
    Returns:
        (B, H, W) uint8: 0 background, ``hand_label``, ``object_label``.
    """
    obj = rasterize(obj_verts_cam, obj_faces, K, height, width)
    hand = rasterize(hand_verts_cam, hand_faces, K, height, width)
    far = torch.finfo(obj.depth.dtype).max
    z_obj = torch.where(obj.covered, obj.depth, torch.full_like(obj.depth, far))
    z_hand = torch.where(hand.covered, hand.depth, torch.full_like(hand.depth, far))
    labels = torch.zeros(obj.depth.shape, dtype=torch.uint8, device=obj.depth.device)
    labels[obj.covered & (z_obj <= z_hand)] = object_label
    labels[hand.covered & (z_hand < z_obj)] = hand_label
    return labels
