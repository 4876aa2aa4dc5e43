"""STCN video object segmentation (Cheng et al., NeurIPS 2021), eval network and inference.

The masks stage uses it to carry the first frame's hand and object masks through a clip
(forward, and again on the reversed clip for the forward-backward IoU check), as DiffHOI
does through ``eval_generic.py`` of github.com/hkchengrex/STCN.

Network (``model/eval_network.py: STCN``), state-dict names identical to the released
``stcn.pth`` (405 entries, no renaming needed):

- ``key_encoder``: ResNet-50 stem + layers 1-3 (layer 1 is named ``res2``) -> f4, f8, f16.
- ``key_proj.key_proj``: 3x3 conv 1024->64, the key k16; ``key_comp``: 3x3 conv 1024->512,
  the query's own value feature qv16.
- ``value_encoder``: ResNet-18 with conv biases on ``[R, G, B, mask, other objects' mask]``,
  layers 1-3, then ``fuser`` (ResBlock 1280->512 on ``cat[value, f16]``, CBAM, ResBlock).
- ``decoder``: ResBlock 1024->512 on ``cat[readout, qv16]``, two skip/upsample blocks (f8,
  f4), 3x3 conv to one logit at /4, bilinear x4.
- memory read: affinity ``(2 mk.qk - |mk|^2) / sqrt(64)``, softmax over each query's top-20
  memory entries (max-subtracted, see ``topk_softmax``), readout ``mem_v @ affinity``.

Inference (``eval_generic.py`` + ``inference_core_yv.py`` defaults): ImageNet-normalised RGB,
resized so the short side is 480 (bicubic; masks nearest), zero-padded to multiples of 16;
the annotated first frame goes into memory, then every ``mem_every``-th frame after the
last memory frame; each frame's k sigmoid maps are soft-aggregated with a background row;
outputs are unpadded, resized bilinearly to the input size and argmaxed over k+1 rows.

Shapes: ``k`` objects, ``H, W`` padded image size, ``h, w = H/16, W/16``, ``N`` memory
entries (``h*w`` per memory frame).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hoirecon.backends.resnet import RESNET18, RESNET50, ResNet
from hoirecon.errors import UserError
from hoirecon.io.checkpoints import check_state_dict, read_torch_checkpoint
from hoirecon.weights import require_weights

WEIGHTS_FILE = "stcn/stcn.pth"
WEIGHTS_SOURCE = (
    "the STCN 's012' model stcn.pth from github.com/hkchengrex/STCN (README 'Pretrained models'; "
    "Google Drive id 1mRrE0uCI2ktdWlUgapJI_KmgeIiF2eOm, as in its download_model.py)"
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Key encoder: torchvision ResNet-50 ("v1.5": stride on the 3x3 conv), stem + 3 stages.
KEY_RESNET = replace(RESNET50, num_stages=3)
# Value encoder: the authors' ResNet-18 (model/mod_resnet.py): every conv has a bias, and
# conv1 reads RGB + this object's mask + the other objects' mask.
VALUE_RESNET = replace(RESNET18, num_stages=3, conv_bias=True, in_channels=5)


# --------------------------------------------------------------------------------------
# Network blocks
# --------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """Pre-activation residual block: ``skip(x) + conv2(relu(conv1(relu(x))))``.

    The skip is a 3x3 conv (``downsample``) when channels change, else the identity.
    ``downsample`` is created first so the state-dict order matches the checkpoint.
    Shapes: (B, in_ch, H, W) -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int | None = None):
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        self.downsample = nn.Conv2d(in_ch, out_ch, 3, padding=1) if in_ch != out_ch else None
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        skip = x if self.downsample is None else self.downsample(x)
        return skip + r


