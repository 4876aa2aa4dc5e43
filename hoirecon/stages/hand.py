"""Stage `hand`: per-frame hand pose, shape and camera, initialised as in DiffHOI A.5.

Per frame, an off-the-shelf estimator gives articulation, wrist rotation, shape and a
weak-perspective camera; then (seed A.5) the shape is averaged over frames, the 45 finger
values become the articulation, the wrist rotation becomes the rotation of the camera
pose, and the translation comes from the weak camera by eq. 4 (pinhole of focal
``focal`` in normalised units, principal point at the frame centre; see
``hoirecon.handpose.perspective``). Finally the track is smoothed with a joint-velocity
penalty, and frames where no hand was found are interpolated (``valid`` False), as are frames
whose fitted hand covers much less of its hand mask than the clip's others do
(``contradicted_frames``).

Backends (``--backend``):
- ``mediapipe`` (default, offline): MediaPipe's hand landmark model on crops taken from the
  hand masks (rotation search, then tracking the crop from the previous landmarks), and an
  IK fit of the hand model to the 3D world landmarks and the 2D landmarks
  (``hoirecon.handpose``). The shape is fitted per frame, averaged, and the fit is then
  repeated with the averaged shape (by default measuring the 2D landmarks through the full
  pinhole; the camera it finds is stored as the equivalent weak camera, so eq. 4 applies
  unchanged: see ``HandConfig.perspective_ik``).
- ``frankmocap`` (the paper's estimator; needs ``weights/frankmocap/`` and, for MANO's mean
  finger pose that its outputs are offsets from, ``weights/mano/MANO_RIGHT.pkl``): boxes
  from the hand masks. Its shape values are SMPL-X betas: used as-is with
  ``--hand-model mano`` (as the paper does), replaced by the mean hand (zeros) with the anny
  model, whose shape space is different.

Artifacts in ``<out>/hand/``:

``hands.npz``
    ``K`` (3, 3) float32 pixel intrinsics of the working frames, ``fx = fy = focal *
    max(W, H) / 2``, ``(cx, cy) = ((W - 1) / 2, (H - 1) / 2)``;
    ``T_cam_to_hand`` (T, 4, 4) float32, maps camera points to the hand frame (the hand mesh
    in the hand frame is the model output with ``wrist_rot = 0``, ``transl = None``);
    ``articulation`` (T, 45); ``shape`` (10,); ``side`` (str); ``valid`` (T,) bool;
    ``keypoints_2d`` (T, 21, 2) pixels, MediaPipe order: the estimator's 2D keypoints
    (MediaPipe landmarks, or FrankMocap's weak projection), and for invalid frames the
    projection of the interpolated hand; ``weak_cam`` (T, 3) the estimator's scale-first
    weak cameras (s, t_x, t_y) in normalised coordinates, linearly interpolated on invalid
    frames; ``weak_origin`` (T, 3) the weak camera's reference point in the hand frame
    (metres); ``wrist_rot`` (T, 3) final axis-angle rotation hand frame -> camera;
    ``presence`` (T,) the estimator's confidence (0 where none); ``image_size`` (W, H);
    ``focal`` () the focal length in normalised units; ``hand_model`` (str);
    structure from motion on the object's pixels (``hoirecon.geometry.object_sfm``; all
    False / identity / zero when it did not register enough frames): ``sfm_registered``
    (T,) bool, ``R_cam_from_obj_sfm`` (T, 3, 3), ``t_cam_from_obj_sfm`` (T, 3) and
    ``center_sfm`` (3,), in the model's own frame and scale.
``camera.json``
    The intrinsics used (``focal_px``, ``fov_deg`` across the width, ``cx``, ``cy``,
    ``image_size``), where the focal length came from (``source``: --focal, --fov,
    structure from motion, or the paper's default) and the structure-from-motion result
    (registered frames, its focal, why it was not used).
``overlay.mp4``
    The shaded hand mesh (blue-green, white outline; grey on interpolated frames) over every
    frame, with the estimator's 2D keypoints as green dots.
``quality.json``
    per frame: presence, validity, reprojection error (pixels) of the final hand keypoints
    against the estimator's 2D keypoints, and ``mask_iou`` of the rendered hand against the
    hand mask with object pixels ignored (fingers behind the object); medians of both;
    ``dropped_frames``: the frames whose estimate was dropped for contradicting the hand mask.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from hoirecon.errors import RunError, UserError
from hoirecon.geometry.object_sfm import ObjectSfM, object_sfm
from hoirecon.geometry.regions import mask_box
from hoirecon.geometry.rotations import axis_angle_to_matrix, reflect_axis_angle
from hoirecon.geometry.transforms import invert_rigid
from hoirecon.hand import build_hand_model
from hoirecon.hand.model import HandModel
from hoirecon.handpose.ik import IKConfig, KeypointModel, fit_hand_to_landmarks
from hoirecon.handpose.perspective import (
    intrinsics_from_focal,
    normalized_to_pixels,
    pixels_to_normalized,
    rigid_transform,
    user_focal_px,
    weak_to_hand_to_cam,
)
from hoirecon.handpose.silhouette import SilhouetteFitConfig, fit_hand_to_masks, visible_hand_iou, visible_ious
from hoirecon.handpose.smooth import SmoothConfig, interpolate_missing, smooth_hand_track
from hoirecon.io.threads import torch_threads
from hoirecon.io.video import read_rgb, write_video
from hoirecon.pipeline.runner import StageContext, read_manifest
from hoirecon.render.camera import project_points
from hoirecon.render.mesh import render_mesh_image
from hoirecon.stages.configs import SIDE_AUTO, HandConfig
from hoirecon.stages.masks import side_from_clip, tracked_side
from hoirecon.stages.outputs import FramesMeta, HandsOutput, MasksOutput
from hoirecon.stages.registry import STAGES


@dataclass
class PerFrameEstimate:
    """Raw per-frame estimates (T frames); rows of invalid frames are placeholders.

    articulation (T, 45), wrist_rot (T, 3), shape (T, 10), weak_cam (T, 3) scale-first
    normalised, weak_origin (T, 3) hand frame metres, keypoints_2d (T, 21, 2) pixels,
    valid (T,) bool, presence (T,) float.
    """

    articulation: torch.Tensor
    wrist_rot: torch.Tensor
    shape: torch.Tensor
    weak_cam: torch.Tensor
    weak_origin: torch.Tensor
    keypoints_2d: torch.Tensor
    valid: torch.Tensor
    presence: torch.Tensor


def _empty_estimate(T: int, device) -> PerFrameEstimate:
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    return PerFrameEstimate(z(T, 45), z(T, 3), z(T, 10), z(T, 3), z(T, 3), z(T, 21, 2),
                            torch.zeros(T, dtype=torch.bool, device=device), z(T))


def estimate_mediapipe(frames: list[np.ndarray], hand_masks: np.ndarray, obj_masks: np.ndarray,
                       hand: HandModel, cfg: HandConfig, device, *, task=None, focal: float = 1.0) -> PerFrameEstimate:
    """MediaPipe landmarks on mask crops (:func:`track_mediapipe`) + IK (:func:`fit_landmark_track`)."""
    results = track_mediapipe(frames, hand_masks, obj_masks, cfg, task)
    H, W = frames[0].shape[:2]
    return fit_landmark_track(results, hand, cfg, W, H, device, focal=focal)


def track_mediapipe(frames: list[np.ndarray], hand_masks: np.ndarray, obj_masks: np.ndarray,
                    cfg: HandConfig, task=None) -> list:
    """Per-frame MediaPipe landmarks (``LandmarkResult`` or None), crops from the hand masks."""
    from hoirecon.handpose.landmarks import (
        HandLandmarker,
        LandmarkTrackConfig,
        LandmarkTracker,
        track_hand_landmarks,
    )

    tracker = LandmarkTracker(HandLandmarker(), LandmarkTrackConfig(presence_threshold=cfg.presence_threshold,
                                                                    side=cfg.side))
    return track_hand_landmarks(frames, hand_masks, tracker, on_frame=task.advance if task else None,
                                object_masks=obj_masks)


def fit_landmark_track(results: list, hand: HandModel, cfg: HandConfig, width: int, height: int,
                       device, *, focal: float = 1.0) -> PerFrameEstimate:
    """IK on the frames with landmarks: per-frame shape first, then again with the mean shape
    (through a pinhole of ``focal`` in normalised units when ``cfg.perspective_ik``)."""
    T = len(results)
    est = _empty_estimate(T, device)
    idx = [t for t, r in enumerate(results) if r is not None]
    est.presence = torch.tensor([r.presence if r is not None else 0.0 for r in results],
                                dtype=torch.float32, device=device)
    if not idx:
        return est
    kp2d = torch.tensor(np.stack([results[t].keypoints_2d for t in idx]), dtype=torch.float32, device=device)
    world = torch.tensor(np.stack([results[t].world for t in idx]), dtype=torch.float32, device=device)
    image_xy = pixels_to_normalized(kp2d, width, height)
    first = fit_hand_to_landmarks(hand, world, image_xy, cfg.side,
                                  IKConfig(iterations=cfg.ik_iterations, world_weight=cfg.world_weight))
    mean_shape = first.shape.mean(0)
    ik2 = IKConfig(iterations=max(1, cfg.ik_iterations // 2), world_weight=cfg.world_weight,
                   perspective_focal=focal if cfg.perspective_ik else None)
    fit = fit_hand_to_landmarks(hand, world, image_xy, cfg.side, ik2, shape=mean_shape, init=first)
    sel = torch.tensor(idx, device=device)
    est.articulation[sel] = fit.articulation
    est.wrist_rot[sel] = fit.wrist_rot
    est.shape[sel] = first.shape  # per-frame shapes (A.5 averages them)
    est.weak_cam[sel] = fit.weak_cam
    est.weak_origin[sel] = fit.origin_hand
    est.keypoints_2d[sel] = kp2d
    est.valid[sel] = True
    return est


def _mano_hands_mean(hand: HandModel) -> torch.Tensor:
    """MANO's mean finger pose (45,), right hand, which FrankMocap's outputs are offsets from."""
    if hasattr(hand, "hands_mean"):
        return hand.hands_mean.reshape(-1).float()
    from hoirecon.hand.mano_hand import MANO_RELATIVE_PATH, MANO_SOURCE
    from hoirecon.hand.mano_pickle import load_mano_pickle
    from hoirecon.weights import require_weights

    path = require_weights(MANO_RELATIVE_PATH, backend="frankmocap (MANO's mean hand pose)", source=MANO_SOURCE)
    return torch.as_tensor(np.asarray(load_mano_pickle(path)["hands_mean"]), dtype=torch.float32).reshape(-1)


def estimate_frankmocap(frames: list[np.ndarray], hand_masks: np.ndarray, hand: HandModel, cfg: HandConfig,
                        device, *, task=None, regressor=None) -> PerFrameEstimate:
    """FrankMocap's regressor on the hand-mask boxes.

    Conversions: articulation = regressed offsets + MANO's mean pose (mirrored for left
    hands); the translate-first full-image camera ``x' = s (X + t)`` (normalised with centre
    ``W/2, H/2``, origin at the index knuckle) becomes our scale-first camera about the
    index MCP keypoint of our hand model: ``(s, s t_x + 1/L, s t_y + 1/L)`` (the ``1/L``
    moves the centre to ``(W - 1) / 2`` pixels).
    """
    from hoirecon.geometry.regions import mask_box

    if regressor is None:
        from hoirecon.backends.frankmocap import FrankMocapHand

        regressor = FrankMocapHand(device)
    hands_mean = _mano_hands_mean(hand).to(device)
    if cfg.side == "left":
        hands_mean = reflect_axis_angle(hands_mean.reshape(15, 3)).reshape(45)
    T = len(frames)
    H, W = frames[0].shape[:2]
    est = _empty_estimate(T, device)
    keypoints = KeypointModel(hand)
    for t, frame in enumerate(frames):
        box = mask_box(hand_masks[t])
        if box is not None and box[2] > box[0] and box[3] > box[1]:
            pred = regressor.predict(frame, [box], [cfg.side == "left"])[0]
            pose = pred["pose48"].to(device).float()
            est.articulation[t] = pose[3:] + hands_mean
            est.wrist_rot[t] = pose[:3]
            if cfg.hand_model == "mano":
                est.shape[t] = pred["shape10"].to(device).float()
            cam = pred["cam_weak"].to(device).float()
            shift = 1.0 / max(W, H)
            est.weak_cam[t] = torch.stack([cam[0], cam[0] * cam[1] + shift, cam[0] * cam[2] + shift])
            est.valid[t] = True
            est.presence[t] = 1.0
        if task is not None:
            task.advance()
    sel = est.valid.nonzero()[:, 0]
    if len(sel):
        kp = keypoints(est.articulation[sel], est.shape[sel], cfg.side)
        est.weak_origin[sel] = kp[:, 5]  # index MCP: FrankMocap's camera origin (SMPL-X joint 40)
        R = axis_angle_to_matrix(est.wrist_rot[sel])
        cam_pts = kp @ R.transpose(1, 2)
        origin = cam_pts[:, 5]
        xy = est.weak_cam[sel, None, :1] * (cam_pts - origin[:, None])[..., :2] + est.weak_cam[sel, None, 1:]
        est.keypoints_2d[sel] = normalized_to_pixels(xy, W, H)
    return est


def _shade(render, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) shaded colour and (H, W) alpha from a single-image MeshImageOutput."""
    mask = render.mask[0].clamp(0, 1).cpu().numpy()
    normal_z = render.normal[0, 2].cpu().numpy()
    light = np.clip(-normal_z, 0.0, 1.0)  # light from the camera
    rgb = colour[None, None, :] * (0.35 + 0.65 * light[..., None])
    return rgb, mask


