"""The HOI scene: object SDF + hand + per-frame poses, rendered at sampled pixels.

Parameters (T frames), all float32:

- object SDF (``hoirecon.fit.sdf``) in the object frame, bounded by a sphere of radius
  ``sdf.radius`` at the object-frame origin; ``density`` (VolSDF Laplace beta, metres).
- camera: ``T_cam_to_hand^t = [Rot(cam_rot^t) | cam_trans^t] @ T_cam_to_hand_init^t``
  (a small correction applied in the hand frame; deltas start at zero).
- object pose: ``T_hand_to_obj^t = [Rot(obj_rot^t) | obj_trans^t] @ obj_start^t
  @ [Rot(obj_rot_base) | obj_trans_base]`` (shared base pose + per-frame deltas starting at
  zero, in the object frame, so a delta rotation turns the object about its centre;
  ``obj_start`` (T, 4, 4) is a fixed per-frame start, the identity unless structure from
  motion on the object says how it moves in the hand's frame, see ``hoirecon.fit.init``).
- hand: ``articulation^t = articulation_init^t + artic_delta^t``, ``shape`` shared; the
  hand mesh in the hand frame is the hand model with ``wrist_rot = 0`` and no translation
  (the wrist rotation is folded into the camera pose, as in the paper).

Rendering at pixels (``render_pixels``): hand soft silhouette + depth (``render_mesh_pixels``),
object opacity + depth (``render_sdf_volume`` along camera rays mapped into the object
frame; ray t converted to camera z), blended into (bg, hand, object) probabilities by
``blend_semantic`` (see there for the two blend modes).

``scene.pt`` (``HOIScene.export_state``) is a dict of plain tensors / numbers / strings for
``torch.load(weights_only=True)``; ``load_object_sdf(scene_path, device)`` rebuilds the object
SDF from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hoirecon.errors import UserError
from hoirecon.fit.sdf import ObjectSDF, build_object_sdf
from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.io.checkpoints import read_torch_checkpoint
from hoirecon.render.blend import hard_blend_masks, soft_blend_masks
from hoirecon.render.camera import pixel_directions, pixel_rays
from hoirecon.render.mesh import MeshRenderConfig, render_mesh_pixels
from hoirecon.render.volume import LaplaceDensity, VolumeRenderConfig, render_sdf_volume

BLEND_MODES = ("occlusion", "paper", "hard")


def pose_matrix(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """[Rot(rot) | trans] as 4x4. rot: (..., 3) axis-angle, trans: (..., 3) -> (..., 4, 4)."""
    R = axis_angle_to_matrix(rot)
    top = torch.cat([R, trans[..., None]], dim=-1)
    bottom = torch.zeros(*top.shape[:-2], 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


@dataclass
class BlendConfig:
    """How hand and object renderings become (bg, hand, object) probabilities.

    mode "occlusion" (default): p_fg = 1 - (1 - m_h)(1 - m_o) (the union of the two soft
        silhouettes), split between hand and object by a depth soft-max:
        share_k ∝ m_k exp(-d_k / tau). Rationale: eq. 2 multiplies the nearness by the
        mask and compares it with a background at nearness eps; at the paper's gamma
        (1e-4) that makes p_obj ~ 1 as soon as the opacity exceeds ~1e-3, i.e. a hard
        threshold with almost no silhouette gradient, and a larger gamma caps p_obj below 1.
        This mode keeps eq. 1's depth-ordered split and the silhouettes' full gradients.
    mode "paper": ``hoirecon.render.blend.soft_blend_masks`` (eq. 1-2) with ``gamma``,
        ``d_near``, ``d_far``.
    mode "hard": the paper's B.4 ablation: the front surface takes the label
        (``hoirecon.render.blend.hard_blend_masks``, no gradient through the depth order);
        the fit then adds an ordinal depth loss (``hoirecon.fit.losses.ordinal_depth_loss``).
    tau: depth temperature (m) of the occlusion mode.
    """

    mode: str = "occlusion"
    tau: float = 0.005
    gamma: float = 1e-4
    d_near: float = 0.0
    d_far: float = 2.0


def missing_depth_as_far(depth: torch.Tensor, far: float) -> torch.Tensor:
    """depth: (...) camera z, 0 where nothing is hit -> the same with those set to ``far``
    (so a missed surface never wins a depth order)."""
    return torch.where(depth > 0, depth, torch.full_like(depth, far))


def blend_semantic(m_h: torch.Tensor, d_h: torch.Tensor, m_o: torch.Tensor, d_o: torch.Tensor,
                   cfg: BlendConfig) -> torch.Tensor:
    """(bg, hand, object) probabilities from soft masks and camera depths.

    Args:
        m_h, d_h, m_o, d_o: (...) hand/object soft masks and camera z (0 where nothing is hit).
    Returns:
        probs: (..., 3), summing to 1.
    """
    if cfg.mode == "paper":
        return soft_blend_masks(m_h, m_o, d_h, d_o, gamma=cfg.gamma, d_near=cfg.d_near, d_far=cfg.d_far)
    if cfg.mode not in BLEND_MODES:
        raise UserError(f"unknown blend mode {cfg.mode!r}; choose one of: {', '.join(BLEND_MODES)}")
    d_h, d_o = missing_depth_as_far(d_h, cfg.d_far), missing_depth_as_far(d_o, cfg.d_far)
    if cfg.mode == "hard":
        return hard_blend_masks(m_h, m_o, d_h, d_o)
    logit_h = torch.log(m_h.clamp_min(1e-8)) - d_h / cfg.tau
    logit_o = torch.log(m_o.clamp_min(1e-8)) - d_o / cfg.tau
    share_o = torch.sigmoid(logit_o - logit_h)
    p_fg = 1.0 - (1.0 - m_h) * (1.0 - m_o)
    p_o = p_fg * share_o
    p_h = p_fg - p_o
    return torch.stack([1.0 - p_fg, p_h, p_o], dim=-1)


class HOIScene(nn.Module):
    """Learnable hand-object scene of a clip (see module docstring).

    Args:
        sdf: object SDF module (object frame).
        hand_model: ``hoirecon.hand.HandModel`` (no trainable parameters).
        K: (3, 3) intrinsics. T_cam_to_hand_init: (T, 4, 4). articulation_init: (T, 45).
        shape_init: (10,). side: 'right' | 'left'. image_size: (W, H).
        T_hand_to_obj_base: (4, 4) initial shared object pose (rotation + translation).
        beta_init: initial Laplace beta (m). beta_min: its floor (m).
        obj_start: (T, 4, 4) fixed per-frame start of the object pose, applied in the object
            frame after the base pose (None = identity).
        object_in_camera: the object's pose is anchored in the camera, not in the hand: a
            correction of the hand's camera pose moves the hand alone (used when the object's
            cameras come from its own motion, structure from motion, and the hand's from the
            hand estimator).
        init_trust: (T,) weights of the pull to the hand / camera initialisation per frame
            (None = 1 everywhere; the fit uses ``InitConfig.invalid_trust`` where hands.npz
            says ``valid = False``).
    """

    def __init__(self, sdf: ObjectSDF, hand_model, K, T_cam_to_hand_init, articulation_init, shape_init,
                 side: str, image_size: tuple[int, int], T_hand_to_obj_base, beta_init: float, beta_min: float,
                 init_trust=None, obj_start=None, object_in_camera: bool = False):
        super().__init__()
        f32 = dict(dtype=torch.float32)
        T = int(torch.as_tensor(T_cam_to_hand_init).shape[0])
        self.sdf = sdf
        self.hand_model = hand_model
        self.side = side
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.register_buffer("K", torch.as_tensor(K, **f32).clone())
        self.register_buffer("T_cam_to_hand_init", torch.as_tensor(T_cam_to_hand_init, **f32).clone())
        self.register_buffer("articulation_init", torch.as_tensor(articulation_init, **f32).reshape(T, 45).clone())
        # Per-frame weight of the priors that pull the hand / camera to their initialisation
        # (lower on frames where the hand estimator failed and the init is interpolated).
        trust = torch.ones(T, **f32) if init_trust is None else torch.as_tensor(init_trust, **f32).reshape(T)
        self.register_buffer("init_trust", trust.clone())
        start = torch.eye(4, **f32).repeat(T, 1, 1) if obj_start is None else torch.as_tensor(obj_start, **f32)
        self.register_buffer("obj_start", start.reshape(T, 4, 4).clone())
        self.object_in_camera = bool(object_in_camera)
        self.density = LaplaceDensity(beta_init=beta_init - beta_min, beta_min=beta_min)
        base = torch.as_tensor(T_hand_to_obj_base, **f32)
        from hoirecon.geometry.rotations import matrix_to_axis_angle

        self.obj_rot_base = nn.Parameter(matrix_to_axis_angle(base[:3, :3]))
        self.obj_trans_base = nn.Parameter(base[:3, 3].clone())
        self.obj_rot = nn.Parameter(torch.zeros(T, 3))
        self.obj_trans = nn.Parameter(torch.zeros(T, 3))
        self.cam_rot = nn.Parameter(torch.zeros(T, 3))
        self.cam_trans = nn.Parameter(torch.zeros(T, 3))
        self.artic_delta = nn.Parameter(torch.zeros(T, 45))
        self.shape = nn.Parameter(torch.as_tensor(shape_init, **f32).reshape(10).clone())

    @property
    def num_frames(self) -> int:
        return int(self.T_cam_to_hand_init.shape[0])

    def _frames(self, frames: torch.Tensor | None) -> torch.Tensor:
        if frames is None:
            return torch.arange(self.num_frames, device=self.K.device)
        return frames.to(self.K.device)

    # ------------------------------------------------------------------ poses
    def T_cam_to_hand(self, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 4, 4) refined camera-to-hand poses of ``frames`` (B,) (all frames if None)."""
        f = self._frames(frames)
        return pose_matrix(self.cam_rot[f], self.cam_trans[f]) @ self.T_cam_to_hand_init[f]

    def T_hand_to_obj(self, frames: torch.Tensor | None = None, base_fixed: bool = False) -> torch.Tensor:
        """(B, 4, 4) hand-to-object poses of ``frames`` (``base_fixed``: no gradient to the shared pose)."""
        f = self._frames(frames)
        base = pose_matrix(self.obj_rot_base, self.obj_trans_base)
        base = base.detach() if base_fixed else base
        T = pose_matrix(self.obj_rot[f], self.obj_trans[f]) @ self.obj_start[f] @ base
        if self.object_in_camera:
            # T_hand_to_obj = T_cam_to_obj @ T_hand_to_cam, with T_cam_to_obj fixed to the initial hand camera.
            T = T @ self.T_cam_to_hand_init[f] @ invert_rigid(self.T_cam_to_hand(f))
        return T

    def T_cam_to_obj(self, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 4, 4) the object's cameras: ``T_hand_to_obj @ T_cam_to_hand`` of ``frames``."""
        return self.T_hand_to_obj(frames) @ self.T_cam_to_hand(frames)

    @torch.no_grad()
    def shift_hand_in_object(self, shift_obj: torch.Tensor) -> None:
        """Translate every frame's hand by ``shift_obj`` (T, 3) (object frame, m), the object's
        cameras unchanged: ``T_hand_to_obj`` becomes ``Tr(shift) @ T_hand_to_obj``.

        The hand's camera pose takes the move, ``T_cam_to_hand <- Tr(-R_h2o^T shift) @
        T_cam_to_hand``; where the object's pose hangs on the hand's (not ``object_in_camera``)
        the object pose takes ``+shift`` too, which keeps ``T_cam_to_obj``.
        """
        shift_obj = torch.as_tensor(shift_obj, dtype=self.cam_trans.dtype, device=self.cam_trans.device)
        R_h2o = self.T_hand_to_obj()[:, :3, :3]
        # pose_matrix(rot, trans) is [R | t]; Tr(v) @ [R | t] = [R | t + v].
        self.cam_trans -= (R_h2o.transpose(1, 2) @ shift_obj[..., None])[..., 0]
        if not self.object_in_camera:
            self.obj_trans += shift_obj

    def articulation(self, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 45) refined articulation."""
        f = self._frames(frames)
        return self.articulation_init[f] + self.artic_delta[f]

    def hand_verts_hand(self, frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hand mesh in the hand frame: verts (B, V, 3), faces (F, 3)."""
        art = self.articulation(frames)
        out = self.hand_model(art, torch.zeros(art.shape[0], 3, device=art.device), self.shape[None],
                              None, side=self.side)
        return out.verts, out.faces

    # ------------------------------------------------------------------ rendering
    def render_pixels(self, frames: torch.Tensor, pix: torch.Tensor, vol_cfg: VolumeRenderConfig,
                      mesh_cfg: MeshRenderConfig, blend_cfg: BlendConfig) -> dict:
        """Render the scene at sampled pixels.

        Args:
            frames: (B,) frame indices. pix: (B, P, 2) pixel coordinates (u, v).
        Returns:
            dict with probs (B, P, 3) (bg, hand, object), mask_hand, depth_hand, mask_obj,
            depth_obj (B, P), sdf_grad ((N, 3) or None), verts_obj (B, V, 3) hand vertices in
            the object frame, verts_hand (B, V, 3).
        """
        B, P = pix.shape[:2]
        K = self.K.expand(B, 3, 3)
        T_c2h = self.T_cam_to_hand(frames)
        T_h2o = self.T_hand_to_obj(frames)
        verts_hand, faces = self.hand_verts_hand(frames)
        verts_cam = transform_points(invert_rigid(T_c2h), verts_hand)
        mh = render_mesh_pixels(verts_cam, faces, K, pix, mesh_cfg)
        T_c2o = T_h2o @ T_c2h  # = self.T_cam_to_obj(frames), from the poses already computed here
        origins, dirs = pixel_rays(pix, K, T_c2o)
        vol = render_sdf_volume(self.sdf.as_render_fn(), origins.reshape(-1, 3), dirs.reshape(-1, 3),
                                self.density.beta(), None, self.sdf.radius, vol_cfg)
        dirs_cam = pixel_directions(pix, K)
        depth_obj = (vol.depth.reshape(B, P) * dirs_cam[..., 2])
        mask_obj = vol.opacity.reshape(B, P).clamp(0.0, 1.0)
        probs = blend_semantic(mh.mask, mh.depth, mask_obj, depth_obj, blend_cfg)
        return {
            "probs": probs, "mask_hand": mh.mask, "depth_hand": mh.depth, "mask_obj": mask_obj,
            "depth_obj": depth_obj, "sdf_grad": vol.sdf_grad, "verts_hand": verts_hand,
            "verts_obj": transform_points(T_h2o, verts_hand),
        }

    @torch.no_grad()
    def render_labels(self, frame: int, stride: int, vol_cfg: VolumeRenderConfig, mesh_cfg: MeshRenderConfig,
                      blend_cfg: BlendConfig, chunk: int = 8192) -> torch.Tensor:
        """Probabilities on a strided pixel grid of one frame: (H', W', 3), H' = ceil(H / stride)."""
        W, H = self.image_size
        vs, us = torch.meshgrid(torch.arange(0, H, stride, dtype=torch.float32),
                                torch.arange(0, W, stride, dtype=torch.float32), indexing="ij")
        pix = torch.stack([us.reshape(-1), vs.reshape(-1)], -1).to(self.K.device)
        out = []
        f = torch.tensor([frame], device=self.K.device)
        for s in range(0, pix.shape[0], chunk):
            r = self.render_pixels(f, pix[None, s:s + chunk], vol_cfg, mesh_cfg, blend_cfg)
            out.append(r["probs"][0])
        return torch.cat(out).reshape(vs.shape[0], vs.shape[1], 3)

    # ------------------------------------------------------------------ save / load
    def export_state(self) -> dict:
        """Plain dict for ``scene.pt`` (tensors, numbers, strings; weights_only-loadable)."""
        return {
            "format": "hoirecon-fit-scene-1",
            "sdf_spec": dict(self.sdf.spec()),
            "sdf_state": {k: v.detach().cpu() for k, v in self.sdf.state_dict().items()},
            "beta": float(self.density.beta().detach()),
            "side": self.side,
            "image_size": list(self.image_size),
            "object_in_camera": self.object_in_camera,
            "params": {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("sdf.")},
        }


