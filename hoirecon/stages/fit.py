"""Stage `fit`: optimise the HOI scene (object SDF, per-frame object pose, refined hand/camera).

Reads ``frames/meta.json`` (size), ``masks/{hand,object}/NNNNNN.png`` and
``hand/hands.npz`` (K, T_cam_to_hand, articulation, shape, side, valid); with ``--init pose``
also ``pose/poses.npz`` (``PoseOutput``: the pose network's object poses, in the template's
frame). Writes into ``<out>/fit/``:

- ``poses.npz``: K (3,3), T_cam_to_hand (T,4,4), T_hand_to_obj (T,4,4), articulation (T,45),
  shape (10,), side, image_size (W,H).
- ``scene.pt``: plain-tensor dict (``HOIScene.export_state``); read it back with
  ``hoirecon.fit.scene.load_object_sdf(fit_dir / FitOutput.SCENE, device)``.
- ``object.ply``: marching-cubes mesh of the object (object frame, metres).
- ``object_init.ply`` + ``init.npz`` (T_hand_to_obj_init, centre, radius): the visual-hull
  initialisation (carved through the initial object poses), for comparisons.
- ``losses.csv``: step, every weighted loss term, total, lr, beta, seconds.
- ``preview/step_XXXXX.png``: rendered vs observed labels on a few frames.
- ``summary.json``: final losses, per-frame mask IoUs, steps, seconds, init info.

Presets: ``fast`` (grid SDF 48^3 with a small surface-area prior ``LossWeights.sdf_area``, with a
prior a cost on volume the masks see almost only through the hand ``LossWeights.hidden_volume``,
penetration weight 3, 1500 steps, lrs in ``OptimizeConfig``) and
``paper`` (MLP SDF, 1024 rays, 50k steps, lr 5e-4 for every group, autograd eikonal). Both
push the hand out of the object over the second half of the fit with the object's shape and
shared pose held fixed (``LossWeights.hand_penetration``). After the optimisation, a frame
whose hand is still more than 2 mm inside the object is moved out rigidly, or its fingers
opened where no rigid move helps (``hoirecon.fit.contact``; ``summary.json`` ``contact``).
Resumable: a checkpoint in ``ctx.scratch_dir`` every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from hoirecon.categories import UNKNOWN, category_name
from hoirecon.errors import UserError
from hoirecon.fit.contact import resolve_hand_penetration
from hoirecon.fit.guidance import GuidanceConfig, build_guidance, is_no_prior
from hoirecon.fit.init import ObjectCameras, object_in_hand_from_camera, object_poses_through
from hoirecon.fit.losses import LossWeights
from hoirecon.fit.mesh import extract_mesh, object_mesh
from hoirecon.fit.optimize import (
    InitConfig,
    OptimizeConfig,
    build_initial_scene,
    evaluate_masks,
    evaluate_mesh_masks,
    labels_from_masks,
    optimize_scene,
)
from hoirecon.fit.scene import BlendConfig, poses_npz_dict
from hoirecon.geometry.rotations import rotation_angle_deg
from hoirecon.pipeline.runner import StageContext
from hoirecon.render.volume import VolumeRenderConfig
from hoirecon.stages.configs import FitConfig
from hoirecon.stages.outputs import FitOutput, FitPoses, FramesMeta, HandsOutput, MasksOutput, PoseOutput
from hoirecon.stages.registry import STAGES


@dataclass(frozen=True)
class Preset:
    """What ``--preset`` starts the fit from: the library settings (FitConfig's own override them)."""

    init: InitConfig
    opt: OptimizeConfig


_PAPER_LR = 5e-4  # paper: Adam 5e-4, exponential decay, for every group
PRESETS: dict[str, Preset] = {
    # Penetration 3 (not 10): the initial hand is centimetres off, and a strong
    # penetration term carved the grasped part of the object where the wrong hand was
    # (bottle/kettle F@10 fell below the visual hull's on the tuning seeds 100-105).
    "fast": Preset(InitConfig(sdf_kind="grid"), OptimizeConfig(weights=LossWeights(penetration=3.0))),
    "paper": Preset(InitConfig(sdf_kind="mlp"), OptimizeConfig(
        steps=50000, rays_per_step=1024, frames_per_step=4, lr_sdf=_PAPER_LR, lr_beta=_PAPER_LR,
        lr_obj_rot=_PAPER_LR, lr_obj_trans=_PAPER_LR, lr_cam_rot=_PAPER_LR, lr_cam_trans=_PAPER_LR,
        lr_artic=_PAPER_LR, lr_shape=_PAPER_LR, lr_decay=0.1, warmup_steps=100, grid_schedule=(),
        vol=VolumeRenderConfig(n_coarse=64, n_importance=64, perturb=True, normal_mode="autograd"),
        weights=LossWeights(sdf_smooth=0.0))),
}


def preset_configs(cfg: FitConfig) -> tuple[InitConfig, OptimizeConfig]:
    """The library configs of a FitConfig: its preset's, with the FitConfig's overrides."""
    preset = PRESETS[cfg.preset]
    overrides = {"steps": cfg.steps, "rays_per_step": cfg.rays_per_step}
    opt = replace(preset.opt, blend=BlendConfig(mode=cfg.blend), seed=cfg.seed, checkpoint_every=cfg.checkpoint_every,
                  per_frame_object_pose=cfg.per_frame_object_pose, max_seconds=cfg.time_budget_s,
                  **{k: v for k, v in overrides.items() if v is not None})
    if is_no_prior(cfg.prior):
        # The hidden-volume cost answers the prior's fill behind the hand. Without a prior that
        # volume is the visual hull's, and often the object's: on a held-out box whose grasp hides
        # a third of it, the cost took it away (F@10 0.779 -> 0.448; docs/experiments.md, session 14).
        opt = replace(opt, weights=replace(opt.weights, hidden_volume=0.0))
    return replace(preset.init), opt


def _check_hand_model(hands: HandsOutput, hand_model: str, path: Path) -> None:
    """UserError unless the hand stage fitted the hand model the fit is told to use (its
    articulation and shape values mean nothing to another model)."""
    fitted = hands.hand_model or hand_model
    if fitted != hand_model:
        raise UserError(f"--hand-model {hand_model} does not match the hand stage, which fitted {fitted} ({path}): "
                        f"pass --hand-model {fitted}, or rerun the hand stage with --hand-model {hand_model}")


def _object_cameras(hands: HandsOutput) -> Optional[ObjectCameras]:
    """The hand stage's structure-from-motion object cameras, or None where none registered."""
    registered = np.asarray(hands.sfm_registered if hands.sfm_registered is not None else np.zeros(0, bool), bool)
    if registered.size != hands.num_frames or not registered.any():
        return None
    return ObjectCameras(np.asarray(hands.R_cam_from_obj_sfm, np.float64),
                         np.asarray(hands.t_cam_from_obj_sfm, np.float64), registered,
                         np.asarray(hands.center_sfm, np.float64))


def _pose_stage_object_poses(pose_dir: Path, hands: HandsOutput) -> np.ndarray:
    """(T, 4, 4) T_hand_to_obj from the pose stage's object poses, seen through the hand stage's
    camera (the pose stage may have solved them with other intrinsics), placed against the hand
    stage's hands; frames where PnP failed keep the nearest frame's pose in the hand."""
    poses = PoseOutput.load(pose_dir, num_frames=hands.num_frames)
    T_obj_to_cam = object_poses_through(poses.T_obj_to_cam, poses.K, hands.K)
    return object_in_hand_from_camera(T_obj_to_cam, poses.valid, hands.T_cam_to_hand)


def _camera_report(scene, cams: Optional[ObjectCameras], init_info: dict) -> dict:
    """Which cameras the fit started from; per frame, how far the hand estimator's pose of the
    hand in the object frame is from the grasp most frames agree on (frames past the limits
    started from that grasp instead), and how far the fitted object rotations end from
    structure from motion (degrees, relative to the first registered frame whose camera the
    initialisation kept)."""
    if cams is None:
        return {"source": "hand", "sfm_registered_frames": 0}
    with torch.no_grad():
        T_c2o = scene.T_cam_to_obj().cpu().numpy().astype(np.float64)
    fitted_obj_from_cam = T_c2o[:, :3, :3]
    sfm_obj_from_cam = np.transpose(cams.R_cam_from_obj, (0, 2, 1))
    reg = cams.registered
    grasp = init_info["object_cameras"]
    # Frames whose object camera the initialisation replaced are expected to end away from it,
    # and measured from one of them every other frame would be off by its error (session 21:
    # osmo mirrored, frame 0 replaced, every frame "77-84 degrees" off).
    trusted = reg.copy()
    trusted[grasp["object_camera_replaced_frames"]] = False
    ref = int(np.nonzero(trusted if trusted.any() else reg)[0][0])
    # The object's rotation between the reference frame and frame t, as the camera sees it.
    fitted = fitted_obj_from_cam @ np.transpose(fitted_obj_from_cam[ref])[None]
    sfm = sfm_obj_from_cam @ np.transpose(sfm_obj_from_cam[ref])[None]
    error = rotation_angle_deg(np.transpose(fitted, (0, 2, 1)) @ sfm)
    return {"source": "object: structure from motion; hand: hand estimator", "sfm_registered_frames": int(reg.sum()),
            "grasp_consensus_frame": grasp["consensus_frame"], "hand_outlier_frames": grasp["hand_outlier_frames"],
            "hand_kept_against_grasp_frames": grasp["hand_kept_against_grasp_frames"],
            "object_camera_replaced_frames": grasp["object_camera_replaced_frames"],
            "hand_vs_grasp_rotation_deg": grasp["hand_vs_grasp_rotation_deg"],
            "hand_vs_grasp_shift_mm": grasp["hand_vs_grasp_shift_mm"],
            "fitted_vs_sfm_rotation_deg": [round(float(v), 2) if r else None for v, r in zip(error, reg)],
            "fitted_vs_sfm_rotation_deg_max": round(float(error[trusted].max()), 2) if trusted.any() else None}


def _preview(scene, labels: torch.Tensor, opt_cfg: OptimizeConfig, frames: list[int], path: Path) -> None:
    """Rows: observed labels | rendered labels, for a few frames (hand blue, object orange)."""
    colours = np.array([[30, 30, 30], [255, 120, 40], [30, 150, 255]], np.uint8)  # BGR: bg, hand, object
    vol = VolumeRenderConfig(**{**opt_cfg.vol.__dict__, "perturb": False, "normal_mode": "none"})
    tiles = []
    for t in frames:
        probs = scene.render_labels(t, 2, vol, opt_cfg.mesh, opt_cfg.blend).cpu().numpy()
        rendered = (probs[..., :, :, None] * colours[None, None]).sum(2).astype(np.uint8)
        observed = colours[labels[t, ::2, ::2].numpy()]
        tiles.append(np.concatenate([observed, rendered], 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(tiles, 1))


def run_fit(ctx: StageContext, cfg: FitConfig) -> dict:
    from hoirecon.hand import build_hand_model

    t_start = time.perf_counter()
    meta = FramesMeta.load(ctx.input_dir("frames"))
    W, H = meta.size
    T = meta.num_frames
    masks = MasksOutput.load(ctx.input_dir("masks"), meta)
    hand_m, obj_m = masks.hand, masks.obj
    hands = HandsOutput.load(ctx.input_dir("hand"), num_frames=T)
    _check_hand_model(hands, cfg.hand_model, ctx.input_dir("hand") / HandsOutput.FILE)
    if obj_m.reshape(T, -1).sum(1).max() == 0:
        raise UserError("the object mask is empty in every frame; check the masks stage")
    init_cfg, opt_cfg = preset_configs(cfg)
    device = torch.device(ctx.device)
    hand_model = build_hand_model(cfg.hand_model, device)
    guidance = build_guidance(GuidanceConfig(prior=cfg.prior, category=cfg.category, weight=cfg.sds_weight,
                                             every=cfg.sds_every, fade_from=cfg.sds_fade_from,
                                             end_fraction=cfg.sds_end, view_seen_deg=cfg.sds_seen_deg,
                                             view_unseen_deg=cfg.sds_unseen_deg), hand_model, device)
    category_used = guidance.category if guidance is not None else None
    if category_used == UNKNOWN and category_name(cfg.category) != UNKNOWN:
        ctx.reporter.info(f"category '{cfg.category}' is not in the prior's vocabulary: the prior runs "
                          f"category-agnostic ('unknown')")
    torch.manual_seed(cfg.seed)
    from_pose = _pose_stage_object_poses(ctx.input_dir("pose"), hands) if cfg.init == "pose" else None
    cams = _object_cameras(hands) if cfg.object_cameras and from_pose is None else None
    scene, init_info = build_initial_scene(hand_model, hands.K, hands.T_cam_to_hand, hands.articulation,
                                           hands.shape, hands.side, (W, H), hand_m, obj_m, init_cfg,
                                           device, cfg.seed, valid=hands.trusted_frames(),
                                           object_cameras=cams, object_poses=from_pose)
    out = ctx.tmp_dir
    init_mesh = extract_mesh(scene.sdf, scene.sdf.radius, 64, device)
    init_mesh.export(out / FitOutput.INIT_MESH)
    with torch.no_grad():
        FitOutput.save_init(out, scene.T_hand_to_obj().cpu().numpy(), init_info["center_hand"], init_info["radius"])
    labels = labels_from_masks(hand_m, obj_m)
    preview_frames = sorted({0, T // 2, T - 1})
    rows: list[dict] = []
    ckpt = Path(ctx.scratch_dir) / "fit_checkpoint.pt"
    with ctx.reporter.task(f"fitting scene ({cfg.preset})", total=opt_cfg.steps) as task:
        def on_step(step: int, row: dict) -> None:
            task.advance()
            if cfg.preview_every and (step + 1) % cfg.preview_every == 0 and step + 1 < opt_cfg.steps:
                _preview(scene, labels, opt_cfg, preview_frames, out / "preview" / f"step_{step + 1:05d}.png")

        result = optimize_scene(scene, labels, opt_cfg, ckpt, on_step=on_step, guidance=guidance)
        task.advance(result.resumed_from)
    rows = result.history
    contact = resolve_hand_penetration(scene)
    _preview(scene, labels, opt_cfg, preview_frames, out / "preview" / f"step_{result.steps_done:05d}.png")
    keys = list(rows[-1].keys())
    with open(out / "losses.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    FitPoses(**poses_npz_dict(scene)).save(out)
    torch.save(scene.export_state(), out / FitOutput.SCENE)
    with torch.no_grad():
        T_cam_to_obj = scene.T_cam_to_obj()
    mesh = object_mesh(scene.sdf, scene.sdf.radius, cfg.mesh_resolution, scene.K, T_cam_to_obj,
                       torch.from_numpy(obj_m), device, hand_masks=torch.from_numpy(hand_m))
    mesh.export(out / FitOutput.MESH)
    ious = evaluate_masks(scene, labels, opt_cfg, stride=cfg.iou_stride)
    mesh_ious = evaluate_mesh_masks(scene, mesh.vertices, mesh.faces, labels, stride=cfg.iou_stride)
    summary = {
        "preset": cfg.preset, "prior": cfg.prior, "category": cfg.category, "category_used": category_used,
        "steps": result.steps_done,
        "steps_planned": opt_cfg.steps, "resumed_from": result.resumed_from,
        "seconds": time.perf_counter() - t_start, "optimize_seconds": rows[-1]["seconds"],
        "final_losses": {k: v for k, v in rows[-1].items() if k not in ("step", "seconds")},
        "mean_iou_object": float(np.mean([r["iou_object"] for r in ious])),
        "mean_iou_hand": float(np.mean([r["iou_hand"] for r in ious])),
        "mask_iou": ious,
        "mesh_iou_object": float(np.mean([r["iou_object"] for r in mesh_ious])),
        "mesh_iou_hand": float(np.mean([r["iou_hand"] for r in mesh_ious])),
        "mesh_mask_iou": mesh_ious, "init": init_info, "object_faces": int(len(mesh.faces)),
        "cameras": _camera_report(scene, cams, init_info), "contact": contact,
    }
    FitOutput.save_summary(out, summary)
    return {k: summary[k] for k in ("preset", "category", "category_used", "steps", "seconds", "mean_iou_object",
                                    "mesh_iou_object",
                                    "mean_iou_hand")}


STAGE = STAGES["fit"]
