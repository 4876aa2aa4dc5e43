"""The default hand backend: the open Anny hand (code Apache-2.0, data CC0), MANO-style.

Anny (``anny.Anny(rig="anny-hand.R", topology="hand.R")``: 1609 vertices, 21 bones, 6
phenotype shape values) is turned once into a small MANO-like linear model, then posed by
our own torch linear blend skinning (LBS), which is much cheaper than Anny's forward and
has MANO's parameter semantics. See ``docs/hand_model.md`` for the full mapping; in short:

- Skeleton: Anny's bones map onto MANO's 16 joints (``_BONE_TO_JOINT``); the wrist, the
  root and the four metacarpals become MANO's rigid palm/wrist joint. Each Anny bone head
  is the rotation centre of its MANO joint; fingertip keypoints are fixed vertices.
- Frame: each Anny hand is moved into the hand frame of ``hoirecon.hand.model`` (wrist at
  the origin, fingers along -x, back of the hand +y, thumb +z): an anatomical frame built
  from its own joints, then the fixed ~11 deg tilt that MANO's template axes have relative
  to that anatomical frame (``_ANATOMICAL_TO_MANO_AXES``).
- Rest pose: Anny's fingers are slightly curled at rest (5-17 deg per joint); the four
  long fingers are straightened in the palm plane (spread kept) so that zero articulation
  is the flat hand, as in MANO. The thumb keeps Anny's rest pose, which hangs about 35 deg
  toward the palm side (MANO's lies about 6 deg off the palm plane): turning it by LBS at
  the CMC joint would visibly distort the thenar region.
- Shape: Anny's hand shapes for a fixed, seeded sample of adult phenotypes are
  straightened and aligned as above and reduced by PCA; ``shape`` holds PCA coefficients
  scaled to unit variance over that sample (like MANO's betas). Component 0 is overall
  size (positive = larger hand).
- Pose: a joint's axis-angle rotates about the joint in axes parallel to the hand frame at
  rest (MANO/SMPL LBS), composed from the wrist outwards. Anny has no pose-corrective
  blend shapes; none are applied.

Building the model needs the ``anny`` package and takes a few seconds (about a minute the
first time ever, while Anny builds its own cache); the result is cached as a small
``.npz`` under ``$XDG_CACHE_HOME/hoirecon`` (default ``~/.cache/hoirecon``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hoirecon.errors import UserError
from hoirecon.geometry.rotations import axis_angle_to_matrix, rotation_between_vectors
from hoirecon.hand.model import (
    NUM_ARTICULATED_JOINTS,
    NUM_SHAPE,
    HandModel,
    cylindrical_vertex_uv,
    mesh_signed_volume,
)

# Bump when the recipe below changes, so stale caches are not reused.
ASSET_VERSION = 2

# Anny bone -> MANO joint (0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring,
# 13-15 thumb). Anny's finger1 is the thumb (no metacarpal bone: finger1-1 is the CMC
# joint, like MANO's thumb1), finger2..5 are index..pinky (finger{k}-1 = MCP joint).
_BONE_TO_JOINT = {
    "root": 0,
    "wrist.R": 0,
    "metacarpal1.R": 0,
    "metacarpal2.R": 0,
    "metacarpal3.R": 0,
    "metacarpal4.R": 0,
    "finger2-1.R": 1, "finger2-2.R": 2, "finger2-3.R": 3,
    "finger3-1.R": 4, "finger3-2.R": 5, "finger3-3.R": 6,
    "finger5-1.R": 7, "finger5-2.R": 8, "finger5-3.R": 9,
    "finger4-1.R": 10, "finger4-2.R": 11, "finger4-3.R": 12,
    "finger1-1.R": 13, "finger1-2.R": 14, "finger1-3.R": 15,
}  # fmt: skip

# MANO joints of each finger, proximal to distal; fingertips follow _TIP_ORDER (MANO's).
_FINGER_JOINTS = {
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "pinky": (7, 8, 9),
    "ring": (10, 11, 12),
    "thumb": (13, 14, 15),
}
_TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")
_STRAIGHTENED = ("index", "middle", "ring", "pinky")

# Our frame is built from the hand's own joints (x: MCP centre -> wrist, z: little-finger
# MCP -> index MCP, y = z x x), but MANO's template axes are tilted about 11 deg from that
# anatomical frame. This rotation (axis-angle, radians) maps the anatomical frame onto
# MANO's axes; it was measured by applying the same construction to the rest joints of
# MANO v1.2's right-hand template. With it, a wrist rotation means the same hand
# orientation for the anny and the MANO backends.
_ANATOMICAL_TO_MANO_AXES = (-0.0843, -0.1587, 0.0545)

# Phenotype sample for the shape space. Anny phenotypes are in [0, 1]; for the hand only
# age, height, gender and proportions matter (muscle and weight leave it unchanged).
# Adults: age ~ U[0.6, 1] (0.667 is Anny's "young adult" anchor, 1.0 "old"). Gender,
# proportions, muscle, weight ~ U[0, 1]. Height ~ N(0.3, 0.1): Anny's hands are long for
# their body height (about 20 cm wrist-joint-to-middle-tip at height 0.5), and this puts
# the sample's mean hand at 18.7 cm with a spread of 1.1 cm (1 std), close to adult
# populations.
_NUM_SAMPLES = 512
_SEED = 0


@dataclasses.dataclass(frozen=True)
class AnnyHandAssets:
    """Everything the torch model needs (float32 unless noted), right hand, hand frame.

    Attributes:
        v_template: (V, 3) mean-shape, zero-pose vertices (metres).
        shapedirs: (K, V, 3) vertex offsets per unit shape coefficient.
        j_template: (16, 3) MANO-order joint centres (wrist = origin).
        jdirs: (K, 16, 3) joint offsets per unit shape coefficient.
        skin_weights: (V, 16) LBS weights over MANO's joints (rows sum to 1).
        faces: (F, 3) int64, outward winding.
        tip_vertex_ids: (5,) int64, fingertip vertices (thumb, index, middle, ring, pinky).
        shape_std: (K,) std (metres, RMS over vertices) of each component in the sample;
            zero for components the sample does not span.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    j_template: np.ndarray
    jdirs: np.ndarray
    skin_weights: np.ndarray
    faces: np.ndarray
    tip_vertex_ids: np.ndarray
    shape_std: np.ndarray


