"""The 100DOH hand-object detector (Shan et al., CVPR 2020), eval network and demo inference.

DiffHOI takes the first frame's hand box and held-object box from this detector
(github.com/ddshan/hand_object_detector, ``demo.py`` with the "handobj_100K+ego" model
``faster_rcnn_1_8_132028.pth``); the masks stage turns them into masks.

Network (faster-rcnn.pytorch Faster R-CNN, ResNet-101 C4, classes
``[background, targetobject, hand]``). Module and state-dict names are the released ones
(642 entries, in the same order), so ``checkpoint['model']`` loads strictly with no renaming;
the only load-time mapping is dropping a leading ``module.`` (a multi-GPU save):

- ``RCNN_base``: Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3) of a caffe-style
  ResNet-101 (stride on the first 1x1 conv; 3x3/2 max-pool, padding 0, ceil mode); stride 16.
- ``RCNN_rpn``: 3x3 conv 1024->512 + ReLU, 1x1 convs to 2x12 objectness logits (channel a is
  anchor a's background, 12+a its foreground) and 4x12 deltas (channel 4a+k).
- ``RCNN_top``: Sequential(layer4) on 7x7 ROI-aligned features, then the spatial mean: fc7 (2048).
- ``RCNN_cls_score`` (2048->3), ``RCNN_bbox_pred`` (2048->12, class-specific, class-major).
- ``extension_layer``: ``hand_contact_state_layer`` (2048->32, ReLU, Dropout, ->5),
  ``hand_dydx_layer`` (2048->3) and ``hand_lr_layer`` (2048->1). Contact and offset read the
  fc7 of the ROI enlarged by 30% per side; hand side reads the plain ROI's fc7.

Inference (demo.py, TEST config): BGR pixels minus ``PIXEL_MEANS``, resized (cv2 bilinear)
so the short side is 600 and the long side at most 1000; 12 legacy anchors (``+1`` widths)
per stride-16 cell; proposals = top 6000 foreground scores, NMS 0.7 (``+1`` IoU), first 300
(zero-padded); ROI align 7x7, scale 1/16, adaptive sampling, ``aligned=False``; class boxes
decoded with stds (0.1, 0.1, 0.2, 0.2); per class, score > 0.5, NMS 0.3. A hand in contact
(contact class > 0) is matched to the object whose box centre is nearest to
``hand centre + magnitude * 10000 * (dx, dy)`` (``filter_object``).

Checked against ``shared/fixtures/official/doh100`` (filled weights): backbone and RPN maps
bit-identical on CPU, head outputs within 5e-7 of max|ref|. NMS suppresses on IoU > thr (the
CUDA kernel and torchvision); the repo's CPU kernel uses >=, which only matters for exact ties.

Shapes: ``B`` images, ``A = 12`` anchors, ``h, w`` feature size (``H/16``), ``R = 300`` ROIs
per image, ``C = 3`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hoirecon.backends.ops import nms, roi_align
from hoirecon.backends.resnet import RESNET101, ResNet
from hoirecon.errors import RunError, UserError
from hoirecon.io.checkpoints import check_state_dict, read_torch_checkpoint, strip_prefix
from hoirecon.weights import require_weights

WEIGHTS_FILE = "doh100/faster_rcnn_1_8_132028.pth"
WEIGHTS_SOURCE = (
    "the 'handobj_100K+ego' model faster_rcnn_1_8_132028.pth from github.com/ddshan/hand_object_detector "
    "(README 'Model'; Google Drive id 1H2tWsZkS7tDF8q1-jdjx6V9XrK25EDbE)"
)

CLASSES = ("__background__", "targetobject", "hand")
OBJECT_CLASS, HAND_CLASS = 1, 2
CONTACT_STATES = ("none", "self", "other_person", "portable_object", "stationary_object")

# faster-rcnn.pytorch's caffe-style ResNet-101 (lib/model/faster_rcnn/resnet.py).
DOH100_RESNET = replace(RESNET101, stride_in_1x1=True, maxpool_padding=0, maxpool_ceil_mode=True)


@dataclass(frozen=True)
class DOH100Config:
    """Test-time settings; defaults are demo.py's (cfgs/res101.yml + lib/model/utils/config.py)."""

    pixel_means_bgr: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    test_scale: int = 600  # TEST.SCALES[0]: target short side
    max_size: int = 1000  # TEST.MAX_SIZE: cap on the long side
    feat_stride: int = 16
    anchor_scales: tuple[float, ...] = (8, 16, 32, 64)
    anchor_ratios: tuple[float, ...] = (0.5, 1, 2)
    rpn_pre_nms_top_n: int = 6000
    rpn_post_nms_top_n: int = 300
    rpn_nms_thresh: float = 0.7
    pooling_size: int = 7
    enlarge_ratio: float = 0.3  # contact/offset heads read ROIs grown by this fraction per side
    bbox_normalize_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    bbox_normalize_means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    thresh_hand: float = 0.5
    thresh_obj: float = 0.5
    nms_thresh: float = 0.3  # TEST.NMS, per class
    offset_scale: float = 10000.0  # filter_object: centre + magnitude * 10000 * (dx, dy)
    weights: str = WEIGHTS_FILE

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)


