"""The authors' DiffHOI geometry diffusion prior (``CondGeomGlide``, ``cond_all``) as a backend.

The released prior is GLIDE's 64x64 text-conditioned UNet (``Text2ImUNet``) fine-tuned by
DiffHOI to denoise a 5-channel object geometry image given a 7-channel rendering of the hand
and a text prompt. The network is written here in plain torch; its ``state_dict()`` names,
shapes and order are those of the released checkpoint (``keys.json`` of the fixture in
``shared/fixtures/official/diffhoi_prior/``), so it loads with ``load_state_dict(strict=True)``.

Forward (``DiffHOIGlideUNet.forward``)::

    x_t (B,5,64,64), t (B,) on the 0..999 scale, cond_hand (B,7,64,64), tokens/mask (B,128)
      -> (B,10,64,64): channels 0-4 = predicted noise eps for the object channels,
         channels 5-9 = GLIDE's learned-range variance value v (never supervised by DiffHOI;
         score distillation uses eps only).

Internals (GLIDE): ``cat([x_t, cond_hand])`` -> UNet with FiLM ResBlocks (GroupNorm(32)), 2x2
avg-pool / nearest x2 resampling inside ResBlocks, attention at 32/16/8 px with 64-channel heads
whose keys/values also include the 128 text tokens; the time embedding gets the projection of
the text transformer's last position added. Text encoder: 16 pre-LN blocks, width 512, no
attention mask, padded positions replaced by a learned padding embedding.

Checkpoint (``load_diffhoi_prior``): the authors' Lightning ``last.ckpt``; its
``ckpt["state_dict"]`` holds ``"glide_model." + name`` for each name here, nothing else. The
loader strips that prefix (a bare GLIDE-style state dict without prefix is accepted as is).

Input encoding (DiffHOI test-time code, ``volsdf_hoi.py`` / ``ho3d_render.py``):

- object image ``[obj_mask, obj_normal x,y,z, obj_depth]``, hand condition
  ``[hand_mask, hand_normal x,y,z, hand_depth, hand_uv u,v]``;
- mask {0,1} -> ``(2m-1) * 0.5`` (values +-0.5);
- normals: unit camera-frame normals with x left, y up, z towards the camera (for OpenCV
  camera-frame normals that is ``-n``), zero on the background;
- depth: ``(z - mean hand z inside the hand mask)`` in decimetres, 0 on the background;
- uv: MANO texture coordinates mapped from [0,1] to [-1,1], -1 on the background;
- prompt ``"an image of a hand grasping a {category}"`` (category lowercased);
- classifier-free guidance drops only the text (the hand condition stays):
  ``eps = eps_u + s * (eps_c - eps_u)`` with s = 4.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hoirecon.backends.glide_tokenizer import GlideTokenizer, get_glide_tokenizer
from hoirecon.errors import UserError
from hoirecon.io.checkpoints import check_state_dict, strip_prefix
from hoirecon.weights import require_weights

WEIGHTS_FILE = "diffhoi/ddpm2d/checkpoints/last.ckpt"
WEIGHTS_SOURCE = (
    "the DiffHOI release (github.com/JudyYe/diffhoi README: Google Drive file id "
    "11GXFn3Qx1UZaHebK5lGg2ygUkq9HouoF); unzip it and copy ddpm2d/checkpoints/last.ckpt"
)
CHECKPOINT_PREFIX = "glide_model."

OBJECT_CHANNELS = ("obj_mask", "obj_normal_x", "obj_normal_y", "obj_normal_z", "obj_depth")
HAND_CHANNELS = (
    "hand_mask", "hand_normal_x", "hand_normal_y", "hand_normal_z", "hand_depth",
    "hand_uv_u", "hand_uv_v",
)
PROMPT_TEMPLATE = "an image of a hand grasping a {}"
DEFAULT_GUIDANCE_SCALE = 4.0
MASK_BIN = 0.5  # DiffHOI's `bin`: masks are encoded as +-0.5
DEPTH_UNITS_PER_METRE = 10.0  # depth is in decimetres
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class DiffHOIPriorConfig:
    """Architecture of the released prior (GLIDE base 64x64 + DiffHOI channel counts).

    ``hand_cond_channels`` is 7 for ``mode=cond_all`` with uv (the release, as far as the run
    name tells); a ``uv=False`` model would have 5. ``load_diffhoi_prior`` reads it from the
    checkpoint's first conv.
    """

    object_channels: int = 5
    hand_cond_channels: int = 7
    image_size: int = 64
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attention_downsample: tuple[int, ...] = (2, 4, 8)  # 32, 16, 8 px at 64 px input
    num_head_channels: int = 64
    dropout: float = 0.1
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    n_vocab: int = 50257

    @property
    def in_channels(self) -> int:
        return self.object_channels + self.hand_cond_channels

    @property
    def out_channels(self) -> int:
        """eps and the learned-variance value for every object channel."""
        return 2 * self.object_channels

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding, cosines first.

    timesteps: (B,) any numeric dtype (fractional allowed) -> (B, dim) float32.
    Frequencies are ``exp(-ln(max_period) * i / (dim//2))``, computed in float32 like GLIDE.
    """
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32, optionally fused with SiLU."""

    def __init__(self, channels: int, silu: bool):
        super().__init__(num_groups=32, num_channels=channels, eps=1e-5)
        self.silu = silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.float()).to(x.dtype)
        return F.silu(y) if self.silu else y


class ResBlock(nn.Module):
    """FiLM residual block, optionally resampling (GLIDE ``ResBlock`` with scale-shift norm).

    x: (B, C_in, H, W), emb: (B, E) -> (B, C_out, H', W') with H' = 2H (up), H/2 (down) or H.
    Resampling is applied after the first norm+SiLU and to the skip input, before the conv.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float,
                 up: bool = False, down: bool = False):
        super().__init__()
        # Sequential indices are part of the checkpoint names (in_layers.0/.2, out_layers.0/.3).
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, silu=True),
            nn.Identity(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.resample = "up" if up else "down" if down else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, silu=False),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[1](self.in_layers[0](x))
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        return self.skip_connection(x) + h