def _cache_path() -> Path:
    try:
        anny_version = importlib.metadata.version("anny")
    except importlib.metadata.PackageNotFoundError:
        anny_version = "none"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hoirecon"
    return root / f"anny_hand_v{ASSET_VERSION}_anny{anny_version}.npz"


@lru_cache(maxsize=1)
def load_anny_hand_assets() -> AnnyHandAssets:
    """The assets, from the cache file if present, else built from Anny and cached."""
    path = _cache_path()
    fields = [f.name for f in dataclasses.fields(AnnyHandAssets)]
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return AnnyHandAssets(**{name: data[name] for name in fields})
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale cache: rebuild below
    assets = build_anny_hand_assets()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees a half-written file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **dataclasses.asdict(assets))
        os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only home only costs a rebuild next time
    return assets


def _hand_frame(joints: Tensor) -> Tensor:
    """Rotation whose rows are the hand-frame axes, from MANO-order joints.

    x: from the mean of the four long-finger MCP joints to the wrist; z: from the little
    finger's MCP to the index MCP, made orthogonal to x; y = z cross x (back of the hand for
    a right hand).

    Args:
        joints: (N, 16, 3).
    Returns:
        (N, 3, 3) ``R`` with ``x_hand = R @ (x - wrist)``.
    """
    mcps = joints[:, [1, 4, 7, 10]]
    x = torch.nn.functional.normalize(joints[:, 0] - mcps.mean(1), dim=-1)
    across = joints[:, 1] - joints[:, 7]
    z = across - (across * x).sum(-1, keepdim=True) * x
    z = torch.nn.functional.normalize(z, dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=1)


