"""The hand-model interface, keypoint layouts, and the backend factory.

A hand model maps MANO-layout parameters to a mesh and 21 keypoints (see
``docs/hand_model.md`` for the frame, the joint order and how each backend maps them):

- ``articulation`` (B, 45): 15 finger joints x axis-angle, in MANO's joint order
  (``MANO_ARTICULATED_JOINTS``), each a rotation about that joint expressed in axes that are
  parallel to the hand frame at rest (MANO/SMPL linear-blend-skinning convention).
  Zero = the flat open hand.
- ``wrist_rot`` (B, 3): axis-angle of the whole hand about the wrist joint.
- ``shape`` (B, 10): identity shape, zero = the model's mean hand.
- ``transl`` (B, 3): where the wrist joint lands. Output = ``R(wrist_rot) @ x_local + transl``,
  so ``keypoints[:, 0] == transl`` exactly.

Hand frame (the local frame before ``wrist_rot``/``transl``), the same for every backend:
origin at the wrist joint; for the right hand at zero pose the fingers point along -x, the
back of the hand faces +y (palm faces -y), the thumb is on the +z side. This is MANO's
canonical orientation, with the origin moved from MANO's template origin to the wrist.

Left hands are mirror images of right hands (x -> -x) and take MANO-left parameters: the
left hand with pose ``theta`` equals the mirror of the right hand with pose
``reflect_axis_angle(theta)`` (each axis-angle's y and z components negated), which is the
relation between MANO's own left and right models.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Literal

import torch
from torch import Tensor

from hoirecon.errors import UserError
from hoirecon.geometry.rotations import reflect_axis_angle

Side = Literal["right", "left"]

NUM_ARTICULATED_JOINTS = 15
NUM_SHAPE = 10
NUM_KEYPOINTS = 21

# MANO's 15 articulated joints, in the order of the 45 articulation values (smplx's
# joint_names.py lists right_index1..right_thumb3 in this order after the wrist).
MANO_ARTICULATED_JOINTS: tuple[str, ...] = (
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip

# MANO's 21 keypoints: the 16 skeleton joints (wrist + MANO_ARTICULATED_JOINTS), then the 5
# fingertips in the order smplx appends them (thumb, index, middle, ring, pinky).
MANO_KEYPOINT_NAMES: tuple[str, ...] = ("wrist",) + MANO_ARTICULATED_JOINTS + (
    "thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip",
)  # fmt: skip

# MediaPipe's 21 hand landmarks; ``HandOutput.keypoints`` uses this order.
MEDIAPIPE_KEYPOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip

# keypoints_mediapipe = keypoints_mano[:, MANO_TO_MEDIAPIPE]
MANO_TO_MEDIAPIPE: tuple[int, ...] = (
    0,
    13, 14, 15, 16,  # thumb1..3 (CMC, MCP, IP), thumb tip
    1, 2, 3, 17,  # index
    4, 5, 6, 18,  # middle
    10, 11, 12, 19,  # ring
    7, 8, 9, 20,  # pinky
)  # fmt: skip

# keypoints_mano = keypoints_mediapipe[:, MEDIAPIPE_TO_MANO]
MEDIAPIPE_TO_MANO: tuple[int, ...] = tuple(
    MANO_TO_MEDIAPIPE.index(i) for i in range(NUM_KEYPOINTS)
)

# Parent of each of MANO's 16 skeleton joints (-1 for the wrist).
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Articulated joint index (0..14) of the first joint of each finger, in MANO order.
FINGER_FIRST_JOINT = {"index": 0, "middle": 3, "pinky": 6, "ring": 9, "thumb": 12}


@dataclasses.dataclass
class HandOutput:
    """Posed hand.

    Attributes:
        verts: (B, V, 3) metres.
        faces: (F, 3) long, counter-clockwise seen from outside (mirrored for left hands).
        keypoints: (B, 21, 3) metres, MediaPipe order (``MEDIAPIPE_KEYPOINT_NAMES``).
    """

    verts: Tensor
    faces: Tensor
    keypoints: Tensor

    def keypoints_mano_order(self) -> Tensor:
        """(B, 21, 3) keypoints in ``MANO_KEYPOINT_NAMES`` order."""
        index = torch.as_tensor(MEDIAPIPE_TO_MANO, device=self.keypoints.device)
        return self.keypoints.index_select(1, index)


class HandModel(torch.nn.Module, abc.ABC):
    """A parametric hand: MANO-layout parameters -> mesh + keypoints (see module docstring).

    Subclasses register the buffers ``faces`` (F, 3) long (right-hand winding) and
    ``vert_uv`` (V, 2) in [0, 1], and implement :meth:`forward_local_right`.
    """

    name: str = "hand"
    faces: Tensor
    vert_uv: Tensor

    @property
    def num_verts(self) -> int:
        return int(self.vert_uv.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def faces_for(self, side: Side) -> Tensor:
        """(F, 3) faces with outward winding for ``side`` (mirroring flips the winding)."""
        _check_side(side)
        return self.faces if side == "right" else self.faces[:, [0, 2, 1]]

    @abc.abstractmethod
    def forward_local_right(
        self, articulation: Tensor, wrist_rot: Tensor, shape: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Right hand in the hand frame rotated about the wrist, wrist at the origin.

        Args:
            articulation: (B, 45). wrist_rot: (B, 3). shape: (B, 10). All same dtype/device.
        Returns:
            verts (B, V, 3) and keypoints (B, 21, 3) in ``MANO_KEYPOINT_NAMES`` order, with
            keypoint 0 (the wrist) at the origin.
        """

    def forward(
        self,
        articulation: Tensor,
        wrist_rot: Tensor,
        shape: Tensor | None = None,
        transl: Tensor | None = None,
        side: Side = "right",
    ) -> HandOutput:
        """Pose the hand.

        Args:
            articulation: (B, 45) or (B, 15, 3) MANO-layout finger axis-angles.
            wrist_rot: (B, 3) axis-angle about the wrist joint.
            shape: (B, 10) or (1, 10) or (10,); None = mean shape.
            transl: (B, 3) or (1, 3) or (3,) wrist position; None = origin.
            side: "right" or "left" (left = mirrored model with MANO-left parameters).
        Returns:
            HandOutput with verts (B, V, 3), faces (F, 3), keypoints (B, 21, 3) in
            MediaPipe order; float dtype and device of ``articulation``.
        """
        _check_side(side)
        batch = articulation.shape[0]
        articulation = articulation.reshape(batch, -1)
        if articulation.shape[1] != 3 * NUM_ARTICULATED_JOINTS:
            raise ValueError(f"articulation must be (B, 45), got {tuple(articulation.shape)}")
        like = dict(dtype=articulation.dtype, device=articulation.device)
        if tuple(wrist_rot.shape) != (batch, 3):
            raise ValueError(f"wrist_rot must be ({batch}, 3), got {tuple(wrist_rot.shape)}")
        wrist_rot = wrist_rot.to(**like)
        shape = _batched(shape, batch, NUM_SHAPE, "shape", like)
        transl = _batched(transl, batch, 3, "transl", like)

        if side == "left":
            articulation = reflect_axis_angle(articulation.reshape(batch, -1, 3)).reshape(batch, -1)
            wrist_rot = reflect_axis_angle(wrist_rot)
        verts, keypoints_mano = self.forward_local_right(articulation, wrist_rot, shape)
        if side == "left":
            mirror = torch.tensor([-1.0, 1.0, 1.0], **like)
            verts = verts * mirror
            keypoints_mano = keypoints_mano * mirror
        order = torch.as_tensor(MANO_TO_MEDIAPIPE, device=verts.device)
        keypoints = keypoints_mano.index_select(1, order)
        offset = transl[:, None, :]
        return HandOutput(
            verts=verts + offset,
            faces=self.faces_for(side).to(verts.device),
            keypoints=keypoints + offset,
        )


