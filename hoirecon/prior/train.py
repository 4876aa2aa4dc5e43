"""Training loop of the geometry prior (library level: no CLI, no cache).

Seed A.2: AdamW, learning rate 1e-4, weight decay 0.01, batch 8 (the paper trains 500k
iterations on a GPU; the shipped small model is trained far shorter, see weights/README.md).
Extras that matter at small step counts: an exponential moving average (EMA) of the weights,
which is what gets sampled and shipped, an optional linear learning-rate warm-up, and
gradient-norm clipping.

Files (``out`` is the checkpoint path, e.g. ``prior.ckpt``):

- ``out``: the full training state (model, EMA, optimiser, step, RNG state, loss history,
  configs), rewritten atomically every ``checkpoint_every`` steps and at the end. A run
  started with an existing ``out`` resumes from it (same model config required); a resumed
  run draws the same batches and noise as an uninterrupted one.
- ``<out>.loss.csv``: ``step,loss,lr,seconds`` (loss = mean training loss of the last
  ``log_every`` steps, of the trained weights, not the EMA).
- ``<out>.samples/step_XXXXXXX.png``: a DDIM sample grid (``hoirecon.prior.sample``) every
  ``sample_every`` steps, for fixed hands of the dataset and two categories.

``hoirecon.prior.model.load_geometry_prior(out)`` loads the EMA weights of a checkpoint;
``export_weights(out, path)`` writes the slim fp16 file that ships.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hoirecon.errors import UserError
from hoirecon.io.checkpoints import read_torch_checkpoint
from hoirecon.io.threads import torch_threads
from hoirecon.prior.data import PriorDataset, load_prior_dataset
from hoirecon.prior.model import GeometryPrior, PriorConfig, geometry_prior_from_payload, save_prior_weights

Progress = Callable[[int, int, dict], None]
CHECKPOINT_FORMAT = "hoirecon-geometry-prior-train-v1"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    steps: total optimiser steps (a resumed run continues up to this number).
    batch_size: pairs per step (paper: 8).
    lr, weight_decay: AdamW (paper: 1e-4, 0.01).
    warmup_steps: linear learning-rate warm-up from 0 (0 = none, as in the paper).
    grad_clip: max gradient norm (<= 0 disables).
    ema_decay: decay of the weight EMA (the sampled/shipped weights).
    log_every: steps per loss-CSV row and progress callback.
    checkpoint_every: steps between checkpoints.
    sample_every: steps between sample grids (0 = never).
    sample_steps: DDIM steps of those grids.
    seed: seed of batches, noise and condition dropout.
    device: torch device string ("cpu", "cuda", ...).
    num_threads: torch CPU threads for the run, restored after (None = leave as is). On a shared 2-core
        machine 1 thread was ~5x faster per step than 2 (no contention stalls).
    """

    steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 25
    checkpoint_every: int = 250
    sample_every: int = 1000
    sample_steps: int = 25
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None


# The recipe of the shipped weights (weights/hoirecon/prior_small.pt): few steps on a CPU, so
# a larger learning rate with warm-up, batch 16 and a short EMA instead of the paper's
# 1e-4 / batch 8 / 500k steps. ``hoirecon prior train --recipe small`` uses it.
SMALL_RECIPE = TrainConfig(
    steps=3000, batch_size=16, lr=5e-4, warmup_steps=100, ema_decay=0.995, log_every=25,
    checkpoint_every=100, sample_every=300, sample_steps=25, seed=0, num_threads=1,
)
RECIPES = {"paper": TrainConfig(), "small": SMALL_RECIPE}  # ``--recipe`` names


@dataclass
class TrainResult:
    """step reached; final_loss: mean training loss over the last 200 steps (or fewer);
    seconds: wall time of this call; resumed_from: step the run started at; out: checkpoint."""

    step: int
    final_loss: float
    seconds: float
    resumed_from: int
    out: Path


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def _map_categories(data: PriorDataset, model: GeometryPrior) -> torch.Tensor:
    """Dataset category ids -> the model's vocabulary ids (by name)."""
    lut = torch.tensor([model.category_ids(name, 1)[0].item() for name in data.categories])
    return lut[data.category]


