"""The pose network (Liu et al. Table 1): module shapes, PnP, voting, one training step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.pose.geometry import (box_control_points, crop_intrinsics, from_crop, solve_pnp, solve_translation,
                                    square_crop, to_crop, vote_control_points)
from hoirecon.pose.losses import PoseTargets, pose_losses
from hoirecon.pose.network import (CPU_CONFIG, NUM_HAND_PARAMS, PAPER_CONFIG, ContextualReasoning, FPNP2,
                                   HandDecoder, HandObjectPoseNet, ObjectDecoder, PoseNetConfig, soft_argmax_2d)
from hoirecon.render.camera import project_points

TINY = PoseNetConfig(name="tiny", image_size=64, resnet_block="basic", resnet_layers=(1, 1, 1, 1), fpn_channels=16,
                     roi_size=8, cr_channels=8, hourglass_depth=2, hand_channels=32, hand_fc=(32, 32),
                     object_channels=16)


def _boxes(B: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    hand = torch.tensor([[0.1, 0.2, 0.6, 0.7]]).repeat(B, 1) * size
    obj = torch.tensor([[0.4, 0.3, 0.9, 0.9]]).repeat(B, 1) * size
    return hand, obj


def test_module_shapes_tiny():
    cfg = TINY
    B, C, R = 2, cfg.fpn_channels, cfg.roi_size
    torch.manual_seed(0)
    assert FPNP2(cfg)(torch.rand(B, 3, 64, 64)).shape == (B, C, 16, 16)
    x = torch.randn(B, C, R, R)
    assert ContextualReasoning(C, cfg.cr_channels)(x, torch.randn(B, C, R, R)).shape == (B, C, R, R)
    heat, joints, params = HandDecoder(cfg)(x)
    assert heat.shape == (B, 21, R, R) and joints.shape == (B, 21, 2) and params.shape == (B, NUM_HAND_PARAMS)
    offsets, conf = ObjectDecoder(cfg)(x)
    assert offsets.shape == (B, R * R, 21, 2) and conf.shape == (B, R * R, 21)
    assert bool(((conf > 0) & (conf < 1)).all())
    out = HandObjectPoseNet(cfg)(torch.rand(B, 3, 64, 64), *_boxes(B, 64))
    assert out.joints_2d.shape == (B, 21, 2) and out.control_votes.shape == (B, R * R, 21, 2)
    # The joints lie inside the hand box (soft-argmax of the hand RoI).
    hand = _boxes(B, 64)[0]
    assert bool((out.joints_2d >= hand[:, None, :2]).all() and (out.joints_2d <= hand[:, None, 2:]).all())


@pytest.mark.parametrize("cfg", [CPU_CONFIG, dataclasses.replace(PAPER_CONFIG, image_size=128)],
                         ids=["cpu", "paper-widths"])
def test_full_network_shapes(cfg):
    """The CPU config at its own size; the paper's widths (ResNet-50, 256-ch P2, 32x32 RoIs) at 128 px."""
    net = HandObjectPoseNet(cfg).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, cfg.image_size, cfg.image_size), *_boxes(1, cfg.image_size))
    R = cfg.roi_size
    assert out.heatmaps.shape == (1, 21, R, R) and out.hand_params.shape == (1, 58)
    assert out.control_conf.shape == (1, R * R, 21)


def test_paper_config_sizes():
    """Table 1: 512 px input, P2 128x128x256, 32x32x256 RoIs, 1024x1024 similarity, 2x2x512 -> 58."""
    cfg = PAPER_CONFIG
    assert (cfg.image_size, cfg.fpn_channels, cfg.roi_size, cfg.cr_channels, cfg.hand_channels) == (512, 256, 32,
                                                                                                     128, 512)
    net = HandObjectPoseNet(cfg)
    assert net.hand.fc[0].in_features == 2048  # 2 x 2 x 512 flattened
    assert net.encoder.body.layer4[0].conv3.out_channels == 2048  # ResNet-50 bottlenecks


def test_soft_argmax_peak():
    heat = torch.full((1, 1, 8, 8), -50.0)
    heat[0, 0, 5, 2] = 50.0
    assert torch.allclose(soft_argmax_2d(heat), torch.tensor([[[2.5, 5.5]]]), atol=1e-4)


