"""Filling frames without a hand, and temporal smoothing with a joint-velocity penalty.

A hand track is per frame: articulation (T, 45), wrist rotation (T, 3) axis-angle (hand
frame -> camera axes), wrist translation (T, 3) in the camera frame (metres), a shared
shape (10,), and ``valid`` (T,) flags for frames where the estimator found the hand.

- :func:`fill_missing` interpolates invalid frames from their valid neighbours (linear for
  articulation and translation, slerp for the rotation; the nearest valid frame is held
  before the first and after the last valid frame).
- :func:`smooth_hand_track` then solves, in the camera frame and in centimetres::

      min  sum_t valid_t |J_t - J^_t|^2 / 21  +  w_v sum_t |J_{t+1} - J_t|^2 / 21
           + w_a sum_t valid_t |theta_t - theta^_t|^2

  where ``J_t`` are the 21 hand keypoints in the camera (pose + articulation) and hats are
  the per-frame estimates. The velocity term is what removes jitter; the small
  articulation anchor keeps the finger values (which the keypoints leave partly free)
  near the estimator's. Invalid frames have no data term, so they follow the smooth path
  between their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hoirecon.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    quaternion_to_axis_angle,
)
from hoirecon.handpose.ik import CM, KeypointModel
from hoirecon.hand.model import HandModel


def _neighbours(valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each frame: index of the previous and next valid frame, and the blend weight.

    Args:
        valid: (T,) bool with at least one True.
    Returns:
        prev (T,) long, next (T,) long, w (T,) in [0, 1] (0 = take prev, 1 = take next).
    """
    T = valid.shape[0]
    idx = torch.arange(T, device=valid.device)
    big = T + 1
    prev = torch.where(valid, idx, torch.full_like(idx, -1)).cummax(0).values
    nxt = torch.where(valid, idx, torch.full_like(idx, big)).flip(0).cummin(0).values.flip(0)
    first = int(idx[valid][0])
    last = int(idx[valid][-1])
    prev = torch.where(prev < 0, torch.full_like(prev, first), prev)
    nxt = torch.where(nxt >= big, torch.full_like(nxt, last), nxt)
    span = (nxt - prev).clamp_min(1)
    w = ((idx - prev).clamp_min(0) / span).to(torch.float32)
    w = torch.where(nxt == prev, torch.zeros_like(w), w)
    return prev, nxt, w


def interpolate_missing(values: Tensor, valid: Tensor) -> Tensor:
    """Linear interpolation of invalid rows from valid neighbours (held at the ends).

    Args:
        values: (T, D); valid: (T,) bool with at least one True.
    Returns:
        (T, D); valid rows unchanged.
    """
    prev, nxt, w = _neighbours(valid)
    w = w.to(values.dtype)[:, None]
    out = (1 - w) * values[prev] + w * values[nxt]
    return torch.where(valid[:, None], values, out)


def slerp_missing(axis_angle: Tensor, valid: Tensor) -> Tensor:
    """Slerp of invalid rotations between valid neighbours (held at the ends).

    Args:
        axis_angle: (T, 3); valid: (T,) bool with at least one True.
    Returns:
        (T, 3) axis-angle; valid rows unchanged.
    """
    prev, nxt, w = _neighbours(valid)
    q = axis_angle_to_quaternion(axis_angle)
    q0, q1 = q[prev], q[nxt]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # shortest arc
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    w = w.to(axis_angle.dtype)[:, None]
    sin = torch.sin(theta)
    small = sin < 1e-6
    a = torch.where(small, 1 - w, torch.sin((1 - w) * theta) / sin.clamp_min(1e-12))
    b = torch.where(small, w, torch.sin(w * theta) / sin.clamp_min(1e-12))
    q_interp = torch.nn.functional.normalize(a * q0 + b * q1, dim=-1)
    out = quaternion_to_axis_angle(q_interp)
    return torch.where(valid[:, None], axis_angle, out)


def fill_missing(articulation: Tensor, wrist_rot: Tensor, transl: Tensor,
                 valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Interpolate a hand track's invalid frames (see module doc).

    Args:
        articulation: (T, 45); wrist_rot: (T, 3); transl: (T, 3); valid: (T,) bool, any True.
    """
    if not bool(valid.any()):
        raise ValueError("fill_missing needs at least one valid frame")
    return (interpolate_missing(articulation, valid), slerp_missing(wrist_rot, valid),
            interpolate_missing(transl, valid))


@dataclass(frozen=True)
class SmoothConfig:
    """Settings of :func:`smooth_hand_track`.

    velocity_weight: ``w_v``, weight of the joint-velocity penalty relative to the data
        term (both cm^2 per keypoint); about the square of the smoothing width in frames.
        0 disables smoothing.
    articulation_weight: ``w_a`` (per radian^2).
    iterations: L-BFGS iterations.
    """

    velocity_weight: float = 1.0
    articulation_weight: float = 0.1
    iterations: int = 100


def smooth_hand_track(
    hand: HandModel,
    articulation: Tensor,
    wrist_rot: Tensor,
    transl: Tensor,
    shape: Tensor,
    valid: Tensor,
    side: str = "right",
    cfg: SmoothConfig = SmoothConfig(),
) -> tuple[Tensor, Tensor, Tensor]:
    """Temporal smoothing of a hand track (module doc); invalid frames are filled first.

    Args:
        hand: the hand model.
        articulation: (T, 45); wrist_rot: (T, 3); transl: (T, 3) metres, camera frame (wrist);
        shape: (10,); valid: (T,) bool (at least one True).
    Returns:
        articulation (T, 45), wrist_rot (T, 3), transl (T, 3) metres.
    """
    art0, rot0, tr0 = fill_missing(articulation, wrist_rot, transl, valid)
    T = art0.shape[0]
    if cfg.velocity_weight <= 0 or T < 2:
        return art0, rot0, tr0
    keypoints = KeypointModel(hand)
    R0 = axis_angle_to_matrix(rot0)
    tr0_cm = tr0 * CM
    beta = shape.reshape(-1)
    w_data = valid.to(art0.dtype)
    with torch.no_grad():
        beta_b = beta[None].expand(T, -1)
        target = keypoints(art0, beta_b, side) * CM @ R0.transpose(1, 2) + tr0_cm[:, None]

    art = art0.clone().requires_grad_(True)
    delta = torch.zeros_like(rot0).requires_grad_(True)
    tr = tr0_cm.clone().requires_grad_(True)
    optim = torch.optim.LBFGS([art, delta, tr], lr=1.0, max_iter=cfg.iterations,
                              line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        optim.zero_grad()
        R = axis_angle_to_matrix(delta) @ R0
        joints = keypoints(art, beta[None].expand(T, -1), side) * CM @ R.transpose(1, 2) + tr[:, None]
        data = (w_data * (joints - target).pow(2).sum(-1).mean(-1)).sum()
        vel = (joints[1:] - joints[:-1]).pow(2).sum(-1).mean(-1).sum()
        anchor = (w_data * (art - art0).pow(2).sum(-1)).sum()
        loss = data + cfg.velocity_weight * vel + cfg.articulation_weight * anchor
        loss.backward()
        return loss

    optim.step(closure)
    with torch.no_grad():
        R = axis_angle_to_matrix(delta) @ R0
        return art.detach().clone(), matrix_to_axis_angle(R), tr.detach() / CM