def _check_side(side: str) -> None:
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")


def _batched(value: Tensor | None, batch: int, dim: int, name: str, like: dict) -> Tensor:
    """Broadcast None/(dim,)/(1, dim)/(B, dim) to (B, dim) with the reference dtype/device."""
    if value is None:
        return torch.zeros(batch, dim, **like)
    value = value.to(**like)
    if value.dim() == 1:
        value = value[None]
    if value.dim() != 2 or value.shape[1] != dim or value.shape[0] not in (1, batch):
        raise ValueError(f"{name} must be ({batch}, {dim}) or (1, {dim}), got {tuple(value.shape)}")
    return value.expand(batch, dim)


HAND_MODELS = ("anny", "mano")


def build_hand_model(name: str = "anny", device: torch.device | str | None = None) -> HandModel:
    """Build a hand model backend.

    Args:
        name: "anny" (default; open model, works offline, no weights needed) or "mano"
            (needs ``weights/mano/MANO_RIGHT.pkl``; raises ``MissingWeightsError`` if absent).
        device: where to put the model's buffers (default: CPU). The forward also follows
            its inputs' device.
    Returns:
        A ``HandModel`` in eval mode (it has no trainable parameters).
    """
    if name == "anny":
        from hoirecon.hand.anny_hand import AnnyHand

        model: HandModel = AnnyHand()
    elif name == "mano":
        from hoirecon.hand.mano_hand import MANOHand

        model = MANOHand()
    else:
        raise UserError(f"unknown hand model {name!r}; choose one of: {', '.join(HAND_MODELS)}")
    if device is not None:
        model = model.to(device)
    return model.eval()


def cylindrical_vertex_uv(rest_verts: Tensor) -> Tensor:
    """A stable per-vertex 2D coordinate in [0, 1]^2 for the "uv" rendering channel.

    Cylindrical unwrap of the rest hand about its long (x) axis: ``u`` = position along x
    (0 = fingertips, 1 = wrist end), ``v`` = angle about the axis through the centroid of the
    (y, z) coordinates: 0.25 palm (-y), 0.5 thumb side (+z), 0.75 back (+y); the seam
    (v = 0 = 1) runs along the little-finger side edge, where contact is least. Computed
    the same way for every backend from its zero-pose mean-shape right hand, so renderings
    of the "uv" channel look alike across backends (the diffusion prior is conditioned on
    them).

    Args:
        rest_verts: (V, 3) right hand at zero pose in the hand frame.
    Returns:
        (V, 2) in [0, 1].
    """
    x, y, z = rest_verts.unbind(-1)
    u = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    angle = torch.atan2(y - y.mean(), z - z.mean())  # 0 toward the thumb (+z), +-pi at -z
    v = (angle + torch.pi) / (2 * torch.pi)
    return torch.stack([u, v], dim=-1).clamp(0.0, 1.0)


def mesh_signed_volume(verts: Tensor, faces: Tensor) -> float:
    """Signed volume of a (nearly closed) mesh; positive when faces wind outward.

    Args:
        verts: (V, 3); faces: (F, 3) long.
    """
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float((a * torch.linalg.cross(b, c, dim=-1)).sum() / 6.0)
