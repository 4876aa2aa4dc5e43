"""FrankMocap's hand regressor (``H3DWEncoder``), written here in plain torch.

The network (facebookresearch/frankmocap, ``handmocap/hand_modules/h3dw_networks.py``) is
an HMR-style regressor: a ResNet-50 trunk (torchvision v1.5 layout, fixed 7x7 average
pool, ``fc1`` 2048->1024 + ReLU), a feature layer ``feat_encoder`` (ReLU, Linear
1024->1024, ReLU) and one Linear ``regressor`` applied three times as iterative error
feedback, starting from a fixed ``mean_params`` vector (61 = 3 camera + 48 pose + 10 shape).

State-dict names are exactly those of the released ``pose_shape_best.pth`` (a flat dict,
no prefix): ``feat_encoder.1.*``, ``regressor.0.*``, ``main_encoder.*`` (torchvision ResNet
names, ``fc1`` instead of ``fc``). ``mean_params`` is not in the checkpoint; FrankMocap
builds it from ``mean_mano_params.pkl`` (see ``frankmocap_mean_params``).

Input (what the network sees): a 224x224 crop, **BGR**, ``(pixel / 255 - 0.5) / 0.5``,
left hands mirrored to look like right hands (``preprocess_hand_crop``).

Output per crop (``split_hand_params``):

- ``cam`` (s, tx, ty): weak perspective of the 224 crop, translation applied before the
  scale: ``u = 112 (1 + s (X + tx))``, ``v = 112 (1 + s (Y + ty))`` in crop pixels, with
  ``X, Y`` model coordinates (SMPL-X units, re-centred on SMPL-X joint 40 = right_index1,
  the index MCP), model +y = image down (no flip).
- ``pose`` (48): 16 axis-angle triples, not PCA. ``pose[0:3]`` is the wrist (global hand)
  rotation, ``pose[3:48]`` the 15 finger joints (index, middle, pinky, ring, thumb; 3
  each) as **offsets from the MANO / SMPL-X right-hand mean pose** (``flat_hand_mean=False``).
- ``shape`` (10): SMPL-X body betas (neutral model), used as the hand's shape.

``FrankMocapHand.predict`` also un-mirrors left hands exactly as the demo does (tx -> -tx,
each axis-angle (x, y, z) -> (x, -y, -z)) and converts the crop camera to the full image
(``crop_cam_to_image_cam``): normalized image coordinates ``x_n = (x_pix - W/2) / (L/2)``,
``y_n = (y_pix - H/2) / (L/2)``, ``L = max(H, W)``, so ``x_n = s' (X + tx')``; the DiffHOI
authors convert FrankMocap cameras the same way (new box = the whole frame, side ``max(H, W)``).
For the paper's full-perspective initialisation (pinhole, principal point at the frame
centre, focal ``f`` in these units, i.e. ``f L / 2`` pixels) see ``weak_cam_to_translation``:
because FrankMocap translates before scaling, the translation is ``(tx', ty', f / s')``;
the paper's eq. 4 ``((tx - px)/s, (ty - py)/s, f/s)`` is the same camera written for a
scale-first weak perspective ``x = s X + t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hoirecon.backends.resnet import RESNET50, ResNet
from hoirecon.errors import UserError
from hoirecon.io.checkpoints import check_state_dict, read_torch_checkpoint, strip_prefix
from hoirecon.io.safe_pickle import NUMPY_GLOBALS, restricted_load
from hoirecon.weights import require_weights

CHECKPOINT_FILE = "frankmocap/pose_shape_best.pth"
MEAN_PARAMS_FILE = "frankmocap/mean_mano_params.pkl"
_SOURCE_URL = "https://dl.fbaipublicfiles.com/eft/fairmocap_data/hand_module/"
CHECKPOINT_SOURCE = (
    _SOURCE_URL + "checkpoints_best/pose_shape_best.pth "
    "(FrankMocap scripts/download_data_hand_module.sh)"
)
MEAN_PARAMS_SOURCE = _SOURCE_URL + "mean_mano_params.pkl (FrankMocap scripts/download_data_hand_module.sh)"

CROP_SIZE = 224
# The demos call the regressor with add_margin=True: 30% of the squared box on every side.
CROP_MARGIN = 0.3


@dataclass(frozen=True)
class H3DWEncoderConfig:
    """Sizes of the released hand regressor (FrankMocap ``base_options.py``)."""

    cam_dim: int = 3
    pose_dim: int = 48
    shape_dim: int = 10
    feat_dim: int = 1024
    num_iterations: int = 3
    input_size: int = CROP_SIZE  # fixed by the 7x7 average pool

    @property
    def total_dim(self) -> int:
        return self.cam_dim + self.pose_dim + self.shape_dim


class HandResNet50(ResNet):
    """FrankMocap's ResNet-50: torchvision trunk, fixed 7x7 avg-pool, ReLU, ``fc1``, ReLU.

    ``(B, 3, 224, 224) -> (B, feat_dim)``.
    """

    def __init__(self, feat_dim: int = 1024):
        super().__init__(RESNET50)
        # Registered after layer4 so the state-dict order is conv1 .. layer4, fc1 (checkpoint order).
        self.fc1 = nn.Linear(self.out_channels, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_features(x)["layer4"]
        # A fixed (not adaptive) pool, as in the original: only 224 inputs give a 1x1 map.
        h = torch.flatten(F.avg_pool2d(h, kernel_size=7, stride=1), 1)
        return F.relu(self.fc1(F.relu(h)))


class H3DWEncoder(nn.Module):
    """The hand regressor; state-dict names equal the released checkpoint's.

    Args:
        mean_params: (total_dim,) starting estimate of the iterative regression (see
            ``frankmocap_mean_params``). Kept as a non-persistent buffer: it follows the
            module's device but is not part of the checkpoint. It is broadcast over the
            batch, so any batch size works (the original fixed it to 1).
        cfg: sizes.
    """

    def __init__(self, mean_params: torch.Tensor, cfg: H3DWEncoderConfig = H3DWEncoderConfig()):
        super().__init__()
        self.cfg = cfg
        mean_params = torch.as_tensor(mean_params, dtype=torch.float32).reshape(-1)
        if mean_params.numel() != cfg.total_dim:
            raise UserError(
                f"frankmocap mean_params has {mean_params.numel()} values, expected {cfg.total_dim}"
            )
        # Registration order = checkpoint order: feat_encoder, regressor, main_encoder.
        self.feat_encoder = nn.Sequential(nn.ReLU(), nn.Linear(cfg.feat_dim, cfg.feat_dim), nn.ReLU())
        self.regressor = nn.Sequential(nn.Linear(cfg.feat_dim + cfg.total_dim, cfg.total_dim))
        self.main_encoder = HandResNet50(cfg.feat_dim)
        self.register_buffer("mean_params", mean_params, persistent=False)

    def forward_with_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the regressor and keep every stage.

        Args:
            x: (B, 3, 224, 224) normalized BGR crops (``preprocess_hand_crop``).

        Returns:
            ``backbone_feat`` (B, feat_dim), ``feat`` (B, feat_dim),
            ``deltas`` (B, num_iterations, total_dim), ``params`` (B, total_dim).
        """
        size = self.cfg.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise UserError(f"frankmocap hand regressor needs (B, 3, {size}, {size}) input, got {tuple(x.shape)}")
        backbone_feat = self.main_encoder(x)
        feat = self.feat_encoder(backbone_feat)
        params = self.mean_params.to(feat.dtype).expand(x.shape[0], -1)
        deltas = []
        for _ in range(self.cfg.num_iterations):
            delta = self.regressor(torch.cat([feat, params], dim=1))
            params = params + delta
            deltas.append(delta)
        return {
            "backbone_feat": backbone_feat,
            "feat": feat,
            "deltas": torch.stack(deltas, dim=1),
            "params": params,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, total_dim) = [cam (3), pose (48), shape (10)]."""
        return self.forward_with_intermediates(x)["params"]


def frankmocap_mean_params(mean_pose: torch.Tensor, cfg: H3DWEncoderConfig = H3DWEncoderConfig()) -> torch.Tensor:
    """The regressor's starting estimate, as FrankMocap's ``H3DWModel.load_params`` builds it.

    Args:
        mean_pose: (pose_dim,) ``mean_pose`` from ``mean_mano_params.pkl``; its wrist triple
            is replaced by zeros.

    Returns:
        (total_dim,): camera (5, 0, 0), wrist 0, fingers ``mean_pose[3:]``, shape 0.
    """
    mean_pose = torch.as_tensor(mean_pose, dtype=torch.float32).reshape(-1)
    if mean_pose.numel() != cfg.pose_dim:
        raise UserError(f"frankmocap mean_pose has {mean_pose.numel()} values, expected {cfg.pose_dim}")
    out = torch.zeros(cfg.total_dim, dtype=torch.float32, device=mean_pose.device)
    out[0] = 5.0  # starting camera scale
    fingers = slice(cfg.cam_dim + 3, cfg.cam_dim + cfg.pose_dim)
    out[fingers] = mean_pose[3:]
    return out


def split_hand_params(
    params: torch.Tensor, cfg: H3DWEncoderConfig = H3DWEncoderConfig()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, total_dim) -> cam (B, 3) = (s, tx, ty), pose (B, 48), shape (B, 10)."""
    return torch.split(params, [cfg.cam_dim, cfg.pose_dim, cfg.shape_dim], dim=-1)


