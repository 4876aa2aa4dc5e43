"""PointRend (detectron2 ``pointrend_rcnn_X_101_32x8d_FPN_3x_coco``) in plain torch, used as Box2Mask.

DiffHOI's preprocessing (``JudyYe/hoi_vid``: ``box2mask.py``) segments *given* boxes with
this detector: each box is enlarged by 10 % per side, ROI-pooled through the box head only
to choose a COCO class (``argmax`` over the 80 foreground logits; hand boxes use class 0,
"person"), then PointRend's mask head predicts that class's mask (coarse 7x7 head, a
28x28 point-head grid, 3 adaptive subdivision steps to 224x224), which is pasted into the
image and thresholded at 0.5.

The network is written here with detectron2's state-dict names so that the zoo checkpoint
``model_final_ba17b9.pkl`` loads strictly after ``map_checkpoint_keys``:

- ``backbone.bottom_up``: ResNeXt-101 32x8d, stride on the grouped 3x3 conv,
  FrozenBatchNorm after every conv, stem max-pool 3/2 with padding 1.
- ``backbone.fpn_lateral{2..5}, fpn_output{2..5}``: FPN (256 ch, nearest x2 top-down,
  sum fusion), p6 = max_pool(k=1, s=2)(p5). Strides 4..64.
- ``proposal_generator.rpn_head``: the RPN head (conv + objectness + deltas) and its cell
  anchors (only checked against the fixture; the Box2Mask path uses no proposals).
- ``roi_heads.box_head`` (2 FC), ``box_predictor`` (81 logits, background last; 320
  deltas), ROIAlignV2 7x7 pooler over p2..p5.
- ``roi_heads.mask_head.coarse_head`` (14x14 grid sampled on p2 -> 2x2/2 conv -> 2 FC ->
  80x7x7) and ``roi_heads.mask_head.point_head`` (3 Conv1d + predictor, coarse logits
  concatenated to every layer).

Preprocessing (detectron2 ``DefaultPredictor``/``Box2Mask``): BGR, ResizeShortestEdge(800,
max 1333) with PIL bilinear on uint8, ``(x - mean) / std`` per BGR channel, zero padding to a
multiple of 32 (bottom/right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hoirecon.backends.ops import roi_align
from hoirecon.errors import UserError
from hoirecon.io.checkpoints import check_state_dict, strip_prefix

CHECKPOINT_NAME = "pointrend/model_final_ba17b9.pkl"
CHECKPOINT_SOURCE = (
    "https://dl.fbaipublicfiles.com/detectron2/PointRend/InstanceSegmentation/"
    "pointrend_rcnn_X_101_32x8d_FPN_3x_coco/28119989/model_final_ba17b9.pkl"
)

FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")


@dataclass(frozen=True)
class PointRendConfig:
    """Effective config of ``pointrend_rcnn_X_101_32x8d_FPN_3x_coco`` (+ Box2Mask's choices)."""

    num_classes: int = 80
    stage_blocks: tuple[int, ...] = (3, 4, 23, 3)  # ResNet-101
    num_groups: int = 32
    width_per_group: int = 8
    res2_out_channels: int = 256
    fpn_channels: int = 256
    pixel_mean_bgr: tuple[float, float, float] = (103.530, 116.280, 123.675)
    pixel_std_bgr: tuple[float, float, float] = (57.375, 57.120, 58.395)
    min_size_test: int = 800
    max_size_test: int = 1333
    size_divisibility: int = 32
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per p2..p6
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_pooler_resolution: int = 7
    box_fc_dim: int = 1024
    canonical_box_size: int = 224
    canonical_level: int = 4
    mask_pooler_resolution: int = 14  # coarse head input grid
    mask_fc_dim: int = 1024
    mask_output_side: int = 7  # coarse head output
    point_fc_dim: int = 256
    point_num_fc: int = 3
    subdivision_steps: int = 5
    subdivision_num_points: int = 28 * 28
    box_pad_ratio: float = 0.1  # Box2Mask's pad_box(boxes, 0.1)
    mask_threshold: float = 0.5
    person_class: int = 0  # COCO "person": the class Box2Mask forces for hand boxes
    fpn_strides: tuple[int, ...] = (4, 8, 16, 32, 64)  # p2..p6


# ----------------------------------------------------------------------------------------
# Layers with detectron2 names
# ----------------------------------------------------------------------------------------


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (buffers ``weight, bias, running_mean,
    running_var``; no ``num_batches_tracked``), eps 1e-5. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class ConvNorm(nn.Conv2d):
    """detectron2's ``Conv2d`` with a ``.norm`` child (conv -> FrozenBN), no bias."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.norm = FrozenBatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BottleneckBlock(nn.Module):
    """ResNeXt bottleneck, stride on the grouped 3x3 conv (``STRIDE_IN_1X1: False``)."""

    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, groups: int):
        super().__init__()
        # Registered before conv1 so that the state-dict order matches detectron2's.
        self.shortcut = ConvNorm(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = ConvNorm(cin, bottleneck, 1)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, stride, 1, groups=groups)
        self.conv3 = ConvNorm(bottleneck, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


class BasicStem(nn.Module):
    """conv 7x7/2 pad 3 -> FrozenBN -> ReLU -> max-pool 3/2 pad 1: ``(B,3,H,W) -> (B,64,H/4,W/4)``."""

    def __init__(self, out_channels: int = 64):
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, 7, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNeXtTrunk(nn.Module):
    """detectron2 ``ResNet`` (bottom-up) returning ``{"res2": (B,256,H/4,W/4), ...,
    "res5": (B,2048,H/32,W/32)}``."""

    def __init__(self, cfg: PointRendConfig):
        super().__init__()
        self.stem = BasicStem(64)
        cin = 64
        cout = cfg.res2_out_channels
        bottleneck = cfg.num_groups * cfg.width_per_group
        for stage, n_blocks in enumerate(cfg.stage_blocks):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (i == 0 and stage > 0) else 1
                blocks.append(BottleneckBlock(cin, cout, bottleneck, stride, cfg.num_groups))
                cin = cout
            self.add_module(f"res{stage + 2}", nn.Sequential(*blocks))
            cout *= 2
            bottleneck *= 2
        self.stage_names = tuple(f"res{s + 2}" for s in range(len(cfg.stage_blocks)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out


class FPN(nn.Module):
    """FPN over res2..res5 plus p6 = max_pool(k=1, s=2)(p5): ``(B,3,H,W) -> {p2..p6}``."""

    def __init__(self, cfg: PointRendConfig):
        super().__init__()
        in_channels = [cfg.res2_out_channels * 2 ** i for i in range(4)]
        # Registered before bottom_up (detectron2's order): lateral2, output2, lateral3, ...
        for level, cin in zip(range(2, 6), in_channels):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(cin, cfg.fpn_channels, 1))
            self.add_module(f"fpn_output{level}",
                            nn.Conv2d(cfg.fpn_channels, cfg.fpn_channels, 3, 1, 1))
        self.bottom_up = ResNeXtTrunk(cfg)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.from_trunk(self.bottom_up(x))

    def from_trunk(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Top-down pathway on the trunk's ``{res2..res5}``: returns ``{p2..p6}``."""
        prev = self.fpn_lateral5(feats["res5"])
        outs = {"p5": self.fpn_output5(prev)}
        for level in (4, 3, 2):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{level}")(feats[f"res{level}"]) + top_down
            outs[f"p{level}"] = getattr(self, f"fpn_output{level}")(prev)
        outs["p6"] = F.max_pool2d(outs["p5"], kernel_size=1, stride=2, padding=0)
        return {k: outs[k] for k in FPN_LEVELS}


class RPNHead(nn.Module):
    """``StandardRPNHead``: per level ``(B,256,h,w) -> objectness (B,A,h,w), deltas (B,4A,h,w)``."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * 4, 1)

    def forward(self, features: list[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Holds ``rpn_head`` (the only RPN part with weights)."""

    def __init__(self, cfg: PointRendConfig):
        super().__init__()
        self.rpn_head = RPNHead(cfg.fpn_channels, len(cfg.anchor_aspect_ratios))


def cell_anchors(sizes: tuple[int, ...], aspect_ratios: tuple[float, ...]) -> torch.Tensor:
    """detectron2 ``DefaultAnchorGenerator`` cell anchors, one size per level (offset 0).

    Returns (L, A, 4) float32 ``x1,y1,x2,y2`` centred at 0, ``w = sqrt(s^2 / a), h = a w``.
    """
    out = []
    for size in sizes:
        level = []
        for ratio in aspect_ratios:
            w = math.sqrt(size * size / ratio)
            h = ratio * w
            level.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        out.append(level)
    return torch.tensor(out, dtype=torch.float32)


class FastRCNNConvFCHead(nn.Module):
    """Box head: ``(R,256,7,7) -> flatten -> fc1 -> ReLU -> fc2 -> ReLU -> (R,1024)``."""

    def __init__(self, in_dim: int, fc_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, start_dim=1)
        return F.relu(self.fc2(F.relu(self.fc1(x))))


class FastRCNNOutputLayers(nn.Module):
    """``(R,1024) -> cls logits (R, K+1) (background last), class-specific deltas (R, 4K)``."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class StandardPointHead(nn.Module):
    """Point head: fine (R,256,P) + coarse (R,K,P) -> logits (R,K,P); the coarse logits are
    concatenated to the input of every layer (``COARSE_PRED_EACH_LAYER``)."""

    def __init__(self, in_channels: int, num_classes: int, fc_dim: int, num_fc: int):
        super().__init__()
        dim_in = in_channels + num_classes
        for k in range(num_fc):
            self.add_module(f"fc{k + 1}", nn.Conv1d(dim_in, fc_dim, 1))
            dim_in = fc_dim + num_classes
        self.num_fc = num_fc
        self.predictor = nn.Conv1d(dim_in, num_classes, 1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = torch.cat((fine, coarse), dim=1)
        for k in range(self.num_fc):
            x = torch.cat((F.relu(getattr(self, f"fc{k + 1}")(x)), coarse), dim=1)
        return self.predictor(x)


class ConvFCHead(nn.Module):
    """Coarse mask head: ``(R,256,14,14) -> 2x2/2 conv+ReLU -> fc1, fc2 (ReLU) -> (R,K,7,7)``.

    No channel-reduction conv: its input (256) is not wider than ``CONV_DIM`` (256).
    """

    def __init__(self, channels: int, side: int, fc_dim: int, num_classes: int, out_side: int):
        super().__init__()
        self.reduce_spatial_dim_conv = nn.Conv2d(channels, channels, 2, 2, 0)
        self.fc1 = nn.Linear(channels * side * side // 4, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.prediction = nn.Linear(fc_dim, num_classes * out_side * out_side)
        self.output_shape = (num_classes, out_side, out_side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.relu(self.reduce_spatial_dim_conv(x)), start_dim=1)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.prediction(x).view(x.shape[0], *self.output_shape)


class PointRendMaskHead(nn.Module):
    """Holds ``point_head`` then ``coarse_head`` (detectron2's registration order)."""

    def __init__(self, cfg: PointRendConfig):
        super().__init__()
        self.point_head = StandardPointHead(cfg.fpn_channels, cfg.num_classes, cfg.point_fc_dim,
                                            cfg.point_num_fc)
        self.coarse_head = ConvFCHead(cfg.fpn_channels, cfg.mask_pooler_resolution,
                                      cfg.mask_fc_dim, cfg.num_classes, cfg.mask_output_side)


class ROIHeads(nn.Module):
    def __init__(self, cfg: PointRendConfig):
        super().__init__()
        r = cfg.box_pooler_resolution
        self.box_head = FastRCNNConvFCHead(cfg.fpn_channels * r * r, cfg.box_fc_dim)
        self.box_predictor = FastRCNNOutputLayers(cfg.box_fc_dim, cfg.num_classes)
        self.mask_head = PointRendMaskHead(cfg)


# ----------------------------------------------------------------------------------------
# Point sampling (PointRend's point_features.py semantics)
# ----------------------------------------------------------------------------------------


def point_sample(features: torch.Tensor, points01: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``features`` at [0,1]-normalised points (grid_sample, zero padding,
    ``align_corners=False``).

    features: (N, C, H, W); points01: (N, P, 2) as (x, y). Returns (N, C, P).
    """
    grid = (2.0 * points01 - 1.0).unsqueeze(2)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).squeeze(3)


def regular_grid_points(num_rois: int, side: int, device: torch.device | str) -> torch.Tensor:
    """Bin centres of a ``side x side`` grid in [0,1]^2, row-major (y outer, x inner).

    Built with ``affine_grid`` exactly as detectron2 does, so the float32 values are
    bit-identical. Returns (R, side*side, 2) as (x, y).
    """
    aff = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]], device=device)
    grid = F.affine_grid(aff, [1, 1, side, side], align_corners=False)
    return grid.view(1, -1, 2).expand(num_rois, -1, -1)


def box_points_to_image(boxes: torch.Tensor, points01: torch.Tensor) -> torch.Tensor:
    """Box-relative [0,1] points -> image pixels. boxes: (R,4) xyxy; points01: (R,P,2) -> (R,P,2)."""
    x = points01[..., 0] * (boxes[:, None, 2] - boxes[:, None, 0]) + boxes[:, None, 0]
    y = points01[..., 1] * (boxes[:, None, 3] - boxes[:, None, 1]) + boxes[:, None, 1]
    return torch.stack((x, y), dim=-1)


def sample_roi_points(feature: torch.Tensor, stride: int, boxes: torch.Tensor,
                      points01: torch.Tensor, batch_index: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """Features of one FPN level at box-relative points (``point_sample_fine_grained_features``).

    feature: (B, C, h, w) with the given stride; boxes: (R, 4) image xyxy; points01: (R, P, 2);
    batch_index: (R,) image of each box (default all 0). Returns (R, C, P).
    The map covers ``w * stride`` x ``h * stride`` image pixels (its padded extent).
    """
    h, w = feature.shape[-2:]
    points_img = box_points_to_image(boxes, points01)
    extent = torch.tensor([w, h], dtype=points_img.dtype, device=points_img.device) / (1.0 / stride)
    points_feat = points_img / extent
    if batch_index is None:
        batch_index = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    out = feature.new_zeros(boxes.shape[0], feature.shape[1], points01.shape[1])
    for b in torch.unique(batch_index).tolist():
        sel = (batch_index == b).nonzero().squeeze(1)
        # One "image" holding all of its boxes' points, as detectron2 samples per image.
        sampled = point_sample(feature[b:b + 1], points_feat[sel].reshape(1, -1, 2))
        out[sel] = sampled.view(feature.shape[1], sel.numel(), -1).transpose(0, 1)
    return out


def uncertain_points_on_grid(uncertainty: torch.Tensor, num_points: int
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``num_points`` most uncertain cells of an (R,1,H,W) map.

    Returns flat indices (R, P) into H*W and their cell centres (R, P, 2) in [0,1] as (x, y).
    """
    R, _, H, W = uncertainty.shape
    num_points = min(H * W, num_points)
    idx = torch.topk(uncertainty.view(R, H * W), k=num_points, dim=1)[1]
    coords = torch.zeros(R, num_points, 2, dtype=torch.float32, device=uncertainty.device)
    coords[:, :, 0] = 1.0 / W / 2.0 + (idx % W).to(torch.float32) * (1.0 / W)
    coords[:, :, 1] = 1.0 / H / 2.0 + (idx // W).to(torch.float32) * (1.0 / H)
    return idx, coords


def class_logits(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Pick each ROI's class channel: (R, K, ...) , (R,) -> (R, 1, ...)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), classes].unsqueeze(1)


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class PointRendRCNN(nn.Module):
    """``GeneralizedRCNN`` with detectron2's names; methods expose the Box2Mask path.

    Boxes are image xyxy pixels of the (resized, padded) network input; ``batch_index`` (R,)
    says which image of the batch each box belongs to (default: all image 0).
    """

    def __init__(self, cfg: PointRendConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PointRendConfig()
        self.backbone = FPN(cfg)
        self.proposal_generator = RPN(cfg)
        self.roi_heads = ROIHeads(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean_bgr).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std_bgr).view(3, 1, 1),
                             persistent=False)

    # -- input ---------------------------------------------------------------------------
    def normalize_and_pad(self, image_bgr255: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) BGR in [0,255] -> ``(x - mean)/std`` zero-padded to a multiple of 32."""
        x = (image_bgr255 - self.pixel_mean) / self.pixel_std
        d = self.cfg.size_divisibility
        H, W = x.shape[-2:]
        return F.pad(x, (0, (-W) % d, 0, (-H) % d), value=0.0)

    # -- heads ---------------------------------------------------------------------------
    def rpn_outputs(self, features: dict[str, torch.Tensor]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level p2..p6: objectness (B,3,h,w) and deltas (B,12,h,w) (channel 4a+k)."""
        return self.proposal_generator.rpn_head([features[k] for k in FPN_LEVELS])

    def box_pooled(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                   batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """ROIAlignV2 7x7 (sampling 0, aligned) with FPN level assignment: (R,4) -> (R,256,7,7).

        Level ``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped to p2..p5.
        """
        cfg = self.cfg
        levels = ("p2", "p3", "p4", "p5")
        strides = cfg.fpn_strides[:4]
        min_level, max_level = int(math.log2(strides[0])), int(math.log2(strides[-1]))
        if batch_index is None:
            batch_index = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
        rois = torch.cat([batch_index.to(boxes.dtype)[:, None], boxes], dim=1)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        level = torch.floor(cfg.canonical_level
                            + torch.log2(torch.sqrt(area) / cfg.canonical_box_size + 1e-8))
        level = (level.clamp(min=min_level, max=max_level).to(torch.int64) - min_level)
        r = cfg.box_pooler_resolution
        feat0 = features[levels[0]]
        out = feat0.new_zeros(boxes.shape[0], feat0.shape[1], r, r)
        for i, (name, stride) in enumerate(zip(levels, strides)):
            sel = (level == i).nonzero().squeeze(1)
            if sel.numel():
                out[sel] = roi_align(features[name], rois[sel], r, 1.0 / stride, 0, True)
        return out

    def box_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                    batch_index: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (R, 81), background last, and box deltas (R, 320) at given boxes."""
        fc = self.roi_heads.box_head(self.box_pooled(features, boxes, batch_index))
        return self.roi_heads.box_predictor(fc)

    def coarse_mask_logits(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                           batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """p2 sampled at a 14x14 grid of bin centres per box -> coarse head -> (R, 80, 7, 7)."""
        side = self.cfg.mask_pooler_resolution
        pts = regular_grid_points(boxes.shape[0], side, boxes.device)
        pooled = sample_roi_points(features["p2"], self.cfg.fpn_strides[0], boxes, pts,
                                   batch_index)
        pooled = pooled.view(boxes.shape[0], pooled.shape[1], side, side)
        return self.roi_heads.mask_head.coarse_head(pooled)

    def point_logits(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                     points01: torch.Tensor, coarse_logits: torch.Tensor,
                     batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """Point head at box-relative points: (R,P,2) -> (R, 80, P)."""
        fine = sample_roi_points(features["p2"], self.cfg.fpn_strides[0], boxes, points01,
                                 batch_index)
        coarse = point_sample(coarse_logits, points01)
        return self.roi_heads.mask_head.point_head(fine, coarse)

    def subdivision_start(self) -> tuple[int, int]:
        """(initial grid side, remaining steps): 7 doubles while 4 r^2 <= 784 -> (28, 3)."""
        res, steps = self.cfg.mask_output_side, self.cfg.subdivision_steps
        while 4 * res * res <= self.cfg.subdivision_num_points:
            res *= 2
            steps -= 1
        return res, steps

    def mask_logits(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                    classes: torch.Tensor, batch_index: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """PointRend subdivision inference: (R,4) boxes, (R,) classes -> (R, 80, 224, 224).

        Point head on a regular 28x28 grid, then 3 times: bilinear x2 upsampling and the
        point head re-evaluated at the 784 cells with the smallest |logit| of the ROI's class.
        """
        coarse = self.coarse_mask_logits(features, boxes, batch_index)
        res, steps = self.subdivision_start()
        R = boxes.shape[0]
        pts = regular_grid_points(R, res, boxes.device)
        logits = self.point_logits(features, boxes, pts, coarse, batch_index)
        logits = logits.reshape(R, logits.shape[1], res, res)
        for _ in range(steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            uncertainty = -class_logits(logits, classes).abs()
            idx, pts = uncertain_points_on_grid(uncertainty, self.cfg.subdivision_num_points)
            point_logits = self.point_logits(features, boxes, pts, coarse, batch_index)
            R, C, H, W = logits.shape
            logits = logits.reshape(R, C, H * W).scatter_(
                2, idx.unsqueeze(1).expand(-1, C, -1), point_logits).view(R, C, H, W)
        return logits


# ----------------------------------------------------------------------------------------
# Box2Mask pre/post-processing
# ----------------------------------------------------------------------------------------


def resize_shortest_edge_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: (new_h, new_w)."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short * 1.0, scale * w) if h < w else (scale * h, short * 1.0)
    if max(newh, neww) > max_size:
        s = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def resize_uint8_bilinear(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """PIL bilinear resize of a (H,W,3) uint8 image, as detectron2's ``ResizeTransform``."""
    if image.shape[:2] == (new_h, new_w):
        return image
    from PIL import Image  # detectron2 resizes uint8 images with PIL; match it exactly

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
        (new_w, new_h), Image.BILINEAR))


def pad_boxes(boxes: torch.Tensor, ratio: float) -> torch.Tensor:
    """Box2Mask's ``pad_box``: grow width/height by ``2*ratio`` about the centre. (N,4) -> (N,4)."""
    widths = (boxes[:, 2] - boxes[:, 0]) * (1 + 2 * ratio)
    heights = (boxes[:, 3] - boxes[:, 1]) * (1 + 2 * ratio)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack([cx - widths / 2, cy - heights / 2, cx + widths / 2, cy + heights / 2], 1)


def scale_clip_boxes(boxes: torch.Tensor, scale_x: float, scale_y: float, height: int,
                     width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``detector_postprocess`` on boxes: scale, clip to [0,w]x[0,h]; also (N,) "non-empty"."""
    b = boxes.clone()
    b[:, 0::2] *= scale_x
    b[:, 1::2] *= scale_y
    b = torch.stack([b[:, 0].clamp(0, width), b[:, 1].clamp(0, height),
                     b[:, 2].clamp(0, width), b[:, 3].clamp(0, height)], dim=-1)
    keep = ((b[:, 2] - b[:, 0]) > 0) & ((b[:, 3] - b[:, 1]) > 0)
    return b, keep


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                threshold: float = 0.5) -> torch.Tensor:
    """detectron2 ``paste_masks_in_image`` (CPU path): square soft masks -> image masks.

    masks: (N, M, M) in [0,1]; boxes: (N, 4) image xyxy. Each mask is bilinearly resampled
    (grid_sample, align_corners=False) at pixel centres inside ``[floor(x0)-1, ceil(x1)+1)``
    (clipped to the image) and thresholded ``>= threshold``; pixels outside stay False.
    Returns (N, height, width) bool.
    """
    out = torch.zeros(masks.shape[0], height, width, dtype=torch.bool, device=masks.device)
    for i in range(masks.shape[0]):
        box = boxes[i:i + 1]
        x0i = int(torch.clamp(box[0, 0].floor() - 1, min=0))
        y0i = int(torch.clamp(box[0, 1].floor() - 1, min=0))
        x1i = int(torch.clamp(box[0, 2].ceil() + 1, max=width))
        y1i = int(torch.clamp(box[0, 3].ceil() + 1, max=height))
        if x1i <= x0i or y1i <= y0i:
            continue
        x0, y0, x1, y1 = torch.split(box, 1, dim=1)
        ys = torch.arange(y0i, y1i, device=masks.device, dtype=torch.float32) + 0.5
        xs = torch.arange(x0i, x1i, device=masks.device, dtype=torch.float32) + 0.5
        ys = (ys - y0) / (y1 - y0) * 2 - 1  # (1, h')
        xs = (xs - x0) / (x1 - x0) * 2 - 1  # (1, w')
        grid = torch.stack([xs[:, None, :].expand(1, ys.shape[1], xs.shape[1]),
                            ys[:, :, None].expand(1, ys.shape[1], xs.shape[1])], dim=3)
        pasted = F.grid_sample(masks[i:i + 1, None].float(), grid.to(masks.dtype),
                               align_corners=False)[0, 0]
        out[i, y0i:y1i, x0i:x1i] = pasted >= threshold
    return out


# ----------------------------------------------------------------------------------------
# Checkpoint
# ----------------------------------------------------------------------------------------


def map_checkpoint_keys(state: dict[str, object]) -> dict[str, object]:
    """Zoo-file names -> this module's names (what detectron2's loader does, plus old names).

    - a leading ``module.`` is stripped;
    - ``pixel_mean``/``pixel_std`` and ``*anchor_generator.cell_anchors.*`` are dropped
      (non-persistent here; detectron2 ignores them on load);
    - ``roi_heads.mask_coarse_head.`` -> ``roi_heads.mask_head.coarse_head.`` and
      ``roi_heads.mask_point_head.`` -> ``roi_heads.mask_head.point_head.`` (PointRend's
      pre-Nov-2020 layout);
    - ``...coarse_head.coarse_mask_fc{k}`` -> ``...coarse_head.fc{k}`` (``ConvFCHead``'s
      conversion for files without version metadata, which pickled zoo files are).
    """
    out = {}
    for name, value in strip_prefix(state, "module.").items():
        if name in ("pixel_mean", "pixel_std") or "anchor_generator.cell_anchors" in name:
            continue
        for old, new in (("roi_heads.mask_coarse_head.", "roi_heads.mask_head.coarse_head."),
                         ("roi_heads.mask_point_head.", "roi_heads.mask_head.point_head.")):
            if name.startswith(old):
                name = new + name[len(old):]
        prefix = "roi_heads.mask_head.coarse_head.coarse_mask_fc"
        if name.startswith(prefix):
            name = "roi_heads.mask_head.coarse_head.fc" + name[len(prefix):]
        out[name] = value
    return out


def load_state_strict(model: nn.Module, state: dict[str, object], origin: str) -> None:
    """Copy ``state`` (after ``map_checkpoint_keys``) into ``model``; every entry must match.

    Zoo files hold numpy arrays: they become tensors of the model's dtypes. Raises
    ``UserError`` naming missing / unexpected / mis-shaped keys (``check_state_dict``).
    """
    mapped = {name: torch.as_tensor(value) if isinstance(value, np.ndarray) else value
              for name, value in map_checkpoint_keys(state).items()}
    own = model.state_dict()
    check_state_dict(own, mapped, origin, "PointRend X101-FPN")
    model.load_state_dict({k: mapped[k].to(ref.dtype) for k, ref in own.items()}, strict=True)


# ----------------------------------------------------------------------------------------
# Public Box2Mask API
# ----------------------------------------------------------------------------------------


class PointRendBox2Mask:
    """Segment given boxes with PointRend X101-FPN, as DiffHOI's ``Box2Mask``.

    ``PointRendBox2Mask(device)`` loads ``weights/pointrend/model_final_ba17b9.pkl``
    (``MissingWeightsError`` if absent). ``cfg`` sets the pre/post-processing (and the
    network built when loading); ``model=`` injects an already-built network (tests).
    """

    def __init__(self, device: torch.device | str = "cpu", cfg: PointRendConfig | None = None,
                 model: PointRendRCNN | None = None):
        self.cfg = cfg or PointRendConfig()
        self.device = torch.device(device)
        if model is None:
            from hoirecon.backends.detectron2_pickle import load_detectron2_pickle
            from hoirecon.weights import require_weights

            path = require_weights(CHECKPOINT_NAME, backend="pointrend", source=CHECKPOINT_SOURCE)
            model = PointRendRCNN(self.cfg)
            load_state_strict(model, load_detectron2_pickle(path), str(path))
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def masks_for_boxes(self, image_rgb: np.ndarray | torch.Tensor, boxes_xyxy,
                        is_object=None) -> torch.Tensor:
        """Instance masks of the given boxes.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            boxes_xyxy: (N, 4) boxes in image pixels (x1, y1, x2, y2); as Box2Mask, each is
                grown by 10 % of its size per side before use.
            is_object: optional (N,) bool; False forces COCO class 0 ("person"), which
                Box2Mask uses for hand boxes. Default: all True (class = box-head argmax).

        Returns:
            (N, H, W) bool masks on ``self.device``; a box that is empty after clipping to
            the image gets an all-False mask.
        """
        image = image_rgb.cpu().numpy() if torch.is_tensor(image_rgb) else np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(f"masks_for_boxes expects an (H,W,3) uint8 RGB image, got "
                            f"{image.shape} {image.dtype}")
        boxes = torch.as_tensor(np.asarray(boxes_xyxy.cpu() if torch.is_tensor(boxes_xyxy)
                                           else boxes_xyxy, dtype=np.float32))
        if boxes.dim() != 2 or boxes.shape[1] != 4 or not torch.isfinite(boxes).all():
            raise UserError(f"masks_for_boxes expects finite (N,4) xyxy boxes, got shape "
                            f"{tuple(boxes.shape)}")
        N = boxes.shape[0]
        if is_object is None:
            is_object_t = torch.ones(N, dtype=torch.bool)
        else:
            is_object_t = torch.as_tensor(np.asarray(
                is_object.cpu() if torch.is_tensor(is_object) else is_object)).to(torch.bool)
            if is_object_t.shape != (N,):
                raise UserError(f"is_object must have shape ({N},), got {tuple(is_object_t.shape)}")
        height, width = image.shape[:2]
        out = torch.zeros(N, height, width, dtype=torch.bool, device=self.device)
        if N == 0:
            return out

        cfg = self.cfg
        new_h, new_w = resize_shortest_edge_shape(height, width, cfg.min_size_test,
                                                  cfg.max_size_test)
        # PIL resamples each channel independently, so resizing before the BGR flip is the same.
        resized = resize_uint8_bilinear(image, new_h, new_w)
        bgr = torch.from_numpy(np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1)))
        x = self.model.normalize_and_pad(bgr.to(self.device, torch.float32)[None])
        features = self.model.backbone(x)

        padded = pad_boxes(boxes, cfg.box_pad_ratio)
        net_boxes, keep = scale_clip_boxes(padded, new_w / width, new_h / height, new_h, new_w)
        kept = keep.nonzero().squeeze(1)
        if kept.numel() == 0:
            return out
        net_boxes = net_boxes[kept].to(self.device)
        cls_logits, _ = self.model.box_outputs(features, net_boxes)
        classes = cls_logits[:, :cfg.num_classes].argmax(dim=1)
        classes = torch.where(is_object_t[kept].to(self.device), classes,
                              torch.full_like(classes, cfg.person_class))
        logits = self.model.mask_logits(features, net_boxes, classes)
        probs = class_logits(logits, classes)[:, 0].sigmoid()  # (R, 224, 224)

        img_boxes, keep2 = scale_clip_boxes(net_boxes, width / new_w, height / new_h,
                                            height, width)
        kept2 = keep2.nonzero().squeeze(1)
        pasted = paste_masks(probs[kept2], img_boxes[kept2], height, width, cfg.mask_threshold)
        out[kept[kept2.cpu()].to(self.device)] = pasted
        return out