class ChannelGate(nn.Module):
    """CBAM channel attention: ``x * sigmoid(mlp(avgpool x) + mlp(maxpool x))``.

    ``mlp`` keeps the upstream layout ``[Flatten, Linear, ReLU, Linear]`` (keys ``mlp.1``,
    ``mlp.3``). Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: ``x * sigmoid(conv7x7(cat[max_c x, mean_c x]))``.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.spatial = nn.Sequential(OrderedDict(conv=nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel gate then spatial gate. Shapes: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuses value features with the key encoder's f16.

    Shapes: value (B, 256, h, w), key_f16 (B, 1024, h, w) -> (B, 512, h, w).
    """

    def __init__(self, in_ch: int = 1024 + 256, out_ch: int = 512):
        super().__init__()
        self.block1 = ResBlock(in_ch, out_ch)
        self.attention = CBAM(out_ch)
        self.block2 = ResBlock(out_ch, out_ch)

    def forward(self, value: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        x = self.block1(torch.cat([value, key_f16], dim=1))
        return self.block2(x + self.attention(x))


class KeyEncoder(nn.Module):
    """ResNet-50 stem and layers 1-3, with layer 1 stored as ``res2`` as in the checkpoint.

    Shapes: (B, 3, H, W) -> f16 (B, 1024, H/16, W/16), f8 (B, 512, H/8, W/8),
    f4 (B, 256, H/4, W/4).
    """

    def __init__(self):
        super().__init__()
        trunk = ResNet(KEY_RESNET)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.res2, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class ValueEncoder(ResNet):
    """ResNet-18 (biased convs, 5 input channels) layers 1-3, then ``fuser``.

    Shapes: image (B, 3, H, W), key_f16 (B, 1024, h, w), mask and others (B, 1, H, W)
    -> (B, 512, h, w).
    """

    def __init__(self):
        super().__init__(VALUE_RESNET)
        self.fuser = FeatureFusionBlock(1024 + 256, 512)

    def forward(self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor,
                others: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image, mask, others], dim=1)
        return self.fuser(self.forward_features(x)["layer3"], key_f16)


class KeyProjection(nn.Module):
    """3x3 conv from f16 to the key space. Shapes: (B, 1024, h, w) -> (B, 64, h, w)."""

    def __init__(self, in_ch: int = 1024, key_dim: int = 64):
        super().__init__()
        self.key_proj = nn.Conv2d(in_ch, key_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_proj(x)


class UpsampleBlock(nn.Module):
    """``out_conv(skip_conv(skip) + up2(x))``. Shapes: skip (B, skip_ch, 2h, 2w), x (B, up_ch, h, w)
    -> (B, out_ch, 2h, 2w)."""

    def __init__(self, skip_ch: int, up_ch: int, out_ch: int):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_ch, up_ch, 3, padding=1)
        self.out_conv = ResBlock(up_ch, out_ch)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out_conv(self.skip_conv(skip) + up)


