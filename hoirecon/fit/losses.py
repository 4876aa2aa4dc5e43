"""Loss terms of the HOI scene fit (pure functions; weights live in ``LossWeights``).

- ``semantic_mask_loss``: cross-entropy between the blended (bg, hand, object)
  probabilities and the observed label of each sampled pixel. Cross-entropy rather than
  L2 because it keeps a strong gradient when a pixel is confidently wrong (e.g. object
  rendered over a background pixel), where L2 on probabilities saturates.
- ``eikonal_loss``: (|grad sdf| - 1)^2 at points (MLP SDF; the grid has its own on the grid).
- ``temporal_first_diff`` / ``temporal_second_diff``: smoothness over frames.
- ``penetration_loss``: hand vertices inside the object (object SDF < 0), in units of the
  bounding radius so the weight is size-independent.
- ``deep_penetration_loss``: the same depths squared and summed over each frame's vertices:
  a few fingertips deep inside dominate it, where the mean over ~all hand vertices of
  ``penetration_loss`` dilutes them to nothing.
- ``ordinal_depth_loss``: with hard blending (the paper's B.4 ablation) the depth order gets
  no gradient from the masks; where both surfaces cover a pixel, the one observed must be
  in front (the ordinal depth loss of PHOSA-style mesh fitting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossWeights:
    """Weights of the loss terms (total = sum of weight x term).

    mask: semantic cross-entropy (per sampled pixel, mean).
    eikonal: (|grad| - 1)^2 (grid: near-surface nodes; MLP: ray samples + random points).
    sdf_smooth: squared Laplacian of the grid (grid SDF only; fills unobserved space).
    sdf_area: surface area of the grid's object in units of radius^2 (grid SDF only;
        ``GridSDF.surface_area``): a minimal-surface prior for the parts no view constrains.
    hidden_volume: the object's volume that the masks see mostly through the hand (units of
        radius^3; grid SDF only; ``GridSDF.volume`` weighted by ``hidden_weights``): a real
        clip's visual hull is deep behind the hand, and the prior filled it with a body no
        frame shows (osmo_pocket, docs/experiments.md). The fit stage turns it off without a
        prior (``hoirecon.stages.fit.preset_configs``).
    penetration: mean over hand vertices of relu(-sdf) / radius.
    hand_penetration: ``deep_penetration_loss`` with the object SDF held fixed, so it moves
        only the hand and the per-frame object pose (never carves the object; what it moves:
        ``OptimizeConfig.hand_penetration_moves``); ramped in over the last part of the fit
        (``OptimizeConfig.hand_penetration_start``), when the masks have aligned the hand and
        the object.
    temporal_artic: squared 2nd differences of the articulation over frames (rad^2).
    temporal_cam: squared 2nd differences of the camera pose (rotation-matrix entries
        and translation / radius) over frames.
    temporal_obj: squared 1st differences of the per-frame object pose deltas (the object
        is held rigidly, so the deltas should stay nearly constant).
    artic_prior: squared articulation change from the initialisation (rad^2, mean).
    cam_prior: squared camera delta (rotation rad^2 + (translation / radius)^2, mean).
    ordinal_depth: ``ordinal_depth_loss`` (used only with hard blending, where it replaces
        the depth gradient that soft blending gets from the masks).
    """

    mask: float = 1.0
    eikonal: float = 0.1
    sdf_smooth: float = 1e-3
    sdf_area: float = 0.01
    hidden_volume: float = 1.0
    penetration: float = 10.0
    hand_penetration: float = 100.0
    temporal_artic: float = 1.0
    temporal_cam: float = 1.0
    temporal_obj: float = 1.0
    artic_prior: float = 0.01
    cam_prior: float = 0.01
    ordinal_depth: float = 1.0


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """0 below 0, 1 above 1, 3x^2 - 2x^3 between (C1: no kink for the optimiser to feel)."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def hidden_weights(hand_share: torch.Tensor, share_from: float, share_full: float) -> torch.Tensor:
    """Weights (0..1) of points on the hidden-volume cost from their hand share (any shape): the
    share of the frames that see a point in which it lands on the hand mask
    (``hoirecon.fit.mesh.mask_share_per_point``). 0 up to ``share_from``, 1 from
    ``share_full`` on, ``smoothstep`` between (0 <= share_from < share_full)."""
    return smoothstep((hand_share - share_from) / (share_full - share_from))


def semantic_mask_loss(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Cross-entropy. probs: (..., 3) (bg, hand, object); labels: (...) int64 in {0, 1, 2} -> scalar."""
    p = probs.gather(-1, labels[..., None].long())[..., 0]
    return -torch.log(p.clamp_min(eps)).mean()


def eikonal_loss(grad: torch.Tensor) -> torch.Tensor:
    """grad: (N, 3) SDF gradients -> mean (|grad| - 1)^2."""
    if grad is None or grad.numel() == 0:
        return torch.zeros(())
    return ((grad.norm(dim=-1) - 1.0) ** 2).mean()


def temporal_first_diff(x: torch.Tensor) -> torch.Tensor:
    """x: (T, D) -> mean over t of |x[t+1] - x[t]|^2 (0 for T < 2)."""
    if x.shape[0] < 2:
        return x.sum() * 0.0
    return (x[1:] - x[:-1]).pow(2).sum(-1).mean()


def temporal_second_diff(x: torch.Tensor) -> torch.Tensor:
    """x: (T, D) -> mean over t of |x[t+1] - 2 x[t] + x[t-1]|^2 (0 for T < 3)."""
    if x.shape[0] < 3:
        return x.sum() * 0.0
    return (x[2:] - 2 * x[1:-1] + x[:-2]).pow(2).sum(-1).mean()


def penetration_loss(sdf_at_hand_verts: torch.Tensor, radius: float) -> torch.Tensor:
    """sdf_at_hand_verts: (B, V) object SDF (m) at hand vertices -> mean relu(-sdf) / radius."""
    return torch.relu(-sdf_at_hand_verts).mean() / radius


def deep_penetration_loss(sdf_at_hand_verts: torch.Tensor, radius: float) -> torch.Tensor:
    """sdf_at_hand_verts: (B, V) object SDF (m) -> mean over frames of sum_v (relu(-sdf_v) / radius)^2."""
    return (torch.relu(-sdf_at_hand_verts) / radius).pow(2).sum(-1).mean()


def ordinal_depth_loss(labels: torch.Tensor, mask_hand: torch.Tensor, depth_hand: torch.Tensor,
                       mask_obj: torch.Tensor, depth_obj: torch.Tensor, radius: float,
                       min_mask: float = 0.5) -> torch.Tensor:
    """Depth-order loss where hand and object both cover a pixel.

    Args:
        labels: (...) observed labels (0 bg, 1 hand, 2 object).
        mask_hand, depth_hand, mask_obj, depth_obj: (...) rendered soft masks and camera z (m).
        radius: object bounding radius (m): depths are compared in its units.
        min_mask: both masks above this = both surfaces are there.
    Returns:
        scalar: mean over the sampled pixels of relu(z_observed - z_other) / radius.
    """
    both = (mask_hand > min_mask) & (mask_obj > min_mask)
    wrong_hand = torch.relu(depth_hand - depth_obj) * (both & (labels == 1))
    wrong_obj = torch.relu(depth_obj - depth_hand) * (both & (labels == 2))
    return (wrong_hand + wrong_obj).mean() / radius
