"""Fit the hand model to MediaPipe landmarks (inverse kinematics), batched over frames.

Unknowns per frame: articulation (45, MANO layout), wrist rotation (3), shape (10), and a
scale-first weak-perspective camera (s, t_x, t_y) in normalised image coordinates (see
``hoirecon.handpose.perspective``) whose reference point is the centroid of the 21 model
keypoints.

Objective (lengths in centimetres so that the weights read naturally):

- world term: the MediaPipe world landmarks (metric 3D, camera axes, arbitrary origin) vs.
  the model keypoints, both centred on their centroid; mean squared distance (cm^2).
  This is what pins down the articulation and the out-of-plane rotation.
- image term: the 2D landmarks vs. the weak-perspective projection of the model keypoints,
  with (s, t) solved in closed form (least squares) for the current keypoints; the residual
  is divided by s, i.e. measured in cm at the hand's depth. This pins down the camera and
  refines the in-plane pose (the 2D landmarks are more precise than the world ones).
- pose prior: anisotropic quadratic on the finger axis-angles (long fingers flex about the
  hand frame's z axis; twist about x and, for PIP/DIP joints, sideways bending about y are
  penalised harder; hyper-extension is penalised), which also fixes the twist of each bone
  that keypoints alone leave free.
- shape prior: quadratic on the unit-variance shape coefficients.

The wrist rotation is initialised by aligning the palm points (wrist and the four long
finger MCPs) of the mean hand to the world landmarks (Kabsch) and optimised as a
left-multiplied delta rotation, so no axis-angle singularity is met near 180 degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hoirecon.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from hoirecon.hand.model import HandModel

CM = 100.0  # metres -> centimetres inside the objective
PALM_POINTS = (0, 5, 9, 13, 17)  # wrist + long-finger MCPs (MediaPipe order)
OFFSET_POINTS = (0, 1, 5, 9, 13, 17)  # landmarks whose definition may differ from the model's joints
# MANO articulation order: index, middle, pinky, ring (3 joints each), then thumb.
_LONG_FINGER_JOINTS = 12


@dataclass(frozen=True)
class IKConfig:
    """Weights and optimiser settings of :func:`fit_hand_to_landmarks`.

    iterations, lr: Adam steps and step size (radians / shape units per step).
    world_weight: weight of the 3D world-landmark term (cm^2).
    image_weight: weight of the 2D landmark term (cm^2 at the hand's depth).
    pose_prior_weight: global factor on :func:`finger_pose_prior`.
    shape_prior_weight: weight of ``|shape|^2`` (unit-variance coefficients).
    perspective_focal: None = weak-perspective image term (closed-form s, t). A focal
        length (normalised units) = full-perspective image term through a pinhole with that
        focal and the principal point at the centre, the reference point's camera position
        being optimised too (initialised from eq. 4 of the weak solution, or from ``init``).
        The returned ``weak_cam`` is then the weak camera that eq. 4 maps back to exactly
        that position: ``s = f / z_o``, ``t = s (x_o, y_o)``.
    fit_landmark_offsets: learn one offset per palm landmark (wrist, thumb CMC, the four
        MCPs), in the hand frame and shared by all frames of the batch, between the model's
        keypoint and where MediaPipe puts that landmark. On real clips MediaPipe's MCP row is
        more slanted than the model's joints (little-finger MCP ~2 cm nearer the wrist,
        consistently over a clip); without offsets that disagreement bends the fit.
    offset_prior_weight: weight of ``|offset|^2`` (cm^2) per frame and palm landmark.
    """

    iterations: int = 200
    lr: float = 0.05
    world_weight: float = 1.0
    image_weight: float = 1.0
    pose_prior_weight: float = 1.0
    shape_prior_weight: float = 0.1
    perspective_focal: float | None = None
    fit_landmark_offsets: bool = True
    offset_prior_weight: float = 0.05


@dataclass
class IKResult:
    """Per-frame fit (B frames).

    Attributes:
        articulation: (B, 45); wrist_rot: (B, 3) axis-angle hand frame -> camera axes;
        shape: (B, 10).
        weak_cam: (B, 3) scale-first (s, t_x, t_y), normalised image coordinates, s per metre.
        origin_hand: (B, 3) the weak camera's reference point (keypoint centroid), hand frame, metres.
        keypoints_hand: (B, 21, 3) model keypoints in the hand frame (wrist at 0), metres.
        world_rmse_cm: (B,) RMS 3D distance to the centred world landmarks (cm).
        image_rmse: (B,) RMS 2D distance to the landmarks in normalised units.
        landmark_offsets: (21, 3) hand-frame offsets (metres) from model keypoints to the
            landmarks' definitions (zero except ``OFFSET_POINTS`` when fitted).
    """

    articulation: Tensor
    wrist_rot: Tensor
    shape: Tensor
    weak_cam: Tensor
    origin_hand: Tensor
    keypoints_hand: Tensor
    world_rmse_cm: Tensor
    image_rmse: Tensor
    landmark_offsets: Tensor | None = None


class KeypointModel(torch.nn.Module):
    """Keypoints only (no mesh) of a hand model in the hand frame, for fast fitting.

    For the anny backend the 5 fingertip vertices are skinned alone (the same linear
    blend skinning as the full model restricted to those rows, ~300x fewer vertices);
    any other backend falls back to its full forward. Either way the output equals
    ``hand(articulation, 0, shape, side=side).keypoints``.
    """

    def __init__(self, hand: HandModel):
        super().__init__()
        self.hand = hand
        from hoirecon.hand.anny_hand import AnnyHand

        self.fast = isinstance(hand, AnnyHand)
        if self.fast:
            ids = hand.tip_vertex_ids
            num_verts = hand.v_template.shape[0]
            dirs = hand.shapedirs.reshape(-1, num_verts, 3)[:, ids]
            self.register_buffer("tip_template", hand.v_template[ids])
            self.register_buffer("tip_dirs", dirs.reshape(dirs.shape[0], -1))
            self.register_buffer("tip_weights", hand.skin_weights[ids])

    def forward(self, articulation: Tensor, shape: Tensor, side: str = "right") -> Tensor:
        """(B, 45), (B, 10) -> (B, 21, 3) keypoints in MediaPipe order, hand frame (wrist at 0)."""
        batch = articulation.shape[0]
        if not self.fast:
            zero = articulation.new_zeros(batch, 3)
            return self.hand(articulation, zero, shape, side=side).keypoints
        from hoirecon.geometry.rotations import reflect_axis_angle
        from hoirecon.hand.anny_hand import forward_kinematics_levels, linear_blend_skinning
        from hoirecon.hand.model import MANO_TO_MEDIAPIPE

        hand = self.hand
        like = dict(dtype=articulation.dtype, device=articulation.device)
        art = articulation.reshape(batch, 15, 3)
        if side == "left":
            art = reflect_axis_angle(art)
        rest_tips = self.tip_template.to(**like) + (shape @ self.tip_dirs.to(**like)).reshape(batch, -1, 3)
        rest_joints = hand.j_template.to(**like) + (shape @ hand.jdirs.to(**like)).reshape(batch, 16, 3)
        axis_angles = torch.cat([art.new_zeros(batch, 1, 3), art], 1).index_select(1, hand.rot_order)
        global_rot, posed = forward_kinematics_levels(axis_angle_to_matrix(axis_angles), rest_joints)
        tips = linear_blend_skinning(rest_tips, rest_joints, global_rot, posed, self.tip_weights.to(**like))
        keypoints = torch.cat([posed.index_select(1, hand.mano_order), tips], 1)
        keypoints = keypoints.index_select(1, torch.as_tensor(MANO_TO_MEDIAPIPE, device=keypoints.device))
        if side == "left":
            keypoints = keypoints * keypoints.new_tensor([-1.0, 1.0, 1.0])
        return keypoints


def _prior_weights(like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-value weights (45,) of the quadratic prior and (45,) of the hyper-extension penalty."""
    w = torch.zeros(15, 3, dtype=like.dtype, device=like.device)
    ext = torch.zeros(15, 3, dtype=like.dtype, device=like.device)
    for j in range(_LONG_FINGER_JOINTS):
        level = j % 3  # 0 = MCP, 1 = PIP, 2 = DIP
        # x: twist along the bone; y: sideways (spread at the MCP, none at PIP/DIP); z: flexion.
        w[j] = torch.tensor([1.0, 0.1 if level == 0 else 1.0, 0.01])
        ext[j, 2] = 1.0
    w[_LONG_FINGER_JOINTS:] = 0.05  # thumb: its joint axes are oblique, keep it isotropic
    return w.reshape(45), ext.reshape(45)