class Decoder(nn.Module):
    """Mask decoder. Shapes: x16 (B, 1024, h, w) = cat[readout, qv16], f8 (B, 512, 2h, 2w),
    f4 (B, 256, 4h, 4w) -> logits (B, 1, 16h, 16w)."""

    def __init__(self):
        super().__init__()
        self.compress = ResBlock(1024, 512)
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def forward(self, x16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        x = self.up_8_4(f4, self.up_16_8(f8, self.compress(x16)))
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------
# Memory read
# --------------------------------------------------------------------------------------


def memory_affinity(mem_key: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """Negative squared L2 similarity without the query-norm term (it cancels in the softmax).

    ``(2 mem_key^T query_key - sum_c mem_key^2) / sqrt(CK)``.
    Shapes: mem_key (B, CK, N), query_key (B, CK, Q) -> (B, N, Q).
    """
    mem_sq = mem_key.pow(2).sum(1).unsqueeze(2)
    dot = mem_key.transpose(1, 2) @ query_key
    return (2 * dot - mem_sq) / math.sqrt(mem_key.shape[1])


def topk_softmax(affinity: torch.Tensor, top_k: int) -> torch.Tensor:
    """Softmax over each query column's ``top_k`` largest memory entries; zeros elsewhere.

    Upstream (``inference_memory_bank.softmax_w_top``) exponentiates without subtracting the
    maximum; that is the same function wherever it is finite, and overflows for large
    affinities, so the maximum is subtracted here. ``top_k`` is capped at N.
    Shapes: affinity (B, N, Q) -> (B, N, Q).
    """
    values, indices = torch.topk(affinity, k=min(top_k, affinity.shape[1]), dim=1)
    weights = torch.softmax(values, dim=1)
    return torch.zeros_like(affinity).scatter_(1, indices, weights)


class MemoryBank:
    """Keys shared by all objects and one value map per object (``inference_memory_bank.py``).

    Keys ``(1, CK, N)`` and values ``(k, CV, N)`` grow by ``h*w`` entries per memory frame,
    in the order the frames were added (index ``t*h*w + y*w + x``). The eval_generic path
    keeps one bank per object with identical keys; one shared affinity is the same thing.
    """

    def __init__(self, top_k: int = 20):
        self.top_k = top_k
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.frame_ids: list[int] = []

    def add(self, key: torch.Tensor, value: torch.Tensor, frame_id: int = -1) -> None:
        """key (1, CK, h, w), value (k, CV, h, w)."""
        key, value = key.flatten(2), value.flatten(2)
        self.keys = key if self.keys is None else torch.cat([self.keys, key], 2)
        self.values = value if self.values is None else torch.cat([self.values, value], 2)
        self.frame_ids.append(frame_id)

    def read(self, query_key: torch.Tensor) -> torch.Tensor:
        """query_key (1, CK, h, w) -> readout (k, CV, h, w)."""
        if self.keys is None:
            raise RuntimeError("MemoryBank.read called before any memory was added")
        h, w = query_key.shape[-2:]
        affinity = topk_softmax(memory_affinity(self.keys, query_key.flatten(2)), self.top_k)
        readout = self.values @ affinity  # (k, CV, N) @ (1, N, Q): one affinity for all objects
        return readout.view(readout.shape[0], readout.shape[1], h, w)


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


def others_masks(masks: torch.Tensor) -> torch.Tensor:
    """Row i = sum of the masks of all objects j != i (zeros for one object).

    Summed explicitly (not total - own) to match upstream bit for bit.
    Shapes: (k, 1, H, W) -> (k, 1, H, W).
    """
    k = masks.shape[0]
    if k == 1:
        return torch.zeros_like(masks)
    return torch.cat([masks[[j for j in range(k) if j != i]].sum(0, keepdim=True) for i in range(k)], 0)


class STCN(nn.Module):
    """The STCN eval network; ``state_dict()`` names equal those of the released ``stcn.pth``."""

    def __init__(self):
        super().__init__()
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder()
        self.key_proj = KeyProjection(1024, 64)
        self.key_comp = nn.Conv2d(1024, 512, 3, padding=1)
        self.decoder = Decoder()

    def encode_key(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """frame (B, 3, H, W) normalised -> k16 (B, 64, h, w), qv16 (B, 512, h, w),
        f16 (B, 1024, h, w), f8 (B, 512, 2h, 2w), f4 (B, 256, 4h, 4w)."""
        f16, f8, f4 = self.key_encoder(frame)
        return self.key_proj(f16), self.key_comp(f16), f16, f8, f4

    def encode_value(self, frame: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """frame (1, 3, H, W), key_f16 (1, 1024, h, w), masks (k, 1, H, W) soft in [0, 1]
        -> values (k, 512, 1, h, w)."""
        k = masks.shape[0]
        value = self.value_encoder(frame.expand(k, -1, -1, -1), key_f16.expand(k, -1, -1, -1),
                                   masks, others_masks(masks))
        return value.unsqueeze(2)

    def decode(self, readout: torch.Tensor, qv16: torch.Tensor, f8: torch.Tensor,
               f4: torch.Tensor) -> torch.Tensor:
        """readout (k, 512, h, w), qv16 (1, 512, h, w), f8, f4 of the query (batch 1)
        -> logits (k, 1, H, W)."""
        k = readout.shape[0]
        x16 = torch.cat([readout, qv16.expand(k, -1, -1, -1)], dim=1)
        return self.decoder(x16, f8.expand(k, -1, -1, -1), f4.expand(k, -1, -1, -1))

    def segment(self, bank: MemoryBank, f8: torch.Tensor, f4: torch.Tensor, k16: torch.Tensor,
                qv16: torch.Tensor) -> torch.Tensor:
        """Per-object foreground probabilities of a query frame (``segment_with_query``).

        Shapes: f8 (1, 512, 2h, 2w), f4 (1, 256, 4h, 4w), k16 (1, 64, h, w), qv16 (1, 512, h, w)
        -> (k, 1, H, W) sigmoid probabilities.
        """
        return torch.sigmoid(self.decode(bank.read(k16), qv16, f8, f4))


def load_stcn_state_dict(net: STCN, state: object, where: str = "checkpoint", assign: bool = False) -> None:
    """Strictly load a ``stcn.pth`` state dict into ``net``, as the eval scripts do.

    ``assign=True`` takes the checkpoint's tensors as the parameters (for a ``net`` built on
    the meta device, which skips the costly random initialisation).

    The one upstream load-time change is kept: a 4-channel ``value_encoder.conv1.weight``
    (a stage-0 single-object model) gets a zero 5th channel. Anything else that does not
    match raises ``UserError`` naming the missing / unexpected / mis-shaped entries
    (``check_state_dict``).
    """
    conv1 = state.get("value_encoder.conv1.weight") if isinstance(state, Mapping) else None
    if isinstance(conv1, torch.Tensor) and conv1.dim() == 4 and conv1.shape[1] == 4:
        zero_channel = conv1.new_zeros(conv1.shape[0], 1, *conv1.shape[2:])
        state = {**state, "value_encoder.conv1.weight": torch.cat([conv1, zero_channel], 1)}
    check_state_dict(net.state_dict(), state, where, "the STCN network")
    net.load_state_dict(state, strict=True, assign=assign)


# --------------------------------------------------------------------------------------
# Inference (eval_generic.py + inference_core_yv.py)
# --------------------------------------------------------------------------------------


def soft_aggregate(prob: torch.Tensor) -> torch.Tensor:
    """STM soft aggregation of k per-object probabilities, background row first.

    ``softmax(logit(clamp([prod(1 - p_i), p_1..p_k], 1e-7, 1 - 1e-7)))`` over the k+1 rows.
    Shapes: (k, ...) -> (k+1, ...).
    """
    stacked = torch.cat([torch.prod(1 - prob, dim=0, keepdim=True), prob], 0).clamp(1e-7, 1 - 1e-7)
    return torch.softmax(torch.log(stacked / (1 - stacked)), dim=0)


def pad_to_multiple(x: torch.Tensor, d: int = 16) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad H and W up to multiples of ``d``; the extra goes floor-half to top/left.

    Shapes: (..., H, W) -> (..., H', W'); pad = (left, right, top, bottom).
    """
    h, w = x.shape[-2:]
    extra_h, extra_w = (-h) % d, (-w) % d
    pad = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    return F.pad(x, pad), pad


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple``. Shapes: (..., H', W') -> (..., H, W)."""
    left, right, top, bottom = pad
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


def short_side_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """torchvision ``Resize(int)`` output size: short side = ``short_side``, long side truncated."""
    if h <= w:
        return short_side, int(short_side * w / h)
    return int(short_side * h / w), short_side


def normalise_frame(frame: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> ImageNet-normalised float (1, 3, H, W) (``ToTensor`` + ``Normalize``)."""
    x = frame.permute(2, 0, 1).float().div(255.0)
    mean = x.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = x.new_tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std).unsqueeze(0)


class PropagationStep(NamedTuple):
    """One frame of ``propagate``: its index, probabilities (k+1, 1, H, W) with background
    first, and whether it is a memory frame (its value is written once a next frame comes)."""

    t: int
    prob: torch.Tensor
    memory_frame: bool


def propagate(net: STCN, frames: Iterable[torch.Tensor], first_masks: torch.Tensor, top_k: int = 20,
              mem_every: int = 5) -> Iterator[PropagationStep]:
    """Propagate the first frame's masks through a clip (``InferenceCore`` of eval_generic).

    Frame 0 is annotated: its probabilities are ``soft_aggregate(first_masks)`` and its
    key/value go into memory. A later frame t is segmented from memory and, when
    ``t - last_memory_frame >= mem_every``, encoded into memory too (never the clip's last
    frame; the write is deferred until the next frame arrives, so ``frames`` may be a
    generator). No temporary last-frame memory (``include_last`` off).

    Shapes: frames: each (1, 3, H, W), normalised and padded (H, W multiples of 16);
    first_masks (k, 1, H, W) in [0, 1]. Yields ``PropagationStep`` per frame.
    """
    bank = MemoryBank(top_k)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return
    prob = soft_aggregate(first_masks)
    k16, _, f16, _, _ = net.encode_key(first)
    bank.add(k16, net.encode_value(first, f16, prob[1:]), 0)
    yield PropagationStep(0, prob, True)

    last_memory_t, pending = 0, None
    for t, frame in enumerate(frames, start=1):
        if pending is not None:  # the previous frame was a memory frame and not the last one
            p_frame, p_k16, p_f16, p_prob, p_t = pending
            bank.add(p_k16, net.encode_value(p_frame, p_f16, p_prob[1:]), p_t)
            pending = None
        k16, qv16, f16, f8, f4 = net.encode_key(frame)
        prob = soft_aggregate(net.segment(bank, f8, f4, k16, qv16))
        is_memory = t - last_memory_t >= mem_every
        if is_memory:
            pending, last_memory_t = (frame, k16, f16, prob, t), t
        yield PropagationStep(t, prob, is_memory)


@dataclass(frozen=True)
class STCNTrackerConfig:
    """Inference settings; defaults are those of ``eval_generic.py``."""

    top_k: int = 20
    mem_every: int = 5
    # eval_generic resizes the normalised frames so the short side is 480 (bicubic; masks
    # nearest); None runs at the input resolution (the DAVIS scripts' behaviour).
    short_side: int | None = 480
    # torchvision < 0.17 (the upstream era) did not antialias tensor resizes.
    resize_antialias: bool = False
    weights: str = WEIGHTS_FILE


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


class STCNTracker:
    """Mask propagation with the released STCN checkpoint (``weights/stcn/stcn.pth``).

    ``STCNTracker(device)`` loads the checkpoint (``MissingWeightsError`` if absent); pass
    ``network`` to use an already built ``STCN`` instead (tests).
    """

    def __init__(self, device: str | torch.device = "cpu", cfg: STCNTrackerConfig = STCNTrackerConfig(),
                 network: STCN | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        if network is None:
            path = require_weights(cfg.weights, backend="stcn", source=WEIGHTS_SOURCE)
            state = read_torch_checkpoint(path, "STCN checkpoint")
            with torch.device("meta"):  # no random init: every tensor comes from the file
                network = STCN()
            load_stcn_state_dict(network, state, where=str(path), assign=True)
        self.net = network.to(self.device).eval()

    def _prepare_frame(self, frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """uint8 (H, W, 3) -> normalised, resized, padded (1, 3, H', W') on the device."""
        dtype = next(self.net.parameters()).dtype
        x = normalise_frame(frame.to(self.device)).to(dtype)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False,
                              antialias=self.cfg.resize_antialias)
        return pad_to_multiple(x, 16)[0]

    @torch.no_grad()
    def track(self, frames: np.ndarray | torch.Tensor, first_masks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Propagate the masks of frame 0 through the clip.

        Args:
            frames: (T, H, W, 3) uint8 RGB.
            first_masks: (K, H, W) bool masks of frame 0 (e.g. hand, object); expected disjoint
                like a label map (overlaps are shared by soft aggregation).
        Returns:
            (T, K, H, W) bool masks (label = argmax over background + K objects), on the
            device of ``frames`` if it is a tensor, else on the CPU.
        """
        frames_t, masks_t = _as_tensor(frames), _as_tensor(first_masks)
        if frames_t.dim() != 4 or frames_t.shape[-1] != 3 or frames_t.dtype != torch.uint8:
            raise UserError(f"STCN frames must be (T, H, W, 3) uint8 RGB, got {tuple(frames_t.shape)} {frames_t.dtype}")
        T, H, W = frames_t.shape[:3]
        if T < 1 or H < 1 or W < 1:
            raise UserError(f"STCN got an empty clip {tuple(frames_t.shape)}")
        if masks_t.dim() != 3 or masks_t.shape[1:] != (H, W) or masks_t.shape[0] < 1:
            raise UserError(f"STCN first masks must be (K, {H}, {W}), got {tuple(masks_t.shape)}")
        if masks_t.dtype != torch.bool:
            raise UserError(f"STCN first masks must be bool, got {masks_t.dtype}")
        out_device = frames_t.device if isinstance(frames, torch.Tensor) else torch.device("cpu")
        size = (H, W) if self.cfg.short_side is None else short_side_size(H, W, self.cfg.short_side)

        dtype = next(self.net.parameters()).dtype
        masks = masks_t.to(self.device, dtype).unsqueeze(1)  # (K, 1, H, W)
        if masks.shape[-2:] != size:
            masks = F.interpolate(masks, size=size, mode="nearest")
        masks, pad = pad_to_multiple(masks, 16)

        K = masks.shape[0]
        out = torch.zeros(T, K, H, W, dtype=torch.bool, device=out_device)
        labels = torch.arange(1, K + 1, device=self.device)[:, None, None]
        clip = (self._prepare_frame(frames_t[t], size) for t in range(T))
        for step in propagate(self.net, clip, masks, self.cfg.top_k, self.cfg.mem_every):
            prob = unpad(step.prob, pad)  # (K+1, 1, h, w) at the processing size
            prob = F.interpolate(prob, size=(H, W), mode="bilinear", align_corners=False)
            label = prob[:, 0].argmax(dim=0)  # (H, W); 0 = background
            out[step.t] = (label[None] == labels).to(out_device)
        return out