# --------------------------------------------------------------------------------------
# Preprocessing (demo.py _get_image_blob)
# --------------------------------------------------------------------------------------


def rgb_to_blob(image_rgb: torch.Tensor, pixel_means_bgr: Sequence[float]) -> torch.Tensor:
    """RGB pixels in [0, 255] -> BGR minus the pixel means, float32 (no std division).

    ``image_rgb``: (B, 3, H, W), any real dtype. The subtraction is done in float64 and rounded
    once, like numpy's ``float32_array -= float64_means``. Returns (B, 3, H, W) float32.
    """
    bgr = image_rgb.flip(1).to(torch.float32).to(torch.float64)
    means = torch.tensor(pixel_means_bgr, dtype=torch.float64, device=image_rgb.device).view(1, 3, 1, 1)
    return (bgr - means).to(torch.float32)


def image_scale_factor(height: int, width: int, test_scale: int, max_size: int) -> float:
    """demo.py's ``im_scale``: short side to ``test_scale`` unless the long side would pass ``max_size``."""
    scale = float(test_scale) / float(min(height, width))
    if np.round(scale * max(height, width)) > max_size:
        scale = float(max_size) / float(max(height, width))
    return scale


def _cv2_linear_taps(in_size: int, out_size: int, scale: float, device: torch.device):
    """Source indices and weights of cv2's INTER_LINEAR along one axis (float images)."""
    dst = torch.arange(out_size, dtype=torch.float64, device=device)
    # cv2: fx = (float)((dx + 0.5) * (1 / scale) - 0.5); sx = floor(fx); fx -= sx.
    src = ((dst + 0.5) * (1.0 / scale) - 0.5).to(torch.float32)
    low = torch.floor(src)
    frac = src - low
    low = low.to(torch.int64)
    below = low < 0
    frac = torch.where(below, torch.zeros_like(frac), frac)
    low = low.clamp(min=0)
    above = low >= in_size - 1
    frac = torch.where(above, torch.zeros_like(frac), frac)
    low = torch.where(above, torch.full_like(low, in_size - 1), low)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, frac


def resize_like_cv2(image: torch.Tensor, scale: float) -> torch.Tensor:
    """``cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)`` for float images.

    ``image``: (B, C, H, W) float. Output size is ``round(H * scale), round(W * scale)``
    (half to even, as cvRound); sample positions ``(d + 0.5) / scale - 0.5``, clamped to the
    border, no antialiasing; same size -> a copy. Returns (B, C, H', W').
    """
    B, C, H, W = image.shape
    out_h, out_w = int(round(H * scale)), int(round(W * scale))
    if (out_h, out_w) == (H, W):
        return image.clone()
    if out_h < 1 or out_w < 1:
        raise UserError(f"image {H}x{W} is too small to resize by {scale}")
    x0, x1, fx = _cv2_linear_taps(W, out_w, scale, image.device)
    y0, y1, fy = _cv2_linear_taps(H, out_h, scale, image.device)
    fx, fy = fx.to(image.dtype), fy.to(image.dtype)
    rows = image[..., x0] * (1 - fx) + image[..., x1] * fx  # horizontal pass first, like cv2
    return rows[..., y0, :] * (1 - fy)[:, None] + rows[..., y1, :] * fy[:, None]