def _save_atomic(payload: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _fixed_sample_batch(data: PriorDataset, model: GeometryPrior, ids: torch.Tensor, per_class: int = 2):
    """Hands for the periodic sample grids: the first pairs of the dataset's first category
    and of another category (the hand is shown with both category prompts)."""
    first = int(ids[0])
    other = next((int(c) for c in ids.unique().tolist() if int(c) != first), first)
    take = torch.nonzero(ids == first).squeeze(1)[:: max(1, len(ids) // 97 + 1)][:per_class]
    names = [model.config.categories[first], model.config.categories[other]]
    return data.hand[take].float(), data.object[take].float(), names


def train_prior(
    data: str | Path | PriorDataset,
    out: str | Path,
    cfg: TrainConfig = TrainConfig(),
    model_cfg: PriorConfig = PriorConfig(),
    progress: Progress | None = None,
    should_stop: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Train (or resume training) the geometry prior.

    Args:
        data: a dataset file from ``render_prior_dataset`` (or one already loaded).
        out: checkpoint path; resumed from when it exists.
        cfg: training settings; model_cfg: architecture (ignored when resuming: the
            checkpoint's own is used, and a different one given explicitly is an error).
        progress: ``progress(step, total_steps, info)`` every ``log_every`` steps; info has
            ``loss`` (mean of the last ``log_every`` steps), ``lr``, ``seconds``.
        should_stop: ``should_stop(step)`` checked after each step; True checkpoints and
            returns early (used by tests and by interrupt handlers).

    Returns:
        TrainResult.
    """
    with torch_threads(cfg.num_threads or None):
        return _train_prior(data, Path(out), cfg, model_cfg, progress, should_stop)


def _train_prior(data: str | Path | PriorDataset, out: Path, cfg: TrainConfig, model_cfg: PriorConfig,
                 progress: Progress | None, should_stop: Callable[[int], bool] | None) -> TrainResult:
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset = data if isinstance(data, PriorDataset) else load_prior_dataset(data)
    if len(dataset) < 1:
        raise UserError("the prior dataset is empty")
    device = torch.device(cfg.device)

    state = None
    if out.is_file():
        state = read_torch_checkpoint(out, "prior training checkpoint")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{out} exists and is not a prior training checkpoint; choose another --out")
        ckpt_cfg = PriorConfig.from_dict(state["config"])
        if model_cfg != PriorConfig() and model_cfg != ckpt_cfg:
            raise UserError(f"{out} was trained with another model config; choose another --out to start afresh")
        model_cfg = ckpt_cfg

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = GeometryPrior(model_cfg).to(device)
        ema = GeometryPrior(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[tuple[int, float]] = []
    step = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        ema.load_state_dict(state["ema_state_dict"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        step = int(state["step"])
        history = [(int(s), float(v)) for s, v in state["history"].tolist()]
    else:
        ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    resumed_from = step

    ids_all = _map_categories(dataset, model)
    sample_hands, sample_objects, sample_names = _fixed_sample_batch(dataset, model, ids_all)
    csv_path = out.with_name(out.name + ".loss.csv")
    if step == 0 or not csv_path.is_file():
        csv_path.write_text("step,loss,lr,seconds\n")

    def checkpoint() -> None:
        hist = torch.tensor(history, dtype=torch.float64).reshape(-1, 2)
        _save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "config": model_cfg.to_dict(),
                "train_config": json.dumps(asdict(cfg)),
                "step": step,
                "state_dict": model.state_dict(),
                "ema_state_dict": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": gen.get_state(),
                "history": hist,
            },
            out,
        )

    model.train()
    window: list[float] = []
    last_ckpt = step
    n = len(dataset)
    while step < cfg.steps:
        lr = _lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        x0 = dataset.object[idx].to(device=device, dtype=torch.float32)
        hand = dataset.hand[idx].to(device=device, dtype=torch.float32)
        loss = model.training_loss(x0, hand, ids_all[idx].to(device), generator=gen)
        if not torch.isfinite(loss):
            from hoirecon.errors import RunError

            raise RunError(f"prior training diverged at step {step} (loss {loss.item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1.0 - cfg.ema_decay)
        step += 1
        value = float(loss.detach())
        window.append(value)
        history.append((step, value))
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = float(np.mean(window))
            window = []
            seconds = time.perf_counter() - t0
            with csv_path.open("a", newline="") as f:
                csv.writer(f).writerow([step, f"{mean:.6f}", f"{lr:.3e}", f"{seconds:.1f}"])
            if progress is not None:
                progress(step, cfg.steps, {"loss": mean, "lr": lr, "seconds": seconds})
        if cfg.sample_every and step % cfg.sample_every == 0:
            from hoirecon.prior.sample import write_training_grid

            write_training_grid(
                ema, sample_hands, sample_objects, sample_names,
                out.with_name(out.name + ".samples") / f"step_{step:07d}.png", cfg.sample_steps, seed=cfg.seed,
            )
        stop = should_stop is not None and should_stop(step)
        if step - last_ckpt >= cfg.checkpoint_every or step == cfg.steps or stop:
            checkpoint()
            last_ckpt = step
        if stop:
            break
    if step == resumed_from and state is None:
        checkpoint()
    tail = [v for _, v in history[-200:]]
    final = float(np.mean(tail)) if tail else math.nan
    return TrainResult(step=step, final_loss=final, seconds=time.perf_counter() - t0, resumed_from=resumed_from,
                       out=out)


def export_weights(checkpoint: str | Path, path: str | Path, meta: dict | None = None) -> Path:
    """Write the slim fp16 EMA weights of a training checkpoint (what ships in weights/).

    ``meta`` is stored in the file and in its ``.json`` side file (data size, command, ...);
    the checkpoint's step and the mean loss of its last 200 steps are added.
    """
    checkpoint = Path(checkpoint)
    state = read_torch_checkpoint(checkpoint, "prior training checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{checkpoint} is not a prior training checkpoint")
    model = geometry_prior_from_payload(state, checkpoint)
    hist = state["history"]
    info = {
        "step": int(state["step"]),
        "final_loss_last200": float(hist[-200:, 1].mean()) if len(hist) else None,
        "train_config": json.loads(state["train_config"]),
        **(meta or {}),
    }
    return save_prior_weights(model, path, info)


def with_overrides(cfg: TrainConfig, **kwargs) -> TrainConfig:
    """``cfg`` with the given fields replaced (None values are ignored): for CLI options."""
    return replace(cfg, **{k: v for k, v in kwargs.items() if v is not None})
