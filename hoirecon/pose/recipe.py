"""The training recipe end to end: supervised on labelled clips, then the semi-supervised phase.

``train_recipe`` is what ``hoirecon pose train`` runs:

1. supervised: crops of every valid frame of the labelled clips (``synth`` folders), box
   jitter, ``sup`` steps (or continue from ``init`` weights);
2. semi-supervised (when unlabelled clips are given): predict every unlabelled clip, keep
   the frames that pass the temporal-consistency filter (``hoirecon.pose.pseudo``) as
   pseudo-labels, and train on labelled + pseudo-labelled crops together for ``semi`` steps.

An unlabelled clip is an output folder with frames and masks and its object's template:
``object.ply`` in the folder, else ``gt/object.ply``; intrinsics from ``gt/gt.npz`` when present
(a synth folder; its labels are never read), else the pose stage's default camera
(``hoirecon.handpose.perspective.user_intrinsics``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hoirecon.errors import UserError
from hoirecon.hand import build_hand_model
from hoirecon.handpose.perspective import user_intrinsics
from hoirecon.pose.data import ClipData, FrameSamples, concat_samples, load_clip, make_samples
from hoirecon.pose.network import CONFIGS, HandObjectPoseNet
from hoirecon.pose.predict import predict_clip
from hoirecon.pose.pseudo import ConsistencyConfig, pseudo_labels, temporal_consistency
from hoirecon.pose.train import TrainConfig, load_pose_net, save_pose_weights, train_pose_net
from hoirecon.stages.outputs import FramesMeta, GroundTruth

__all__ = ["RecipeConfig", "clip_folders", "load_unlabeled_clip", "pseudo_label_clips", "train_recipe"]


@dataclass(frozen=True)
class RecipeConfig:
    """network: "cpu" | "paper"; sup, semi: the two phases' training settings; jitter: box
    jitter of the crops; consistency: the pseudo-label filter's tolerances."""

    network: str = "cpu"
    sup: TrainConfig = TrainConfig(steps=1000, lr=2e-3)  # the shipped weights' recipe
    semi: TrainConfig = TrainConfig(steps=150, lr=3e-4, seed=1)
    jitter: float = 0.1
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)


def clip_folders(root: str | Path) -> list[Path]:
    """The clip folders under ``root`` (those with a ``frames`` stage), sorted; ``root`` itself if it is one."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"clip folder not found: {root}")
    if (root / "frames").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "frames").is_dir() and (p / "masks").is_dir())
    if not found:
        raise UserError(f"no clip folders (with frames/ and masks/) in {root}")
    return found


def load_unlabeled_clip(folder: Path) -> ClipData:
    """An unlabelled clip (module docstring)."""
    template = folder / "object.ply" if (folder / "object.ply").is_file() else GroundTruth.mesh_file(folder)
    if GroundTruth.file(folder).is_file():
        K = GroundTruth.load(folder / GroundTruth.DIR, required=("K",)).K
    else:
        W, H = FramesMeta.load(folder / "frames").size
        K = user_intrinsics(None, None, W, H, W, dtype=torch.float64).numpy()
    return load_clip(folder, K=K, template=template, labelled=False)


def pseudo_label_clips(net: HandObjectPoseNet, clips: list[ClipData], consistency: ConsistencyConfig,
                       rng: np.random.Generator, jitter: float) -> tuple[FrameSamples | None, dict]:
    """Predict each clip, keep its consistent frames; (samples or None, counts)."""
    hand = build_hand_model("anny")
    parts, kept_h, kept_o, total = [], 0, 0, 0
    for clip in clips:
        poses = predict_clip(net, clip, hand)
        check = temporal_consistency(poses, clip.hand_boxes, clip.object_boxes, clip.control_3d, consistency)
        kept_h += int(check.hand_keep.sum())
        kept_o += int(check.object_keep.sum())
        total += len(clip.images)
        if (check.hand_keep | check.object_keep).any():
            parts.append(make_samples(clip, net.cfg.image_size, rng, jitter, pseudo=pseudo_labels(poses, check)))
    stats = {"frames": total, "hand_kept": kept_h, "object_kept": kept_o}
    return (concat_samples(parts) if parts else None), stats


def train_recipe(data: str | Path, out: str | Path, cfg: RecipeConfig = RecipeConfig(),
                 unlabeled: str | Path | None = None, init: str | Path | None = None,
                 progress: Callable[[str, int, int, dict], None] | None = None) -> dict:
    """Train (module docstring) and write the weights file ``out``; returns a JSON-able summary
    (also stored as the weights' recipe)."""
    if cfg.network not in CONFIGS:
        raise UserError(f"unknown network config '{cfg.network}': choose one of {', '.join(CONFIGS)}")
    rng = np.random.default_rng(cfg.sup.seed)
    torch.manual_seed(cfg.sup.seed)
    if init is not None:
        net, _ = load_pose_net(init)
    else:
        net = HandObjectPoseNet(CONFIGS[cfg.network])
    size = net.cfg.image_size
    labelled = concat_samples([make_samples(load_clip(f), size, rng, cfg.jitter) for f in clip_folders(data)])
    summary: dict = {"name": f"{net.cfg.name}-{'semi' if unlabeled else 'sup'}", "config": asdict(cfg),
                     "labelled_clips": len(labelled.clip_names), "labelled_frames": len(labelled),
                     "init": str(init) if init else None}
    if init is None or cfg.sup.steps > 0:
        summary["supervised"] = train_pose_net(net, labelled, cfg.sup, progress=_phase(progress, "supervised"))
    if unlabeled is not None:
        clips = [load_unlabeled_clip(f) for f in clip_folders(unlabeled)]
        pseudo, stats = pseudo_label_clips(net, clips, cfg.consistency, rng, cfg.jitter)
        summary["pseudo_labels"] = {**stats, "clips": len(clips)}
        both = concat_samples([labelled, pseudo]) if pseudo is not None else labelled
        summary["semi_supervised"] = train_pose_net(net, both, cfg.semi, progress=_phase(progress, "semi"))
    save_pose_weights(net, out, summary)
    return summary


def _phase(progress, name):
    if progress is None:
        return None
    return lambda step, total, values: progress(name, step, total, values)