def _straighten_fingers(
    verts: Tensor, joints: Tensor, weights: Tensor, tip_ids: Tensor
) -> tuple[Tensor, Tensor]:
    """Un-curl the four long fingers in the palm plane by LBS with per-segment rotations.

    Every segment of a finger (MCP->PIP, PIP->DIP, DIP->tip) is rotated about its
    proximal joint to point along the MCP->PIP direction with its y (palm-normal)
    component removed: the finger becomes straight and flat, its spread is kept.

    Args:
        verts: (N, V, 3), joints: (N, 16, 3) in the hand frame; weights: (V, 16);
        tip_ids: (5,) in ``_TIP_ORDER``.
    Returns:
        straightened verts (N, V, 3) and joints (N, 16, 3).
    """
    n = verts.shape[0]
    eye = torch.eye(3, dtype=verts.dtype).expand(n, 16, 3, 3)
    rot = eye.clone()
    new_joints = joints.clone()
    for finger in _STRAIGHTENED:
        chain = _FINGER_JOINTS[finger]
        tip = verts[:, tip_ids[_TIP_ORDER.index(finger)]]
        points = [joints[:, j] for j in chain] + [tip]
        target = points[1] - points[0]
        target = torch.nn.functional.normalize(target * target.new_tensor([1.0, 0.0, 1.0]), dim=-1)
        for k, j in enumerate(chain):
            segment = points[k + 1] - points[k]
            rot[:, j] = rotation_between_vectors(segment, target)
            if k + 1 < len(chain):
                length = segment.norm(dim=-1, keepdim=True)
                new_joints[:, chain[k + 1]] = new_joints[:, j] + length * target
    # Per-joint rigid maps v -> R_j (v - j) + j', blended by the skinning weights.
    offsets = verts[:, :, None, :] - joints[:, None]  # (N, V, 16, 3)
    mapped = torch.einsum("njab,nvjb->nvja", rot, offsets) + new_joints[:, None]
    new_verts = (weights[None, :, :, None] * mapped).sum(2)
    return new_verts, new_joints


def build_anny_hand_assets(num_samples: int = _NUM_SAMPLES, seed: int = _SEED) -> AnnyHandAssets:
    """Build the MANO-like linear hand model from Anny (see the module docstring).

    Deterministic for a given ``anny`` version: the phenotype sample is seeded.
    """
    try:
        import anny
    except ImportError as exc:
        raise UserError(
            "the 'anny' hand model needs the anny package: pip install anny==0.6.2"
        ) from exc

    dtype = torch.float64
    # skinning_method="lbs": we only read the model data; this avoids initializing warp.
    model = anny.Anny(rig="anny-hand.R", topology="hand.R", skinning_method="lbs")
    labels = list(model.bone_labels)
    if set(labels) != set(_BONE_TO_JOINT):
        raise UserError(f"unexpected Anny hand rig (bones {labels}); use anny==0.6.2")
    bone_to_joint = torch.tensor([_BONE_TO_JOINT[name] for name in labels])
    # The Anny bone whose head is each MANO joint's centre (the wrist for joint 0).
    head_bone = {j: name for name, j in _BONE_TO_JOINT.items() if j > 0}
    head_bone[0] = "wrist.R"
    joint_bone = torch.tensor([labels.index(head_bone[j]) for j in range(16)])

    # Skinning weights over MANO's joints: sum of the weights of the merged Anny bones.
    num_verts = model.template_vertices.shape[0]
    bone_weights = torch.zeros(num_verts, len(labels), dtype=dtype)
    bone_weights.scatter_add_(
        1, model.vertex_bone_indices.long(), model.vertex_bone_weights.to(dtype)
    )
    weights = torch.zeros(num_verts, 16, dtype=dtype).index_add_(1, bone_to_joint, bone_weights)
    weights = weights / weights.sum(1, keepdim=True)

    # Phenotype sample (labels: gender, age, muscle, weight, height, proportions).
    pheno_labels = list(model.phenotype_labels)
    gen = torch.Generator().manual_seed(seed)
    uniform = torch.rand(num_samples, len(pheno_labels), generator=gen, dtype=dtype)
    pheno = uniform.clone()
    pheno[:, pheno_labels.index("age")] = 0.6 + 0.4 * uniform[:, pheno_labels.index("age")]
    height = 0.3 + 0.1 * torch.randn(num_samples, generator=gen, dtype=dtype)
    pheno[:, pheno_labels.index("height")] = height.clamp(0.0, 1.0)

    with torch.no_grad():
        # Anny's public forward also returns the rest (unposed) mesh and bone heads.
        rest = model.to(dtype)(phenotype_kwargs=pheno)
    verts = rest["rest_vertices"].to(dtype)
    joints = rest["rest_bone_heads"].to(dtype)[:, joint_bone]

    # Into the hand frame, one frame per sample (removes pure rotation from the variation).
    frame = _hand_frame(joints)
    wrist = joints[:, :1]
    verts = torch.einsum("nab,nvb->nva", frame, verts - wrist)
    joints = torch.einsum("nab,nvb->nva", frame, joints - wrist)

    tip_ids = _fingertip_vertices(verts.mean(0), joints.mean(0), weights)
    verts, joints = _straighten_fingers(verts, joints, weights, tip_ids)
    to_mano = axis_angle_to_matrix(torch.tensor(_ANATOMICAL_TO_MANO_AXES, dtype=dtype))
    verts, joints = verts @ to_mano.T, joints @ to_mano.T

    # PCA over the sample of (vertices, joints), unit-variance coefficients.
    data = torch.cat([verts.reshape(num_samples, -1), joints.reshape(num_samples, -1)], 1)
    mean = data.mean(0)
    _, sing, basis = torch.linalg.svd(data - mean, full_matrices=False)
    std = sing[:NUM_SHAPE] / (num_samples - 1) ** 0.5
    dirs = basis[:NUM_SHAPE] * std[:, None]
    # Components the sample does not span (std at round-off level) would only scale noise.
    spanned = std > 1e-9 * std[0]
    dirs = dirs * spanned[:, None]
    v_count = num_verts * 3
    shapedirs = dirs[:, :v_count].reshape(NUM_SHAPE, num_verts, 3)
    jdirs = dirs[:, v_count:].reshape(NUM_SHAPE, 16, 3)
    v_template = mean[:v_count].reshape(num_verts, 3)
    j_template = mean[v_count:].reshape(16, 3)
    # Deterministic signs: component 0 grows the wrist-to-middle-tip length, the others
    # have their largest vertex offset positive.
    middle_tip = tip_ids[_TIP_ORDER.index("middle")]
    signs = torch.sign(shapedirs.reshape(NUM_SHAPE, -1).gather(
        1, shapedirs.reshape(NUM_SHAPE, -1).abs().argmax(1, keepdim=True)
    )).squeeze(1)
    signs[0] = -torch.sign(shapedirs[0, middle_tip, 0])  # fingertips at -x: longer = more -x
    signs[signs == 0] = 1.0
    shapedirs = shapedirs * signs[:, None, None]
    jdirs = jdirs * signs[:, None, None]
    # The wrist is the origin for every shape by construction; remove round-off.
    j_template[0] = 0.0
    jdirs[:, 0] = 0.0

    faces = model.faces.long()
    if mesh_signed_volume(v_template, faces) < 0:
        faces = faces[:, [0, 2, 1]]
    rms = (shapedirs.pow(2).sum(-1).mean(-1)).sqrt()
    f32 = lambda t: t.to(torch.float32).numpy()  # noqa: E731
    return AnnyHandAssets(
        v_template=f32(v_template),
        shapedirs=f32(shapedirs),
        j_template=f32(j_template),
        jdirs=f32(jdirs),
        skin_weights=f32(weights),
        faces=faces.numpy().astype(np.int64),
        tip_vertex_ids=tip_ids.numpy().astype(np.int64),
        shape_std=f32(rms),
    )