def qkv_attention(
    qkv: torch.Tensor, n_heads: int, encoder_kv: torch.Tensor | None = None
) -> torch.Tensor:
    """GLIDE's joint self/text attention (``QKVAttention``).

    qkv: (B, n_heads*3*C, T), head-major with ``[q|k|v]`` contiguous per head.
    encoder_kv: (B, n_heads*2*C, L) or None, ``[k|v]`` per head; its keys/values are put
        *before* the spatial ones in one softmax over L + T keys (no padding mask).
    Returns (B, n_heads*C, T). q and k are each scaled by C^-1/4; softmax in float32.
    """
    batch, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(batch * n_heads, 3 * ch, length).split(ch, dim=1)
    if encoder_kv is not None:
        ek, ev = encoder_kv.reshape(batch * n_heads, 2 * ch, -1).split(ch, dim=1)
        k = torch.cat([ek, k], dim=-1)
        v = torch.cat([ev, v], dim=-1)
    scale = ch ** -0.25
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(batch, -1, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention that also attends to the text tokens.

    x: (B, C, H, W), text: (B, xf_width, L) -> (B, C, H, W) (residual).
    """

    def __init__(self, channels: int, num_head_channels: int, encoder_channels: int):
        super().__init__()
        self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels, silu=False)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, hgt * wid))
        h = qkv_attention(qkv, self.num_heads, self.encoder_kv(text))
        return x + self.proj_out(h).reshape(b, c, hgt, wid)


class UNetStage(nn.Sequential):
    """One entry of input_blocks/output_blocks: routes (x, emb, text) to its layers."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, emb: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, text)
            else:
                x = layer(x)
        return x


class TextAttention(nn.Module):
    """Unmasked multi-head self-attention; per head ``[q|k|v]`` contiguous, head slowest.

    x: (B, L, W) -> (B, L, W).
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, width = x.shape
        ch = width // self.heads
        qkv = self.c_qkv(x).reshape(b, length, self.heads, 3 * ch)
        q, k, v = qkv.split(ch, dim=-1)
        scale = ch ** -0.25
        weight = torch.einsum("bthc,bshc->bhts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        out = torch.einsum("bhts,bshc->bthc", weight, v).reshape(b, length, width)
        return self.c_proj(out)


class TextMLP(nn.Module):
    """Linear(W, 4W) -> exact (erf) GELU -> Linear(4W, W)."""

    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class TextBlock(nn.Module):
    """Pre-LN transformer block. x: (B, L, W) -> (B, L, W)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = TextAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = TextMLP(width)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([TextBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class DiffHOIGlideUNet(nn.Module):
    """DiffHOI's ``ImageText2ImUNet`` (GLIDE ``Text2ImUNet`` with a concatenated hand image).

    Registration order below fixes the ``state_dict`` order of the checkpoint: own parameters
    (positional, padding embedding) first, then time_embed, input_blocks, middle_block,
    output_blocks, out, transformer, final_ln, token_embedding, transformer_proj.
    """

    def __init__(self, config: DiffHOIPriorConfig = DiffHOIPriorConfig()):
        super().__init__()
        cfg = self.config = config
        mc, emb_dim, xf = cfg.model_channels, cfg.time_embed_dim, cfg.xf_width

        self.positional_embedding = nn.Parameter(torch.randn(cfg.text_ctx, xf) * 0.01)
        self.padding_embedding = nn.Parameter(torch.randn(cfg.text_ctx, xf) * 0.01)
        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, cfg.num_head_channels, xf)

        ch = cfg.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([UNetStage(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, cfg.dropout)]
                ch = mult * mc
                if ds in cfg.attention_downsample:
                    layers.append(attention(ch))
                self.input_blocks.append(UNetStage(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                downsample = ResBlock(ch, emb_dim, ch, cfg.dropout, down=True)
                self.input_blocks.append(UNetStage(downsample))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = UNetStage(
            ResBlock(ch, emb_dim, ch, cfg.dropout),
            attention(ch),
            ResBlock(ch, emb_dim, ch, cfg.dropout),
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * mc, cfg.dropout)]
                ch = mult * mc
                if ds in cfg.attention_downsample:
                    layers.append(attention(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, ch, cfg.dropout, up=True))
                    ds //= 2
                self.output_blocks.append(UNetStage(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch, silu=True),
            nn.Identity(),
            nn.Conv2d(ch, cfg.out_channels, 3, padding=1),
        )

        self.transformer = TextTransformer(xf, cfg.xf_layers, cfg.xf_heads)
        self.final_ln = nn.LayerNorm(xf, eps=1e-5)
        self.token_embedding = nn.Embedding(cfg.n_vocab, xf)
        self.transformer_proj = nn.Linear(xf, emb_dim)

    @property
    def tokenizer(self) -> GlideTokenizer:
        return get_glide_tokenizer()

    def time_embedding(self, timesteps: torch.Tensor) -> torch.Tensor:
        """timesteps: (B,) on the 0..999 scale -> (B, 4*model_channels)."""
        sinusoid = timestep_embedding(timesteps, self.config.model_channels)
        return self.time_embed(sinusoid.to(self.time_embed[0].weight.dtype))

    def encode_text(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) int, mask (B, L) bool -> xf_out (B, xf_width, L), xf_proj (B, 4*mc).

        Masked (padding) positions get the learned ``padding_embedding[pos]`` instead of
        token + positional embedding; ``xf_proj`` projects the last position.
        """
        x = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        x = torch.where(mask[..., None], x, self.padding_embedding[None])
        x = self.final_ln(self.transformer(x))
        return x.permute(0, 2, 1), self.transformer_proj(x[:, -1])

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond_hand: torch.Tensor,
                tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Raw network output.

        x_t: (B, 5, H, W) noisy object image; timesteps: (B,) on the 0..999 scale;
        cond_hand: (B, 7, H, W); tokens/mask: (B, 128) from ``tokenizer.tokens_and_mask``.
        Returns (B, 10, H, W): [:, :5] eps, [:, 5:] learned-variance value.
        """
        emb = self.time_embedding(timesteps)
        text, text_proj = self.encode_text(tokens, mask)
        emb = emb + text_proj.to(emb)
        h = torch.cat([x_t, cond_hand], dim=1)
        skips = []
        for stage in self.input_blocks:
            h = stage(h, emb, text)
            skips.append(h)
        h = self.middle_block(h, emb, text)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, text)
        return self.out(h)

    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond_hand: torch.Tensor,
        text: Sequence[str],
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    ) -> torch.Tensor:
        """Classifier-free-guided noise prediction, as DiffHOI's score distillation uses it.

        x_t: (B, 5, 64, 64) noisy object geometry (``encode_object_geometry`` + noise);
        t: (B,) or scalar, timesteps on the original 0..999 scale (what the network sees);
        cond_hand: (B, 7, 64, 64) from ``encode_hand_condition``;
        text: B prompts (or one, broadcast), e.g. ``[hoi_prompt("mug")]``; "" = unconditional.
        Returns eps (B, 5, 64, 64) = eps_u + s (eps_c - eps_u), where the unconditional branch
        drops only the text (the hand condition stays), as in the released configuration.
        Runs without autograd (score distillation does not backpropagate through the prior).
        """
        cfg = self.config
        batch = x_t.shape[0]
        expected_x = (batch, cfg.object_channels, cfg.image_size, cfg.image_size)
        expected_c = (batch, cfg.hand_cond_channels, cfg.image_size, cfg.image_size)
        if tuple(x_t.shape) != expected_x or tuple(cond_hand.shape) != expected_c:
            raise UserError(
                f"DiffHOI prior expects x_t {expected_x} and cond_hand {expected_c}, "
                f"got {tuple(x_t.shape)} and {tuple(cond_hand.shape)}"
            )
        texts = list(text)
        if len(texts) == 1:
            texts = texts * batch
        if len(texts) != batch:
            raise UserError(f"DiffHOI prior got {len(texts)} prompts for a batch of {batch}")
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
        param = self.time_embed[0].weight
        x_t, cond_hand = x_t.to(param), cond_hand.to(param)
        tokenize = self.tokenizer.tokens_and_mask
        tok_c, mask_c = tokenize(texts, cfg.text_ctx, device=x_t.device)
        with torch.no_grad():
            if guidance_scale == 1.0:
                return self(x_t, t, cond_hand, tok_c, mask_c)[:, : cfg.object_channels]
            tok_u, mask_u = tokenize([""] * batch, cfg.text_ctx, device=x_t.device)
            out = self(
                torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond_hand, cond_hand]),
                torch.cat([tok_c, tok_u]), torch.cat([mask_c, mask_u]),
            )
            eps_c, eps_u = out[:, : cfg.object_channels].chunk(2, dim=0)
            return eps_u + guidance_scale * (eps_c - eps_u)


