"""Batched, differentiable rotation conversions.

Conventions:
- Rotation matrices act on column vectors: ``x' = R @ x``; shape ``(..., 3, 3)``.
- Axis-angle ("rotation vector"): ``(..., 3)``, direction = unit axis, norm = angle in radians
  (right-hand rule). This is the MANO / SMPL pose convention.
- Quaternions: ``(..., 4)`` ordered ``(w, x, y, z)`` (scalar first), unit norm. Functions
  returning quaternions give the one with ``w >= 0``.
- 6D: the first two *columns* of the rotation matrix, concatenated
  ``(R[:, 0], R[:, 1])`` -> ``(..., 6)`` (Zhou et al., CVPR 2019, "On the continuity of
  rotation representations"); recovered by Gram-Schmidt.

All functions accept any leading batch shape, follow the input's device and dtype, and are
differentiable everywhere they are smooth, including at the identity (zero angle), where
the naive formulas divide by zero: small angles use Taylor series so that optimizations
starting from a zero pose get exact gradients.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "skew",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "rotation_between_vectors",
    "reflect_axis_angle",
    "random_rotation_matrix",
]

# Below this angle (radians) the trigonometric ratios are replaced by their Taylor series;
# the series' first omitted terms are O(angle^4) ~ 1e-12, below float32/float64 round-off.
_SMALL_ANGLE = 1e-3


def skew(vec: Tensor) -> Tensor:
    """Cross-product matrix: ``skew(a) @ b == cross(a, b)``.

    Args:
        vec: (..., 3).
    Returns:
        (..., 3, 3).
    """
    x, y, z = vec.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (
        torch.stack([zero, -z, y], dim=-1),
        torch.stack([z, zero, -x], dim=-1),
        torch.stack([-y, x, zero], dim=-1),
    )
    return torch.stack(rows, dim=-2)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula ``R = I + a K + b K^2`` with ``K = skew(axis_angle)`` (unnormalized).

    ``a = sin(t)/t`` and ``b = (1 - cos t)/t^2`` with ``t = |axis_angle|``; using the
    unnormalized ``K`` keeps the formula (and its gradient) finite at ``t = 0``.

    Args:
        axis_angle: (..., 3) rotation vectors (radians).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    angle_sq = (axis_angle * axis_angle).sum(-1)
    small = angle_sq < _SMALL_ANGLE**2
    # Evaluate the trigonometric branch on a safe angle so that torch.where does not
    # route NaN gradients from the unused branch.
    angle = torch.sqrt(torch.where(small, torch.ones_like(angle_sq), angle_sq))
    a = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(angle) / angle)
    b = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - torch.cos(angle)) / (angle * angle))
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def axis_angle_to_quaternion(axis_angle: Tensor) -> Tensor:
    """Args: axis_angle (..., 3). Returns: (..., 4) unit quaternions (w, x, y, z)."""
    angle_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = angle_sq < _SMALL_ANGLE**2
    angle = torch.sqrt(torch.where(small, torch.ones_like(angle_sq), angle_sq))
    half = 0.5 * angle
    # sin(t/2)/t, series 1/2 - t^2/48 for small t.
    ratio = torch.where(small, 0.5 - angle_sq / 48.0, torch.sin(half) / angle)
    w = torch.where(small, 1.0 - angle_sq / 8.0, torch.cos(half))
    return torch.cat([w, axis_angle * ratio], dim=-1)


def quaternion_to_axis_angle(quat: Tensor) -> Tensor:
    """Args: quat (..., 4) (w, x, y, z), any non-zero norm. Returns: (..., 3), angle in [0, pi]."""
    quat = quat / quat.norm(dim=-1, keepdim=True)
    # q and -q are the same rotation; w >= 0 gives the angle in [0, pi].
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    vec = quat[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    half = torch.atan2(sin_half, quat[..., :1])
    small = half < _SMALL_ANGLE
    safe_half = torch.where(small, torch.ones_like(half), half)
    # axis_angle = vec * 2*half/sin(half); series 2 + half^2/3 for small half.
    ratio = torch.where(small, 2.0 + half * half / 3.0, 2.0 * safe_half / torch.sin(safe_half))
    return vec * ratio


def quaternion_to_matrix(quat: Tensor) -> Tensor:
    """Args: quat (..., 4) (w, x, y, z), normalized here. Returns: (..., 3, 3)."""
    quat = quat / quat.norm(dim=-1, keepdim=True)
    w, x, y, z = quat.unbind(-1)
    rows = (
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    )
    return torch.stack(rows, dim=-2)


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """Rotation matrix to unit quaternion (w, x, y, z) with ``w >= 0``.

    Shepperd's method: of the four algebraically equivalent formulas (each divides by one
    of ``4|w|, 4|x|, 4|y|, 4|z|``) use the one whose divisor is largest, so the result is
    accurate for every rotation, including angles near pi.

    Args:
        matrix: (..., 3, 3).
    Returns:
        (..., 4).
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*q_i^2 for i = w, x, y, z from the diagonal.
    four_sq = torch.stack(
        [
            1.0 + m00 + m11 + m22,
            1.0 + m00 - m11 - m22,
            1.0 - m00 + m11 - m22,
            1.0 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # clamp_min keeps sqrt's gradient finite for the candidates that are not selected.
    two_abs = torch.sqrt(four_sq.clamp_min(1e-12))  # 2*|q_i|
    d21 = m[..., 2, 1] - m[..., 1, 2]
    d02 = m[..., 0, 2] - m[..., 2, 0]
    d10 = m[..., 1, 0] - m[..., 0, 1]
    s01 = m[..., 0, 1] + m[..., 1, 0]
    s02 = m[..., 0, 2] + m[..., 2, 0]
    s12 = m[..., 1, 2] + m[..., 2, 1]
    # Row i: 4*q_i*q (the quaternion scaled by 4*q_i), written from the matrix entries.
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], d21, d02, d10], -1),
            torch.stack([d21, four_sq[..., 1], s01, s02], -1),
            torch.stack([d02, s01, four_sq[..., 2], s12], -1),
            torch.stack([d10, s02, s12, four_sq[..., 3]], -1),
        ],
        dim=-2,
    ) / (2.0 * two_abs[..., :, None])
    best = four_sq.argmax(dim=-1)
    index = best[..., None, None].expand(*best.shape, 1, 4)
    quat = torch.gather(candidates, -2, index).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """Args: matrix (..., 3, 3). Returns: (..., 3) rotation vectors, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def quaternion_multiply(q1: Tensor, q2: Tensor) -> Tensor:
    """Hamilton product ``q1 * q2`` (apply q2 first, then q1).

    Args:
        q1, q2: (..., 4) (w, x, y, z), broadcastable.
    Returns:
        (..., 4).
    """
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def rotation_6d_to_matrix(rot6d: Tensor) -> Tensor:
    """Gram-Schmidt of two 3-vectors into a rotation matrix (columns b1, b2, b1 x b2).

    Args:
        rot6d: (..., 6): first column then second column (need not be orthonormal).
    Returns:
        (..., 3, 3).
    """
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: Tensor) -> Tensor:
    """Args: matrix (..., 3, 3). Returns: (..., 6) = (first column, second column)."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def rotation_between_vectors(src: Tensor, dst: Tensor) -> Tensor:
    """Smallest rotation taking direction ``src`` to direction ``dst``.

    Args:
        src, dst: (..., 3), non-zero, broadcastable; normalized here.
    Returns:
        (..., 3, 3) ``R`` with ``R @ src_hat == dst_hat``. For exactly opposite directions
        the axis is any unit vector orthogonal to ``src``.
    """
    src = torch.nn.functional.normalize(src, dim=-1)
    dst = torch.nn.functional.normalize(dst, dim=-1)
    src, dst = torch.broadcast_tensors(src, dst)
    cross = torch.linalg.cross(src, dst, dim=-1)
    cos = (src * dst).sum(-1).clamp(-1.0, 1.0)
    sin = cross.norm(dim=-1)
    angle = torch.atan2(sin, cos)
    # Antiparallel: cross is ~0 and gives no axis; use one orthogonal to src instead.
    helper = torch.where(
        src[..., :1].abs() < 0.9,
        src.new_tensor([1.0, 0.0, 0.0]).expand_as(src),
        src.new_tensor([0.0, 1.0, 0.0]).expand_as(src),
    )
    fallback_axis = torch.nn.functional.normalize(torch.linalg.cross(src, helper, dim=-1), dim=-1)
    opposite = (sin < 1e-6) & (cos < 0)
    axis = torch.where(
        opposite[..., None], fallback_axis, cross / sin.clamp_min(1e-12)[..., None]
    )
    return axis_angle_to_matrix(axis * angle[..., None])


