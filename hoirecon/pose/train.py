"""Training the pose network, and its weights file.

``train_pose_net`` runs Adam with a cosine-decayed learning rate over random batches of a
``FrameSamples`` (labelled and pseudo-labelled samples alike; ``hoirecon.pose.losses``
weighs the parts each sample has), with per-sample colour jitter.

Weights file (``save_pose_weights`` / ``load_pose_net``): a torch file readable with
``weights_only=True``: ``{"format": "hoirecon-pose-1", "config": PoseNetConfig as a dict,
"state_dict": float16 tensors, "recipe": dict}``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hoirecon.errors import UserError
from hoirecon.io.checkpoints import check_state_dict, read_torch_checkpoint
from hoirecon.pose.data import FrameSamples
from hoirecon.pose.losses import LossWeights, pose_losses
from hoirecon.pose.network import HandObjectPoseNet, PoseNetConfig

__all__ = ["TrainConfig", "train_pose_net", "save_pose_weights", "load_pose_net", "WEIGHTS_FORMAT"]

WEIGHTS_FORMAT = "hoirecon-pose-1"


@dataclass(frozen=True)
class TrainConfig:
    """steps: optimiser steps; batch_size; lr: peak learning rate (cosine decay to 5 % of it);
    weight_decay: AdamW's; colour_jitter: per-sample gain/offset range of the colour jitter;
    time_budget_s: stop early after this many seconds (None: no limit); seed."""

    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    colour_jitter: float = 0.2
    time_budget_s: float | None = None
    seed: int = 0


def _colour_jitter(images: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1]: per-sample channel gains and a brightness offset, then a random greyness."""
    B = images.shape[0]
    gain = 1.0 + amount * (2 * torch.rand(B, 3, 1, 1, generator=gen) - 1)
    offset = 0.5 * amount * (2 * torch.rand(B, 1, 1, 1, generator=gen) - 1)
    out = images * gain.to(images) + offset.to(images)
    grey = torch.rand(B, 1, 1, 1, generator=gen).to(images) * amount
    out = (1 - grey) * out + grey * out.mean(1, keepdim=True)
    return out.clamp(0, 1)


def train_pose_net(net: HandObjectPoseNet, samples: FrameSamples, cfg: TrainConfig,
                   weights: LossWeights = LossWeights(),
                   progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train ``net`` in place; returns ``{"steps", "seconds", "loss_first", "loss_last", "log"}``
    (log: mean loss terms over each tenth of the run)."""
    if len(samples) == 0:
        raise UserError("no training samples (no valid frames in the clips)")
    dev = next(net.parameters()).device
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    net.train()
    t0 = time.perf_counter()
    log, window, first = [], [], None
    chunk = max(1, cfg.steps // 10)
    step = 0
    for step in range(1, cfg.steps + 1):
        idx = rng.choice(len(samples), size=min(cfg.batch_size, len(samples)), replace=False)
        images, hand_boxes, object_boxes, targets = samples.batch(idx, dev)
        images = _colour_jitter(images, cfg.colour_jitter, gen)
        terms = pose_losses(net(images, hand_boxes, object_boxes), targets, hand_boxes, weights)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        values = {k: float(v.detach()) for k, v in terms.items()}
        first = values if first is None else first
        window.append(values)
        if step % chunk == 0 or step == cfg.steps:
            log.append({"step": step, **{k: round(float(np.mean([w[k] for w in window])), 5) for k in values}})
            window = []
        if progress:
            progress(step, cfg.steps, values)
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
    net.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "loss_first": first["total"],
            "loss_last": log[-1]["total"] if log else None, "log": log}


def save_pose_weights(net: HandObjectPoseNet, path: str | Path, recipe: dict | None = None) -> Path:
    """Write the weights file (float16 tensors: half the size, well within the network's noise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).cpu().clone() for k, v in net.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": WEIGHTS_FORMAT, "config": net.cfg.to_dict(), "state_dict": state,
                "recipe": recipe or {}}, tmp)
    tmp.replace(path)
    return path


def load_pose_net(path: str | Path, device: torch.device | str = "cpu") -> tuple[HandObjectPoseNet, dict]:
    """(network in eval mode, recipe) from a weights file; one-line ``UserError`` when it does not fit."""
    data = read_torch_checkpoint(path, "pose network weights")
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
        raise UserError(f"{path} is not a hoirecon pose weights file (format {WEIGHTS_FORMAT})")
    try:
        cfg = PoseNetConfig.from_dict(data["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"{path}: bad network config: {err}") from None
    net = HandObjectPoseNet(cfg)
    check_state_dict(net.state_dict(), data["state_dict"], str(path), "the pose network")
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()})
    return net.to(device).eval(), dict(data.get("recipe", {}))


def describe(cfg: TrainConfig) -> dict:
    """The config as a JSON-able dict (for the weights' recipe)."""
    return asdict(cfg)