def finger_pose_prior(articulation: Tensor) -> Tensor:
    """Anisotropic quadratic prior on MANO-layout finger axis-angles.

    Long fingers (MANO axes, fingers along -x, back of the hand +y): a rotation about +z
    flexes a finger toward the palm. Penalised per radian^2: twist (x) 1, sideways (y) 0.1
    at the MCP and 1 at PIP/DIP (hinge joints), flexion (z) 0.01; plus ``relu(-z)^2`` for
    PIP/DIP and ``relu(-z - 0.3)^2`` for the MCP (hyper-extension). Thumb: 0.05 on all
    components.

    Args:
        articulation: (B, 45).
    Returns:
        (B,) prior energy.
    """
    w, ext = _prior_weights(articulation)
    quad = (w * articulation.pow(2)).sum(-1)
    flex = articulation.reshape(-1, 15, 3)[..., 2]
    allowed = torch.zeros(15, dtype=articulation.dtype, device=articulation.device)
    allowed[0:_LONG_FINGER_JOINTS:3] = 0.3  # the MCP extends a little
    hyper = torch.relu(-flex - allowed) * ext.reshape(15, 3)[:, 2]
    return quad + 10.0 * hyper.pow(2).sum(-1)


def kabsch_rotation(src: Tensor, dst: Tensor) -> Tensor:
    """Rotation R minimising ``|R (src - mean) - (dst - mean)|^2``.

    Args:
        src, dst: (B, N, 3).
    Returns:
        (B, 3, 3) proper rotations.
    """
    a = src - src.mean(1, keepdim=True)
    b = dst - dst.mean(1, keepdim=True)
    cov = b.transpose(1, 2) @ a  # (B, 3, 3) = sum b a^T
    U, _, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return U @ D @ Vh


