"""The project's own geometry diffusion prior: p(object geometry | hand geometry, category).

A small DDPM over 64x64 object geometry images (``hoirecon.prior.geometry``: 5 channels,
mask/normal/depth) conditioned on the hand's 7-channel rendering and an object category,
built from ``diffusers`` parts. It plays the role of DiffHOI's GLIDE-based prior (seed A.2)
at a size that trains on a CPU:

- Input: the noisy object image ``x_t`` (5 ch) concatenated with the hand condition (7 ch),
  as DiffHOI does. The 12 x 64 x 64 input is folded 2x2 into 48 x 32 x 32
  (``pixel_unshuffle``) before a ``UNet2DConditionModel`` and unfolded after it: the
  network runs at 32 px, four times cheaper than at 64 px (measured ~5x faster per step on
  one CPU core) at the cost of detail finer than 2 px, which score distillation at
  64 px does not resolve anyway.
- Category: a learned embedding over ``hoirecon.categories.CATEGORIES`` (the paper's six
  and ``"unknown"``). As in DiffHOI the condition reaches the UNet bottleneck through
  cross-attention (one token) and is also added to the timestep embedding (GLIDE adds the
  text projection there too; here via ``class_embed_type="projection"``).
- Classifier-free guidance: during training 20% of the samples get the category
  ``"unknown"`` (the hand condition is always kept, as in the authors' configuration), so
  ``"unknown"`` is the unconditional branch: ``eps = eps_u + s (eps_c - eps_u)``, s = 4.
- Noise: DDPM linear beta schedule 1e-4 -> 0.02 over 1000 steps (the paper's "linear";
  identical to GLIDE's "linear" that DiffHOI's score distillation uses), timesteps on the
  0..999 scale.
- Parametrisation (``PriorConfig.prediction``): the network predicts the clean image x_0
  ("sample", default) and ``predict_noise`` converts it exactly,
  ``eps = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)``. Why not eps-prediction (DiffHOI's):
  an eps network has to carry the per-pixel noise through its first level (20 noise
  channels after the 2x2 fold into 32 features); at this width it could not even learn the
  identity eps = x_t at t ~ 999 (eps MSE 0.14 there after 1100 steps) and DDIM samples
  stayed noise, whereas an x_0 network only outputs smooth geometry and the noise is put
  back analytically. The loss is the x_0 MSE weighted by ``clamp(SNR_t, 1, 5)``: the
  truncated-SNR weighting of Salimans & Ho (2022), max(SNR, 1), which keeps high-noise steps
  trained, capped at 5 as in Min-SNR (Hang et al. 2023) so near-clean steps do not dominate.
  ``prediction="epsilon"`` gives the plain DDPM epsilon-MSE model instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hoirecon.categories import CATEGORIES, normalize_category
from hoirecon.errors import UserError
from hoirecon.io.checkpoints import read_torch_checkpoint
from hoirecon.prior.geometry import HAND_CHANNELS, OBJECT_CHANNELS

WEIGHTS_RELATIVE = "hoirecon/prior_small.pt"
WEIGHTS_SOURCE = "shipped in the hoirecon repository under weights/hoirecon/; or train one with `hoirecon prior train`"
UNCONDITIONAL = "unknown"


@dataclass(frozen=True)
class PriorConfig:
    """Architecture and noise schedule of ``GeometryPrior``.

    image_size: side of the object/hand images (px).
    patch_size: fold factor of the input before the UNet (1 = run at full resolution).
    block_out_channels: UNet channels per resolution level (32, 16, 8 px with patch 2).
    layers_per_block: ResNet blocks per level.
    norm_num_groups: GroupNorm groups.
    category_dim: width of the category embedding (the cross-attention token).
    attention_head_dim: head width of the bottleneck attention.
    categories: the category vocabulary (index = category id); must contain "unknown".
    num_train_timesteps, beta_start, beta_end: DDPM linear beta schedule.
    cond_dropout: share of training samples whose category is replaced by "unknown".
    prediction: what the network outputs, "sample" (x_0) or "epsilon".
    snr_clamp: (lo, hi) clamp of the SNR weight of the x_0 loss ("sample" only).
    hand_condition: False = a category-only prior (the paper's "cat. prior" ablation): the
        hand images are zeroed at the input, so the network never sees the hand; same
        architecture and input layout, so it trains, loads and samples like the full one.
    """

    image_size: int = 64
    patch_size: int = 2
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    category_dim: int = 64
    attention_head_dim: int = 32
    categories: tuple[str, ...] = CATEGORIES
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cond_dropout: float = 0.2
    prediction: str = "sample"
    snr_clamp: tuple[float, float] = (1.0, 5.0)
    hand_condition: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        known = {f for f in cls.__dataclass_fields__}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)


def linear_alphas_cumprod(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """(num_steps,) float64 cumulative products of 1 - beta for a linear beta schedule."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


class GeometryPrior(nn.Module):
    """Denoiser of 64x64 object geometry images given the hand and the category.

    ``forward`` returns the raw output (x_0 or eps, ``config.prediction``); ``predict_noise``
    always returns eps (what DDIM sampling and score distillation use).

    Shapes: x_t (B, 5, S, S), hand_cond (B, 7, S, S), t (B,) or scalar on 0..999,
    category ids (B,) long (index into ``config.categories``), S = ``config.image_size``.
    """

    def __init__(self, config: PriorConfig = PriorConfig()):
        super().__init__()
        from diffusers import UNet2DConditionModel

        if config.prediction not in ("sample", "epsilon"):
            raise UserError(f"prior prediction must be 'sample' or 'epsilon', got {config.prediction!r}")
        if UNCONDITIONAL not in config.categories:
            raise UserError(f"the prior's category vocabulary must contain '{UNCONDITIONAL}'")
        if config.image_size % (config.patch_size * 2 ** (len(config.block_out_channels) - 1)):
            raise UserError(f"image size {config.image_size} does not fit patch {config.patch_size} "
                            "and the UNet levels")
        self.config = config
        p2 = config.patch_size**2
        levels = len(config.block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=config.image_size // config.patch_size,
            in_channels=(len(OBJECT_CHANNELS) + len(HAND_CHANNELS)) * p2,
            out_channels=len(OBJECT_CHANNELS) * p2,
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=config.category_dim,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_num_groups,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=config.category_dim,
        )
        self.category_embedding = nn.Embedding(len(config.categories), config.category_dim)
        nn.init.normal_(self.category_embedding.weight, std=1.0)
        ac = linear_alphas_cumprod(config.num_train_timesteps, config.beta_start, config.beta_end)
        # Derived from the config: not saved in the state dict.
        self.register_buffer("alphas_cumprod", ac.float(), persistent=False)

    # ------------------------------------------------------------------ categories

    @property
    def unconditional_id(self) -> int:
        return self.config.categories.index(UNCONDITIONAL)

    def category_ids(self, category, batch: int, device=None) -> torch.Tensor:
        """Category ids (batch,) long from ids, one name, or one name per sample.

        Names go through ``normalize_category`` (aliases such as "toy car", "cup" work);
        a name outside the vocabulary raises ``UserError``.
        """
        if device is None:
            device = self.category_embedding.weight.device
        if isinstance(category, torch.Tensor):
            ids = category.to(device=device, dtype=torch.long).reshape(-1)
        else:
            names = [category] if isinstance(category, str) else list(category)
            ids = torch.tensor([self._vocab_index(n) for n in names], device=device)
        if ids.numel() == 1:
            ids = ids.expand(batch)
        if ids.numel() != batch:
            raise UserError(f"got {ids.numel()} categories for a batch of {batch}")
        if int(ids.min()) < 0 or int(ids.max()) >= len(self.config.categories):
            raise UserError(f"category ids must be in [0, {len(self.config.categories)})")
        return ids

    def _vocab_index(self, name: str) -> int:
        """Index of a category name in this model's vocabulary (spelling of "_"/" "/"-" ignored,
        so weights trained when the vocabulary spelled "toycar" still accept "toy_car")."""
        key = normalize_category(name)
        if key in self.config.categories:
            return self.config.categories.index(key)
        squash = re.sub(r"[^a-z0-9]", "", key)
        for i, c in enumerate(self.config.categories):
            if re.sub(r"[^a-z0-9]", "", c) == squash:
                return i
        raise UserError(f"category '{name}' is not in this prior's vocabulary: {', '.join(self.config.categories)}")

    # ------------------------------------------------------------------ network

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, hand_cond: torch.Tensor, category_ids: torch.Tensor
    ) -> torch.Tensor:
        """Raw network output (B, 5, S, S): x_0 or eps per ``config.prediction`` (with autograd)."""
        cfg = self.config
        B = x_t.shape[0]
        S = cfg.image_size
        if (tuple(x_t.shape[1:]) != (len(OBJECT_CHANNELS), S, S)
                or tuple(hand_cond.shape) != (B, len(HAND_CHANNELS), S, S)):
            raise UserError(
                f"prior expects x_t (B, 5, {S}, {S}) and hand_cond (B, 7, {S}, {S}), "
                f"got {tuple(x_t.shape)} and {tuple(hand_cond.shape)}"
            )
        param = self.category_embedding.weight
        t = torch.as_tensor(t, device=param.device).reshape(-1).expand(B)
        token = self.category_embedding(category_ids.to(param.device))  # (B, D)
        if not cfg.hand_condition:
            hand_cond = torch.zeros_like(hand_cond)
        h = torch.cat([x_t, hand_cond], dim=1).to(param)
        if cfg.patch_size > 1:
            h = F.pixel_unshuffle(h, cfg.patch_size)
        out = self.unet(h, t, encoder_hidden_states=token[:, None], class_labels=token).sample
        if cfg.patch_size > 1:
            out = F.pixel_shuffle(out, cfg.patch_size)
        return out

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor, hand_cond: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Noise prediction from the raw output. t: (B,) long on x_t's device."""
        out = self(x_t, t, hand_cond, ids).to(x_t.dtype)
        if self.config.prediction == "epsilon":
            return out
        ab = self.alphas_cumprod.to(x_t.device)[t.long()].to(x_t.dtype)[:, None, None, None]
        return (x_t - ab.sqrt() * out) / (1.0 - ab).sqrt()

    def predict_noise(
        self, x_t: torch.Tensor, t, hand_cond: torch.Tensor, category, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """Noise prediction, optionally classifier-free guided.

        Args:
            x_t: (B, 5, S, S); t: (B,) or scalar on 0..999; hand_cond: (B, 7, S, S);
            category: ids (B,) / (1,), a name, or B names (see ``category_ids``);
            guidance_scale: 1 = plain conditional prediction; s != 1 gives
                ``eps_u + s (eps_c - eps_u)`` with the "unknown" category as eps_u
                (one batched pass of 2B). Samples whose category is "unknown" are returned
                unguided.

        Returns:
            eps (B, 5, S, S) in the dtype of the network. Autograd follows the caller's
            grad mode (score distillation calls it under ``torch.no_grad``).
        """
        B = x_t.shape[0]
        ids = self.category_ids(category, B, x_t.device)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(B)
        if guidance_scale == 1.0 or bool((ids == self.unconditional_id).all()):
            # Unconditional samples: eps_c = eps_u, so guidance changes nothing; one pass of B.
            return self._eps(x_t, t, hand_cond, ids)
        uncond = torch.full_like(ids, self.unconditional_id)
        eps = self._eps(
            torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([hand_cond, hand_cond]), torch.cat([ids, uncond])
        )
        eps_c, eps_u = eps.chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    def predict_noise_guided(self, x_t: torch.Tensor, t, hand_cond: torch.Tensor, category,
                             guidance_scale: float = 4.0):
        """``predict_noise`` with the paper's classifier-free guidance scale (4) by default."""
        return self.predict_noise(x_t, t, hand_cond, category, guidance_scale=guidance_scale)

    # ------------------------------------------------------------------ diffusion

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): sqrt(ab_t) x0 + sqrt(1 - ab_t) noise. x0, noise: (B, C, H, W); t: (B,)."""
        ab = self.alphas_cumprod.to(x0.device)[t.long()].to(x0.dtype)[:, None, None, None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def training_loss(
        self,
        x0: torch.Tensor,
        hand_cond: torch.Tensor,
        category_ids: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Training loss with condition dropout (scalar): the SNR-weighted x_0 MSE
        (``prediction="sample"``, see the module docstring) or the epsilon MSE.

        Args:
            x0: (B, 5, S, S) clean object images; hand_cond: (B, 7, S, S); category_ids: (B,).
            generator: CPU torch.Generator for t, noise and dropout (reproducible runs).
        """
        B = x0.shape[0]
        dev = x0.device
        t = torch.randint(0, self.config.num_train_timesteps, (B,), generator=generator).to(dev)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(dev)
        drop = torch.rand(B, generator=generator).to(dev) < self.config.cond_dropout
        ids = torch.where(drop, torch.full_like(category_ids, self.unconditional_id), category_ids.to(dev))
        out = self(self.add_noise(x0, noise, t), t, hand_cond, ids).float()
        if self.config.prediction == "epsilon":
            return F.mse_loss(out, noise.float())
        ab = self.alphas_cumprod.to(dev)[t].float()
        weight = (ab / (1.0 - ab)).clamp(*self.config.snr_clamp)
        return (weight * (out - x0.float()).pow(2).mean(dim=(1, 2, 3))).mean()

    def ddim_scheduler(self, num_inference_steps: int = 50, clip_range: float | None = 2.5):
        """A diffusers ``DDIMScheduler`` with this model's betas, set to ``num_inference_steps``.

        ``clip_range`` clamps the predicted x_0 at each step (encoded values stay within about
        +-2: masks +-0.5, unit normals, depth in dm relative to the hand); None disables it.
        """
        from diffusers import DDIMScheduler

        cfg = self.config
        sched = DDIMScheduler(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_start=cfg.beta_start,
            beta_end=cfg.beta_end,
            beta_schedule="linear",
            clip_sample=clip_range is not None,
            clip_sample_range=float(clip_range or 1.0),
            set_alpha_to_one=True,
            timestep_spacing="trailing",
            prediction_type="epsilon",
        )
        sched.set_timesteps(num_inference_steps)
        return sched

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------- weights files