def load_object_sdf(scene_path: str | Path, device: str | torch.device = "cpu"):
    """Object SDF of a finished fit as a callable ``x (N, 3) -> sdf (N,)`` (object frame, m).

    Args:
        scene_path: a saved ``export_state`` (the fit stage's ``FitOutput.SCENE``).
        device: where to evaluate.
    """
    path = Path(scene_path)
    if not path.is_file():
        raise UserError(f"no fitted scene at {path}; run `hoirecon fit` first")
    state = read_torch_checkpoint(path, "fitted scene")
    try:
        sdf = build_object_sdf(state["sdf_spec"])
        if "resolution" in state["sdf_spec"]:
            sdf.set_resolution(int(state["sdf_spec"]["resolution"]))
        sdf.load_state_dict(state["sdf_state"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"cannot read fitted scene {path}: {err}") from None
    sdf = sdf.to(device).eval().requires_grad_(False)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return sdf(x.to(device=device, dtype=torch.float32))

    fn.radius = sdf.radius  # type: ignore[attr-defined]
    return fn


def poses_npz_dict(scene: HOIScene) -> dict[str, np.ndarray]:
    """The arrays of ``poses.npz`` (output contract of the fit stage)."""
    with torch.no_grad():
        return {
            "K": scene.K.cpu().numpy().astype(np.float32),
            "T_cam_to_hand": scene.T_cam_to_hand().cpu().numpy().astype(np.float32),
            "T_hand_to_obj": scene.T_hand_to_obj().cpu().numpy().astype(np.float32),
            "articulation": scene.articulation().cpu().numpy().astype(np.float32),
            "shape": scene.shape.detach().cpu().numpy().astype(np.float32),
            "side": np.array(scene.side),
            "image_size": np.array(scene.image_size, dtype=np.int64),
        }