def hoi_prompt(category: str) -> str:
    """DiffHOI's category-level prompt, e.g. ``"an image of a hand grasping a mug"``."""
    return PROMPT_TEMPLATE.format(category.strip().lower())


# --------------------------------------------------------------------------------------------
# Input encoding
# --------------------------------------------------------------------------------------------


def encode_mask(mask: torch.Tensor) -> torch.Tensor:
    """mask (B,1,H,W) in [0,1] -> (2m-1) * 0.5 in [-0.5, 0.5]."""
    return (mask * 2 - 1) * MASK_BIN


def normals_opencv_to_diffhoi(normals: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) camera-frame normals, OpenCV axes (x right, y down, z forward) -> DiffHOI's
    camera axes (x left, y up, z towards the camera): all three components flip sign."""
    return -normals


def mean_masked_depth(depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """depth (B,1,H,W) metres, mask (B,1,H,W) -> (B,1,1,1) mean depth where mask > 0.5."""
    hard = (mask > 0.5).to(depth.dtype)
    total = (depth * hard).sum(dim=(1, 2, 3), keepdim=True)
    return total / hard.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)


def encode_relative_depth(
    depth: torch.Tensor, mask: torch.Tensor, ref_depth: torch.Tensor
) -> torch.Tensor:
    """depth (B,1,H,W) metres -> (depth - ref_depth) in decimetres where mask > 0.5, else 0.

    ref_depth: (B,1,1,1), the mean hand depth (``mean_masked_depth(hand_depth, hand_mask)``).
    """
    hard = (mask > 0.5).to(depth.dtype)
    return hard * (depth - ref_depth) * DEPTH_UNITS_PER_METRE


def encode_hand_condition(hand_mask: torch.Tensor, hand_normal_cv: torch.Tensor,
                          hand_depth: torch.Tensor, hand_uv: torch.Tensor | None) -> torch.Tensor:
    """The prior's hand condition image.

    hand_mask: (B,1,H,W) in [0,1]; hand_normal_cv: (B,3,H,W) unit normals, OpenCV camera
    frame; hand_depth: (B,1,H,W) metres; hand_uv: (B,2,H,W) MANO texture coordinates in [0,1]
    (None for a 5-channel, no-uv model). Returns (B,7,H,W) (or (B,5,H,W)) in ``HAND_CHANNELS``
    order.
    """
    ref = mean_masked_depth(hand_depth, hand_mask)
    parts = [
        encode_mask(hand_mask),
        normals_opencv_to_diffhoi(hand_normal_cv) * hand_mask,
        encode_relative_depth(hand_depth, hand_mask, ref),
    ]
    if hand_uv is not None:
        inside = (hand_mask > 0.5).to(hand_uv.dtype)
        parts.append(inside * (hand_uv * 2 - 1) + (inside - 1))  # background -> -1
    return torch.cat(parts, dim=1)


def encode_object_geometry(
    obj_mask: torch.Tensor,
    obj_normal_cv: torch.Tensor,
    obj_depth: torch.Tensor,
    hand_mask: torch.Tensor,
    hand_depth: torch.Tensor,
) -> torch.Tensor:
    """The object image the prior denoises (x_0 of the diffusion).

    obj_mask: (B,1,H,W) in [0,1]; obj_normal_cv: (B,3,H,W) OpenCV camera frame; obj_depth:
    (B,1,H,W) metres; hand_mask/hand_depth as in ``encode_hand_condition`` (the depth origin is
    the mean hand depth). Returns (B,5,H,W) in ``OBJECT_CHANNELS`` order. Object normals are
    re-normalised after masking, as DiffHOI does.
    """
    normal = normals_opencv_to_diffhoi(obj_normal_cv) * obj_mask
    normal = normal / (normal.norm(dim=1, keepdim=True) + 1e-5)
    ref = mean_masked_depth(hand_depth, hand_mask)
    depth = encode_relative_depth(obj_depth, obj_mask, ref)
    return torch.cat([encode_mask(obj_mask), normal, depth], dim=1)


# --------------------------------------------------------------------------------------------
# Noise schedules (outside the network; for score distillation)
# --------------------------------------------------------------------------------------------


def alphas_cumprod(schedule: str = "sds") -> torch.Tensor:
    """(1000,) float64 cumulative alpha products on the 0..999 scale.

    ``"sds"``: what DiffHOI's test-time score distillation uses (GLIDE's "linear",
    beta = linspace(1e-4, 0.02, 1000)). ``"train"``: what the prior was trained with (DiffHOI's
    LDM-style beta = linspace(sqrt(0.0015), sqrt(0.0195), 1000)^2). The official code uses the
    former at test time; the two differ (alpha_bar_500 = 0.078 vs 0.115).
    """
    n = NUM_TRAIN_TIMESTEPS
    if schedule == "sds":
        betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    elif schedule == "train":
        betas = torch.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, n, dtype=torch.float64) ** 2
    else:
        raise UserError(f"unknown DiffHOI noise schedule {schedule!r} (use 'sds' or 'train')")
    return torch.cumprod(1.0 - betas, dim=0)


def respaced_timesteps(num_steps: int = 100) -> list[int]:
    """Original-scale timesteps GLIDE's respacing to ``num_steps`` keeps (and feeds the network):
    evenly strided over 0..999 with Python rounding, e.g. 0, 10, ..., 484, 494, 505, ..., 999."""
    if num_steps == 1:
        return [0]
    stride = (NUM_TRAIN_TIMESTEPS - 1) / (num_steps - 1)
    taken, position = [], 0.0
    for _ in range(num_steps):
        taken.append(round(position))
        position += stride
    return taken


# --------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------


def _inert_stand_in(qualified_name: str) -> type:
    """A class that stands in for ``qualified_name`` while unpickling: it records its
    arguments and state and runs no code from the file."""

    class InertStandIn:
        stands_in_for = qualified_name

        def __new__(cls, *args, **kwargs):
            obj = object.__new__(cls)
            obj.args = args
            return obj

        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            self.state = state

    InertStandIn.__qualname__ = f"InertStandIn[{qualified_name}]"
    return InertStandIn


def read_checkpoint_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a Lightning ``.ckpt`` (its ``"state_dict"``) or of a bare state dict.

    Always ``torch.load(weights_only=True)``. A Lightning checkpoint may carry bookkeeping
    objects of other classes (callback states, hyper-parameters); if the plain load refuses
    them, each such class is allowlisted as an inert stand-in (``_inert_stand_in``: no code of
    the file's classes is imported or run) and the file is loaded again; only the tensors of
    ``"state_dict"`` are kept.
    """
    path = Path(path)
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            stand_ins = [(_inert_stand_in(name), name) for name in names]
            with torch.serialization.safe_globals(stand_ins):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, blocked module, dict subclasses, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read DiffHOI prior checkpoint {path}: {reason}") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"DiffHOI prior checkpoint {path} has no state_dict of tensors")
    return dict(state)


