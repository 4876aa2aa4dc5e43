"""Per-frame hand and object poses of a clip from the pose network.

For each valid frame: crop around the hand and object boxes, run the network, then
- hand: the 58 values give the hand's rotation (hand frame -> camera), articulation and shape;
  the hand model gives its keypoints about the wrist, and the translation that projects them
  onto the network's 2D joints (``solve_translation``) places it: ``T_cam_to_hand``;
- object: the voted 2D control points, PnP against the template's control points:
  ``T_obj_to_cam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.geometry.transforms import invert_rigid
from hoirecon.hand.model import HandModel
from hoirecon.pose.data import ClipData, crops_for
from hoirecon.pose.geometry import crop_image, from_crop, solve_pnp, solve_translation, to_crop, vote_control_points
from hoirecon.pose.losses import decode_hand_params
from hoirecon.pose.network import HandObjectPoseNet

__all__ = ["ClipPoses", "predict_clip"]


@dataclass
class ClipPoses:
    """Predictions for T frames (frame pixels, metres, camera frame).

    valid (T,) the frame had both boxes and PnP found a pose; joints_2d (T, 21, 2);
    keypoints_cam (T, 21, 3); T_cam_to_hand (T, 4, 4); hand_rot (T, 3, 3); articulation (T, 45);
    shape (T, 10); control_2d (T, 21, 2) voted; control_conf (T, 21); T_obj_to_cam (T, 4, 4);
    control_proj (T, 21, 2) the template's control points projected with T_obj_to_cam.
    Invalid frames hold NaN (identity for the poses).
    """

    valid: np.ndarray
    joints_2d: np.ndarray
    keypoints_cam: np.ndarray
    T_cam_to_hand: np.ndarray
    hand_rot: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    control_2d: np.ndarray
    control_conf: np.ndarray
    T_obj_to_cam: np.ndarray
    control_proj: np.ndarray


@torch.no_grad()
def predict_clip(net: HandObjectPoseNet, clip: ClipData, hand: HandModel, batch_size: int = 8,
                 top_k: int = 16) -> ClipPoses:
    """Run ``net`` (in eval mode) over the clip's valid frames (module docstring)."""
    net.eval()
    dev = next(net.parameters()).device
    size = net.cfg.image_size
    T = len(clip.images)
    nan = lambda *s: np.full((T, *s), np.nan, np.float64)  # noqa: E731
    out = ClipPoses(valid=np.zeros(T, bool), joints_2d=nan(21, 2), keypoints_cam=nan(21, 3),
                    T_cam_to_hand=np.tile(np.eye(4), (T, 1, 1)), hand_rot=nan(3, 3), articulation=nan(45),
                    shape=nan(10), control_2d=nan(21, 2), control_conf=nan(21),
                    T_obj_to_cam=np.tile(np.eye(4), (T, 1, 1)), control_proj=nan(21, 2))
    frames = np.nonzero(clip.valid)[0]
    K = torch.as_tensor(clip.K, dtype=torch.float64)
    for s in range(0, len(frames), batch_size):
        idx = frames[s:s + batch_size]
        crops = torch.as_tensor(crops_for(clip.hand_boxes[idx], clip.object_boxes[idx]), dtype=torch.float64)
        images = np.stack([crop_image(clip.images[t], crops[j].numpy(), size) for j, t in enumerate(idx)])
        x = torch.as_tensor(images, device=dev).permute(0, 3, 1, 2).float() / 255.0
        boxes = [to_crop(torch.as_tensor(b[idx], dtype=torch.float64).view(-1, 2, 2), crops, size).view(-1, 4)
                 for b in (clip.hand_boxes, clip.object_boxes)]
        res = net(x, boxes[0].float().to(dev), boxes[1].float().to(dev))
        joints = from_crop(res.joints_2d.double().cpu(), crops, size)
        control, conf = vote_control_points(res.control_votes.double().cpu(), res.control_conf.double().cpu(), top_k)
        control = from_crop(control, crops, size)
        rot_aa, art, shape = (v.double().cpu() for v in decode_hand_params(res.hand_params))
        R = axis_angle_to_matrix(rot_aa)
        local = hand(art.float(), rot_aa.float(), shape.float()).keypoints.double()  # about the wrist, camera axes
        n = len(idx)
        transl = solve_translation(local, joints, K[None].expand(n, 3, 3))
        T_hand_to_cam = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
        T_hand_to_cam[:, :3, :3], T_hand_to_cam[:, :3, 3] = R, transl
        out.joints_2d[idx] = joints.numpy()
        out.keypoints_cam[idx] = (local + transl[:, None]).numpy()
        out.T_cam_to_hand[idx] = invert_rigid(T_hand_to_cam).numpy()
        out.hand_rot[idx], out.articulation[idx], out.shape[idx] = R.numpy(), art.numpy(), shape.numpy()
        out.control_2d[idx], out.control_conf[idx] = control.numpy(), conf.numpy()
        for j, t in enumerate(idx):
            pose = solve_pnp(clip.control_3d, control[j].numpy(), clip.K)
            if pose is None:
                continue
            out.valid[t] = True
            out.T_obj_to_cam[t] = pose
            cam = clip.control_3d @ pose[:3, :3].T + pose[:3, 3]
            uvw = cam @ clip.K.T
            out.control_proj[t] = uvw[:, :2] / uvw[:, 2:3]
    return out
