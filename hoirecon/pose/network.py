"""The per-frame hand + object pose network of Liu et al. (CVPR 2021), Appendix A / Table 1.

One RGB image (a square crop around the hand and the object) and the two boxes in it go in;
out come

- the hand: 21 joint heatmaps on the hand RoI, their soft-argmax 2D joints, and 58 values
  (48 pose = 3 global axis-angle + 45 articulation in MANO's layout, then 10 shape) read by
  the project's hand model (``hoirecon.hand``);
- the object: for each RoI grid cell, an offset to each of the 21 control points and a
  sigmoid confidence; the confidence-weighted vote gives 21 2D control points, and PnP
  against the object's 3D control points (``hoirecon.pose.geometry``) gives its 6D pose.

Blocks (paper sizes for ``PAPER_CONFIG``; ``CPU_CONFIG`` is the same code, narrower):

- encoder: ResNet + FPN, P2 (stride 4) only;
- RoIAlign crops of the hand, the object and their intersection box (``backends.ops``);
- contextual reasoning (CR): the object features are the query, the intersection features
  the key and value; 1x1 (1-D) convolutions to ``cr_channels``, an (R^2 x R^2) softmax
  similarity, the value embedding, a lift back to the FPN width and a residual;
- hand decoder: a stacked-hourglass module to 21 heatmaps, soft-argmax; residual blocks with
  max-pooling down to 2x2, flatten, 3 FC layers to 58;
- object decoder: 4 shared convolutions, then a localisation (21 x 2) and a confidence
  (21 x 1) convolution per grid cell.

Coordinates: image pixels of the crop, pixel centres at integers; boxes ``(x1, y1, x2, y2)``
in those pixels. RoIAlign runs with ``aligned=True`` so that a box maps onto the feature map
without the legacy half-pixel shift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hoirecon.backends.ops import roi_align
from hoirecon.backends.resnet import ResNet, ResNetConfig

NUM_JOINTS = 21
NUM_CONTROL_POINTS = 21
NUM_HAND_PARAMS = 58  # 3 global rotation + 45 articulation + 10 shape (MANO's layout)


@dataclass(frozen=True)
class PoseNetConfig:
    """Sizes of the network (see the module docstring).

    name: "paper" | "cpu" (or any label for a custom size).
    image_size: the square input crop in pixels (paper: 512).
    resnet_block, resnet_layers: the ResNet encoder (paper: bottleneck, (3, 4, 6, 3) = ResNet-50).
    resnet_stages: how many ResNet stages feed the FPN (paper: 4, C2-C5; 3 drops C5, the stage
        that holds most of a small ResNet's weights).
    fpn_channels: width of P2 and of the RoI features (paper: 256).
    roi_size: RoIAlign output (paper: 32); a power of two >= 4.
    cr_channels: query/key/value width of the contextual reasoning (paper: 128).
    hourglass_depth: down-sampling levels of the hourglass (paper: Newell's module; 3 at 32x32).
    hand_channels: output width of the hand decoder's residual blocks (paper: 512 at 2x2).
    hand_fc: hidden widths of the 3 FC layers' first two (the last outputs 58).
    object_channels: width of the object decoder's 4 shared convolutions (paper: 256).
    """

    name: str = "paper"
    image_size: int = 512
    resnet_block: str = "bottleneck"
    resnet_layers: tuple[int, ...] = (3, 4, 6, 3)
    resnet_stages: int = 4
    fpn_channels: int = 256
    roi_size: int = 32
    cr_channels: int = 128
    hourglass_depth: int = 3
    hand_channels: int = 512
    hand_fc: tuple[int, int] = (1024, 512)
    object_channels: int = 256

    def __post_init__(self):
        if self.roi_size < 4 or self.roi_size & (self.roi_size - 1):
            raise ValueError(f"roi_size must be a power of two >= 4, got {self.roi_size}")
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")
        if self.roi_size >> self.hourglass_depth < 1:
            raise ValueError("hourglass_depth too deep for roi_size")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PoseNetConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


PAPER_CONFIG = PoseNetConfig()
# Trainable on 2 CPU cores: 128 px crops, a one-block-per-stage ResNet (18-style basic blocks),
# without C5 (1.9 M instead of 5.6 M weights), 64-wide FPN, 16x16 RoIs (256 x 256 CR similarity).
CPU_CONFIG = PoseNetConfig(name="cpu", image_size=128, resnet_block="basic", resnet_layers=(1, 1, 1), resnet_stages=3,
                           fpn_channels=64, roi_size=16, cr_channels=32, hourglass_depth=2, hand_channels=128,
                           hand_fc=(256, 128), object_channels=64)
CONFIGS = {"paper": PAPER_CONFIG, "cpu": CPU_CONFIG}


def _conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1, inplace=True))


class FPNP2(nn.Module):
    """ResNet + feature pyramid, returning only the finest level P2.

    ``forward``: (B, 3, S, S) normalised image -> (B, C, S/4, S/4).
    """

    def __init__(self, cfg: PoseNetConfig):
        super().__init__()
        self.body = ResNet(ResNetConfig(block=cfg.resnet_block, layers=cfg.resnet_layers,
                                        num_stages=cfg.resnet_stages))
        widths = [w * (4 if cfg.resnet_block == "bottleneck" else 1) for w in (64, 128, 256, 512)]
        widths = widths[:cfg.resnet_stages]
        self.lateral = nn.ModuleList(nn.Conv2d(w, cfg.fpn_channels, 1) for w in widths)
        self.smooth = nn.Conv2d(cfg.fpn_channels, cfg.fpn_channels, 3, 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        feats = self.body.forward_features(images)
        levels = [feats[f"layer{i}"] for i in range(1, len(self.lateral) + 1)]
        top = self.lateral[-1](levels[-1])
        for i in reversed(range(len(levels) - 1)):  # top-down: upsample the coarser level, add the lateral
            lat = self.lateral[i](levels[i])
            top = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
        return self.smooth(top)


class ContextualReasoning(nn.Module):
    """Object features attend to the hand-object intersection features (Appendix A).

    ``forward(query (B, C, R, R), key (B, C, R, R)) -> (B, C, R, R)``: ``query + lift(softmax(
    q^T k) v)`` with q, k, v 1-D convolutions of width ``inner`` over the R^2 positions.
    """

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.q = nn.Conv1d(channels, inner, 1)
        self.k = nn.Conv1d(channels, inner, 1)
        self.v = nn.Conv1d(channels, inner, 1)
        self.lift = nn.Conv1d(inner, channels, 1)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        B, C, H, W = query.shape
        q = self.q(query.flatten(2)).transpose(1, 2)  # (B, HW, inner)
        k = self.k(key.flatten(2))  # (B, inner, HW)
        v = self.v(key.flatten(2)).transpose(1, 2)  # (B, HW, inner)
        synergy = torch.softmax(q @ k, dim=-1)  # (B, HW, HW): each object cell over the key cells
        out = self.lift((synergy @ v).transpose(1, 2))  # (B, C, HW)
        return query + out.view(B, C, H, W)


class Residual(nn.Module):
    """Pre-activation bottleneck residual block (Newell et al.'s hourglass unit)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(cout // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, 1, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels; (B, C, R, R) -> (B, C, R, R)."""

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.up = Residual(channels, channels)
        self.low1 = Residual(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.low2 = Residual(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        low = self.low2(self.inner(self.low1(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


def soft_argmax_2d(heatmaps: Tensor) -> Tensor:
    """Expected cell position under the softmax of each heatmap.

    Args:
        heatmaps: (B, J, H, W) logits.
    Returns:
        (B, J, 2) ``(x, y)`` in cell units, cell centres at ``0.5 .. W - 0.5`` (so dividing by
        W gives the position as a fraction of the RoI).
    """
    B, J, H, W = heatmaps.shape
    prob = torch.softmax(heatmaps.flatten(2), dim=-1).view(B, J, H, W)
    xs = torch.arange(W, dtype=heatmaps.dtype, device=heatmaps.device) + 0.5
    ys = torch.arange(H, dtype=heatmaps.dtype, device=heatmaps.device) + 0.5
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


class HandDecoder(nn.Module):
    """Hand RoI features -> heatmaps, 2D joints (RoI fractions) and the 58 hand values.

    ``forward``: (B, C, R, R) -> heatmaps (B, 21, R, R), joints (B, 21, 2) in [0, 1] of the
    RoI, params (B, 58).
    """

    def __init__(self, cfg: PoseNetConfig):
        super().__init__()
        C = cfg.fpn_channels
        self.hourglass = Hourglass(cfg.hourglass_depth, C)
        self.features = nn.Sequential(Residual(C, C), _conv_bn(C, C, 1))
        self.heatmap = nn.Conv2d(C, NUM_JOINTS, 1)
        # Residual blocks, each followed by max-pooling until 2x2 (R=32: 4 poolings, as Table 1).
        pools = cfg.roi_size.bit_length() - 2  # log2(R) - 1
        blocks, cin = [], C + NUM_JOINTS
        for i in range(max(4, pools)):
            cout = cfg.hand_channels if i == max(4, pools) - 1 else max(C, cfg.hand_channels // 2)
            blocks.append(Residual(cin, cout))
            if i < pools:
                blocks.append(nn.MaxPool2d(2))
            cin = cout
        self.encoder = nn.Sequential(*blocks)
        h1, h2 = cfg.hand_fc
        self.fc = nn.Sequential(nn.Linear(cfg.hand_channels * 4, h1), nn.LeakyReLU(0.1, inplace=True),
                                nn.Linear(h1, h2), nn.LeakyReLU(0.1, inplace=True), nn.Linear(h2, NUM_HAND_PARAMS))
        # Start from the flat mean hand: the last layer begins at zero output.
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feat = self.features(self.hourglass(x))
        heatmaps = self.heatmap(feat)
        joints = soft_argmax_2d(heatmaps) / heatmaps.shape[-1]
        code = self.encoder(torch.cat([feat, heatmaps], dim=1))
        return heatmaps, joints, self.fc(code.flatten(1))


class ObjectDecoder(nn.Module):
    """Object RoI features -> per-cell control-point offsets and confidences.

    ``forward``: (B, C, R, R) -> offsets (B, R*R, 21, 2) in RoI fractions (cell centre + offset
    = control point), confidence (B, R*R, 21) in (0, 1). Cells are in row-major order.
    """

    def __init__(self, cfg: PoseNetConfig):
        super().__init__()
        C, M = cfg.fpn_channels, cfg.object_channels
        self.shared = nn.Sequential(_conv_bn(C, M), _conv_bn(M, M), _conv_bn(M, M), _conv_bn(M, M))
        self.localisation = nn.Conv2d(M, NUM_CONTROL_POINTS * 2, 1)
        self.confidence = nn.Conv2d(M, NUM_CONTROL_POINTS, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, _, R, _ = x.shape
        h = self.shared(x)
        offsets = self.localisation(h).view(B, NUM_CONTROL_POINTS, 2, R * R).permute(0, 3, 1, 2)
        conf = torch.sigmoid(self.confidence(h)).view(B, NUM_CONTROL_POINTS, R * R).transpose(1, 2)
        return offsets, conf


def cell_centres(boxes: Tensor, roi_size: int) -> Tensor:
    """Image positions of the RoI grid cells' centres.

    Args:
        boxes: (B, 4) ``x1, y1, x2, y2`` pixels.
    Returns:
        (B, R*R, 2) ``(x, y)`` pixels, row-major cells.
    """
    return roi_to_image(cell_fractions(roi_size, boxes)[None], boxes)


def cell_fractions(roi_size: int, like: Tensor) -> Tensor:
    """(R*R, 2) the RoI grid cells' centres as fractions of the RoI, row-major (dtype/device of ``like``)."""
    frac = (torch.arange(roi_size, dtype=like.dtype, device=like.device) + 0.5) / roi_size
    gy, gx = torch.meshgrid(frac, frac, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)


def roi_to_image(points: Tensor, boxes: Tensor) -> Tensor:
    """(B, N, 2) positions as fractions of each box -> (B, N, 2) pixels (boxes (B, 4))."""
    return boxes[:, None, :2] + points * (boxes[:, None, 2:] - boxes[:, None, :2])


def image_to_roi(points: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of ``roi_to_image``: (B, N, 2) pixels -> fractions of each box."""
    size = (boxes[:, None, 2:] - boxes[:, None, :2]).clamp(min=1e-6)
    return (points - boxes[:, None, :2]) / size


def intersection_boxes(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 4), (B, 4) -> intersection boxes (B, 4) and (B,) bool: non-empty."""
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    return torch.cat([top_left, bottom_right], 1), ((bottom_right - top_left) > 0).all(1)


@dataclass
class PoseNetOutput:
    """Everything the network predicts for a batch of B crops (crop pixels).

    heatmaps (B, 21, R, R) logits; joints_2d (B, 21, 2); hand_params (B, 58);
    control_votes (B, R*R, 21, 2) each cell's control points; control_conf (B, R*R, 21);
    object_boxes (B, 4) the boxes the votes are relative to.
    """

    heatmaps: Tensor
    joints_2d: Tensor
    hand_params: Tensor
    control_votes: Tensor
    control_conf: Tensor
    object_boxes: Tensor


# ImageNet statistics: the ResNet encoder expects them whatever its initialisation.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class HandObjectPoseNet(nn.Module):
    """The whole network. ``forward(images, hand_boxes, object_boxes) -> PoseNetOutput``.

    images: (B, 3, S, S) float RGB in [0, 1]; hand_boxes, object_boxes: (B, 4) crop pixels.
    """

    def __init__(self, cfg: PoseNetConfig = CPU_CONFIG):
        super().__init__()
        self.cfg = cfg
        self.encoder = FPNP2(cfg)
        self.context = ContextualReasoning(cfg.fpn_channels, cfg.cr_channels)
        self.hand = HandDecoder(cfg)
        self.object = ObjectDecoder(cfg)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def _roi(self, p2: Tensor, boxes: Tensor) -> Tensor:
        idx = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
        # roi_align(aligned=True) puts pixel centres at integer + 0.5; ours are at integers.
        return roi_align(p2, torch.cat([idx, boxes + 0.5], 1), self.cfg.roi_size, spatial_scale=0.25,
                         sampling_ratio=2, aligned=True)

    def forward(self, images: Tensor, hand_boxes: Tensor, object_boxes: Tensor) -> PoseNetOutput:
        p2 = self.encoder((images - self.mean) / self.std)
        hand_boxes, object_boxes = hand_boxes.detach(), object_boxes.detach()
        inter, overlap = intersection_boxes(hand_boxes, object_boxes)
        feat_hand = self._roi(p2, hand_boxes)
        feat_obj = self._roi(p2, object_boxes)
        # No overlap: the key is all zeros, so the softmax is uniform over a zero value.
        feat_inter = self._roi(p2, inter) * overlap[:, None, None, None].to(p2.dtype)
        heatmaps, joints_roi, params = self.hand(feat_hand)
        offsets, conf = self.object(self.context(feat_obj, feat_inter))
        R = self.cfg.roi_size
        centres = cell_fractions(R, object_boxes)[None, :, None]  # (1, R*R, 1, 2)
        votes = roi_to_image((centres + offsets).flatten(1, 2), object_boxes)
        return PoseNetOutput(
            heatmaps=heatmaps,
            joints_2d=roi_to_image(joints_roi, hand_boxes),
            hand_params=params,
            control_votes=votes.view(len(images), R * R, NUM_CONTROL_POINTS, 2),
            control_conf=conf,
            object_boxes=object_boxes,
        )
