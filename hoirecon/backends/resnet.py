"""ResNet trunks with torchvision's state-dict names, written here (torchvision is not installable).

The paper's networks use several ResNet flavours that differ only in small details, so one
configurable implementation serves them all:

- torchvision "v1.5" (stride on the 3x3 conv): FrankMocap hand encoder, STCN key encoder.
- caffe style (stride on the first 1x1 conv, max-pool with padding 0 and ``ceil_mode``):
  the 100DOH detector (faster-rcnn.pytorch).
- convs with biases and extra input channels: STCN's value encoder.

State-dict names match ``torchvision.models.resnet``: ``conv1, bn1, layer{1..4}.{i}.conv{1,2,3},
.bn{1,2,3}, .downsample.{0,1}, fc``.

Shapes: input ``(B, C_in, H, W)``; ``forward_features`` returns a dict of stage outputs
``{"stem": (B,64,H/4,W/4), "layer1": (B,256|64,H/4,W/4), ..., "layer4": (B,2048|512,H/32,W/32)}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


@dataclass(frozen=True)
class ResNetConfig:
    """How a particular ResNet flavour is built (see the module docstring)."""

    block: str = "bottleneck"  # "bottleneck" | "basic"
    layers: Sequence[int] = (3, 4, 6, 3)
    in_channels: int = 3
    stride_in_1x1: bool = False  # caffe-style bottleneck: stride on conv1 instead of conv2
    conv_bias: bool = False  # every conv carries a bias (STCN value encoder)
    maxpool_padding: int = 1
    maxpool_ceil_mode: bool = False
    num_classes: int | None = None  # adds ``fc`` when set
    num_stages: int = 4  # build layer1..layer{num_stages}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 cfg: ResNetConfig, norm: NormFactory = _bn):
        super().__init__()
        b = cfg.conv_bias
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=b)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=b)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 cfg: ResNetConfig, norm: NormFactory = _bn):
        super().__init__()
        b = cfg.conv_bias
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, s1, bias=b)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, s3, 1, bias=b)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=b)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet trunk configured by ``ResNetConfig``; names follow torchvision."""

    def __init__(self, cfg: ResNetConfig, norm: NormFactory = _bn):
        super().__init__()
        self.cfg = cfg
        block = Bottleneck if cfg.block == "bottleneck" else BasicBlock
        self.conv1 = nn.Conv2d(cfg.in_channels, 64, 7, 2, 3, bias=cfg.conv_bias)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, cfg.maxpool_padding, ceil_mode=cfg.maxpool_ceil_mode)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), cfg.layers)):
            if i >= cfg.num_stages:
                break
            stride = 1 if i == 0 else 2
            layer, inplanes = _make_layer(block, inplanes, planes, n, stride, cfg, norm)
            setattr(self, f"layer{i + 1}", layer)
        self.out_channels = inplanes
        if cfg.num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, cfg.num_classes)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, 64, H/4, W/4) after conv1/bn1/relu/maxpool."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All stage outputs, keyed ``stem``, ``layer1`` .. ``layer{num_stages}``."""
        feats = {"stem": self.forward_stem(x)}
        h = feats["stem"]
        for i in range(1, self.cfg.num_stages + 1):
            h = getattr(self, f"layer{i}")(h)
            feats[f"layer{i}"] = h
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_features(x)[f"layer{self.cfg.num_stages}"]
        if self.cfg.num_classes is None:
            return h
        return self.fc(torch.flatten(self.avgpool(h), 1))


def _make_layer(block, inplanes: int, planes: int, n: int, stride: int, cfg: ResNetConfig,
                norm: NormFactory) -> tuple[nn.Sequential, int]:
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=cfg.conv_bias), norm(out))
    blocks = [block(inplanes, planes, stride, downsample, cfg, norm)]
    blocks += [block(out, planes, 1, None, cfg, norm) for _ in range(n - 1)]
    return nn.Sequential(*blocks), out


RESNET18 = ResNetConfig(block="basic", layers=(2, 2, 2, 2))
RESNET50 = ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3))
RESNET101 = ResNetConfig(block="bottleneck", layers=(3, 4, 23, 3))