def reflect_axis_angle(axis_angle: Tensor, axis: int = 0) -> Tensor:
    """Rotation conjugated by the reflection that negates coordinate ``axis``.

    If ``M = diag(-1, 1, 1)`` (for ``axis=0``) and ``R = exp(axis_angle)``, the result is
    the rotation vector of ``M R M``: the component along ``axis`` is kept and the other two
    are negated. This turns a right-hand MANO pose into the pose of the mirrored left hand.

    Args:
        axis_angle: (..., 3).
        axis: the mirrored coordinate (0, 1 or 2).
    Returns:
        (..., 3).
    """
    sign = -torch.ones(3, dtype=axis_angle.dtype, device=axis_angle.device)
    sign[axis] = 1.0
    return axis_angle * sign


def random_rotation_matrix(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Rotations uniformly distributed on SO(3) (normalized Gaussian quaternions).

    Args:
        n: how many.
        generator: optional torch.Generator for reproducibility (on ``device``).
    Returns:
        (n, 3, 3).
    """
    quat = torch.randn(n, 4, generator=generator, dtype=dtype, device=device)
    return quaternion_to_matrix(quat)


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (...,) rotation angles in degrees (numpy, for reports and
    checks; the angle between A and B is ``rotation_angle_deg(A^T B)``)."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def rotation_about_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) float64 rotation by ``angle`` radians about ``axis`` (3,), normalised here (numpy,
    Rodrigues' formula; for building scenes and test data, not for optimisation)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