def prepare_image(image_rgb: torch.Tensor, cfg: DOH100Config) -> tuple[torch.Tensor, torch.Tensor]:
    """One RGB uint8 image (H, W, 3) -> ``blob`` (1, 3, H', W') float32 and ``im_info`` (1, 3).

    ``im_info = [[H', W', im_scale]]`` as demo.py builds it.
    """
    if image_rgb.dim() != 3 or image_rgb.shape[-1] != 3:
        raise UserError(f"100DOH detector expects an (H, W, 3) RGB image, got {tuple(image_rgb.shape)}")
    H, W = image_rgb.shape[:2]
    blob = rgb_to_blob(image_rgb.permute(2, 0, 1).unsqueeze(0), cfg.pixel_means_bgr)
    scale = image_scale_factor(H, W, cfg.test_scale, cfg.max_size)
    blob = resize_like_cv2(blob, scale)
    im_info = torch.tensor([[blob.shape[2], blob.shape[3], scale]], dtype=torch.float32, device=blob.device)
    return blob, im_info


# --------------------------------------------------------------------------------------
# Boxes (legacy "+1" conventions of lib/model/rpn)
# --------------------------------------------------------------------------------------


def generate_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1, 2),
                     scales: Sequence[float] = (8, 16, 32, 64)) -> torch.Tensor:
    """Legacy Faster R-CNN reference anchors around the cell ``(0, 0, base-1, base-1)``.

    Ratio-major, then scale; widths ``round(sqrt(area / ratio))``, heights ``round(w * ratio)``
    (half to even), boxes ``ctr +- 0.5 * (size - 1)``. Returns (len(ratios)*len(scales), 4)
    float32, e.g. ``[-84, -40, 99, 55]`` first for the defaults.
    """
    r = torch.tensor(ratios, dtype=torch.float64)
    s = torch.tensor(scales, dtype=torch.float64)
    ctr = 0.5 * (base_size - 1)
    ws = torch.round(torch.sqrt(base_size * base_size / r))  # (R,)
    hs = torch.round(ws * r)
    ws = (ws[:, None] * s[None, :]).reshape(-1)
    hs = (hs[:, None] * s[None, :]).reshape(-1)
    return torch.stack([ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1),
                        ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)], 1).to(torch.float32)


def shifted_anchors(base_anchors: torch.Tensor, feat_h: int, feat_w: int, stride: int) -> torch.Tensor:
    """(A, 4) anchors -> (h*w*A, 4): location-major (y, then x), then anchor (proposal_layer.py)."""
    ys = torch.arange(feat_h, device=base_anchors.device, dtype=base_anchors.dtype) * stride
    xs = torch.arange(feat_w, device=base_anchors.device, dtype=base_anchors.dtype) * stride
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], -1).reshape(-1, 1, 4)
    return (base_anchors.view(1, -1, 4) + shifts).reshape(-1, 4)


def decode_boxes(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """``bbox_transform_inv``: legacy ``+1`` decoding, no clamp on dw/dh.

    ``boxes``: (..., 4); ``deltas``: (..., 4K) as ``(dx, dy, dw, dh)`` per class.
    ``w = x2 - x1 + 1``, ``ctr = x1 + 0.5 w``; result ``ctr' +- 0.5 w'`` (no ``-1``).
    Returns (..., 4K).
    """
    widths = (boxes[..., 2] - boxes[..., 0] + 1.0).unsqueeze(-1)
    heights = (boxes[..., 3] - boxes[..., 1] + 1.0).unsqueeze(-1)
    ctr_x = boxes[..., 0].unsqueeze(-1) + 0.5 * widths
    ctr_y = boxes[..., 1].unsqueeze(-1) + 0.5 * heights
    dx, dy, dw, dh = deltas[..., 0::4], deltas[..., 1::4], deltas[..., 2::4], deltas[..., 3::4]
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    out = torch.stack([pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                       pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h], -1)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, im_info: torch.Tensor) -> torch.Tensor:
    """Clip (B, N, 4K) boxes to ``[0, W-1] x [0, H-1]`` of each image; ``im_info``: (B, 3)."""
    x_max = (im_info[:, 1] - 1).view(-1, 1, 1)
    y_max = (im_info[:, 0] - 1).view(-1, 1, 1)
    zero = torch.zeros_like(x_max)
    out = boxes.clone()
    out[..., 0::2] = torch.minimum(torch.maximum(boxes[..., 0::2], zero), x_max)
    out[..., 1::2] = torch.minimum(torch.maximum(boxes[..., 1::2], zero), y_max)
    return out