def save_prior_weights(model: GeometryPrior, path: str | Path, meta: dict | None = None, half: bool = True) -> Path:
    """Write a slim weights file: ``{"config", "state_dict", "meta"}`` (fp16 tensors by default).

    A JSON side file (same stem, ``.json``) repeats ``config`` and ``meta`` for people.
    Loadable with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    payload = {"format": "hoirecon-geometry-prior-v1", "config": model.config.to_dict(), "state_dict": state,
               "meta": json.dumps(meta or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    side = {"config": model.config.to_dict(), "num_parameters": model.num_parameters(), **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
    return path


def default_weights_path() -> Path:
    """The shipped weights: ``$HOIRECON_WEIGHTS/hoirecon/prior_small.pt`` when that file exists,
    else the repository's ``weights/hoirecon/prior_small.pt``; MissingWeightsError if neither."""
    from hoirecon.weights import require_weights, weights_dir

    candidate = weights_dir() / WEIGHTS_RELATIVE
    if candidate.is_file():
        return candidate
    repo = Path(__file__).resolve().parents[2] / "weights" / WEIGHTS_RELATIVE
    if repo.is_file():
        return repo
    return require_weights(WEIGHTS_RELATIVE, "hoirecon prior", WEIGHTS_SOURCE)


def load_geometry_prior(path: str | Path | None = None, device=None) -> GeometryPrior:
    """Load a prior from a weights file (``save_prior_weights``) or a training checkpoint
    (``hoirecon.prior.train``; its EMA weights are used). ``path=None``: the shipped weights.

    Returns the model in eval mode, float32, on ``device`` (default CPU).
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise UserError(f"prior weights not found: {path}")
    return geometry_prior_from_payload(read_torch_checkpoint(path, "prior weights"), path, device)


def geometry_prior_from_payload(payload, path: str | Path, device=None) -> GeometryPrior:
    """The model held by an already-read weights file or training checkpoint (``path`` names it
    in errors); as ``load_geometry_prior``."""
    if not isinstance(payload, dict) or "config" not in payload:
        raise UserError(f"{path} is not a hoirecon geometry prior file")
    config = PriorConfig.from_dict(payload["config"])
    state = payload.get("ema_state_dict") or payload.get("state_dict")
    if state is None:
        raise UserError(f"{path} holds no prior weights")
    model = GeometryPrior(config)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as err:
        raise UserError(f"prior weights {path} do not match their config: {str(err).splitlines()[0]}") from err
    return model.to(device or "cpu").eval()