def _fingertip_vertices(verts: Tensor, joints: Tensor, weights: Tensor) -> Tensor:
    """Per finger, the vertex mostly skinned to its distal joint that lies furthest along
    the distal segment's direction (the very end of the finger), in ``_TIP_ORDER``.

    Args:
        verts: (V, 3); joints: (16, 3); weights: (V, 16).
    Returns:
        (5,) long.
    """
    ids = []
    for finger in _TIP_ORDER:
        _, middle, distal = _FINGER_JOINTS[finger]
        direction = joints[distal] - joints[middle]
        candidates = torch.nonzero(weights[:, distal] > 0.5).squeeze(1)
        reach = (verts[candidates] - joints[distal]) @ direction
        ids.append(candidates[reach.argmax()])
    return torch.stack(ids)



# The torch model stores joints in "level order": the wrist, then the five first finger
# joints, then the five second, then the five third joints (each group in MANO's finger
# order index, middle, pinky, ring, thumb), so forward kinematics is three batched steps.
_LEVEL_ORDER = (0, 1, 4, 7, 10, 13, 2, 5, 8, 11, 14, 3, 6, 9, 12, 15)
_MANO_FROM_LEVEL = tuple(_LEVEL_ORDER.index(j) for j in range(16))


def forward_kinematics_levels(local_rot: Tensor, rest_joints: Tensor) -> tuple[Tensor, Tensor]:
    """Global joint frames of the 16-joint hand skeleton, joints in ``_LEVEL_ORDER``.

    SMPL/MANO convention: ``G_j = G_parent(j) @ [R_j | J_j - J_parent(j)]``, ``G_0 = [R_0 | J_0]``:
    each local rotation acts about its joint in axes parallel to the rest frame. In level
    order the parent of joint ``i`` (i >= 6) is ``i - 5``, and of joints 1..5 the wrist.

    Args:
        local_rot: (B, 16, 3, 3) local rotations, level order (wrist first).
        rest_joints: (B, 16, 3) rest joint centres, level order.
    Returns:
        global rotations (B, 16, 3, 3) and posed joint positions (B, 16, 3), level order.
    """
    rots = [local_rot[:, :1]]
    pos = [rest_joints[:, :1]]
    for level in range(3):
        child = slice(1 + 5 * level, 6 + 5 * level)
        parent = slice(0, 1) if level == 0 else slice(1 + 5 * (level - 1), 6 + 5 * (level - 1))
        offset = rest_joints[:, child] - rest_joints[:, parent]
        pos.append(pos[-1] + (rots[-1] @ offset[..., None]).squeeze(-1))
        rots.append(rots[-1] @ local_rot[:, child])
    return torch.cat(rots, 1), torch.cat(pos, 1)


