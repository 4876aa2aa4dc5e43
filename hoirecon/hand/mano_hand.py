"""MANO backend (the paper's hand model), through ``smplx``'s MANO layer.

Needs ``MANO_RIGHT.pkl`` (MANO v1.2) in the weights folder (``weights/mano/`` or
``$HOIRECON_WEIGHTS/mano/``); it is read with the restricted unpickler of
``hoirecon.hand.mano_pickle`` (no chumpy, no code execution) and handed to
``smplx.MANOLayer`` as a data struct (no temporary files).

Parameters follow MANO exactly (``flat_hand_mean=True``: zero articulation = flat hand,
no PCA), with two conventions of ``hoirecon.hand.model``: the wrist joint is moved to
the origin before ``transl`` (MANO's own output has it at the shape-dependent template
joint ``J_0(beta)``), and left hands are the mirrored right model. To use articulations
from an estimator that follows ``flat_hand_mean=False``, add ``MANOHand.hands_mean``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hoirecon.errors import UserError
from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.hand.mano_pickle import load_mano_pickle
from hoirecon.hand.model import (
    NUM_ARTICULATED_JOINTS,
    NUM_SHAPE,
    HandModel,
    cylindrical_vertex_uv,
    mesh_signed_volume,
)
from hoirecon.weights import require_weights

MANO_RELATIVE_PATH = "mano/MANO_RIGHT.pkl"
MANO_SOURCE = (
    "https://mano.is.tue.mpg.de (register, download MANO v1.2, copy models/MANO_RIGHT.pkl)"
)
# Fingertip vertices of MANO's right hand, in MANO_KEYPOINT_NAMES' tip order
# (thumb, index, middle, ring, pinky); the same ids smplx appends as extra joints.
MANO_TIP_VERTEX_IDS = (744, 320, 443, 554, 671)

_REQUIRED_KEYS = (
    "v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f",
    "hands_components", "hands_mean",
)  # fmt: skip


class MANOHand(HandModel):
    """MANO right-hand model (left by mirroring), MANO-layout parameters."""

    name = "mano"

    def __init__(self, model_path: str | Path | None = None) -> None:
        """Args: model_path: a MANO ``.pkl``; default: the weights folder's MANO_RIGHT.pkl."""
        super().__init__()
        if model_path is None:
            model_path = require_weights(MANO_RELATIVE_PATH, backend="mano", source=MANO_SOURCE)
        data = load_mano_pickle(model_path)
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise UserError(f"{model_path} is not a MANO model: missing {', '.join(missing)}")
        num_verts = np.asarray(data["v_template"]).shape[0]
        if num_verts <= max(MANO_TIP_VERTEX_IDS):
            raise UserError(f"{model_path}: {num_verts} vertices, expected MANO's 778")

        import smplx
        from smplx.utils import Struct

        # MANOLayer: no internal parameters, takes rotation matrices, flat hand mean.
        self.layer = smplx.MANOLayer(
            model_path=str(model_path),
            data_struct=Struct(**data),
            is_rhand=True,
            use_pca=False,
            num_pca_comps=3 * NUM_ARTICULATED_JOINTS,
            flat_hand_mean=True,
            num_betas=NUM_SHAPE,
        )
        self.register_buffer(
            "hands_mean", torch.as_tensor(np.asarray(data["hands_mean"]), dtype=torch.float32)
        )
        self.register_buffer("tip_vertex_ids", torch.tensor(MANO_TIP_VERTEX_IDS))
        with torch.no_grad():
            zeros = torch.zeros(1, 3 * NUM_ARTICULATED_JOINTS)
            rest, _ = self.forward_local_right(zeros, torch.zeros(1, 3), torch.zeros(1, NUM_SHAPE))
        faces = self.layer.faces_tensor.long()
        if mesh_signed_volume(rest[0], faces) < 0:
            faces = faces[:, [0, 2, 1]]
        self.register_buffer("faces", faces.clone())
        self.register_buffer("vert_uv", cylindrical_vertex_uv(rest[0]))

    def forward_local_right(
        self, articulation: Tensor, wrist_rot: Tensor, shape: Tensor
    ) -> tuple[Tensor, Tensor]:
        # smplx's layer computes with its buffers' dtype/device: follow the inputs.
        template = self.layer.v_template
        if template.device != articulation.device or template.dtype != articulation.dtype:
            self.layer.to(device=articulation.device, dtype=articulation.dtype)
        batch = articulation.shape[0]
        axis_angles = torch.cat(
            [wrist_rot[:, None], articulation.reshape(batch, NUM_ARTICULATED_JOINTS, 3)], 1
        )
        rot = axis_angle_to_matrix(axis_angles)
        out = self.layer(betas=shape, global_orient=rot[:, :1], hand_pose=rot[:, 1:])
        wrist = out.joints[:, :1]
        verts = out.vertices - wrist
        joints = out.joints - wrist
        tips = verts.index_select(1, self.tip_vertex_ids.to(verts.device))
        return verts, torch.cat([joints, tips], dim=1)
