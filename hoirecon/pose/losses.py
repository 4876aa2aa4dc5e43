"""Training losses of the pose network (supervised and pseudo-labelled alike).

All positions are compared in fractions of the box they were predicted in (the hand box for
the joints, the object box for the control-point votes), so a loss does not depend on how
large the hand or the object appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.pose.network import PoseNetOutput, image_to_roi

__all__ = ["LossWeights", "PoseTargets", "decode_hand_params", "heatmap_cross_entropy", "pose_losses"]


def decode_hand_params(params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 58) -> global rotation axis-angle (B, 3), articulation (B, 45), shape (B, 10)."""
    return params[:, :3], params[:, 3:48], params[:, 48:58]


@dataclass
class PoseTargets:
    """Labels of a batch of B crops (crop pixels).

    joints_2d (B, 21, 2); hand_rot (B, 3, 3) rotation hand frame -> camera; articulation (B, 45);
    shape (B, 10); control_2d (B, 21, 2) the object's control points; hand_weight,
    object_weight (B,) 0 or 1: which parts of each sample are labelled (a pseudo-label may
    keep only one of them).
    """

    joints_2d: Tensor
    hand_rot: Tensor
    articulation: Tensor
    shape: Tensor
    control_2d: Tensor
    hand_weight: Tensor
    object_weight: Tensor


@dataclass(frozen=True)
class LossWeights:
    """joints_2d: L1 of the soft-argmax joints (hand-box fractions); heatmap: cross-entropy of
    the heatmaps' softmax against a Gaussian of ``heatmap_sigma`` cells at each true joint (the
    soft-argmax alone gives flat initial heatmaps almost no gradient: measured, its L1 stayed at
    0.25 of the box over 400 steps from scratch); rotation: squared Frobenius
    distance of the global rotation matrices; articulation, shape: squared errors;
    votes: smooth-L1 of every cell's control points (object-box fractions); confidence: squared
    error of the confidence against ``exp(-distance / conf_scale)`` of the vote's own error."""

    joints_2d: float = 1.0
    heatmap: float = 1.0
    heatmap_sigma: float = 1.0
    rotation: float = 0.5
    articulation: float = 1.0
    shape: float = 0.05
    votes: float = 1.0
    confidence: float = 0.5
    conf_scale: float = 0.05


def _weighted_mean(per_sample: Tensor, weight: Tensor) -> Tensor:
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)


def heatmap_cross_entropy(heatmaps: Tensor, joints_roi: Tensor, sigma: float) -> Tensor:
    """Per-sample cross-entropy of softmax heatmaps against Gaussian targets.

    Args:
        heatmaps: (B, J, R, R) logits. joints_roi: (B, J, 2) true joints as RoI fractions (may
            lie outside [0, 1]: their target is then the nearest border cells). sigma: in cells.
    Returns:
        (B,) mean over joints.
    """
    B, J, R, _ = heatmaps.shape
    centres = (torch.arange(R, dtype=heatmaps.dtype, device=heatmaps.device) + 0.5)
    pos = (joints_roi * R).clamp(0.5, R - 0.5)
    gx = torch.exp(-0.5 * ((centres - pos[..., 0:1]) / sigma) ** 2)  # (B, J, R)
    gy = torch.exp(-0.5 * ((centres - pos[..., 1:2]) / sigma) ** 2)
    target = gy[..., :, None] * gx[..., None, :]
    target = target / target.sum((-1, -2), keepdim=True)
    logp = torch.log_softmax(heatmaps.flatten(2), -1).view_as(heatmaps)
    return -(target * logp).sum((-1, -2)).mean(1)


def pose_losses(out: PoseNetOutput, target: PoseTargets, hand_boxes: Tensor,
                w: LossWeights = LossWeights()) -> dict[str, Tensor]:
    """The terms and their weighted sum ``"total"`` (scalars); ``hand_boxes`` (B, 4) crop pixels."""
    rot, art, shape = decode_hand_params(out.hand_params)
    hw, ow = target.hand_weight, target.object_weight
    joints = (image_to_roi(out.joints_2d, hand_boxes) - image_to_roi(target.joints_2d, hand_boxes)).abs()
    terms = {
        "joints_2d": _weighted_mean(joints.mean((1, 2)), hw),
        "heatmap": _weighted_mean(heatmap_cross_entropy(out.heatmaps, image_to_roi(target.joints_2d, hand_boxes),
                                                        w.heatmap_sigma), hw),
        "rotation": _weighted_mean((axis_angle_to_matrix(rot) - target.hand_rot).square().sum((1, 2)), hw),
        "articulation": _weighted_mean((art - target.articulation).square().mean(1), hw),
        "shape": _weighted_mean((shape - target.shape).square().mean(1), hw),
    }
    boxes = out.object_boxes
    votes = image_to_roi(out.control_votes.flatten(1, 2), boxes).view_as(out.control_votes)  # (B, G, N, 2)
    gt = image_to_roi(target.control_2d, boxes)[:, None]  # (B, 1, N, 2)
    err = votes - gt
    terms["votes"] = _weighted_mean(F.smooth_l1_loss(err, torch.zeros_like(err), beta=0.02,
                                                     reduction="none").mean((1, 2, 3)), ow)
    conf_target = torch.exp(-err.detach().norm(dim=-1) / w.conf_scale)
    terms["confidence"] = _weighted_mean((out.control_conf - conf_target).square().mean((1, 2)), ow)
    terms["total"] = sum(getattr(w, k) * v for k, v in terms.items())
    return terms