def linear_blend_skinning(
    rest_verts: Tensor,
    rest_joints: Tensor,
    global_rot: Tensor,
    posed_joints: Tensor,
    weights: Tensor,
) -> Tensor:
    """``v' = sum_j w_vj (G_j^R (v - J_j) + G_j^t)`` with dense weights.

    Args:
        rest_verts: (B, V, 3); rest_joints: (B, J, 3); global_rot: (B, J, 3, 3);
        posed_joints: (B, J, 3); weights: (V, J).
    Returns:
        (B, V, 3).
    """
    batch, num_joints = global_rot.shape[:2]
    # Each joint's rigid map as a 3x4 matrix [R | t - R J], blended per vertex (V x 12).
    trans = posed_joints - (global_rot @ rest_joints[..., None]).squeeze(-1)
    maps = torch.cat([global_rot, trans[..., None]], dim=-1).reshape(batch, num_joints, 12)
    blended = (weights @ maps).reshape(batch, -1, 3, 4)
    return (blended[..., :3] @ rest_verts[..., None]).squeeze(-1) + blended[..., 3]


class AnnyHand(HandModel):
    """The Anny hand with MANO's parameter layout (see the module docstring)."""

    name = "anny"

    def __init__(self, assets: AnnyHandAssets | None = None) -> None:
        super().__init__()
        assets = assets or load_anny_hand_assets()
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a))  # noqa: E731
        num_verts = assets.v_template.shape[0]
        level = list(_LEVEL_ORDER)
        self.register_buffer("v_template", t(assets.v_template))
        # (K, V*3) and (K, 16*3): the shape blend is one small matmul. Joint data is stored
        # in level order (see forward_kinematics_levels).
        self.register_buffer("shapedirs", t(assets.shapedirs).reshape(NUM_SHAPE, num_verts * 3))
        self.register_buffer("j_template", t(assets.j_template)[level])
        self.register_buffer("jdirs", t(assets.jdirs)[:, level].reshape(NUM_SHAPE, 16 * 3))
        self.register_buffer("skin_weights", t(assets.skin_weights)[:, level])
        self.register_buffer("rot_order", torch.tensor(level))
        self.register_buffer("mano_order", torch.tensor(_MANO_FROM_LEVEL))
        self.register_buffer("faces", t(assets.faces).long())
        self.register_buffer("tip_vertex_ids", t(assets.tip_vertex_ids).long())
        self.register_buffer("shape_std", t(assets.shape_std))
        self.register_buffer("vert_uv", cylindrical_vertex_uv(self.v_template))

    def forward_local_right(
        self, articulation: Tensor, wrist_rot: Tensor, shape: Tensor
    ) -> tuple[Tensor, Tensor]:
        like = dict(dtype=articulation.dtype, device=articulation.device)
        batch = articulation.shape[0]
        rest_verts = self.v_template.to(**like) + (shape @ self.shapedirs.to(**like)).reshape(
            batch, -1, 3
        )
        rest_joints = self.j_template.to(**like) + (shape @ self.jdirs.to(**like)).reshape(
            batch, 16, 3
        )
        axis_angles = torch.cat(
            [wrist_rot[:, None], articulation.reshape(batch, NUM_ARTICULATED_JOINTS, 3)], 1
        ).index_select(1, self.rot_order.to(articulation.device))
        global_rot, posed_joints = forward_kinematics_levels(
            axis_angle_to_matrix(axis_angles), rest_joints
        )
        verts = linear_blend_skinning(
            rest_verts, rest_joints, global_rot, posed_joints, self.skin_weights.to(**like)
        )
        posed_joints = posed_joints.index_select(1, self.mano_order.to(articulation.device))
        tips = verts.index_select(1, self.tip_vertex_ids.to(verts.device))
        return verts, torch.cat([posed_joints, tips], dim=1)