def enlarge_rois(rois: torch.Tensor, im_info: torch.Tensor, ratio: float) -> torch.Tensor:
    """``_fasterRCNN.enlarge_bbox``: grow each side by ``ratio`` of the ROI size (no ``+1``).

    ``rois``: (B, R, 5) ``[batch, x1, y1, x2, y2]``. ``x1, y1`` are raised to 0. Upstream quirk,
    kept because the checkpoint was trained with it: ``x2`` is capped at the image *height*
    ``im_info[:, 0]`` and ``y2`` at the *width* ``im_info[:, 1]``; caps only lower values, so
    a padded all-zero ROI can come out inverted. Returns (B, R, 5).
    """
    w = rois[..., 3] - rois[..., 1]
    h = rois[..., 4] - rois[..., 2]
    x1 = rois[..., 1] - ratio * w
    y1 = rois[..., 2] - ratio * h
    x2 = rois[..., 3] + ratio * w
    y2 = rois[..., 4] + ratio * h
    x1 = torch.where(x1 < 0, torch.zeros_like(x1), x1)
    y1 = torch.where(y1 < 0, torch.zeros_like(y1), y1)
    cap_x2 = im_info[:, 0].view(-1, 1).expand_as(x2)
    cap_y2 = im_info[:, 1].view(-1, 1).expand_as(y2)
    x2 = torch.where(x2 > cap_x2, cap_x2, x2)
    y2 = torch.where(y2 > cap_y2, cap_y2, y2)
    return torch.stack([rois[..., 0], x1, y1, x2, y2], -1)


def rpn_proposals(rpn_cls_prob: torch.Tensor, rpn_bbox_pred: torch.Tensor, im_info: torch.Tensor,
                  cfg: DOH100Config) -> torch.Tensor:
    """``_ProposalLayer`` (TEST): anchors + deltas -> clipped boxes -> top-N -> NMS -> top-N.

    ``rpn_cls_prob``: (B, 2A, h, w) paired-softmax probabilities (foreground = channels A..2A-1);
    ``rpn_bbox_pred``: (B, 4A, h, w); ``im_info``: (B, 3). No min-size filter (disabled upstream).
    Returns (B, post_nms_top_n, 5) ``[b, x1, y1, x2, y2]`` by decreasing score, zero-padded.
    """
    B, _, fh, fw = rpn_cls_prob.shape
    A = cfg.num_anchors
    anchors = shifted_anchors(generate_anchors(cfg.feat_stride, cfg.anchor_ratios, cfg.anchor_scales)
                              .to(rpn_bbox_pred), fh, fw, cfg.feat_stride)
    scores = rpn_cls_prob[:, A:].permute(0, 2, 3, 1).reshape(B, -1)
    deltas = rpn_bbox_pred.permute(0, 2, 3, 1).reshape(B, -1, 4)
    proposals = clip_boxes(decode_boxes(anchors.unsqueeze(0).expand(B, -1, 4), deltas), im_info)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    out = rpn_cls_prob.new_zeros(B, cfg.rpn_post_nms_top_n, 5)
    for b in range(B):
        order_b = order[b]
        # Upstream compares with the numel of the whole batch's score tensor.
        if 0 < cfg.rpn_pre_nms_top_n < scores.numel():
            order_b = order_b[:cfg.rpn_pre_nms_top_n]
        boxes_b, scores_b = proposals[b, order_b], scores[b, order_b]
        keep = nms(boxes_b, scores_b, cfg.rpn_nms_thresh, legacy_plus_one=True,
                   max_keep=cfg.rpn_post_nms_top_n)
        out[b, :, 0] = b
        out[b, :keep.numel(), 1:] = boxes_b[keep]
    return out


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------


