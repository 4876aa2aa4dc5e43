"""Blending hand and object renderings into semantic masks (DiffHOI supp. A.1, eq. 1-2).

Channel order of every output: (background, hand, object); the channels sum to 1.

Soft blending (eq. 1-2), per pixel::

    z_k  = m_k * (d_far - d_k) / (d_far - d_near)       (k = hand, object; 1 = near, 0 = far)
    w_k  = m_k * exp((z_k - z_max) / gamma)
    w_bg = exp((eps - z_max) / gamma)                    (SoftRas's background at depth eps)
    p    = (w_bg, w_hand, w_obj) / (w_bg + w_hand + w_obj)

The paper's ``z_max`` is the max over the whole batch of pixels. Every weight, background
included, carries the same factor ``exp(-z_max / gamma)``, so any shift cancels exactly in
the ratio: it only matters for floating point. With gamma = 1e-4 a batch-wide max
underflows ``exp`` for every pixel whose nearest surface is more than ~87 * gamma (in
normalized depth) behind the batch's nearest one, giving 0/0. We therefore take the max
per pixel over {z_hand, z_obj, eps} (detached: it cancels, so its gradient is zero anyway),
which makes the largest weight's exponential exactly 1: no underflow of the leading term
and no overflow, with the same result as eq. 2 wherever eq. 2 is representable.
"""

from __future__ import annotations

import torch


# Label values of semantic masks, in the channel order of every blend output.
LABEL_BG, LABEL_HAND, LABEL_OBJECT = 0, 1, 2


def _check_same_shape(*tensors: torch.Tensor) -> None:
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"mask and depth tensors must share one shape, got {[tuple(x.shape) for x in tensors]}")


def normalized_nearness(mask: torch.Tensor, depth: torch.Tensor, d_near: float, d_far: float) -> torch.Tensor:
    """z = m * (d_far - d) / (d_far - d_near) of eq. 2 (1 at d_near, 0 at d_far). (...) -> (...)."""
    if not d_far > d_near:
        raise ValueError(f"blending needs d_far > d_near, got d_near={d_near}, d_far={d_far}")
    return mask * (d_far - depth) / (d_far - d_near)


def soft_blend_masks(
    mask_hand: torch.Tensor,
    mask_obj: torch.Tensor,
    depth_hand: torch.Tensor,
    depth_obj: torch.Tensor,
    gamma: float = 1e-4,
    d_near: float = 0.0,
    d_far: float = 2.0,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Soft semantic mask by depth (DiffHOI eq. 1-2), differentiable in masks and depths.

    Args:
        mask_hand, mask_obj: (...) soft masks in [0, 1] (any shape, e.g. (B, P) or (B, H, W)).
        depth_hand, depth_obj: (...) depths (camera z, same units as d_near/d_far); their
            value where the mask is 0 does not matter.
        gamma: temperature of the depth soft-max in normalized depth units (SoftRas 1e-4).
        d_near, d_far: depth range mapped to nearness 1 and 0.
        eps: nearness of the background (SoftRas uses a small positive value so that a
            surface at the far plane still beats the background).

    Returns:
        probs: (..., 3) probabilities of (background, hand, object), summing to 1.
    """
    _check_same_shape(mask_hand, mask_obj, depth_hand, depth_obj)
    if gamma <= 0:
        raise ValueError(f"blending needs gamma > 0, got {gamma}")
    z_h = normalized_nearness(mask_hand, depth_hand, d_near, d_far)
    z_o = normalized_nearness(mask_obj, depth_obj, d_near, d_far)
    z_bg = torch.full_like(z_h, eps)
    z = torch.stack([z_bg, z_h, z_o], dim=-1)  # (..., 3)
    m = torch.stack([torch.ones_like(mask_hand), mask_hand, mask_obj], dim=-1)
    z_max = z.detach().amax(dim=-1, keepdim=True)
    w = m * torch.exp((z - z_max) / gamma)
    return w / w.sum(dim=-1, keepdim=True)


def hard_blend_masks(
    mask_hand: torch.Tensor,
    mask_obj: torch.Tensor,
    depth_hand: torch.Tensor,
    depth_obj: torch.Tensor,
) -> torch.Tensor:
    """Semantic mask where the front surface wins (the "hard blending" ablation).

    The depth order is a hard, gradient-free comparison; the masks are then composited
    front to back ("over"), so the masks keep their gradients:
    hand in front: p_hand = m_h, p_obj = m_o (1 - m_h); object in front: symmetric.
    Ties go to the hand. (Train depth order with an ordinal depth loss in this mode.)

    Args:
        mask_hand, mask_obj: (...) soft masks in [0, 1].
        depth_hand, depth_obj: (...) depths.

    Returns:
        probs: (..., 3) probabilities of (background, hand, object), summing to 1.
    """
    _check_same_shape(mask_hand, mask_obj, depth_hand, depth_obj)
    hand_front = (depth_hand <= depth_obj).to(mask_hand.dtype).detach()
    p_hand = mask_hand * (1.0 - mask_obj * (1.0 - hand_front))
    p_obj = mask_obj * (1.0 - mask_hand * hand_front)
    p_bg = 1.0 - p_hand - p_obj
    return torch.stack([p_bg, p_hand, p_obj], dim=-1)