def render_overlay(frame: np.ndarray, verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, *, valid: bool,
                   keypoints_2d: np.ndarray | None, scale: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The hand mesh drawn over one frame.

    Args:
        frame: (H, W, 3) uint8. verts_cam: (V, 3) camera frame. faces: (F, 3). K: (3, 3).
        valid: the estimator found the hand in this frame (blue-green) or not (grey).
        keypoints_2d: (21, 2) pixels to draw as dots, or None.
        scale: render at this fraction of the frame size (the overlay only needs a preview).
    Returns:
        (H, W, 3) uint8 overlay and (H, W) bool silhouette of the hand mesh.
    """
    H, W = frame.shape[:2]
    h, w = max(2, int(round(H * scale))), max(2, int(round(W * scale)))
    Ks = K.clone()
    # Pixel centres at integers: u' = (u + 0.5) * scale - 0.5.
    Ks[0, 0], Ks[1, 1] = K[0, 0] * w / W, K[1, 1] * h / H
    Ks[0, 2], Ks[1, 2] = (K[0, 2] + 0.5) * w / W - 0.5, (K[1, 2] + 0.5) * h / H - 0.5
    out = frame.astype(np.float32)
    silhouette = np.zeros((H, W), np.uint8)
    if bool((verts_cam[:, 2] > 1e-3).all()):
        render = render_mesh_image(verts_cam[None], faces, Ks[None], h, w)
        # Blue-green, far from skin tones, so the mesh stands out from the real hand.
        colour = np.array([70, 200, 230] if valid else [150, 150, 170], np.float32)
        rgb, alpha = _shade(render, colour)
        rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha, (W, H), interpolation=cv2.INTER_LINEAR)
        silhouette = (alpha > 0.5).astype(np.uint8)
        out = out * (1 - 0.6 * alpha[..., None]) + rgb * 0.6 * alpha[..., None]
        out = out.clip(0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(silhouette, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    out = out.clip(0, 255).astype(np.uint8)
    if keypoints_2d is not None:
        for x, y in np.round(keypoints_2d).astype(int):
            cv2.circle(out, (int(x), int(y)), 3, (40, 220, 40) if valid else (120, 120, 120), -1)
    if not valid:
        cv2.putText(out, "no hand found or dropped: interpolated", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 2)
    return out, silhouette.astype(bool)


def contradicted_frames(ious: np.ndarray, valid: np.ndarray, fraction: float) -> np.ndarray:
    """(T,) bool: valid frames whose hand estimate contradicts the hand mask.

    MediaPipe can return confident landmarks bunched on a few fingers (a hand cut by the frame's
    border, a pinch seen edge-on); the fitted hand then covers a fraction of its mask. Such a
    frame is worse than one interpolated from its neighbours.

    Args:
        ious: (T,) visible-hand mask IoU of each frame's fitted hand; valid: (T,) bool.
        fraction: a frame is contradicted below ``fraction`` x the median IoU of the valid
            frames (0: none is). At least one valid frame is always kept.
    """
    valid = np.asarray(valid, bool)
    if fraction <= 0 or not valid.any():
        return np.zeros_like(valid)
    dropped = valid & (ious < fraction * float(np.median(ious[valid])))
    return dropped if (valid & ~dropped).any() else np.zeros_like(valid)


def _visible_ious(track: _HandTrack, hand_masks: np.ndarray, obj_masks: np.ndarray, stride: int = 2) -> np.ndarray:
    """(T,) ``visible_hand_iou`` of the track's hand in every frame, on every ``stride``-th pixel."""
    return visible_ious(track.verts_cam, track.faces, track.K, hand_masks, obj_masks, stride)


def resolve_camera(cfg: HandConfig, meta: FramesMeta, frames: list[np.ndarray], obj_masks: np.ndarray,
                   scratch: Path) -> tuple[float, dict, Optional[ObjectSfM]]:
    """The focal length to use, in normalised units, with where it came from.

    The user's ``--focal`` (original-video pixels) or ``--fov`` win; else structure from
    motion on the object's pixels; else ``DEFAULT_FOCAL_PER_LONGER_SIDE`` (``user_focal_px``).
    Returns (focal, camera info for ``camera.json``, the SfM result or None).
    """
    W, H = meta.size
    half = max(W, H) / 2.0
    sfm = None
    focal_px, source = user_focal_px(cfg.focal_px, cfg.fov_deg, W, H, meta.source_size[0])
    named = cfg.focal_px is not None or cfg.fov_deg is not None
    if cfg.sfm:
        sfm = object_sfm(frames, obj_masks, scratch / "object_sfm", focal_px=focal_px if named else None)
        if sfm.usable and not named:
            focal_px, source = float(sfm.focal_px), "structure from motion on the object"
    info = {"focal_px": round(focal_px, 2), "fov_deg": round(math.degrees(2 * math.atan(W / 2.0 / focal_px)), 2),
            "cx": (W - 1) / 2.0, "cy": (H - 1) / 2.0, "image_size": [W, H], "source": source,
            "sfm": None if sfm is None else {
                "registered_frames": int(sfm.registered.sum()), "num_frames": len(frames),
                "focal_px": None if sfm.focal_px is None else round(sfm.focal_px, 2),
                "points": sfm.num_points, "used": sfm.usable, "reason": sfm.reason}}
    return focal_px / half, info, sfm


def _hand_side(cfg: HandConfig, masks_dir: Path, frames: list[np.ndarray], hand_masks: np.ndarray, report) -> dict:
    """The hand side to fit and where it came from (quality.json's ``side``): ``--side``, the
    side the masks stage followed (``auto``), or for masks that followed none (``--masks-dir``,
    synth) read from the clip from the first frame with a hand mask (``side_from_clip``).
    UserError where ``--side`` names the other hand than the masks stage followed."""
    masks_side = tracked_side(read_manifest(masks_dir), MasksOutput.load_quality(masks_dir))
    if cfg.side != SIDE_AUTO:
        if masks_side is not None and masks_side != cfg.side:
            raise UserError(f"--side {cfg.side} does not match the masks stage, which followed a {masks_side} hand: "
                            f"rerun masks with --side {cfg.side}, or the hand stage with --side {masks_side}")
        return {"side": cfg.side, "from": "--side"}
    if masks_side is not None:
        return {"side": masks_side, "from": "masks"}
    seen = [t for t in range(len(frames)) if hand_masks[t].any()]
    return side_from_clip(frames[seen[0]:] if seen else frames, mask_box(hand_masks[seen[0]]) if seen else None,
                          report)


def run_hand(ctx: StageContext, cfg: HandConfig) -> dict:
    device = torch.device(ctx.device)
    # The IK and smoothing are thousands of small batched ops: on the CPU one thread is fastest.
    with torch_threads(1 if device.type == "cpu" else None):
        return _run_hand(ctx, cfg, device)


@dataclass
class _HandTrack:
    """The clip's smoothed hand in the camera (T frames, V vertices, J keypoints).

    articulation (T, 45), wrist_rot (T, 3), shape (10,); T_cam_to_hand (T, 4, 4); K (3, 3);
    verts_cam (T, V, 3) and faces of the posed hand; keypoints_2d (T, J, 2): the estimator's where
    it found the hand, else the fitted hand's projection; reproj (T,) mean keypoint error in px.
    """

    articulation: torch.Tensor
    wrist_rot: torch.Tensor
    shape: torch.Tensor
    T_cam_to_hand: torch.Tensor
    K: torch.Tensor
    verts_cam: torch.Tensor
    faces: torch.Tensor
    keypoints_2d: torch.Tensor
    reproj: torch.Tensor


def _estimate_hands(ctx: StageContext, cfg: HandConfig, frames: list[np.ndarray], *, hand_masks: np.ndarray,
                    obj_masks: np.ndarray, hand: HandModel, device: torch.device, focal: float) -> PerFrameEstimate:
    """The backend's per-frame estimate; RunError where it found the hand in no frame."""
    with ctx.reporter.task(f"hand ({cfg.backend})", total=len(frames)) as task:
        if cfg.backend == "mediapipe":
            est = estimate_mediapipe(frames, hand_masks, obj_masks, hand, cfg, device, task=task, focal=focal)
        else:
            est = estimate_frankmocap(frames, hand_masks, hand, cfg, device, task=task)
    if not bool(est.valid.any()):
        raise RunError(f"no hand found in any frame; check the hand masks "
                       f"({ctx.input_dir('masks') / 'overlay.mp4'}), the --side, or try --backend frankmocap")
    return est


def _hand_track(est: PerFrameEstimate, hand: HandModel, cfg: HandConfig, focal: float, size_wh: tuple[int, int],
                device: torch.device, masks: tuple[np.ndarray, np.ndarray]) -> tuple[_HandTrack, dict]:
    """The paper's A.5: shared shape = mean of the per-frame shapes; rotation from the wrist;
    translation by eq. 4; each frame's hand then fitted to its (hand, object) ``masks``; then
    smoothed over time and posed in the camera. Also returns the silhouette fit's report."""
    valid, T = est.valid, len(est.valid)
    W, H = size_wh
    K = intrinsics_from_focal(focal, W, H, device=device)
    shape = est.shape[valid].mean(0)
    sel = valid.nonzero()[:, 0]
    T_hand_to_cam = weak_to_hand_to_cam(est.weak_cam[sel], est.wrist_rot[sel], est.weak_origin[sel], focal)
    transl = torch.zeros(T, 3, device=device)
    transl[sel] = T_hand_to_cam[:, :3, 3]
    fitted = fit_hand_to_masks(hand, est.articulation, est.wrist_rot, transl, shape, cfg.side, K, *masks,
                               est.keypoints_2d, valid.cpu().numpy(), SilhouetteFitConfig(steps=cfg.silhouette_steps))
    articulation, wrist_rot, transl = smooth_hand_track(
        hand, fitted.articulation, fitted.wrist_rot, fitted.transl, shape, valid, cfg.side,
        SmoothConfig(velocity_weight=cfg.smooth_weight))
    T_hand_to_cam = rigid_transform(axis_angle_to_matrix(wrist_rot), transl)

    with torch.no_grad():
        out = hand(articulation, torch.zeros_like(wrist_rot), shape, side=cfg.side)
        R, t = T_hand_to_cam[:, :3, :3], T_hand_to_cam[:, :3, 3]
        verts_cam = out.verts @ R.transpose(1, 2) + t[:, None]
        kp_cam = out.keypoints @ R.transpose(1, 2) + t[:, None]
        kp_proj = project_points(kp_cam, K[None].expand(T, 3, 3))
    report = {"silhouette_fit_kept_frames": np.flatnonzero(fitted.kept).tolist(),
              "silhouette_fit_iou": [[_rounded(b), _rounded(a)] for b, a in zip(fitted.iou_before, fitted.iou_after)]}
    return _HandTrack(
        articulation=articulation, wrist_rot=wrist_rot, shape=shape, T_cam_to_hand=invert_rigid(T_hand_to_cam), K=K,
        verts_cam=verts_cam, faces=out.faces,
        keypoints_2d=torch.where(valid[:, None, None], est.keypoints_2d, kp_proj),
        reproj=(kp_proj - est.keypoints_2d).norm(dim=-1).mean(-1)), report


def _rounded(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 3)


def _f32(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy().astype(np.float32)


def _hands_output(cfg: HandConfig, est: PerFrameEstimate, track: _HandTrack, size_wh: tuple[int, int], focal: float,
                  sfm: Optional[ObjectSfM]) -> HandsOutput:
    """``hands.npz``: the track, the estimator's (interpolated) weak cameras, and the object's SfM
    poses where structure from motion was usable (identity and zeros where not)."""
    T = len(est.valid)
    sfm_ok = sfm is not None and sfm.usable
    return HandsOutput(
        K=_f32(track.K),
        T_cam_to_hand=_f32(track.T_cam_to_hand),
        articulation=_f32(track.articulation),
        shape=_f32(track.shape),
        side=cfg.side,
        valid=est.valid.cpu().numpy(),
        keypoints_2d=_f32(track.keypoints_2d),
        weak_cam=_f32(interpolate_missing(est.weak_cam, est.valid)),
        weak_origin=_f32(interpolate_missing(est.weak_origin, est.valid)),
        wrist_rot=_f32(track.wrist_rot),
        presence=_f32(est.presence),
        image_size=np.array(list(size_wh), np.int64),
        focal=np.array(focal, np.float32),
        hand_model=cfg.hand_model,
        sfm_registered=(sfm.registered if sfm_ok else np.zeros(T, bool)),
        R_cam_from_obj_sfm=(sfm.R_cam_from_obj if sfm_ok else np.tile(np.eye(3), (T, 1, 1))).astype(np.float32),
        t_cam_from_obj_sfm=(sfm.t_cam_from_obj if sfm_ok else np.zeros((T, 3))).astype(np.float32),
        center_sfm=(sfm.center if sfm_ok else np.zeros(3)).astype(np.float32),
    )


def _write_overlay(ctx: StageContext, track: _HandTrack, frames: list[np.ndarray], *, hand_masks: np.ndarray,
                   obj_masks: np.ndarray, valid: np.ndarray, fps: float) -> list[float]:
    """``overlay.mp4``: the fitted hand over each frame; returns each frame's visible-hand mask IoU."""
    kp_np = track.keypoints_2d.cpu().numpy()
    ious = []
    with ctx.reporter.task("hand overlay", total=len(frames)) as task:
        def overlay_frames():
            for i in range(len(frames)):
                image, silhouette = render_overlay(frames[i], track.verts_cam[i], track.faces, track.K,
                                                   valid=bool(valid[i]), keypoints_2d=kp_np[i] if valid[i] else None)
                ious.append(visible_hand_iou(silhouette, hand_masks[i], obj_masks[i]))
                yield image
                task.advance()

        write_video(ctx.tmp_dir / HandsOutput.OVERLAY, overlay_frames(), fps=fps)
    return ious


def _quality(backend: str, valid: np.ndarray, presence: np.ndarray, reproj: np.ndarray, ious: list[float]) -> dict:
    """``quality.json``: medians of the reprojection error and mask IoU, and each frame's."""
    return {
        "backend": backend,
        "valid_frames": int(valid.sum()),
        "num_frames": len(valid),
        "reprojection_px_median": float(np.median(reproj[valid])),
        "mask_iou_median": float(np.median(ious)),
        "per_frame": [{"valid": bool(v), "presence": round(float(p), 4),
                       "reprojection_px": round(float(e), 2) if v else None, "mask_iou": round(iou, 4)}
                      for v, p, e, iou in zip(valid, presence, reproj, ious)],
    }


# A hand that fits its own mask this poorly is worth trying as the other side: a wrong --side
# mirrors the hand model (osmo_pocket, right hand run as left: mask IoU 0.48 and reprojection
# 49 px, against 0.76 and 15 px). The other side must halve the reprojection error to be named.
OTHER_SIDE_BELOW_IOU = 0.6
OTHER_SIDE_REPROJECTION_RATIO = 0.5


def _other_side_warnings(ctx: StageContext, cfg: HandConfig, frames: list[np.ndarray], track: _HandTrack,
                         ious: np.ndarray, valid: np.ndarray, *, hand_masks: np.ndarray, obj_masks: np.ndarray,
                         hand: HandModel, device: torch.device, focal: float, quality: dict) -> list[str]:
    """A warning where the other hand side explains the landmarks far better than ``--side``;
    what the other side gave goes into ``quality`` (``other_side``). Nothing is changed: the
    masks stage followed this side too. Both sides are judged on their landmark fits alone
    (``track``, with its (T,) visible mask ``ious`` and ``valid`` frames): the silhouette fit can
    dress a mirrored hand in its mask."""
    if cfg.backend != "mediapipe":
        return []
    H, W = frames[0].shape[:2]
    iou = float(np.median(ious[valid])) if valid.any() else 0.0
    if not iou < OTHER_SIDE_BELOW_IOU:
        return []
    other = replace(cfg, side="left" if cfg.side == "right" else "right", silhouette_steps=0)
    try:
        est_other = _estimate_hands(ctx, other, frames, hand_masks=hand_masks, obj_masks=obj_masks, hand=hand,
                                    device=device, focal=focal)
    except RunError:
        return []
    reproj = _hand_track(est_other, hand, other, focal, (W, H), device, (hand_masks, obj_masks))[0].reproj
    reproj = reproj.cpu().numpy()
    theirs = float(np.median(reproj[est_other.valid.cpu().numpy()]))
    ours = float(np.median(track.reproj.cpu().numpy()[valid]))
    quality["other_side"] = {"side": other.side, "reprojection_px_median": round(theirs, 2)}
    if not theirs < OTHER_SIDE_REPROJECTION_RATIO * ours:
        return []
    warning = (f"the hand fits its mask poorly as a {cfg.side} hand (landmark fit's mask IoU {iou:.2f}); "
               f"as a {other.side} hand its landmarks reproject {theirs:.0f} px off instead of {ours:.0f}: "
               f"if it is a {other.side} hand, rerun masks and hand with --side {other.side}")
    ctx.reporter.info(f"[yellow]warning:[/yellow] {warning}")
    return [warning]


def _run_hand(ctx: StageContext, cfg: HandConfig, device: torch.device) -> dict:
    frames_dir = ctx.input_dir("frames")
    masks_dir = ctx.input_dir("masks")
    meta = FramesMeta.load(frames_dir)
    frames = [read_rgb(p) for p in FramesMeta.frame_paths(frames_dir)]
    T = len(frames)
    W, H = meta.size
    masks = MasksOutput.load(masks_dir, num_frames=T, size_wh=(W, H))
    hand_masks, obj_masks = masks.hand, masks.obj
    side = _hand_side(cfg, masks_dir, frames, hand_masks, ctx.reporter.info)
    cfg = replace(cfg, side=side["side"])
    hand = build_hand_model(cfg.hand_model, device)
    with ctx.reporter.task("camera (structure from motion on the object)" if cfg.sfm else "camera", total=1) as task:
        focal, camera, sfm = resolve_camera(cfg, meta, frames, obj_masks, Path(ctx.scratch_dir))
        task.advance()
    ctx.reporter.info(f"focal length {camera['focal_px']:.0f} px ({camera['fov_deg']:.0f} degrees across), "
                      f"from {camera['source']}")

    est = _estimate_hands(ctx, cfg, frames, hand_masks=hand_masks, obj_masks=obj_masks, hand=hand, device=device,
                          focal=focal)
    masks = (hand_masks, obj_masks)
    landmark_track = _hand_track(est, hand, replace(cfg, silhouette_steps=0), focal, (W, H), device, masks)[0]
    landmark_ious = _visible_ious(landmark_track, hand_masks, obj_masks)
    landmark_valid = est.valid.cpu().numpy().copy()
    dropped = contradicted_frames(landmark_ious, landmark_valid, cfg.drop_below_iou)
    if dropped.any():
        ctx.reporter.info(f"hand: {int(dropped.sum())} frame(s) whose estimate contradicts the hand mask are "
                          f"interpolated instead: {np.flatnonzero(dropped).tolist()}")
        est.valid[torch.as_tensor(dropped, device=est.valid.device)] = False
    with ctx.reporter.task("hand fitted to its masks", total=1) as task:
        track, fit_report = _hand_track(est, hand, cfg, focal, (W, H), device, masks)
        task.advance()
    _hands_output(cfg, est, track, (W, H), focal, sfm).save(ctx.tmp_dir)
    (ctx.tmp_dir / HandsOutput.CAMERA).write_text(json.dumps(camera, indent=2))

    valid_np = est.valid.cpu().numpy()
    ious = _write_overlay(ctx, track, frames, hand_masks=hand_masks, obj_masks=obj_masks, valid=valid_np,
                          fps=meta.fps)
    quality = _quality(cfg.backend, valid_np, est.presence.cpu().numpy(), track.reproj.cpu().numpy(), ious)
    quality["dropped_frames"] = np.flatnonzero(dropped).tolist()
    quality["side"] = side
    quality.update(fit_report)
    warnings = _other_side_warnings(ctx, cfg, frames, landmark_track, landmark_ious, landmark_valid,
                                    hand_masks=hand_masks, obj_masks=obj_masks, hand=hand, device=device, focal=focal,
                                    quality=quality)
    (ctx.tmp_dir / HandsOutput.QUALITY).write_text(json.dumps(quality, indent=2))
    return {"num_frames": T, "valid_frames": int(valid_np.sum()), "backend": cfg.backend, "camera": camera,
            **({"warnings": warnings} if warnings else {}),
            "reprojection_px_median": round(quality["reprojection_px_median"], 2),
            "mask_iou_median": round(quality["mask_iou_median"], 3),
            "overlay": str(ctx.out_root / "hand" / HandsOutput.OVERLAY)}


STAGE = STAGES["hand"]
