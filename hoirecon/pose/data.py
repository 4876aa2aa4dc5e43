"""Clips as training / inference samples for the pose network.

A clip is an output folder with done ``frames`` and ``masks`` stages (what ``hoirecon synth``
writes, or what ``hoirecon frames`` + ``hoirecon masks`` make of a user's video). The boxes
come from the masks (as at inference). A ``synth`` folder also has ``gt/`` (labels: hand
keypoints and parameters, object pose) and ``gt/object.ply`` (the template).

``FrameSamples`` holds crops of many frames as arrays; ``batch`` turns a selection into
tensors for the network and ``hoirecon.pose.losses``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from hoirecon.errors import UserError
from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.io.video import read_rgb
from hoirecon.pose.geometry import box_control_points, crop_image, mask_box, square_crop, to_crop
from hoirecon.pose.losses import PoseTargets
from hoirecon.stages.outputs import FramesMeta, GroundTruth, MasksOutput

__all__ = ["ClipData", "FrameSamples", "load_template", "load_clip", "make_samples", "concat_samples"]


def load_template(path: str | Path) -> trimesh.Trimesh:
    """The object's template mesh, in its own frame and metres, as given (no repair, no rescale).

    Raises ``UserError`` (one line) for a missing or unreadable file, a mesh without
    triangles, or one that is not watertight (its control points and PnP need a closed shape).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"object template mesh not found: {path}")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as err:  # trimesh raises many types for unreadable files
        raise UserError(f"cannot read object mesh {path}: {type(err).__name__}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UserError(f"object mesh {path} has no triangles")
    if not mesh.is_watertight:
        raise UserError(f"object mesh {path} is not watertight (open edges): close it first, e.g. in Blender "
                        f"(3D-Print toolbox) or with trimesh.repair.fill_holes")
    return mesh


@dataclass
class ClipData:
    """One clip in memory. images (T, H, W, 3) uint8; hand_boxes, object_boxes (T, 4) float32
    pixels (NaN where a mask is empty); valid (T,) both boxes present; K (3, 3); control_3d
    (21, 3) object-frame control points of the template; labels: None, or a dict with
    ``keypoints_cam`` (T, 21, 3), ``T_cam_to_hand`` (T, 4, 4), ``T_obj_to_cam`` (T, 4, 4),
    ``articulation`` (T, 45), ``shape`` (10,)."""

    name: str
    images: np.ndarray
    hand_boxes: np.ndarray
    object_boxes: np.ndarray
    valid: np.ndarray
    K: np.ndarray
    control_3d: np.ndarray
    labels: dict | None = None


def clip_boxes(hand_masks: np.ndarray, object_masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, H, W) bool masks -> hand boxes, object boxes (T, 4) (NaN when empty), valid (T,)."""
    boxes = []
    for masks in (hand_masks, object_masks):
        b = [mask_box(m) for m in masks]
        boxes.append(np.stack([x if x is not None else np.full(4, np.nan, np.float32) for x in b]))
    valid = np.isfinite(boxes[0]).all(1) & np.isfinite(boxes[1]).all(1)
    return boxes[0], boxes[1], valid


def load_clip(folder: str | Path, K: np.ndarray | None = None, template: str | Path | None = None,
              labelled: bool = True) -> ClipData:
    """Read a clip folder (module docstring).

    K: intrinsics; default ``gt/gt.npz``'s. template: the object mesh; default ``gt/object.ply``.
    labelled: read ``gt/gt.npz`` as labels (a synth folder).
    """
    folder = Path(folder)
    needs = GroundTruth.REQUIRED + ("keypoints_cam",) if labelled else ("K",) if K is None else ()
    gt = GroundTruth.load(folder / GroundTruth.DIR, needs) if GroundTruth.file(folder).is_file() else None
    if (labelled or K is None) and gt is None:
        raise UserError(f"{folder} has no gt/gt.npz (labels / intrinsics)")
    paths = FramesMeta.frame_paths(folder / "frames")
    if not paths:
        raise UserError(f"{folder / 'frames'} has no frames")
    images = np.stack([read_rgb(p) for p in paths])
    W, H = FramesMeta.load(folder / "frames").size
    masks = MasksOutput.load(folder / "masks", num_frames=len(paths), size_wh=(W, H))
    hand_masks, object_masks = masks.hand, masks.obj
    hand_boxes, object_boxes, valid = clip_boxes(hand_masks, object_masks)
    mesh = load_template(template if template is not None else GroundTruth.mesh_file(folder))
    control_3d = box_control_points(torch.as_tensor(np.asarray(mesh.vertices))).numpy()
    labels = None
    if labelled:
        T_cam_to_hand = gt.T_cam_to_hand.astype(np.float64)
        T_obj_to_cam = np.linalg.inv(gt.T_hand_to_obj.astype(np.float64) @ T_cam_to_hand)
        T = len(paths)
        labels = {"keypoints_cam": gt.keypoints_cam, "T_cam_to_hand": T_cam_to_hand, "T_obj_to_cam": T_obj_to_cam,
                  "articulation": np.broadcast_to(gt.articulation, (T, 45)).astype(np.float32),
                  "shape": gt.shape.astype(np.float32)}
    return ClipData(folder.name, images, hand_boxes, object_boxes, valid,
                    np.asarray(K if K is not None else gt.K, np.float64), control_3d, labels)


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., N, 3) camera points -> (..., N, 2) pixels."""
    uvw = points @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


@dataclass
class FrameSamples:
    """Crops of N frames, ready for training. Pixel arrays are in crop pixels.

    images (N, S, S, 3) uint8; hand_boxes, object_boxes (N, 4); crops (N, 3) (side, x0, y0) in
    the frame; K (N, 3, 3) frame intrinsics; joints_2d (N, 21, 2); hand_rot (N, 3, 3);
    articulation (N, 45); shape (N, 10); control_2d (N, 21, 2); hand_weight, object_weight (N,)
    (0 = that part is unlabelled); clip (N,) index into ``clip_names``; frame (N,).
    """

    images: np.ndarray
    hand_boxes: np.ndarray
    object_boxes: np.ndarray
    crops: np.ndarray
    K: np.ndarray
    joints_2d: np.ndarray
    hand_rot: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    control_2d: np.ndarray
    hand_weight: np.ndarray
    object_weight: np.ndarray
    clip: np.ndarray
    frame: np.ndarray
    clip_names: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor, PoseTargets]:
        """images (B, 3, S, S) float in [0, 1], hand boxes, object boxes (B, 4), targets."""
        def t(a):
            return torch.as_tensor(np.ascontiguousarray(a[idx]), dtype=torch.float32, device=device)

        images = t(self.images).permute(0, 3, 1, 2) / 255.0
        targets = PoseTargets(joints_2d=t(self.joints_2d), hand_rot=t(self.hand_rot), articulation=t(self.articulation),
                              shape=t(self.shape), control_2d=t(self.control_2d), hand_weight=t(self.hand_weight),
                              object_weight=t(self.object_weight))
        return images, t(self.hand_boxes), t(self.object_boxes), targets