def _camera(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    R = axis_angle_to_matrix(torch.randn(1, 3, generator=g, dtype=torch.float64) * 0.8)[0]
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, torch.tensor([0.02, -0.03, 0.45], dtype=torch.float64)
    K = torch.tensor([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], dtype=torch.float64)
    return T, K


def test_pnp_recovers_known_pose():
    verts = torch.rand(200, 3, dtype=torch.float64) * torch.tensor([0.08, 0.15, 0.06], dtype=torch.float64)
    cp = box_control_points(verts)
    assert cp.shape == (21, 3)
    assert torch.allclose(cp[20], 0.5 * (verts.min(0).values + verts.max(0).values))
    T, K = _camera()
    pix = project_points((cp @ T[:3, :3].T + T[:3, 3])[None], K[None])[0]
    T_est = solve_pnp(cp.numpy(), pix.numpy(), K.numpy())
    assert T_est is not None
    np.testing.assert_allclose(T_est, T.numpy(), atol=1e-6)


def test_solve_translation_exact():
    T, K = _camera(1)
    pts = torch.randn(2, 21, 3, dtype=torch.float64) * 0.04
    t = torch.tensor([[0.01, 0.02, 0.4], [-0.05, 0.0, 0.6]], dtype=torch.float64)
    pix = project_points(pts + t[:, None], K[None].expand(2, 3, 3))
    assert torch.allclose(solve_translation(pts, pix, K[None].expand(2, 3, 3)), t, atol=1e-9)


def test_vote_prefers_confident_cells():
    votes = torch.zeros(1, 4, 1, 2)
    votes[0, 0, 0] = torch.tensor([10.0, 20.0])
    votes[0, 1:, 0] = 99.0
    conf = torch.tensor([[[0.9], [0.01], [0.01], [0.01]]])
    pts, c = vote_control_points(votes, conf, top_k=1)
    assert torch.allclose(pts, torch.tensor([[[10.0, 20.0]]])) and float(c) == pytest.approx(0.9)


def test_crop_round_trip_and_intrinsics():
    hand = torch.tensor([[30.0, 40.0, 90.0, 120.0]])
    obj = torch.tensor([[70.0, 60.0, 150.0, 130.0]])
    crop = square_crop(hand, obj)
    p = torch.tensor([[[33.0, 47.0], [140.0, 100.0]]])
    assert torch.allclose(from_crop(to_crop(p, crop, 128), crop, 128), p, atol=1e-4)
    T, K = _camera(2)
    X = torch.randn(1, 5, 3, dtype=torch.float64) * 0.05 + torch.tensor([0, 0, 0.5], dtype=torch.float64)
    Kc = crop_intrinsics(K[None], crop.double(), 128)
    assert torch.allclose(project_points(X, Kc), to_crop(project_points(X, K[None]), crop.double(), 128))


def _batch(B: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hand, obj = _boxes(B, size)
    targets = PoseTargets(
        joints_2d=hand[:, None, :2] + torch.rand(B, 21, 2, generator=g) * (hand[:, None, 2:] - hand[:, None, :2]),
        hand_rot=axis_angle_to_matrix(torch.randn(B, 3, generator=g)),
        articulation=0.3 * torch.randn(B, 45, generator=g),
        shape=torch.randn(B, 10, generator=g),
        control_2d=obj[:, None, :2] + torch.rand(B, 21, 2, generator=g) * (obj[:, None, 2:] - obj[:, None, :2]),
        hand_weight=torch.ones(B), object_weight=torch.ones(B))
    return torch.rand(B, 3, size, size, generator=g), hand, obj, targets


def test_training_step_lowers_loss():
    torch.manual_seed(0)
    net = HandObjectPoseNet(TINY)
    images, hand, obj, targets = _batch(4, TINY.image_size)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = pose_losses(net(images, hand, obj), targets, hand)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_loss_weights_mask_unlabelled_parts():
    torch.manual_seed(0)
    net = HandObjectPoseNet(TINY)
    images, hand, obj, targets = _batch(2, TINY.image_size)
    targets.object_weight = torch.zeros(2)
    terms = pose_losses(net(images, hand, obj), targets, hand)
    assert float(terms["votes"]) == 0.0 and float(terms["confidence"]) == 0.0 and float(terms["joints_2d"]) > 0