def checkpoint_to_model_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map checkpoint keys to ``DiffHOIGlideUNet`` names: strip the LightningModule prefix
    ``glide_model.``. A bare GLIDE state dict (no key has it) is kept as it is; keys without it
    next to keys with it are kept unchanged, so that they surface as unexpected keys."""
    return strip_prefix(state, CHECKPOINT_PREFIX)


def load_diffhoi_prior(device: torch.device | str | None = None,
                       config: DiffHOIPriorConfig | None = None) -> DiffHOIGlideUNet:
    """The released DiffHOI prior from ``weights/diffhoi/ddpm2d/checkpoints/last.ckpt``.

    Raises ``MissingWeightsError`` (one line) when the file is absent and ``UserError`` when it
    cannot be read or its keys/shapes do not match (names the keys). The hand-condition
    channel count (7 with uv, 5 without) is read from the checkpoint's first conv. Returns the
    network in ``eval()`` mode, frozen, float32, on ``device`` (default CPU).
    """
    path = require_weights(WEIGHTS_FILE, backend="diffhoi", source=WEIGHTS_SOURCE)
    state = checkpoint_to_model_state_dict(read_checkpoint_state_dict(path))
    config = config or DiffHOIPriorConfig()
    first_conv = state.get("input_blocks.0.0.weight")
    if first_conv is not None and first_conv.dim() == 4:
        hand_channels = first_conv.shape[1] - config.object_channels
        if hand_channels in (5, 7):  # cond_all without / with uv
            config = replace(config, hand_cond_channels=hand_channels)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    with torch.device("meta"):
        model = DiffHOIGlideUNet(config)
    check_state_dict(model.state_dict(), state, str(path), "the DiffHOI prior network")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False).to(device or "cpu")
