"""Stage `pose`: per-frame hand and object poses from the pose network (Liu et al.), given the
object's template mesh.

Reads the frames and the masks (their boxes are the network's hand and object boxes); the
template (``object_mesh``, watertight, metres, its own frame) gives the 21 control points PnP
needs. Intrinsics: a pinhole of focal length ``--focal`` (pixels of the original video) or
``--fov``, or without either the hand stage's default when structure from motion cannot measure
it (``hoirecon.handpose.perspective.user_intrinsics``: 1.2 x the longer side); principal point at
the frame centre. (The paper's focal of 1, 90 degrees, is ``--fov 90``.) ``fit --init pose``
sees these poses through the hand stage's camera, whichever that is.

Artifacts in ``<out>/pose/``:

``poses.npz`` (``hoirecon.stages.outputs.PoseOutput``)
    ``K`` (3, 3); ``image_size`` (W, H); ``valid`` (T,) bool (both boxes found and PnP
    succeeded); hand, in the hand stage's layout: ``T_cam_to_hand`` (T, 4, 4),
    ``articulation`` (T, 45), ``shape`` (10,) (mean over valid frames), ``shape_per_frame``
    (T, 10), ``side`` ('right'), ``hand_model`` ('anny'), ``keypoints_2d`` (T, 21, 2) the
    network's 2D joints (MediaPipe order), ``keypoints_cam`` (T, 21, 3); object:
    ``T_obj_to_cam`` (T, 4, 4), ``T_hand_to_obj`` (T, 4, 4) (the fit's layout),
    ``control_points_3d`` (21, 3), ``control_points_2d`` (T, 21, 2) voted,
    ``control_conf`` (T, 21); ``consistent_hand``, ``consistent_object`` (T,) bool: the
    pseudo-label filter's verdict (``hoirecon.pose.pseudo``), a per-frame quality flag.
    Invalid frames hold identity poses and NaN points.
``overlay.mp4``
    The hand skeleton (2D joints; green where temporally consistent, orange not) and the
    template's control-point box projected with the object pose (cyan / orange).
``quality.json``
    counts and per-frame consistency errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from hoirecon.errors import RunError, UserError
from hoirecon.hand import build_hand_model
from hoirecon.handpose.perspective import user_intrinsics
from hoirecon.io.video import write_video
from hoirecon.pipeline.hashing import file_digest
from hoirecon.pipeline.runner import StageContext
from hoirecon.pose.data import load_clip, load_template
from hoirecon.pose.geometry import BOX_EDGES
from hoirecon.pose.predict import ClipPoses, predict_clip
from hoirecon.pose.pseudo import temporal_consistency
from hoirecon.pose.train import load_pose_net
from hoirecon.segment.detect import HAND_BONES
from hoirecon.stages.configs import PoseConfig
from hoirecon.stages.outputs import FramesMeta, PoseOutput
from hoirecon.stages.registry import STAGES
from hoirecon.weights import require_weights

DEFAULT_WEIGHTS = "pose/pose_cpu.pt"
WEIGHTS_SOURCE = "the repository's weights/pose/, or train your own with `hoirecon pose train` (weights/pose/README.md)"


def _weights_path(cfg: PoseConfig) -> Path:
    if cfg.weights is None:
        return require_weights(DEFAULT_WEIGHTS, "pose", WEIGHTS_SOURCE)
    path = Path(cfg.weights)
    if not path.is_file():
        raise UserError(f"pose network weights not found: {path}")
    return path


def external_inputs(cfg: PoseConfig) -> dict[str, str]:
    """Digests of the template and the weights; checks both first (one-line errors, exit 2)."""
    load_template(cfg.object_mesh)
    return {"object_mesh": file_digest(Path(cfg.object_mesh)), "weights": file_digest(_weights_path(cfg))}


def _draw(frame: np.ndarray, poses: ClipPoses, t: int, hand_ok: bool, object_ok: bool) -> np.ndarray:
    out = frame.copy()
    if not poses.valid[t]:
        cv2.putText(out, "no pose", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        return out
    corners = poses.control_proj[t, :8]
    colour = (60, 220, 230) if object_ok else (255, 150, 40)
    for a, b in BOX_EDGES:
        cv2.line(out, tuple(np.round(corners[a]).astype(int)), tuple(np.round(corners[b]).astype(int)), colour, 1,
                 cv2.LINE_AA)
    joints = poses.joints_2d[t]
    colour = (40, 220, 40) if hand_ok else (255, 150, 40)
    for a, b in HAND_BONES:
        cv2.line(out, tuple(np.round(joints[a]).astype(int)), tuple(np.round(joints[b]).astype(int)), colour, 1,
                 cv2.LINE_AA)
    for x, y in np.round(joints).astype(int):
        cv2.circle(out, (int(x), int(y)), 2, colour, -1)
    return out


def run_pose(ctx: StageContext, cfg: PoseConfig) -> dict:
    meta = FramesMeta.load(ctx.input_dir("frames"))
    ctx.input_dir("masks")
    W, H = meta.size
    K = user_intrinsics(cfg.focal_px, cfg.fov_deg, W, H, meta.source_size[0], dtype=torch.float64).numpy()
    device = torch.device(ctx.device)
    net, recipe = load_pose_net(_weights_path(cfg), device)
    clip = load_clip(ctx.out_root, K=K, template=cfg.object_mesh, labelled=False)
    if not clip.valid.any():
        raise RunError("no frame has both a hand and an object mask; check masks/overlay.mp4")
    hand = build_hand_model("anny", device)
    with ctx.reporter.task("pose network", total=None):
        poses = predict_clip(net, clip, hand)
    if not poses.valid.any():
        raise RunError("the pose network found no object pose in any frame (PnP failed)")
    check = temporal_consistency(poses, clip.hand_boxes, clip.object_boxes, clip.control_3d)
    T_hand_to_obj = np.linalg.inv(poses.T_obj_to_cam) @ np.linalg.inv(poses.T_cam_to_hand)
    T_hand_to_obj[~poses.valid] = np.eye(4)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    PoseOutput(
        K=f32(K), image_size=np.array([W, H], np.int64), valid=poses.valid,
        T_cam_to_hand=f32(poses.T_cam_to_hand), articulation=f32(np.nan_to_num(poses.articulation)),
        shape=f32(np.nanmean(poses.shape[poses.valid], 0)), shape_per_frame=f32(poses.shape), side="right",
        hand_model="anny", keypoints_2d=f32(poses.joints_2d), keypoints_cam=f32(poses.keypoints_cam),
        T_obj_to_cam=f32(poses.T_obj_to_cam), T_hand_to_obj=f32(T_hand_to_obj), control_points_3d=f32(clip.control_3d),
        control_points_2d=f32(poses.control_2d), control_conf=f32(poses.control_conf),
        consistent_hand=check.hand_keep, consistent_object=check.object_keep).save(ctx.tmp_dir)
    write_video(ctx.tmp_dir / "overlay.mp4",
                (_draw(clip.images[t], poses, t, bool(check.hand_keep[t]), bool(check.object_keep[t]))
                 for t in range(len(clip.images))), fps=meta.fps)
    T = len(clip.images)
    quality = {
        "num_frames": T, "valid_frames": int(poses.valid.sum()),
        "consistent_hand_frames": int(check.hand_keep.sum()), "consistent_object_frames": int(check.object_keep.sum()),
        "weights": str(_weights_path(cfg)), "weights_recipe": recipe.get("name"),
        "per_frame": [{k: (None if not np.isfinite(v[t]) else round(float(v[t]), 4)) for k, v in check.errors.items()}
                      for t in range(T)],
    }
    (ctx.tmp_dir / "quality.json").write_text(json.dumps(quality, indent=2))
    return {"num_frames": T, "valid_frames": quality["valid_frames"],
            "consistent_hand_frames": quality["consistent_hand_frames"],
            "consistent_object_frames": quality["consistent_object_frames"],
            "overlay": str(ctx.out_root / "pose" / "overlay.mp4")}


STAGE = STAGES["pose"]
