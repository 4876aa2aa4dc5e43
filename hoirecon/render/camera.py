"""Pinhole camera helpers in the OpenCV convention.

Camera frame: x right, y down, z forward (metres). Pixel coordinates ``(u, v)``: u along
image columns, v along rows, and the centre of pixel ``(row i, column j)`` is at
``(u, v) = (j, i)`` (OpenCV: integer coordinates are pixel centres). Intrinsics
``K (B, 3, 3)`` are in pixels: ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
"""

from __future__ import annotations

import torch



def make_intrinsics(
    fx: float, fy: float, cx: float, cy: float, batch: int = 1, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Pinhole intrinsics without skew.

    Returns:
        K: (batch, 3, 3).
    """
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], device=device, dtype=dtype)
    return K.expand(batch, 3, 3).clone()


def strided_grid(K: torch.Tensor, height: int, width: int, stride: int) -> tuple[torch.Tensor, int, int]:
    """The camera of the grid that keeps every ``stride``-th pixel of an image (rows and columns
    0, stride, 2 stride, ...): pixel (u', v') of the grid is pixel (stride u', stride v').

    Args:
        K: (..., 3, 3) intrinsics of the full image; height, width: its size in pixels.
    Returns:
        (K of the grid, same shape as ``K``; grid height; grid width), the size that
        ``image[::stride, ::stride]`` has.
    """
    K_grid = K.clone()
    K_grid[..., :2, :] /= stride
    return K_grid, (height + stride - 1) // stride, (width + stride - 1) // stride


def _check_K(K: torch.Tensor) -> None:
    if K.ndim != 3 or K.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics K must have shape (B, 3, 3), got {tuple(K.shape)}")


def project_points(points_cam: torch.Tensor, K: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Project camera-frame points to pixels.

    Args:
        points_cam: (B, N, 3) points in the camera frame (z > 0 in front of the camera).
        K: (B, 3, 3) intrinsics.
        eps: floor on |z| that keeps the division finite for points on the camera plane.

    Returns:
        pix: (B, N, 2) pixel coordinates (u, v).
    """
    _check_K(K)
    z = points_cam[..., 2:3]
    z = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    xy = points_cam[..., :2] / z
    # K @ [x/z, y/z, 1] written out: cheaper than a matmul and keeps the skew term.
    u = K[:, None, 0, 0] * xy[..., 0] + K[:, None, 0, 1] * xy[..., 1] + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * xy[..., 1] + K[:, None, 1, 2]
    return torch.stack([u, v], dim=-1)


def unproject_points(pix: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift pixels with camera-frame depth (z) to 3D camera-frame points.

    Args:
        pix: (B, N, 2) pixel coordinates (u, v).
        depth: (B, N) z of each point in the camera frame (not the distance along the ray).
        K: (B, 3, 3) intrinsics.

    Returns:
        points_cam: (B, N, 3).
    """
    rays = pixel_directions(pix, K, normalize=False)  # z component is 1
    return rays * depth[..., None]


def pixel_directions(pix: torch.Tensor, K: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Camera-frame viewing directions through pixels.

    Args:
        pix: (B, N, 2) pixel coordinates (u, v).
        K: (B, 3, 3) intrinsics.
        normalize: unit-length directions if True, else directions with z = 1.

    Returns:
        dirs_cam: (B, N, 3).
    """
    _check_K(K)
    fx, fy = K[:, None, 0, 0], K[:, None, 1, 1]
    cx, cy, skew = K[:, None, 0, 2], K[:, None, 1, 2], K[:, None, 0, 1]
    y = (pix[..., 1] - cy) / fy
    x = (pix[..., 0] - cx - skew * y) / fx
    dirs = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    if normalize:
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return dirs


def pixel_rays(
    pix: torch.Tensor, K: torch.Tensor, T_cam_to_world: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays (origin, unit direction) through pixels, in the camera or another frame.

    Args:
        pix: (B, N, 2) pixel coordinates (u, v).
        K: (B, 3, 3) intrinsics.
        T_cam_to_world: optional (B, 4, 4) rigid pose mapping camera points into the frame
            the rays are wanted in ("world" = any frame, e.g. the object frame).

    Returns:
        origins: (B, N, 3) ray origins (the camera centre).
        dirs: (B, N, 3) unit ray directions. With a rigid pose, the ray parameter t of
            ``origin + t * dir`` is the metric distance from the camera, and
            ``ray_t_to_camera_z(t, dirs_cam)`` converts it to camera depth.
    """
    dirs = pixel_directions(pix, K, normalize=True)
    if T_cam_to_world is None:
        return torch.zeros_like(dirs), dirs
    R = T_cam_to_world[:, None, :3, :3]  # (B, 1, 3, 3)
    origins = T_cam_to_world[:, None, :3, 3].expand_as(dirs)
    dirs_world = (R @ dirs[..., None])[..., 0]
    return origins, dirs_world


def ray_t_to_camera_z(
    t: torch.Tensor, dirs_cam: torch.Tensor, origins_cam: torch.Tensor | None = None
) -> torch.Tensor:
    """Camera depth z of the points ``origin + t * dir`` (rays expressed in the camera frame).

    Args:
        t: (...,) ray parameters.
        dirs_cam: (..., 3) ray directions in the camera frame (the same ones t refers to).
        origins_cam: optional (..., 3) origins in the camera frame (default: the camera centre).

    Returns:
        z: (...,) camera-frame depth.
    """
    z = t * dirs_cam[..., 2]
    if origins_cam is not None:
        z = z + origins_cam[..., 2]
    return z


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of all pixels of an image, row-major (index = row * width + column).

    Returns:
        pix: (height * width, 2) pixel coordinates (u, v) = (column, row).
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)
