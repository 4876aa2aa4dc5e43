"""Initialisation of the scene and the optimisation loop (library level: no CLI, no cache).

Loop (DiffHOI supp. A.2 without the diffusion prior): each step picks ``frames_per_step``
frames and ``rays_per_step`` pixels among them, biased to background / hand / object with
probabilities moving linearly from ``sample_start`` to ``sample_end``; renders the scene
there; minimises the semantic cross-entropy plus regularisers with Adam; the learning
rates warm up linearly over ``warmup_steps`` and then decay exponentially to
``lr_decay`` x their base value at the last step.

Determinism and resume: all randomness comes from ``torch`` seeded with ``cfg.seed``
(pixel sampling uses its own ``torch.Generator``; the volume renderer's jitter uses the
global generator). A checkpoint (scene + optimiser + step + both RNG states) is written
atomically every ``checkpoint_every`` steps; ``optimize_scene`` resumes from it when it
exists, and a resumed run gives the same result as an uninterrupted one (the learning
rate is a function of the step, and the grid's coarse-to-fine switch is re-applied from
the checkpointed resolution).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hoirecon.errors import RunError
from hoirecon.fit.init import (
    ObjectCameras,
    camera_jumps,
    estimate_object_center,
    estimate_object_radius,
    grasp_consensus,
    hand_mask_ious,
    object_in_hand_poses,
    visual_hull_sdf,
)
from hoirecon.fit.losses import (
    LossWeights,
    deep_penetration_loss,
    eikonal_loss,
    hidden_weights,
    ordinal_depth_loss,
    penetration_loss,
    semantic_mask_loss,
    temporal_first_diff,
    temporal_second_diff,
)
from hoirecon.fit.mesh import mask_share_per_point
from hoirecon.fit.scene import BlendConfig, HOIScene
from hoirecon.fit.sdf import GridSDF, build_object_sdf, fit_sdf_to_grid
from hoirecon.geometry.regions import mask_iou
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.io.checkpoints import read_torch_checkpoint
from hoirecon.render.blend import LABEL_BG, LABEL_HAND, LABEL_OBJECT
from hoirecon.render.camera import strided_grid
from hoirecon.render.mesh import MeshRenderConfig
from hoirecon.render.raster import hand_object_labels
from hoirecon.render.volume import VolumeRenderConfig


HAND_PENETRATION_MOVES = ("pose", "frame_pose", "hand")


@dataclass
class OptimizeConfig:
    """Settings of the scene optimisation (see module docstring).

    steps: optimisation steps. rays_per_step: sampled pixels per step (paper: 1024).
    frames_per_step: frames those pixels are drawn from each step.
    lr_*: Adam base learning rates per parameter group: sdf (grid values are in units of
        the bounding radius; MLP weights), beta (m), obj_rot / cam_rot (rad), obj_trans /
        cam_trans (m), artic (rad), shape (PCA units).
    lr_decay: learning-rate factor reached at the last step (exponential decay).
    warmup_steps: linear warm-up of all learning rates.
    sample_start, sample_end: (bg, hand, object) pixel-sampling probabilities at the first
        and the last step (linear in between).
    grid_schedule: ((fraction of steps, resolution), ...) coarse-to-fine switches of the
        grid SDF (ignored by the MLP). Default none: the grid keeps the initial resolution
        (``InitConfig.grid_resolution``). A switch to 96^3 at 40 % of the steps (the default
        until fit VERSION 3) carved what no view constrains: every new node starts with fresh
        Adam moments, whose first steps are lr x sign(gradient), and the finer nodes each see
        fewer rays (docs/experiments.md).
    eikonal_points: random points in the sphere per step for the MLP's eikonal term.
    checkpoint_every: steps between resumable checkpoints (0 = never).
    seed: seeds every random draw.
    max_seconds: stop once the optimisation has run this long (None = run all ``steps``);
        the schedules still span ``steps``, so this truncates them (a time budget for batch
        runs, and equal-time comparisons of presets).
    per_frame_object_pose: optimise a per-frame object pose delta on top of the shared
        ``T_hand_to_obj`` (the method); False = one shared pose for the clip (the paper's B.3
        ablation).
    hand_penetration_start: fraction of the steps where ``weights.hand_penetration`` starts
        its linear ramp (0 at this fraction, full weight at the last step). Earlier the hand is
        still centimetres off and the object a fat visual hull: pushing the hand out of it
        then would open the grasp.
    hand_penetration_moves: what that term may move besides the articulation and the shape:
        "frame_pose" (default: the per-frame object pose deltas), "pose" (those and the
        shared object pose) or "hand" (nothing else). Moving the shared pose pushed whole
        objects off the hand (CD_h up); the fingers alone cannot leave a thin handle
        (docs/experiments.md).
    hidden_share_from, hidden_share_full: the ramp of ``weights.hidden_volume`` over a grid
        node's hand share (``hoirecon.fit.losses.hidden_weights``): the share of the frames
        that see the node in which it lands on the hand mask. The ramp starts high because a
        held object is often behind the fingers in half of the frames (a synthetic mug's
        grasped side: hand share 0.4-0.65), while the body the prior grew behind a real
        clip's hand had a share of 1 for most of its volume.
    hidden_refresh_every: steps between recomputations of those weights (the cameras and
        poses move); the weights in use go into the checkpoint, so a resumed fit is the same fit.
    """

    steps: int = 1500
    rays_per_step: int = 1024
    frames_per_step: int = 4
    lr_sdf: float = 5e-3
    lr_beta: float = 2e-4
    lr_obj_rot: float = 2e-3
    lr_obj_trans: float = 5e-4
    lr_cam_rot: float = 1e-3
    lr_cam_trans: float = 5e-4
    lr_artic: float = 2e-3
    lr_shape: float = 5e-3
    lr_decay: float = 0.1
    warmup_steps: int = 50
    sample_start: tuple[float, float, float] = (0.35, 0.35, 0.3)
    sample_end: tuple[float, float, float] = (0.1, 0.1, 0.8)
    grid_schedule: tuple[tuple[float, int], ...] = ()
    eikonal_points: int = 256
    checkpoint_every: int = 100
    seed: int = 0
    per_frame_object_pose: bool = True
    max_seconds: float | None = None
    hand_penetration_start: float = 0.5
    hand_penetration_moves: str = "frame_pose"
    hidden_share_from: float = 0.75
    hidden_share_full: float = 1.0
    hidden_refresh_every: int = 100
    weights: LossWeights = field(default_factory=LossWeights)
    vol: VolumeRenderConfig = field(default_factory=lambda: VolumeRenderConfig(
        n_coarse=48, n_importance=32, perturb=True, normal_mode="none"))
    mesh: MeshRenderConfig = field(default_factory=MeshRenderConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)

    def __post_init__(self):
        if not 0.0 <= self.hidden_share_from < self.hidden_share_full:
            raise ValueError(f"need 0 <= hidden_share_from < hidden_share_full, got "
                             f"{self.hidden_share_from}, {self.hidden_share_full}")
        if self.hand_penetration_moves not in HAND_PENETRATION_MOVES:
            raise ValueError(f"hand_penetration_moves must be one of {HAND_PENETRATION_MOVES}, "
                             f"got {self.hand_penetration_moves!r}")


@dataclass
class InitConfig:
    """Scene initialisation.

    sdf_kind: "grid" (fast) | "mlp" (paper). grid_resolution: starting grid resolution.
    hull_resolution: resolution of the visual hull. radius_margin: bounding radius = this x
        the mask extent at the centre's depth. center_ridge: pull of the object centre to
        the hand centre (see ``estimate_object_center``). hull_dilate_px, hull_max_votes:
        carving tolerance. beta_init / beta_min: Laplace beta as fractions of the radius.
    mlp_prefit_steps: Adam steps fitting the MLP to the hull SDF.
    invalid_trust: weight of the hand / camera initialisation priors on frames where the
        hand estimator failed (``valid = False`` in hands.npz; their init is interpolated).
    own_hand_margin: a frame whose hand contradicts the grasp the clip agrees on keeps its own
        pose only when its silhouette's IoU with the hand mask beats the grasp's by this much.
        hand_fan's re-grip frames win by 0.29-0.39; toy_plane's first frames, where the hand
        stage's hand is wrong, by 0.10-0.12, and kept there they ended off their masks (IoU 0)
        (docs/experiments.md, session 12).
    own_hand_min_run: ... and only where at least this many consecutive frames keep theirs. A
        re-grip lasts several frames (hand_fan's: runs of 3-4 at 10 fps); a lone frame kept
        between frames restarted from the grasp was pulled off its mask by its neighbours
        (toy_plane frame 3: hand IoU 0.00; restarted from the grasp: 0.50; session 14).
    short_run_grasp_share: ... but a frame of a shorter run is put on the grasp only where the
        grasp's hand still covers its mask: IoU at least this share of its own hand's. Where the
        grasp misses the mask, the object camera carrying it is the wrong one (hand_fan frame
        47: structure from motion 300 mm off, grasp IoU 0.00 against its own 0.63; session 19):
        the frame keeps its hand, and its object starts from the grasp instead of that camera,
        if that camera jumps (``camera_jumps``); if not, it keeps its camera too.
    camera_jump_deg, camera_jump_factor: a frame's structure-from-motion camera jumps where its
        object rotation turns by more than both this many degrees and this factor x the clip's
        median step, to and from its registered neighbours.
    """

    sdf_kind: str = "grid"
    grid_resolution: int = 48
    hull_resolution: int = 64
    radius_margin: float = 1.3
    center_ridge: float = 0.05
    hull_dilate_px: int = 2
    hull_max_votes: int = 1
    beta_init: float = 0.03
    beta_min: float = 0.003
    mlp_prefit_steps: int = 300
    invalid_trust: float = 0.1
    own_hand_margin: float = 0.15
    own_hand_min_run: int = 3
    short_run_grasp_share: float = 0.5
    camera_jump_deg: float = 30.0
    camera_jump_factor: float = 4.0


def labels_from_masks(hand: np.ndarray, obj: np.ndarray) -> torch.Tensor:
    """(T, H, W) bool masks -> (T, H, W) uint8 labels: 0 background, 1 hand, 2 object.

    Where both are set the hand wins (the masks stage removes object pixels under the hand).
    """
    lab = np.zeros(hand.shape, np.uint8)
    lab[obj] = LABEL_OBJECT
    lab[hand] = LABEL_HAND
    return torch.from_numpy(lab)


def build_initial_scene(hand_model, K, T_cam_to_hand, articulation, shape, side: str, image_size,
                        hand_masks: np.ndarray, obj_masks: np.ndarray, cfg: InitConfig,
                        device: str | torch.device = "cpu", seed: int = 0,
                        valid: np.ndarray | None = None,
                        object_cameras: ObjectCameras | None = None,
                        object_poses: np.ndarray | None = None) -> tuple[HOIScene, dict]:
    """Place the object near the hand, size it, carve its visual hull, build the scene.

    Args:
        hand_model: HandModel. K: (3, 3). T_cam_to_hand: (T, 4, 4). articulation: (T, 45).
        shape: (10,). side: 'right'|'left'. image_size: (W, H).
        hand_masks, obj_masks: (T, H, W) bool.
        valid: (T,) bool, frames where the hand estimator found the hand (None = all);
            the others get ``cfg.invalid_trust`` as their weight of the init priors.
        object_cameras: object-frame cameras from structure from motion: each frame's object
            pose starts from them (``hoirecon.fit.init.object_in_hand_poses``); None: one
            shared pose, the object frame aligned with the hand's.
        object_poses: (T, 4, 4) per-frame ``T_hand_to_obj`` observed in the camera (the pose
            network's, ``fit --init pose``): each frame's object pose starts from it, in its
            frame (a template's), anchored in the camera; replaces ``object_cameras``.
    Returns:
        scene (on ``device``) and an info dict (where the object poses came from, centre_hand,
        radius, hull volume fraction; with object cameras, the per-frame disagreement of the hand-derived rotations).
    """
    K = np.asarray(K, np.float64)
    T_c2h = np.asarray(T_cam_to_hand, np.float64)
    with torch.no_grad():
        hdev = next(iter(hand_model.buffers())).device
        art = torch.as_tensor(np.asarray(articulation), dtype=torch.float32, device=hdev)
        out = hand_model(art, torch.zeros(art.shape[0], 3, device=hdev),
                         torch.as_tensor(np.asarray(shape), dtype=torch.float32, device=hdev)[None], None, side=side)
        hand_center = out.verts.mean(dim=(0, 1)).double().cpu().numpy()
        hand_mesh = (out.verts.detach(), out.faces)
    center = estimate_object_center(obj_masks, K, T_c2h, hand_center, cfg.center_ridge)
    T_h2o = np.eye(4)
    T_h2o[:3, 3] = -center
    start, trust_cap = None, np.ones(len(T_c2h))
    T_h2o_frames = np.repeat(T_h2o[None], len(T_c2h), 0)
    if object_poses is not None:
        T_h2o_frames = np.asarray(object_poses, np.float64)
        T_h2o = T_h2o_frames[0]
        start = T_h2o_frames @ np.linalg.inv(T_h2o)
        center = np.linalg.inv(T_h2o)[:3, 3]  # the object frame's origin, in the hand, frame 0
        object_cameras = None
    elif object_cameras is not None:
        T_h2o_frames = object_in_hand_poses(object_cameras, T_c2h, center)
        ref, angle, shift, contradicting = grasp_consensus(T_h2o_frames)
        # Where the hand estimator contradicts the grasp the other frames agree on, the hand
        # starts from that grasp, carried by the object's own camera, unless its own pose
        # matches its mask better (a re-grip, or a wrong object camera). Either start is
        # trusted less: the masks and the neighbouring frames decide.
        T_c2o = T_h2o_frames @ T_c2h
        T_c2h_grasp = np.linalg.inv(T_h2o_frames[ref])[None] @ T_c2o
        outliers, hand_ious = _worse_than_grasp(contradicting, hand_mesh, T_c2h, T_c2h_grasp, K, hand_masks,
                                                cfg.own_hand_margin)
        jumps = camera_jumps(object_cameras, cfg.camera_jump_deg, cfg.camera_jump_factor)
        outliers, wrong_camera = _short_run_starts(contradicting, outliers, hand_ious, jumps, cfg)
        T_c2h = np.where(outliers[:, None, None], T_c2h_grasp, T_c2h)
        T_h2o_frames = np.where((outliers | wrong_camera)[:, None, None], T_h2o_frames[ref][None], T_h2o_frames)
        trust_cap = np.where(contradicting, cfg.invalid_trust, 1.0)
        # Base pose = frame 0's; every frame's own pose is a fixed start on top of it.
        T_h2o = T_h2o_frames[0]
        start = T_h2o_frames @ np.linalg.inv(T_h2o)
    # Sized around the object's own centre in each frame (the camera-to-object poses' origin).
    radius = estimate_object_radius(obj_masks, K, T_h2o_frames @ T_c2h, np.zeros(3), cfg.radius_margin)
    T_c2o = torch.as_tensor(T_h2o_frames @ T_c2h, dtype=torch.float32)
    hull = visual_hull_sdf(torch.from_numpy(obj_masks), torch.from_numpy(hand_masks),
                           torch.as_tensor(K, dtype=torch.float32), T_c2o, radius, cfg.hull_resolution,
                           cfg.hull_dilate_px, cfg.hull_max_votes)
    if cfg.sdf_kind == "grid":
        sdf = GridSDF(radius, cfg.grid_resolution)
    else:
        sdf = build_object_sdf({"kind": cfg.sdf_kind, "radius": radius})
    gen = torch.Generator().manual_seed(seed)
    prefit_err = fit_sdf_to_grid(sdf, hull, steps=cfg.mlp_prefit_steps, generator=gen)
    trust = None if object_cameras is None else trust_cap.astype(np.float32)
    if valid is not None:
        valid = np.asarray(valid, bool).reshape(-1)
        if valid.shape[0] != T_c2h.shape[0]:
            raise RunError(f"'valid' has {valid.shape[0]} frames, the clip has {T_c2h.shape[0]}")
        trust = np.minimum(np.where(valid, 1.0, cfg.invalid_trust), trust_cap).astype(np.float32)
    scene = HOIScene(sdf, hand_model, K, T_c2h, articulation, shape, side, image_size, T_h2o,
                     object_in_camera=start is not None,
                     beta_init=cfg.beta_init * radius, beta_min=cfg.beta_min * radius, init_trust=trust,
                     obj_start=None if start is None else torch.as_tensor(start, dtype=torch.float32)).to(device)
    poses_from = ("pose network" if object_poses is not None
                  else "structure from motion" if start is not None else "hand")
    info = {"object_poses_from": poses_from, "center_hand": center.tolist(), "radius": float(radius),
            "hull_fraction": float((hull < 0).float().mean()), "prefit_error_m": prefit_err}
    if object_cameras is not None:
        info["object_cameras"] = {
            "consensus_frame": ref, "registered": object_cameras.registered.tolist(),
            "hand_vs_grasp_rotation_deg": [round(float(v), 2) for v in angle],
            "hand_vs_grasp_shift_mm": [round(float(v) * 1000, 1) for v in shift],
            "hand_outlier_frames": np.nonzero(outliers)[0].tolist(),
            "hand_kept_against_grasp_frames": np.nonzero(contradicting & ~outliers)[0].tolist(),
            "object_camera_replaced_frames": np.nonzero(wrong_camera)[0].tolist(),
            "contradicting_hand_mask_iou_own_grasp": hand_ious}
    return scene, info


def short_runs(flags: np.ndarray, min_run: int) -> np.ndarray:
    """(T,) bool: the set entries of ``flags`` (T,) that lie in a run of consecutive set entries
    shorter than ``min_run``."""
    flags = np.asarray(flags, bool)
    out = np.zeros_like(flags)
    start = None
    for t, f in enumerate(np.append(flags, False)):
        if f and start is None:
            start = t
        elif not f and start is not None:
            out[start:t] = t - start < min_run
            start = None
    return out


def _worse_than_grasp(contradicting: np.ndarray, hand_mesh: tuple[torch.Tensor, torch.Tensor], T_c2h_own: np.ndarray,
                      T_c2h_grasp: np.ndarray, K: np.ndarray, hand_masks: np.ndarray,
                      margin: float = 0.0) -> tuple[np.ndarray, dict]:
    """The contradicting frames whose hand estimator's own pose does not match the hand mask
    better than the consensus grasp's by ``margin`` (IoU): (T,) bool, and {frame: [own IoU, grasp IoU]}."""
    worse = np.zeros(len(contradicting), bool)
    idx = np.nonzero(contradicting)[0]
    if not len(idx):
        return worse, {}
    verts, faces = hand_mesh
    own = hand_mask_ious(verts[idx], faces, T_c2h_own[idx], K, hand_masks[idx])
    grasp = hand_mask_ious(verts[idx], faces, T_c2h_grasp[idx], K, hand_masks[idx])
    worse[idx] = own < grasp + margin
    return worse, {int(t): [round(float(a), 3), round(float(b), 3)] for t, a, b in zip(idx, own, grasp)}


def _short_run_starts(contradicting: np.ndarray, outliers: np.ndarray, hand_ious: dict, jumps: np.ndarray,
                      cfg: InitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Where the frames of runs shorter than ``cfg.own_hand_min_run`` that kept their own hand
    start from. Args: (T,) bool ``contradicting`` and ``outliers`` (frames already restarting
    from the grasp), ``hand_ious`` {frame: [own IoU, grasp IoU]} (``_worse_than_grasp``'s),
    ``jumps`` (``camera_jumps``). Returns (T,) bool each: the hands that restart from the grasp
    (``outliers`` included), and the frames whose object camera is replaced by the grasp carried
    by their own hand."""
    short = short_runs(contradicting & ~outliers, cfg.own_hand_min_run)
    covered = np.zeros(len(contradicting), bool)
    for t, (own, grasp) in hand_ious.items():
        covered[t] = grasp >= cfg.short_run_grasp_share * own
    # A lone frame whose grasp misses its hand mask keeps its hand; its object camera is taken to
    # be wrong only where structure from motion jumps there. Elsewhere the hand moved on the object
    # (osmo mirrored, frame 0: the hand 79 degrees off the grasp, the object camera 10.6 degrees
    # from the next frame's; replaced, that frame's object IoU was 0.35).
    return outliers | (short & covered), short & ~covered & jumps


def _param_groups(scene: HOIScene, cfg: OptimizeConfig) -> list[dict]:
    groups = [
        ("sdf", list(scene.sdf.parameters()), cfg.lr_sdf),
        ("beta", list(scene.density.parameters()), cfg.lr_beta),
        # Without per-frame poses the deltas stay at their initial zero.
        ("obj_rot", [scene.obj_rot_base] + [scene.obj_rot] * cfg.per_frame_object_pose, cfg.lr_obj_rot),
        ("obj_trans", [scene.obj_trans_base] + [scene.obj_trans] * cfg.per_frame_object_pose, cfg.lr_obj_trans),
        ("cam_rot", [scene.cam_rot], cfg.lr_cam_rot),
        ("cam_trans", [scene.cam_trans], cfg.lr_cam_trans),
        ("artic", [scene.artic_delta], cfg.lr_artic),
        ("shape", [scene.shape], cfg.lr_shape),
    ]
    return [{"name": n, "params": p, "lr": lr, "base_lr": lr} for n, p, lr in groups]


def lr_factor(step: int, cfg: OptimizeConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then exponential decay."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return warm * cfg.lr_decay ** (step / max(1, cfg.steps))


def sample_probs(step: int, cfg: OptimizeConfig) -> np.ndarray:
    """(bg, hand, object) sampling probabilities at ``step`` (linear schedule)."""
    a = step / max(1, cfg.steps - 1)
    return (1 - a) * np.asarray(cfg.sample_start) + a * np.asarray(cfg.sample_end)


class PixelSampler:
    """Class-biased pixel sampling from per-frame label maps (deterministic given the generator).

    Args:
        labels: (T, H, W) uint8 labels (0 bg, 1 hand, 2 object).
    """

    def __init__(self, labels: torch.Tensor):
        self.T, self.H, self.W = labels.shape
        flat = labels.reshape(self.T, -1).long()
        self.index = [[torch.nonzero(flat[t] == c).squeeze(1) for c in range(3)] for t in range(self.T)]
        self.flat = flat

    def sample(self, frames: torch.Tensor, n_per_frame: int, probs: np.ndarray,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns pix (B, n, 2) float (u, v) and labels (B, n) int64."""
        pix, lab = [], []
        for t in frames.tolist():
            avail = np.array([len(self.index[t][c]) > 0 for c in range(3)], float)
            p = probs * avail
            p = p / p.sum()
            counts = np.floor(p * n_per_frame).astype(int)
            counts[int(np.argmax(p))] += n_per_frame - counts.sum()  # rounding remainder
            idx = []
            for c in range(3):
                if counts[c]:
                    pool = self.index[t][c]
                    idx.append(pool[torch.randint(len(pool), (int(counts[c]),), generator=gen)])
            idx = torch.cat(idx)
            pix.append(torch.stack([(idx % self.W).float(), (idx // self.W).float()], -1))
            lab.append(self.flat[t][idx])
        return torch.stack(pix), torch.stack(lab)


def hand_penetration_ramp(step: int, cfg: OptimizeConfig) -> float:
    """Factor (0..1) of ``weights.hand_penetration`` at ``step`` (linear from ``hand_penetration_start``)."""
    a = step / max(1, cfg.steps - 1)
    return float(np.clip((a - cfg.hand_penetration_start) / max(1e-6, 1.0 - cfg.hand_penetration_start), 0.0, 1.0))


@torch.no_grad()
def hidden_node_weights(scene: HOIScene, labels: torch.Tensor, cfg: OptimizeConfig) -> torch.Tensor | None:
    """(R^3,) weights of the grid nodes on ``weights.hidden_volume`` (``hidden_weights`` of their
    hand share in ``labels`` (T, H, W), through the scene's current cameras); None where the
    term is off or the SDF is not a grid."""
    if not cfg.weights.hidden_volume or not isinstance(scene.sdf, GridSDF):
        return None
    share = mask_share_per_point(scene.sdf.node_points(), scene.K, scene.T_cam_to_obj(), labels == LABEL_HAND)
    return hidden_weights(share, cfg.hidden_share_from, cfg.hidden_share_full)


def scene_losses(scene: HOIScene, frames: torch.Tensor, pix: torch.Tensor, labels: torch.Tensor,
                 cfg: OptimizeConfig, gen: torch.Generator, step: int | None = None,
                 hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its weighted terms for one batch of pixels (``step`` None = the last step;
    ``hidden``: ``hidden_node_weights``, None = no hidden-volume term)."""
    w = cfg.weights
    dev = scene.K.device
    r = scene.render_pixels(frames.to(dev), pix.to(dev), cfg.vol, cfg.mesh, cfg.blend)
    labels = labels.to(dev)
    terms: dict[str, torch.Tensor] = {"mask": semantic_mask_loss(r["probs"], labels)}
    if cfg.blend.mode == "hard":
        terms["ordinal_depth"] = ordinal_depth_loss(labels, r["mask_hand"], r["depth_hand"], r["mask_obj"],
                                                    r["depth_obj"], scene.sdf.radius)
    radius = scene.sdf.radius
    reg = scene.sdf.regularizers()
    if isinstance(scene.sdf, GridSDF):
        terms["eikonal"] = reg["eikonal"]
        terms["sdf_smooth"] = reg["smooth"]
        if w.sdf_area:
            terms["sdf_area"] = scene.sdf.surface_area()
        if w.hidden_volume and hidden is not None and hidden.numel() == scene.sdf.values.numel():
            terms["hidden_volume"] = scene.sdf.volume(hidden)
    else:
        pts = (torch.rand(cfg.eikonal_points, 3, generator=gen) * 2 - 1).to(dev) * radius
        from hoirecon.render.volume import sdf_with_gradient

        _, _, g_rand = sdf_with_gradient(scene.sdf.as_render_fn(), pts, "autograd")
        grads = [g_rand] if r["sdf_grad"] is None else [r["sdf_grad"], g_rand]
        terms["eikonal"] = eikonal_loss(torch.cat(grads))
    verts_obj = r["verts_obj"]
    terms["penetration"] = penetration_loss(scene.sdf(verts_obj.reshape(-1, 3)).reshape(verts_obj.shape[:2]), radius)
    if w.hand_penetration:  # logged at every step (0 before the ramp) so log rows keep one set of keys
        terms["hand_penetration"] = verts_obj.new_zeros(())
        ramp = hand_penetration_ramp(cfg.steps - 1 if step is None else step, cfg)
        if ramp > 0:
            frozen = {k: v.detach() for k, v in scene.sdf.named_parameters()}
            pts = verts_obj
            if cfg.hand_penetration_moves != "pose":
                T_h2o = scene.T_hand_to_obj(frames.to(dev), base_fixed=True)
                T_h2o = T_h2o if cfg.hand_penetration_moves == "frame_pose" else T_h2o.detach()
                pts = transform_points(T_h2o, r["verts_hand"])
            sdf_fixed = torch.func.functional_call(scene.sdf, frozen, (pts.reshape(-1, 3),))
            terms["hand_penetration"] = ramp * deep_penetration_loss(sdf_fixed.reshape(verts_obj.shape[:2]), radius)
    art = scene.articulation()
    terms["temporal_artic"] = temporal_second_diff(art)
    T_c2h = scene.T_cam_to_hand()
    cam_vec = torch.cat([T_c2h[:, :3, :3].reshape(-1, 9), T_c2h[:, :3, 3] / radius], -1)
    terms["temporal_cam"] = temporal_second_diff(cam_vec)
    terms["temporal_obj"] = temporal_first_diff(torch.cat([scene.obj_rot, scene.obj_trans / radius], -1))
    # Weighted by the per-frame trust in the initialisation (low where the hand estimator
    # failed): there the temporal terms and the masks decide.
    trust = scene.init_trust / scene.init_trust.mean().clamp_min(1e-6)
    terms["artic_prior"] = (scene.artic_delta.pow(2).mean(-1) * trust).mean()
    terms["cam_prior"] = ((scene.cam_rot.pow(2).mean(-1) + (scene.cam_trans / radius).pow(2).mean(-1)) * trust).mean()
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return total, {k: float(getattr(w, k) * v.detach()) for k, v in terms.items()}


@dataclass
class OptimizeResult:
    steps_done: int
    seconds: float
    resumed_from: int
    last_terms: dict
    history: list[dict]


class StopRequested(Exception):
    """Raised by a ``should_stop`` hook to interrupt the loop (tests simulate a kill)."""


def _save_checkpoint(path: Path, scene: HOIScene, opt: torch.optim.Optimizer, step: int,
                     gen: torch.Generator, history: list[dict], hidden: torch.Tensor | None = None) -> None:
    state = {
        "hidden_weights": None if hidden is None else hidden.detach().cpu(),
        "step": step,
        "scene": {k: v.detach().cpu() for k, v in scene.state_dict().items()},
        "sdf_spec": dict(scene.sdf.spec()),
        "optimizer": opt.state_dict(),
        "rng_global": torch.get_rng_state(),
        "rng_sampler": gen.get_state(),
        "history_keys": sorted(history[0].keys()) if history else [],
        "history": torch.tensor([[float(h[k]) for k in sorted(history[0].keys())] for h in history])
        if history else torch.zeros(0),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _apply_grid_schedule(scene: HOIScene, opt: torch.optim.Optimizer, step: int, cfg: OptimizeConfig) -> bool:
    """Switch the grid to the resolution scheduled for ``step``; returns True if it changed."""
    if not isinstance(scene.sdf, GridSDF):
        return False
    target = None
    for frac, res in cfg.grid_schedule:
        if step >= int(frac * cfg.steps):
            target = res
    if target is None or target == scene.sdf.resolution:
        return False
    old = scene.sdf.values
    scene.sdf.set_resolution(int(target))
    scene.sdf.to(old.device)
    opt.state.pop(old, None)  # Adam moments of the old shape are meaningless: start afresh
    for g in opt.param_groups:
        g["params"] = [scene.sdf.values if p is old else p for p in g["params"]]
    return True


def optimize_scene(
    scene: HOIScene, labels: torch.Tensor, cfg: OptimizeConfig, checkpoint_path: Path | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    guidance: Callable | None = None,
) -> OptimizeResult:
    """Optimise ``scene`` against the label maps (resuming from ``checkpoint_path`` if present).

    Args:
        scene: an initialised HOIScene. labels: (T, H, W) uint8 (0 bg, 1 hand, 2 object).
        cfg: OptimizeConfig. checkpoint_path: where resumable state lives (None = no resume).
        on_step: called after every step with (step index just done, log row).
        should_stop: called after each step (after its checkpoint); True raises StopRequested.
        guidance: optional prior term, ``guidance(scene, step, steps, gen) -> (loss | None,
            info)`` (``hoirecon.fit.guidance.PriorGuidance``); its loss is added to the total
            and its info to the log row.
    Returns:
        OptimizeResult (history = one log row per step: each weighted term, total, lr, seconds).
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    sampler = PixelSampler(labels)
    start, history, hidden = 0, [], None
    ck = None
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        ck = read_torch_checkpoint(checkpoint_path, "fit checkpoint (delete it, or run with --force, to start afresh)")
        if isinstance(scene.sdf, GridSDF):
            scene.sdf.set_resolution(int(ck["sdf_spec"]["resolution"]))
            scene.sdf.to(scene.K.device)
        scene.load_state_dict(ck["scene"])
    opt = torch.optim.Adam(_param_groups(scene, cfg), lr=cfg.lr_sdf)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng_global"])
        gen.set_state(ck["rng_sampler"])
        start = int(ck["step"])
        hidden = ck.get("hidden_weights")
        hidden = None if hidden is None else hidden.to(scene.K.device)
        keys = list(ck["history_keys"])
        history = [dict(zip(keys, row.tolist())) for row in ck["history"]] if keys else []
        for row in history:
            row["step"] = int(row["step"])
    t0 = time.perf_counter()
    elapsed0 = history[-1]["seconds"] if history else 0.0
    n_per_frame = max(1, cfg.rays_per_step // cfg.frames_per_step)
    T = scene.num_frames
    terms: dict = {}
    for step in range(start, cfg.steps):
        regridded = _apply_grid_schedule(scene, opt, step, cfg)
        if (step == start and hidden is None) or regridded or step % max(1, cfg.hidden_refresh_every) == 0:
            hidden = hidden_node_weights(scene, labels, cfg)
        factor = lr_factor(step, cfg)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        frames = torch.randperm(T, generator=gen)[: min(cfg.frames_per_step, T)]
        pix, lab = sampler.sample(frames, n_per_frame, sample_probs(step, cfg), gen)
        total, terms = scene_losses(scene, frames, pix, lab, cfg, gen, step, hidden)
        if guidance is not None:
            sds, sds_info = guidance(scene, step, cfg.steps, gen)
            total = total if sds is None else total + sds
            terms = {**terms, **sds_info}
        if not torch.isfinite(total):
            raise RunError(f"the scene optimisation diverged at step {step} (loss {float(total)})")
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        row = {"step": step, **terms, "total": float(total.detach()), "lr": cfg.lr_sdf * factor,
               "beta": float(scene.density.beta().detach()),
               "seconds": elapsed0 + time.perf_counter() - t0}
        history.append(row)
        if on_step is not None:
            on_step(step, row)
        done = step + 1
        due = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
        if checkpoint_path is not None and due and done < cfg.steps:
            _save_checkpoint(Path(checkpoint_path), scene, opt, done, gen, history, hidden)
        if should_stop is not None and should_stop(done):
            raise StopRequested(f"stopped after step {done}")
        if cfg.max_seconds is not None and row["seconds"] >= cfg.max_seconds:
            break
    steps_done = int(history[-1]["step"]) + 1 if history else start
    return OptimizeResult(steps_done, time.perf_counter() - t0, start, terms, history)


@torch.no_grad()
def evaluate_masks(scene: HOIScene, labels: torch.Tensor, cfg: OptimizeConfig, stride: int = 2,
                   frames: list[int] | None = None) -> list[dict]:
    """Per-frame IoU of the rendered (argmax) hand / object labels against the observed ones,
    on a pixel grid of step ``stride``."""
    vol = VolumeRenderConfig(**{**cfg.vol.__dict__, "perturb": False, "normal_mode": "none"})
    res = []
    for t in frames if frames is not None else range(scene.num_frames):
        probs = scene.render_labels(t, stride, vol, cfg.mesh, cfg.blend)
        res.append(_label_ious(t, probs.argmax(-1).cpu().numpy(), labels[t, ::stride, ::stride].numpy()))
    return res


def _label_ious(frame: int, pred: np.ndarray, observed: np.ndarray) -> dict:
    """A frame's row of ``evaluate_masks`` / ``evaluate_mesh_masks``: hand and object IoU of two
    (H, W) label maps, and where the object's disagreement lies, as shares of the observed
    object's area: ``object_missed`` (rendered as background), ``object_under_hand`` (rendered as
    hand) and ``object_extra`` (object rendered where the masks see none)."""
    seen, drawn = observed == LABEL_OBJECT, pred == LABEL_OBJECT
    area = max(int(seen.sum()), 1)
    return {"frame": int(frame), "iou_object": mask_iou(drawn, seen),
            "iou_hand": mask_iou(pred == LABEL_HAND, observed == LABEL_HAND),
            "object_missed": round(float((seen & (pred == LABEL_BG)).sum()) / area, 4),
            "object_under_hand": round(float((seen & (pred == LABEL_HAND)).sum()) / area, 4),
            "object_extra": round(float((drawn & ~seen).sum()) / area, 4)}


@torch.no_grad()
def evaluate_mesh_masks(scene: HOIScene, obj_verts: np.ndarray, obj_faces: np.ndarray, labels: torch.Tensor,
                        stride: int = 2) -> list[dict]:
    """Per-frame IoU of what a user gets, the extracted object mesh and the hand meshes seen
    through the fitted cameras, against the observed labels (grid of step ``stride``).

    ``evaluate_masks`` scores the volume rendering instead; the two differ where the mesh
    lost parts the volume still renders.

    Args:
        obj_verts: (V, 3) object-frame vertices (m). obj_faces: (F, 3).
        labels: (T, H, W) uint8 (0 bg, 1 hand, 2 object).
    """
    dev = scene.K.device
    T, H, W = labels.shape
    K, h, w = strided_grid(scene.K, H, W, stride)
    verts = torch.as_tensor(obj_verts, dtype=torch.float32, device=dev)
    faces = torch.as_tensor(obj_faces, dtype=torch.long, device=dev)
    res = []
    for t in range(T):
        frame = torch.tensor([t], device=dev)
        hand_verts, hand_faces = scene.hand_verts_hand(frame)
        pred = hand_object_labels(transform_points(invert_rigid(scene.T_cam_to_obj(frame)), verts[None]), faces,
                                  transform_points(invert_rigid(scene.T_cam_to_hand(frame)), hand_verts), hand_faces,
                                  K[None], h, w, LABEL_HAND, LABEL_OBJECT)[0].cpu().numpy()
        res.append(_label_ious(t, pred, labels[t, ::stride, ::stride].numpy()))
    return res