class RPNHead(nn.Module):
    """``_RPN`` layers (names ``RPN_Conv``, ``RPN_cls_score``, ``RPN_bbox_pred``)."""

    def __init__(self, in_channels: int = 1024, num_anchors: int = 12):
        super().__init__()
        self.RPN_Conv = nn.Conv2d(in_channels, 512, 3, 1, 1, bias=True)
        self.RPN_cls_score = nn.Conv2d(512, 2 * num_anchors, 1, 1, 0)
        self.RPN_bbox_pred = nn.Conv2d(512, 4 * num_anchors, 1, 1, 0)

    def forward(self, base_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1024, h, w) -> ``rpn_cls_score`` (B, 2A, h, w), ``rpn_cls_prob``, ``rpn_bbox_pred`` (B, 4A, h, w).

        The objectness softmax pairs channel a (background) with channel A+a (foreground).
        """
        hidden = F.relu(self.RPN_Conv(base_feat))
        score = self.RPN_cls_score(hidden)
        B, C2, h, w = score.shape
        prob = F.softmax(score.view(B, 2, (C2 // 2) * h, w), dim=1).view(B, C2, h, w)
        return {"rpn_cls_score": score, "rpn_cls_prob": prob, "rpn_bbox_pred": self.RPN_bbox_pred(hidden)}


class HandHeads(nn.Module):
    """``extension_layer``: contact state (5 logits), offset (magnitude, unit dx dy * 0.1), side logit."""

    def __init__(self, in_features: int = 2048):
        super().__init__()
        self.hand_contact_state_layer = nn.Sequential(
            nn.Linear(in_features, 32), nn.ReLU(), nn.Dropout(p=0.5), nn.Linear(32, 5))
        self.hand_dydx_layer = nn.Linear(in_features, 3)
        self.hand_lr_layer = nn.Linear(in_features, 1)

    def forward(self, fc7: torch.Tensor, fc7_padded: torch.Tensor) -> dict[str, torch.Tensor]:
        """fc7, fc7_padded: (..., 2048) -> ``contact_logits`` (..., 5), ``offset`` (..., 3),
        ``handside_logit`` (..., 1)."""
        v = self.hand_dydx_layer(fc7_padded)
        offset = torch.cat([v[..., :1], 0.1 * F.normalize(v[..., 1:], p=2, dim=-1)], -1)
        return {"contact_logits": self.hand_contact_state_layer(fc7_padded), "offset": offset,
                "handside_logit": self.hand_lr_layer(fc7)}


class HandObjectDetectorNet(nn.Module):
    """Faster R-CNN R-101-C4 with the 100DOH hand heads; state-dict names = the released model.

    Registration order follows ``_fasterRCNN.__init__`` then ``resnet._init_modules`` so the
    ``state_dict()`` order equals the checkpoint's (the fixture fill depends on it).
    """

    def __init__(self, cfg: DOH100Config = DOH100Config()):
        super().__init__()
        self.cfg = cfg
        self.RCNN_rpn = RPNHead(1024, cfg.num_anchors)
        self.extension_layer = HandHeads(2048)
        trunk = ResNet(DOH100_RESNET)
        self.RCNN_base = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool,
                                       trunk.layer1, trunk.layer2, trunk.layer3)
        self.RCNN_top = nn.Sequential(trunk.layer4)
        self.RCNN_cls_score = nn.Linear(2048, len(CLASSES))
        self.RCNN_bbox_pred = nn.Linear(2048, 4 * len(CLASSES))

    def roi_features(self, base_feat: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """ROI align (7x7, 1/16, adaptive, legacy) + layer4 + spatial mean: (B, R, 5) -> (B*R, 2048)."""
        s = self.cfg.pooling_size
        pooled = roi_align(base_feat, rois.reshape(-1, 5), (s, s), 1.0 / self.cfg.feat_stride, 0, aligned=False)
        return self.RCNN_top(pooled).mean(3).mean(2)

    def roi_head(self, base_feat: torch.Tensor, rois: torch.Tensor, im_info: torch.Tensor,
                 hand_rows_above: float | None = None) -> dict[str, torch.Tensor]:
        """Box and hand heads on given ROIs.

        ``base_feat``: (B, 1024, h, w); ``rois``: (B, R, 5); ``im_info``: (B, 3). Returns
        ``rois``, ``rois_padded`` (B, R, 5), ``cls_score``/``cls_prob`` (B, R, 3), ``bbox_pred``
        (B, R, 12), ``contact_logits`` (B, R, 5), ``offset`` (B, R, 3), ``handside_logit``
        (B, R, 1), ``fc7``/``fc7_padded`` (B, R, 2048).

        ``hand_rows_above``: if set, the enlarged-ROI branch (contact, offset) only runs for
        ROIs whose hand probability exceeds it (the only ones the demo reads them for); the
        other rows of ``fc7_padded``, ``contact_logits`` and ``offset`` are NaN. This halves
        the head's cost at inference.
        """
        B, R = rois.shape[:2]
        rois_padded = enlarge_rois(rois, im_info, self.cfg.enlarge_ratio)
        fc7 = self.roi_features(base_feat, rois)
        cls_score = self.RCNN_cls_score(fc7)
        cls_prob = F.softmax(cls_score, 1)
        if hand_rows_above is None:
            fc7_padded = self.roi_features(base_feat, rois_padded)
        else:
            rows = torch.nonzero(cls_prob[:, HAND_CLASS] > hand_rows_above).view(-1)
            fc7_padded = torch.full_like(fc7, float("nan"))
            if rows.numel() > 0:
                fc7_padded[rows] = self.roi_features(base_feat, rois_padded.reshape(-1, 5)[rows])
        out = {"rois": rois, "rois_padded": rois_padded,
               "cls_score": cls_score.view(B, R, -1), "cls_prob": cls_prob.view(B, R, -1),
               "bbox_pred": self.RCNN_bbox_pred(fc7).view(B, R, -1),
               "fc7": fc7.view(B, R, -1), "fc7_padded": fc7_padded.view(B, R, -1)}
        for name, value in self.extension_layer(fc7, fc7_padded).items():
            out[name] = value.view(B, R, -1)
        return out

    def forward(self, blob: torch.Tensor, im_info: torch.Tensor,
                hand_rows_above: float | None = None) -> dict[str, torch.Tensor]:
        """Eval forward of ``_fasterRCNN``: (B, 3, H, W) BGR blob, (B, 3) im_info -> all outputs.

        Returns ``base_feat``, the RPN maps (``RPNHead``), ``rois`` and the ``roi_head`` outputs
        (``hand_rows_above``: see ``roi_head``).
        """
        base_feat = self.RCNN_base(blob)
        out = {"base_feat": base_feat, **self.RCNN_rpn(base_feat)}
        rois = rpn_proposals(out["rpn_cls_prob"], out["rpn_bbox_pred"], im_info, self.cfg)
        out.update(self.roi_head(base_feat, rois, im_info, hand_rows_above))
        return out


def load_doh100_state_dict(net: HandObjectDetectorNet, checkpoint: object, where: str = "checkpoint") -> None:
    """Strictly load a faster-rcnn.pytorch checkpoint (``{'model': state_dict, ...}`` or a bare state dict).

    Mapping: a leading ``module.`` (DataParallel save) is dropped; nothing else is renamed.
    Raises ``UserError`` naming missing / unexpected / mis-shaped entries (``check_state_dict``),
    or a pooling mode other than 'align'.
    """
    if isinstance(checkpoint, Mapping) and "model" in checkpoint:
        mode = checkpoint.get("pooling_mode", "align")
        if mode != "align":
            raise UserError(f"{where} was trained with pooling_mode={mode!r}; only 'align' is implemented")
        state = checkpoint["model"]
    else:
        state = checkpoint
    state = strip_prefix(state, "module.") if isinstance(state, Mapping) else state
    check_state_dict(net.state_dict(), state, where, "the 100DOH detector")
    net.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------
# Demo post-processing
# --------------------------------------------------------------------------------------


@dataclass
class HandDetection:
    """One detected hand, in input-image pixels.

    ``box``: (x1, y1, x2, y2); ``side``: 'left' | 'right'; ``contact_state``: index into
    ``CONTACT_STATES`` (0 = no contact); ``offset``: raw (magnitude, dx, dy) with |(dx, dy)| = 0.1;
    ``object_index``: the matched entry of ``objects`` (``filter_object``), None if the hand is
    not in contact or no object was detected.
    """

    box: tuple[float, float, float, float]
    score: float
    side: str
    contact_state: int
    offset: tuple[float, float, float]
    object_index: int | None = None

    @property
    def contact_name(self) -> str:
        return CONTACT_STATES[self.contact_state]

    @property
    def in_contact(self) -> bool:
        return self.contact_state > 0


@dataclass
class ObjectDetection:
    """One detected object ('targetobject'), box (x1, y1, x2, y2) in input-image pixels."""

    box: tuple[float, float, float, float]
    score: float


def decode_class_boxes(rois: torch.Tensor, bbox_pred: torch.Tensor, im_info: torch.Tensor,
                       cfg: DOH100Config) -> torch.Tensor:
    """demo.py's box decoding: (B, R, 5) rois, (B, R, 4C) deltas -> (B, R, 4C) boxes in input pixels.

    Deltas are un-normalised (``* stds + means``), decoded with the ``+1`` transform against the
    rois, clipped to the resized image and divided by ``im_scale`` (``im_info[:, 2]``).
    """
    stds = bbox_pred.new_tensor(cfg.bbox_normalize_stds)
    means = bbox_pred.new_tensor(cfg.bbox_normalize_means)
    deltas = (bbox_pred.reshape(-1, 4) * stds + means).view(bbox_pred.shape)
    boxes = clip_boxes(decode_boxes(rois[..., 1:5], deltas), im_info)
    return boxes / im_info[:, 2].view(-1, 1, 1)


def select_class_detections(scores: torch.Tensor, boxes: torch.Tensor, thresh: float,
                            nms_thresh: float) -> torch.Tensor:
    """demo.py's per-class filtering: score > thresh, sort by score, NMS (``+1`` IoU).

    ``scores``: (R,); ``boxes``: (R, 4). Returns (M,) indices into R, by decreasing score.
    """
    inds = torch.nonzero(scores > thresh).view(-1)
    if inds.numel() == 0:
        return inds
    order = torch.sort(scores[inds], descending=True, stable=True).indices
    sorted_inds = inds[order]
    keep = nms(boxes[sorted_inds], scores[sorted_inds], nms_thresh, legacy_plus_one=True)
    return sorted_inds[keep]


def match_hands_to_objects(hand_boxes: torch.Tensor, hand_contact: torch.Tensor, hand_offset: torch.Tensor,
                           object_boxes: torch.Tensor, offset_scale: float = 10000.0) -> list[int | None]:
    """``filter_object``: each in-contact hand -> the object whose centre is nearest its offset point.

    ``hand_boxes``: (Nh, 4); ``hand_contact``: (Nh,) contact class; ``hand_offset``: (Nh, 3)
    (magnitude, dx, dy); ``object_boxes``: (No, 4). The point is
    ``hand centre + magnitude * offset_scale * (dx, dy)``. Returns one object index per hand,
    None for hands not in contact (class 0) or when there are no objects.
    """
    if object_boxes.shape[0] == 0:
        return [None] * hand_boxes.shape[0]
    obj_ctr = 0.5 * (object_boxes[:, :2] + object_boxes[:, 2:4])  # (No, 2)
    hand_ctr = 0.5 * (hand_boxes[:, :2] + hand_boxes[:, 2:4])  # (Nh, 2)
    point = hand_ctr + hand_offset[:, :1] * offset_scale * hand_offset[:, 1:3]
    nearest = ((obj_ctr[None] - point[:, None]) ** 2).sum(-1).argmin(1)
    return [int(j) if int(c) > 0 else None for j, c in zip(nearest.tolist(), hand_contact.tolist())]


def demo_detections(out: Mapping[str, torch.Tensor], im_info: torch.Tensor,
                    cfg: DOH100Config) -> dict[str, list]:
    """demo.py post-processing of one image's ``HandObjectDetectorNet`` outputs.

    Returns ``{"hands": [HandDetection], "objects": [ObjectDetection]}``, each by decreasing
    score, boxes in input-image pixels, hands matched to objects as ``filter_object`` does.
    """
    boxes = decode_class_boxes(out["rois"], out["bbox_pred"], im_info, cfg)[0]  # (R, 12)
    scores = out["cls_prob"][0]
    contact = out["contact_logits"][0].argmax(-1)
    offset = out["offset"][0]
    right = torch.sigmoid(out["handside_logit"][0, :, 0]) > 0.5
    obj_i = select_class_detections(scores[:, OBJECT_CLASS], boxes[:, 4 * OBJECT_CLASS:4 * OBJECT_CLASS + 4],
                                    cfg.thresh_obj, cfg.nms_thresh)
    hand_i = select_class_detections(scores[:, HAND_CLASS], boxes[:, 4 * HAND_CLASS:4 * HAND_CLASS + 4],
                                     cfg.thresh_hand, cfg.nms_thresh)
    obj_boxes = boxes[obj_i, 4 * OBJECT_CLASS:4 * OBJECT_CLASS + 4]
    hand_boxes = boxes[hand_i, 4 * HAND_CLASS:4 * HAND_CLASS + 4]
    matches = match_hands_to_objects(hand_boxes, contact[hand_i], offset[hand_i], obj_boxes, cfg.offset_scale)
    objects = [ObjectDetection(tuple(b), float(s)) for b, s in
               zip(obj_boxes.tolist(), scores[obj_i, OBJECT_CLASS].tolist())]
    hands = [HandDetection(tuple(b), float(s), "right" if r else "left", int(c), tuple(o), m)
             for b, s, r, c, o, m in zip(hand_boxes.tolist(), scores[hand_i, HAND_CLASS].tolist(),
                                         right[hand_i].tolist(), contact[hand_i].tolist(),
                                         offset[hand_i].tolist(), matches)]
    return {"hands": hands, "objects": objects}


# --------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------


class DOH100Detector:
    """The released 100DOH detector (``weights/doh100/faster_rcnn_1_8_132028.pth``) with demo.py's inference.

    ``DOH100Detector(device)`` loads the checkpoint (``MissingWeightsError`` if absent);
    pass ``network`` to use an already built ``HandObjectDetectorNet`` (tests); its ``cfg`` is
    then replaced by this detector's, so one config governs preprocessing, proposals and
    post-processing.
    """

    def __init__(self, device: str | torch.device = "cpu", cfg: DOH100Config = DOH100Config(),
                 network: HandObjectDetectorNet | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        if network is None:
            path = require_weights(cfg.weights, backend="doh100", source=WEIGHTS_SOURCE)
            checkpoint = read_torch_checkpoint(path, "100DOH checkpoint")
            network = HandObjectDetectorNet(cfg)
            load_doh100_state_dict(network, checkpoint, where=str(path))
        network.cfg = cfg
        self.net = network.to(self.device).eval()

    @torch.no_grad()
    def detect(self, image_rgb: np.ndarray | torch.Tensor) -> dict[str, list]:
        """Hands and objects in one image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
        Returns:
            ``{"hands": [HandDetection], "objects": [ObjectDetection]}`` (see ``demo_detections``).
        """
        image = image_rgb if isinstance(image_rgb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image_rgb))
        if image.dtype != torch.uint8:
            raise UserError(f"100DOH detector expects a uint8 image, got {image.dtype}")
        # Preprocess on the host: it needs float64 (not on every accelerator) and is cheap.
        blob, im_info = prepare_image(image.cpu(), self.cfg)
        dtype = next(self.net.parameters()).dtype
        out = self.net(blob.to(self.device, dtype), im_info.to(self.device), hand_rows_above=self.cfg.thresh_hand)
        return demo_detections(out, im_info, self.cfg)

    def first_frame_boxes(self, image_rgb: np.ndarray | torch.Tensor
                          ) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
        """(hand box, object box) for a clip's first frame, xyxy input pixels.

        The most confident hand in contact (contact class > 0) that is matched to an object,
        and that object. Raises ``RunError`` when no such pair is detected.
        """
        det = self.detect(image_rgb)
        pairs = [h for h in det["hands"] if h.in_contact and h.object_index is not None]
        if not pairs:
            n_hands, n_contact = len(det["hands"]), sum(h.in_contact for h in det["hands"])
            raise RunError(f"100DOH found no hand in contact with an object in the first frame "
                           f"({n_hands} hands, {n_contact} in contact, {len(det['objects'])} objects); "
                           f"give the first-frame boxes with --hand-box and --object-box")
        hand = max(pairs, key=lambda h: h.score)
        return hand.box, det["objects"][hand.object_index].box