def solve_weak_camera(points_xy: Tensor, image_xy: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Least-squares scale-first weak camera ``image ~ s points + t``.

    Args:
        points_xy: (B, N, 2) model points (camera axes, any origin).
        image_xy: (B, N, 2) observations.
        weights: optional (B, N) non-negative point weights.
    Returns:
        s (B,) and t (B, 2) for points taken relative to their (weighted) centroid, i.e.
        ``image ~ s (points - centroid) + t``.
    """
    if weights is None:
        weights = torch.ones(points_xy.shape[:2], dtype=points_xy.dtype, device=points_xy.device)
    w = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    p_mean = (w[..., None] * points_xy).sum(1, keepdim=True)
    i_mean = (w[..., None] * image_xy).sum(1, keepdim=True)
    P, Q = points_xy - p_mean, image_xy - i_mean
    s = (w[..., None] * P * Q).sum((1, 2)) / (w[..., None] * P * P).sum((1, 2)).clamp_min(1e-12)
    return s, i_mean[:, 0]


def fit_hand_to_landmarks(
    hand: HandModel,
    world: Tensor,
    image_xy: Tensor,
    side: str = "right",
    cfg: IKConfig = IKConfig(),
    shape: Tensor | None = None,
    init: IKResult | None = None,
) -> IKResult:
    """Fit articulation, wrist rotation, shape and a camera to landmarks.

    Args:
        hand: the hand model.
        world: (B, 21, 3) metric landmarks in camera axes (any origin), MediaPipe order.
        image_xy: (B, 21, 2) the same landmarks in normalised image coordinates.
        side: "right" | "left".
        cfg: weights and optimiser settings (``cfg.perspective_focal`` picks the camera model).
        shape: fixed shape (10,) or (B, 10); None = fit a shape per frame.
        init: warm start (articulation, rotation, shape, camera) from an earlier fit.
    Returns:
        IKResult (detached tensors on the inputs' device/dtype).
    """
    world_cm = world * CM
    batch = world.shape[0]
    like = dict(dtype=world.dtype, device=world.device)
    fit_shape = shape is None
    if shape is not None:
        shape = shape.to(**like).reshape(-1, 10).expand(batch, 10)
    keypoint_model = KeypointModel(hand)
    focal = cfg.perspective_focal

    def local_keypoints(art: Tensor, beta: Tensor) -> Tensor:
        return keypoint_model(art, beta, side) * CM

    offset_mask = torch.zeros(21, 1, **like)
    offset_mask[list(OFFSET_POINTS)] = 1.0
    if init is not None and init.landmark_offsets is not None:
        offsets0 = init.landmark_offsets.to(**like) * CM
    else:
        offsets0 = torch.zeros(21, 3, **like)

    with torch.no_grad():
        if init is not None:
            art0 = init.articulation.to(**like)
            R0 = axis_angle_to_matrix(init.wrist_rot.to(**like))
            beta0 = init.shape.to(**like) if fit_shape else shape
        else:
            art0 = torch.zeros(batch, 45, **like)
            beta0 = torch.zeros(batch, 10, **like) if fit_shape else shape
            rest = local_keypoints(art0, beta0)
            idx = list(PALM_POINTS)
            R0 = kabsch_rotation(rest[:, idx], world_cm[:, idx])
        if focal is not None:
            if init is not None:
                s0, t0 = init.weak_cam[:, 0].to(**like), init.weak_cam[:, 1:].to(**like)
            else:
                pts = local_keypoints(art0, beta0) @ R0.transpose(1, 2)
                s0, t0 = solve_weak_camera(pts[..., :2], image_xy)
                s0 = s0 * CM
            # Eq. 4 (principal point 0): the reference point's position, in cm.
            origin0 = torch.cat([t0 / s0[:, None], focal / s0[:, None]], 1) * CM

    art = art0.clone().requires_grad_(True)
    delta = torch.zeros(batch, 3, **like, requires_grad=True)
    params = [art, delta]
    beta = beta0.clone()
    if fit_shape:
        beta.requires_grad_(True)
        params.append(beta)
    offsets = offsets0.clone()
    if cfg.fit_landmark_offsets:
        offsets.requires_grad_(True)
        params.append(offsets)
    groups = [{"params": params}]
    if focal is not None:
        # Optimised as log-depth and image-plane offset: scale-free steps.
        log_depth = origin0[:, 2:].log().clone().requires_grad_(True)
        xy_over_z = (origin0[:, :2] / origin0[:, 2:]).clone().requires_grad_(True)
        groups.append({"params": [log_depth, xy_over_z], "lr": cfg.lr * 0.2})
    optim = torch.optim.Adam(groups, lr=cfg.lr)
    world_c = world_cm - world_cm.mean(1, keepdim=True)

    def energy(final: bool = False):
        kp = local_keypoints(art, beta)
        R = axis_angle_to_matrix(delta) @ R0
        # Mirrored models have mirrored offsets: the offset lives in the right-hand frame.
        mirror = kp.new_tensor([-1.0, 1.0, 1.0]) if side == "left" else kp.new_ones(3)
        observed = kp + (offsets * offset_mask * mirror)[None]
        cam_pts = observed @ R.transpose(1, 2)
        centred = cam_pts - cam_pts.mean(1, keepdim=True)
        e_world = (centred - world_c).pow(2).sum(-1).mean(-1)
        if focal is None:
            s, t = solve_weak_camera(centred[..., :2], image_xy)
            s = s.clamp_min(1e-6)
            proj = s[:, None, None] * centred[..., :2] + t[:, None]
            to_cm = 1.0 / s  # normalised units -> cm at the reference depth
        else:
            depth = log_depth.exp()
            origin = torch.cat([xy_over_z * depth, depth], 1)
            pts = centred + origin[:, None]
            proj = focal * pts[..., :2] / pts[..., 2:].clamp_min(1e-3)
            s = focal / depth[:, 0]
            t = s[:, None] * origin[:, :2]
            to_cm = 1.0 / s
        resid = (proj - image_xy) * to_cm[:, None, None]
        e_image = resid.pow(2).sum(-1).mean(-1)
        total = (cfg.world_weight * e_world + cfg.image_weight * e_image
                 + cfg.pose_prior_weight * finger_pose_prior(art))
        if fit_shape:
            total = total + cfg.shape_prior_weight * beta.pow(2).sum(-1)
        if cfg.fit_landmark_offsets:
            total = total + cfg.offset_prior_weight * (offsets * offset_mask).pow(2).sum()
        if not final:
            return total.sum()
        return kp, observed, R, s, t, e_world, resid / to_cm[:, None, None]

    for _ in range(cfg.iterations):
        optim.zero_grad()
        energy().backward()
        optim.step()

    with torch.no_grad():
        kp, observed, R, s, t, e_world, resid = energy(final=True)
        return IKResult(
            articulation=art.detach().clone(),
            wrist_rot=matrix_to_axis_angle(R),
            shape=beta.detach().clone(),
            weak_cam=torch.cat([(s * CM)[:, None], t], 1),
            origin_hand=observed.mean(1) / CM,
            keypoints_hand=kp / CM,
            world_rmse_cm=e_world.sqrt(),
            image_rmse=resid.pow(2).sum(-1).mean(-1).sqrt(),
            landmark_offsets=(offsets * offset_mask).detach() / CM,
        )
