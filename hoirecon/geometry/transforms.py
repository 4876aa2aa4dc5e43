"""Batched, differentiable rigid transforms as 4x4 homogeneous matrices.

Conventions:
- ``T = [[R, t], [0, 0, 0, 1]]`` maps a point ``x`` to ``R @ x + t``; shape ``(..., 4, 4)``.
  ``T_a_to_b`` maps points of frame a into frame b; ``T_a_to_c = T_b_to_c @ T_a_to_b``.
- Point sets are row vectors ``(..., N, 3)``.
- Shapes:
  - ``invert_rigid``: ``(..., 4, 4) -> (..., 4, 4)``.
  - ``transform_points``: ``T (B, 4, 4)`` with ``x (B, N, 3) -> (B, N, 3)``, or unbatched
    ``T (4, 4)`` with ``x (N, 3) -> (N, 3)``; a ``(4, 4)`` is shared by a ``(B, N, 3)`` batch
    (leading dimensions broadcast).

The functions follow the input's device and dtype and assume ``R`` is a rotation (they do not
check it).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["invert_rigid", "transform_points"]


def invert_rigid(T: Tensor) -> Tensor:
    """Inverse of rigid transforms: ``[R^T | -R^T t]``.

    Args:
        T: (..., 4, 4) rotation + translation.
    Returns:
        (..., 4, 4) inverses (bottom row ``[0, 0, 0, 1]``).
    """
    R = T[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = R
    out[..., :3, 3:4] = -(R @ T[..., :3, 3:4])
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: Tensor, x: Tensor) -> Tensor:
    """Apply rigid transforms to point sets: ``R @ x + t`` per point.

    Args:
        T: (B, 4, 4), or (4, 4) (shared by the batch).
        x: (B, N, 3) or (N, 3).
    Returns:
        (B, N, 3) or (N, 3).
    """
    return x @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]