def crops_for(hand_boxes: np.ndarray, object_boxes: np.ndarray, rng: np.random.Generator | None = None,
              jitter: float = 0.0, margin: float = 1.25) -> np.ndarray:
    """(T, 3) square crops around each frame's boxes; ``jitter`` moves and scales them at random
    (a fraction of the side), so that the network does not learn where the crop puts things."""
    crops = square_crop(torch.as_tensor(hand_boxes), torch.as_tensor(object_boxes), margin).numpy()
    if rng is not None and jitter > 0:
        side = crops[:, 0] * np.exp(rng.uniform(-jitter, jitter, len(crops)))
        centre = crops[:, 1:] + 0.5 * crops[:, :1] + rng.uniform(-jitter, jitter, (len(crops), 2)) * crops[:, :1]
        crops = np.concatenate([side[:, None], centre - 0.5 * side[:, None]], 1).astype(np.float32)
    return crops


def make_samples(clip: ClipData, size: int, rng: np.random.Generator | None = None, jitter: float = 0.0,
                 pseudo: dict | None = None) -> FrameSamples:
    """Crops + labels of a clip's valid frames.

    pseudo: instead of ``clip.labels``, per-frame pseudo-labels (``hoirecon.pose.pseudo``):
    ``joints_2d`` (T, 21, 2) and ``control_2d`` (T, 21, 2) frame pixels, ``hand_rot`` (T, 3, 3),
    ``articulation`` (T, 45), ``shape`` (T, 10), ``hand_keep``, ``object_keep`` (T,) bool;
    frames where neither is kept are left out.
    """
    keep = clip.valid.copy()
    if pseudo is not None:
        keep &= pseudo["hand_keep"] | pseudo["object_keep"]
    idx = np.nonzero(keep)[0]
    n = len(idx)
    crops = crops_for(clip.hand_boxes[idx], clip.object_boxes[idx], rng, jitter)
    crops_t = torch.as_tensor(crops, dtype=torch.float64)

    def crop_pix(points: np.ndarray) -> np.ndarray:
        return to_crop(torch.as_tensor(points, dtype=torch.float64), crops_t, size).numpy().astype(np.float32)

    hb = crop_pix(clip.hand_boxes[idx].reshape(n, 2, 2)).reshape(n, 4)
    ob = crop_pix(clip.object_boxes[idx].reshape(n, 2, 2)).reshape(n, 4)
    if pseudo is not None:
        joints, control = pseudo["joints_2d"][idx], pseudo["control_2d"][idx]
        hand_rot, art, shape = pseudo["hand_rot"][idx], pseudo["articulation"][idx], pseudo["shape"][idx]
        hw, ow = pseudo["hand_keep"][idx].astype(np.float32), pseudo["object_keep"][idx].astype(np.float32)
    elif clip.labels is not None:
        lab = clip.labels
        joints = _project(lab["keypoints_cam"][idx].astype(np.float64), clip.K)
        T_obj_to_cam = lab["T_obj_to_cam"][idx]
        cam_pts = clip.control_3d @ T_obj_to_cam[:, :3, :3].transpose(0, 2, 1) + T_obj_to_cam[:, None, :3, 3]
        control = _project(cam_pts, clip.K)
        hand_rot = lab["T_cam_to_hand"][idx, :3, :3].transpose(0, 2, 1)  # hand -> camera
        art = lab["articulation"][idx]
        shape = np.broadcast_to(lab["shape"], (n, 10))
        hw = ow = np.ones(n, np.float32)
    else:
        raise ValueError("make_samples needs labels or pseudo-labels")
    images = np.stack([crop_image(clip.images[t], crops[j], size) for j, t in enumerate(idx)]) if n else \
        np.zeros((0, size, size, 3), np.uint8)
    return FrameSamples(
        images=images, hand_boxes=hb, object_boxes=ob, crops=crops, K=np.repeat(clip.K[None], n, 0),
        joints_2d=crop_pix(joints), hand_rot=np.asarray(hand_rot, np.float32), articulation=np.asarray(art, np.float32),
        shape=np.asarray(shape, np.float32), control_2d=crop_pix(control), hand_weight=hw, object_weight=ow,
        clip=np.zeros(n, np.int64), frame=idx.astype(np.int64), clip_names=[clip.name])


def concat_samples(parts: list[FrameSamples]) -> FrameSamples:
    """One ``FrameSamples`` of several (clip indices renumbered)."""
    out, names, offset = {}, [], 0
    for f in FrameSamples.__dataclass_fields__:
        if f == "clip_names":
            continue
        if f == "clip":
            arrays = []
            for p in parts:
                arrays.append(p.clip + offset)
                offset += len(p.clip_names)
            out[f] = np.concatenate(arrays)
        else:
            out[f] = np.concatenate([getattr(p, f) for p in parts])
    for p in parts:
        names += p.clip_names
    return FrameSamples(**out, clip_names=names)


def rotation_from_axis_angle(aa: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 3, 3) float32."""
    return axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float32)).numpy()