def unmirror_hand_params(
    cam: torch.Tensor, pose: torch.Tensor, is_left: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo the horizontal flip of left-hand crops, as the FrankMocap demo does.

    Mirroring x maps a rotation R to M R M (M = diag(-1, 1, 1)), i.e. axis-angle
    (x, y, z) -> (x, -y, -z), and the crop camera's tx -> -tx. Shape is unchanged.

    Args:
        cam: (B, 3) crop cameras (s, tx, ty) predicted on the (mirrored) crop.
        pose: (B, 3K) axis-angle triples.
        is_left: (B,) bool, rows to un-mirror.

    Returns:
        cam (B, 3), pose (B, 3K); right-hand rows are returned unchanged.
    """
    is_left = torch.as_tensor(is_left, dtype=torch.bool, device=cam.device).reshape(-1, 1)
    cam_sign = cam.new_tensor([1.0, -1.0, 1.0])
    pose_sign = pose.new_tensor([1.0, -1.0, -1.0]).repeat(pose.shape[-1] // 3)
    cam = torch.where(is_left, cam * cam_sign, cam)
    pose = torch.where(is_left, pose * pose_sign, pose)
    return cam, pose


def crop_cam_to_image_cam(
    cam_crop: torch.Tensor, crop_box_xyxy: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """Re-express a crop's weak-perspective camera in normalized full-image coordinates.

    FrankMocap maps a model point to crop pixels ``u = 112 (1 + s (X + tx))`` and
    to image pixels ``x = x0 + u / ratio`` (``mocap_utils/coordconv.py``), where ``(x0, y0)``
    is the top-left of the processed crop box and ``ratio = 224 / side``, ``side`` the
    side of the square canvas the crop was pasted into (top-left aligned). Here the same
    point is written as ``x_n = s' (X + tx')`` with ``x_n = (x - W/2) / (L/2)``,
    ``y_n = (y - H/2) / (L/2)``, ``L = max(H, W)``:
    ``s' = s side / L`` and ``t' = t + (c - image_centre) / (L/2) / s'``, ``c`` the canvas centre
    (the crop size cancels out). Pixel coordinates follow FrankMocap's (no half-pixel shift).

    Args:
        cam_crop: (B, 3) (s, tx, ty) of the crop (already un-mirrored for left hands).
        crop_box_xyxy: (B, 4) processed crop boxes in image pixels (``hand_crop_box``).
        image_hw: (H, W) of the full image.

    Returns:
        (B, 3) (s', tx', ty') in normalized full-image coordinates.
    """
    height, width = image_hw
    half_long = max(height, width) / 2.0
    box = crop_box_xyxy.to(cam_crop)
    side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    canvas_centre = box[:, :2] + side[:, None] / 2.0
    image_centre = cam_crop.new_tensor([width / 2.0, height / 2.0])
    scale = cam_crop[:, 0] * side / (2.0 * half_long)
    trans = cam_crop[:, 1:] + (canvas_centre - image_centre) / half_long / scale[:, None]
    return torch.cat([scale[:, None], trans], dim=1)


def project_weak_image(points: torch.Tensor, cam_image: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Project model points with a full-image weak-perspective camera into image pixels.

    Args:
        points: (B, N, 3) model points (same frame as the regressor's camera).
        cam_image: (B, 3) (s', tx', ty') from ``crop_cam_to_image_cam``.
        image_hw: (H, W).

    Returns:
        (B, N, 2) pixel coordinates (x right, y down).
    """
    height, width = image_hw
    half_long = max(height, width) / 2.0
    norm = cam_image[:, None, :1] * (points[..., :2] + cam_image[:, None, 1:])
    return norm * half_long + points.new_tensor([width / 2.0, height / 2.0])


def weak_cam_to_translation(cam_image: torch.Tensor, focal: float = 1.0) -> torch.Tensor:
    """Model-origin translation in a pinhole camera that matches a weak-perspective camera.

    With focal ``focal`` (normalized units of ``crop_cam_to_image_cam``) and the principal
    point at the frame centre, placing the model at ``(tx, ty, focal / s)`` projects every
    point with ``Z = 0`` exactly where ``x_n = s (X + tx)`` does; deeper points get the
    perspective effect the paper wants.

    Args:
        cam_image: (B, 3) (s, tx, ty) translate-first weak perspective (full image).

    Returns:
        (B, 3) translation ``T_hand_to_cam[:3, 3]`` for a hand frame whose rotation is the
        regressed wrist rotation.
    """
    scale, trans = cam_image[:, :1], cam_image[:, 1:]
    return torch.cat([trans, focal / scale], dim=1)


def hand_crop_box(
    box_xyxy: Sequence[float], image_hw: tuple[int, int], add_margin: bool = True
) -> tuple[int, int, int, int]:
    """The integer crop box FrankMocap cuts for a hand box (``HandMocap.__pad_and_resize``).

    Steps: truncate (x0, y0, w, h) to int; pad the shorter side by ``(long - short) // 2``
    on both ends; add ``int(0.3 * height)`` on every side; clamp each step to the image.

    Args:
        box_xyxy: (x0, y0, x1, y1) hand box in image pixels.
        image_hw: (H, W).

    Returns:
        (x0, y0, x1, y1) ints; the crop is pasted top-left into a square canvas of side
        ``max(x1 - x0, y1 - y0)``.
    """
    height, width = image_hw
    bx0, by0, bx1, by1 = (float(v) for v in box_xyxy)
    if not all(math.isfinite(v) for v in (bx0, by0, bx1, by1)) or bx1 <= bx0 or by1 <= by0:
        raise UserError(f"hand box {tuple(box_xyxy)} is not a valid (x0, y0, x1, y1) box")
    # The demo converts (x0, y0, w, h) with astype(int32): truncation toward zero.
    min_x, min_y = math.trunc(bx0), math.trunc(by0)
    box_w, box_h = math.trunc(bx1 - bx0), math.trunc(by1 - by0)
    max_x, max_y = min_x + box_w, min_y + box_h
    if box_w > box_h:
        pad = (box_w - box_h) // 2
        min_y, max_y = max(min_y - pad, 0), min(max_y + pad, height)
    else:
        pad = (box_h - box_w) // 2
        min_x, max_x = max(min_x - pad, 0), min(max_x + pad, width)
    if add_margin:
        margin = int(CROP_MARGIN * (max_y - min_y))
        min_y, max_y = max(min_y - margin, 0), min(max_y + margin, height)
        min_x, max_x = max(min_x - margin, 0), min(max_x + margin, width)
    inside = 0 <= min_x < max_x <= width and 0 <= min_y < max_y <= height
    if not inside:  # only reachable without the margin step, which clamps
        raise UserError(f"hand box {tuple(box_xyxy)} falls outside the {width}x{height} image")
    return min_x, min_y, max_x, max_y


def normalize_crop(crop01_bgr: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) BGR in [0, 1] -> network input ``(x - 0.5) / 0.5`` in [-1, 1]."""
    return (crop01_bgr - 0.5) / 0.5


def preprocess_hand_crop(
    image_rgb: np.ndarray, box_xyxy: Sequence[float], is_left: bool, add_margin: bool = True
) -> torch.Tensor:
    """Crop, square, resize, mirror and normalize one hand as FrankMocap's demo does.

    The demo reads frames with ``cv2.imread`` and never converts them, so the network
    was run on BGR; this function takes RGB and reverses the channels.

    Args:
        image_rgb: (H, W, 3) uint8 RGB frame.
        box_xyxy: (x0, y0, x1, y1) hand box in pixels (a tight box; see ``hand_crop_box``).
        is_left: mirror the crop horizontally so the network sees a right hand.

    Returns:
        (1, 3, 224, 224) float32 BGR in [-1, 1] (CPU).
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise UserError(f"frankmocap needs an (H, W, 3) uint8 RGB image, got {image_rgb.dtype} {image_rgb.shape}")
    x0, y0, x1, y1 = hand_crop_box(box_xyxy, image_rgb.shape[:2], add_margin)
    side = max(x1 - x0, y1 - y0)
    # Top-left paste into a black square: a crop clamped at the image border is not centred.
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[: y1 - y0, : x1 - x0] = image_rgb[y0:y1, x0:x1]
    crop = cv2.resize(canvas, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    if is_left:
        crop = crop[:, ::-1]
    crop_bgr = np.ascontiguousarray(crop[..., ::-1].transpose(2, 0, 1))
    return normalize_crop(torch.from_numpy(crop_bgr).float().div_(255.0))[None]


def load_mean_pose(path: Path) -> torch.Tensor:
    """``mean_pose`` (48,) from FrankMocap's ``mean_mano_params.pkl``.

    The file is a (Python 2) pickle of a dict of numpy arrays; it is read with an
    unpickler that resolves nothing but numpy arrays, never with plain ``pickle``.
    """
    data = restricted_load(path, NUMPY_GLOBALS, f"FrankMocap mean params {path}")
    if not isinstance(data, dict) or "mean_pose" not in data:
        raise UserError(f"{path} has no 'mean_pose' entry (expected FrankMocap's mean_mano_params.pkl)")
    mean_pose = np.asarray(data["mean_pose"], dtype=np.float32).reshape(-1)
    if mean_pose.size != H3DWEncoderConfig().pose_dim:
        raise UserError(f"{path}: 'mean_pose' has {mean_pose.size} values, expected 48")
    return torch.from_numpy(mean_pose)


def load_encoder_state_dict(encoder: H3DWEncoder, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load a released checkpoint into ``encoder`` strictly, with clear errors.

    Documented mapping (none is needed for the released file): a ``module.`` key prefix
    (a DistributedDataParallel save) is stripped, and absent BatchNorm
    ``num_batches_tracked`` counters (pre-0.4.1 saves; unused in eval) are taken from the
    module. Anything else missing, unexpected or mis-shaped raises ``UserError``
    (``check_state_dict``).
    """
    expected = encoder.state_dict()
    if isinstance(state_dict, Mapping):
        state_dict = strip_prefix(state_dict, "module.")
        for name, value in expected.items():
            if name.endswith("num_batches_tracked") and name not in state_dict:
                state_dict[name] = value
    check_state_dict(expected, state_dict, source, "the FrankMocap hand regressor")
    encoder.load_state_dict(state_dict, strict=True)


class FrankMocapHand:
    """The released FrankMocap hand regressor: boxes in an RGB frame -> MANO-style parameters.

    Needs ``weights/frankmocap/pose_shape_best.pth`` and ``weights/frankmocap/mean_mano_params.pkl``
    (see ``CHECKPOINT_SOURCE`` / ``MEAN_PARAMS_SOURCE``).
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        ckpt_path = require_weights(CHECKPOINT_FILE, backend="frankmocap", source=CHECKPOINT_SOURCE)
        mean_path = require_weights(MEAN_PARAMS_FILE, backend="frankmocap", source=MEAN_PARAMS_SOURCE)
        self.cfg = H3DWEncoderConfig()
        self.encoder = H3DWEncoder(frankmocap_mean_params(load_mean_pose(mean_path), self.cfg), self.cfg)
        state_dict = read_torch_checkpoint(ckpt_path, "FrankMocap checkpoint")
        load_encoder_state_dict(self.encoder, state_dict, str(ckpt_path))
        self.encoder.to(self.device).eval()

    @torch.no_grad()
    def predict(
        self, image_rgb: np.ndarray, boxes: Sequence[Sequence[float]], is_left: Sequence[bool]
    ) -> list[dict[str, torch.Tensor]]:
        """Regress every hand box of one frame.

        Args:
            image_rgb: (H, W, 3) uint8 RGB frame.
            boxes: (N, 4) tight hand boxes (x0, y0, x1, y1) in pixels.
            is_left: (N,) True for left hands.

        Returns:
            One dict per box, tensors on ``self.device`` (left hands already un-mirrored):
            ``pose48`` (48,) axis-angle (wrist + 15 fingers as offsets from the MANO mean),
            ``shape10`` (10,), ``cam_weak`` (3,) (s, tx, ty) in normalized full-image
            coordinates (``crop_cam_to_image_cam``), ``cam_weak_crop`` (3,) the un-mirrored
            crop camera, ``crop_box_xyxy`` (4,) the processed crop box, ``is_left`` (bool).
        """
        boxes = [tuple(float(v) for v in b) for b in boxes]
        is_left = [bool(v) for v in is_left]
        if len(boxes) != len(is_left):
            raise UserError(f"frankmocap: {len(boxes)} boxes but {len(is_left)} is_left flags")
        if not boxes:
            return []
        image_hw = np.asarray(image_rgb).shape[:2]
        crops = torch.cat([preprocess_hand_crop(image_rgb, b, left) for b, left in zip(boxes, is_left)])
        crop_boxes = torch.tensor([hand_crop_box(b, image_hw) for b in boxes], dtype=torch.float32)
        params = self.encoder(crops.to(self.device))
        cam_crop, pose, shape = split_hand_params(params, self.cfg)
        left = torch.tensor(is_left, device=self.device)
        cam_crop, pose = unmirror_hand_params(cam_crop, pose, left)
        crop_boxes = crop_boxes.to(self.device)
        cam_image = crop_cam_to_image_cam(cam_crop, crop_boxes, image_hw)
        return [
            {
                "pose48": pose[i],
                "shape10": shape[i],
                "cam_weak": cam_image[i],
                "cam_weak_crop": cam_crop[i],
                "crop_box_xyxy": crop_boxes[i],
                "is_left": is_left[i],
            }
            for i in range(len(boxes))
        ]
