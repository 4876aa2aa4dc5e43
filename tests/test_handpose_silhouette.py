"""The hand fitted to its own mask (hoirecon.handpose.silhouette)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.hand import build_hand_model
from hoirecon.handpose.silhouette import SilhouetteFitConfig, fit_hand_to_masks, soft_visible_iou, visible_hand_iou
from hoirecon.render.camera import make_intrinsics, project_points
from hoirecon.render.raster import strided_silhouettes

H, W = 96, 128


@pytest.fixture(scope="module")
def hand():
    return build_hand_model("anny")


def _posed(hand, art, rot, transl):
    out = hand(art, torch.zeros_like(rot), torch.zeros(1, 10), side="right")
    R = axis_angle_to_matrix(rot)
    to_cam = (R, transl[:, None])
    return out.verts @ to_cam[0].transpose(1, 2) + to_cam[1], out.keypoints @ R.transpose(1, 2) + to_cam[1], out.faces


def test_soft_visible_iou_ignores_object_pixels():
    sil = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    known = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # pixel 1 is object: a finger behind it is no error
    assert torch.allclose(soft_visible_iou(sil, mask, known, eps=0.0), torch.tensor([0.5]))
    assert torch.allclose(soft_visible_iou(sil, mask, torch.ones(1, 4), eps=0.0), torch.tensor([1 / 3]))
    # On hard silhouettes it is the IoU the stage reports.
    hard = visible_hand_iou(sil[0].bool().numpy(), mask[0].bool().numpy(), ~known[0].bool().numpy())
    assert hard == pytest.approx(0.5)


def test_a_displaced_hand_moves_back_onto_its_mask(hand):
    K = make_intrinsics(150.0, 150.0, W / 2, H / 2)
    art = torch.zeros(2, 45)
    art[:, 2:36:3] = 0.3  # fingers a little bent
    rot = torch.tensor([[0.3, 0.2, 2.8], [-0.2, 0.4, 2.9]])
    transl = torch.tensor([[0.0, 0.0, 0.45], [0.01, -0.01, 0.5]])
    verts, kps, faces = _posed(hand, art, rot, transl)
    masks = strided_silhouettes(verts, faces, K, H, W, 1).numpy()
    obj = np.zeros_like(masks)
    landmarks = project_points(kps, K.expand(2, 3, 3))
    # Frame 0 starts 1.5 cm and 0.2 rad off; frame 1 starts where it is.
    start_tr = transl + torch.tensor([[0.015, -0.01, 0.0], [0.0, 0.0, 0.0]])
    start_rot = rot + torch.tensor([[0.0, 0.0, 0.2], [0.0, 0.0, 0.0]])
    cfg = SilhouetteFitConfig(steps=40)
    fit = fit_hand_to_masks(hand, art, start_rot, start_tr, torch.zeros(10), "right", K, masks, obj, landmarks,
                            np.array([True, True]), cfg)
    assert fit.iou_before[0] < 0.6 and fit.iou_after[0] > 0.85 and fit.kept[0]
    error = [(_posed(hand, art[:1], r[:1], t[:1])[0] - verts[:1]).norm(dim=-1).mean()
             for r, t in ((start_rot, start_tr), (fit.wrist_rot, fit.transl))]
    assert error[1] < 0.5 * error[0]  # mean vertex error (m)
    # Where the fit cannot raise the IoU the frame keeps its input, bit for bit.
    assert fit.kept[1] or torch.equal(fit.transl[1], start_tr[1])
    assert fit.iou_after[1] >= 0.9 or not fit.kept[1]


def test_frames_not_asked_for_are_left_alone(hand):
    K = make_intrinsics(150.0, 150.0, W / 2, H / 2)
    art, rot, tr = torch.zeros(1, 45), torch.tensor([[0.3, 0.2, 2.8]]), torch.tensor([[0.0, 0.0, 0.45]])
    masks = np.zeros((1, H, W), bool)
    fit = fit_hand_to_masks(hand, art, rot, tr, torch.zeros(10), "right", K, masks, masks, torch.zeros(1, 21, 2),
                            np.array([False]))
    assert torch.equal(fit.transl, tr) and not fit.kept.any() and np.isnan(fit.iou_before).all()
