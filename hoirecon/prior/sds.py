"""Score distillation sampling (SDS) of a geometry prior into the object SDF (seed A.3).

Each fit step (after the 100 warm-up steps without SDS, seed A.2):

1. ``render_sds_inputs``: a random viewpoint around the hand-object centre (uniform SO(3)
   rotation, random distance; ``hoirecon.prior.geometry.sample_views``), the object SDF
   volume-rendered at 64x64 (mask, normal, depth; differentiable) and the hand mesh
   rasterized (mask, normal, depth, uv; the condition, no gradient), both encoded as the
   prior expects (``hoirecon.prior.geometry``).
2. ``sds_loss``: noise the object image at a random timestep t,
   ``x_t = sqrt(ab_t) x + sqrt(1 - ab_t) eps``, let the prior predict the noise with
   classifier-free guidance (scale 4), and return a loss whose gradient w.r.t. the object
   image is ``w(t) (eps_hat - eps)`` (per-channel weights for mask/normal/depth), the
   DreamFusion trick: the prior is never backpropagated through.

Defaults are the authors' (JudyYe/diffhoi, ``configs/novel_view/geom.yaml`` and
``models/sd.py``):

- t range: ``min_step = 0.02``, ``max_step = 0.98`` of the schedule, ``anneal_noise:
  constant`` (no annealing). Their code also offers annealing the upper end towards
  ``to_step = 0.5`` over the run (linear / exp / cosine / sqrt); ``SDSConfig.anneal`` offers
  the same shapes, driven by ``progress`` = step / total steps. They draw t on a 100-step
  respacing of the 1000-step schedule (indices 2..98, i.e. t = 20..989); we draw t on the
  full 0..999 grid over the same fraction (t = 20..979 by default).
- guidance scale 4 (``eps = eps_u + 4 (eps_c - eps_u)``).
- weighting ``w(t)``: ``"bell"`` = sqrt(1 - ab_t) sqrt(ab_t) (their geom config); also
  ``"dreamfusion"`` = 1 - ab_t (their code's fallback) and ``"uniform"``.
- noise schedule: linear betas 1e-4 -> 0.02 (GLIDE "linear", the one their SDS uses), unless
  the prior has its own ``alphas_cumprod``.
- reduction: the gradient is applied summed over pixels and channels (their
  ``image.backward(gradient=grad)``), and their fit weighs the SDS term by
  ``w_diffuse = 1e-3`` (``configs/training/diffuse.yaml``).

With the shipped ``GeometryPrior`` (an x_0-predicting network, eps derived exactly) the
"bell" gradient is ``w(t) (eps_hat - eps) = ab_t (x_0 - x0_hat)``: a pull of the rendering
towards the prior's denoised estimate, bounded at every t.

Any prior works that has ``predict_noise(x_t, t, hand_cond, category, guidance_scale=...)``
(``GeometryPrior`` does); ``TextPromptPrior`` adapts a text-prompted model such as the
authors' GLIDE backend (``hoirecon.backends.diffhoi_prior``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from hoirecon.errors import UserError
from hoirecon.export.views import scale_intrinsics
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.prior.geometry import (
    ObjectSDFRendering,
    SDFCallable,
    ViewConfig,
    default_sds_volume_config,
    render_hand_condition,
    render_object_sdf,
    sample_views,
)
from hoirecon.prior.model import linear_alphas_cumprod
from hoirecon.render.volume import VolumeRenderConfig

ANNEAL_SHAPES = ("constant", "linear", "exp", "cosine", "sqrt")
WEIGHTINGS = ("bell", "dreamfusion", "uniform")


class NoisePredictor(Protocol):
    """What score distillation needs from a prior.

    ``predict_noise(x_t (B, 5, S, S), t (B,) long on 0..999, hand_cond (B, 7, S, S),
    category (a name or B names), guidance_scale) -> eps (B, 5, S, S)``. An optional
    attribute ``alphas_cumprod`` ((T,) tensor) gives the prior's noise schedule.
    """

    def predict_noise(
        self, x_t: torch.Tensor, t: torch.Tensor, hand_cond: torch.Tensor, category, guidance_scale: float = ...
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class SDSConfig:
    """Score distillation settings (defaults: the authors', see the module docstring).

    guidance_scale: classifier-free guidance scale.
    t_min, t_max: range of t as fractions of the schedule.
    t_max_final: where annealing takes the upper end at progress 1 (their ``to_step``).
    anneal: one of ``ANNEAL_SHAPES`` ("constant" = no annealing).
    weighting: w(t), one of ``WEIGHTINGS``.
    channel_weights: extra weights of the (mask, normal, depth) channels of the gradient.
    num_train_timesteps: length of the schedule (when the prior does not give one).
    """

    guidance_scale: float = 4.0
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_final: float = 0.5
    anneal: str = "constant"
    weighting: str = "bell"
    channel_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    num_train_timesteps: int = 1000

    def __post_init__(self):
        if self.anneal not in ANNEAL_SHAPES:
            raise UserError(f"SDS anneal must be one of {', '.join(ANNEAL_SHAPES)}, got {self.anneal!r}")
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"SDS weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0 or not 0.0 <= self.t_max_final <= 1.0:
            raise UserError(f"SDS needs 0 <= t_min <= t_max <= 1, got {self.t_min}, {self.t_max}")


def sds_t_max(cfg: SDSConfig, progress: float) -> float:
    """Upper end of the t range (fraction) at ``progress`` in [0, 1] of the run."""
    p = min(max(float(progress), 0.0), 1.0)
    a, b = cfg.t_max, max(cfg.t_max_final, cfg.t_min)
    if cfg.anneal == "constant":
        return a
    if cfg.anneal == "linear":
        return a + (b - a) * p
    if cfg.anneal == "cosine":
        return a + 0.5 * (b - a) * (1.0 - math.cos(math.pi * p))
    if cfg.anneal == "sqrt":  # fast at first, then slower
        s = (1.0 - p) ** 0.5
        return s * a + (1.0 - s) * b
    # "exp": exponential approach from a to b, reaching b at p = 1 (rate 4)
    q = (b / a) ** 4 if a > 0 else 0.0
    return a - (a - b) * (1.0 - q**p) / (1.0 - q) if q != 1.0 else a


def sample_timesteps(
    batch: int, cfg: SDSConfig, progress: float, num_steps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch,) int64 timesteps uniform in [t_min, t_max(progress)] x (num_steps - 1), on the CPU."""
    lo = int(round(cfg.t_min * (num_steps - 1)))
    hi = max(lo, int(round(sds_t_max(cfg, progress) * (num_steps - 1))))
    return torch.randint(lo, hi + 1, (batch,), generator=generator)


def sds_weight(alpha_bar: torch.Tensor, weighting: str) -> torch.Tensor:
    """w(t) from alpha_bar_t (any shape)."""
    if weighting == "bell":
        return (alpha_bar * (1.0 - alpha_bar)).sqrt()
    if weighting == "dreamfusion":
        return 1.0 - alpha_bar
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    raise UserError(f"SDS weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")


@dataclass
class SDSOutput:
    """Result of one score distillation evaluation.

    loss: scalar; d loss / d object_image == grad (the prior is not differentiated).
    grad: (B, 5, S, S) w(t) (eps_hat - eps) times the channel weights (detached).
    t: (B,) timesteps; x_t: (B, 5, S, S) noised image; eps: the noise; eps_pred: the
    guided prediction (all detached).
    """

    loss: torch.Tensor
    grad: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    eps: torch.Tensor
    eps_pred: torch.Tensor


def _alphas_cumprod(prior, cfg: SDSConfig) -> torch.Tensor:
    ac = getattr(prior, "alphas_cumprod", None)
    if callable(ac):
        ac = ac()
    if ac is None:
        ac = linear_alphas_cumprod(cfg.num_train_timesteps)
    return torch.as_tensor(ac, dtype=torch.float64).cpu()


def sds_loss(
    prior: NoisePredictor,
    object_image: torch.Tensor,
    hand_cond: torch.Tensor,
    category,
    cfg: SDSConfig = SDSConfig(),
    progress: float = 0.0,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    mirror: bool = False,
) -> SDSOutput:
    """Score distillation loss of object renderings under a hand-conditioned prior.

    Args:
        prior: any ``NoisePredictor`` (e.g. ``GeometryPrior``).
        object_image: (B, 5, S, S) differentiable encoded object rendering.
        hand_cond: (B, 7, S, S) encoded hand rendering (treated as constant).
        category: one name (e.g. "mug", "unknown") or B names.
        cfg: settings; progress: step / total steps of the fit (drives annealing).
        generator: CPU torch.Generator for t and the noise.
        t: optional (B,) timesteps (0..T-1) to use instead of sampling; noise: optional
            (B, 5, S, S) noise.
        mirror: show the prior the left-right mirror image of the pair (image flipped, normal
            x negated; differentiable). The shipped prior was trained on right hands only:
            mirror the renderings of a left hand.

    Returns:
        SDSOutput; ``loss.backward()`` puts ``w(t) (eps_hat - eps)`` on the rendering.
    """
    if object_image.ndim != 4 or object_image.shape[1] != 5 or hand_cond.shape[0] != object_image.shape[0]:
        raise UserError(
            f"SDS needs object images (B, 5, S, S) and hand conditions (B, 7, S, S), "
            f"got {tuple(object_image.shape)} and {tuple(hand_cond.shape)}"
        )
    if mirror:
        object_image, hand_cond = mirror_geometry(object_image), mirror_geometry(hand_cond)
    B = object_image.shape[0]
    device, dtype = object_image.device, object_image.dtype
    alphas = _alphas_cumprod(prior, cfg)
    T = alphas.shape[0]
    if t is None:
        t = sample_timesteps(B, cfg, progress, T, generator)
    t = torch.as_tensor(t, dtype=torch.long).reshape(-1).expand(B).cpu()
    if noise is None:
        noise = torch.randn(object_image.shape, generator=generator, dtype=dtype)
    noise = noise.to(device=device, dtype=dtype)
    ab = alphas[t].to(device=device, dtype=dtype)[:, None, None, None]
    x0 = object_image.detach()
    x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
    with torch.no_grad():
        eps_pred = prior.predict_noise(
            x_t, t.to(device), hand_cond.detach().to(device), category, guidance_scale=cfg.guidance_scale
        ).to(device=device, dtype=dtype)
    cw = torch.tensor(cfg.channel_weights, device=device, dtype=dtype)
    cw = torch.cat([cw[:1], cw[1:2].expand(3), cw[2:3]])[None, :, None, None]  # mask, normal x3, depth
    grad = sds_weight(ab, cfg.weighting) * (eps_pred - noise) * cw
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    loss = (grad * object_image).sum()
    return SDSOutput(loss=loss, grad=grad, t=t, x_t=x_t, eps=noise, eps_pred=eps_pred)


def mirror_geometry(image: torch.Tensor) -> torch.Tensor:
    """Left-right mirror of encoded geometry images (B, 5|7, S, S): columns reversed and the
    normal x channel negated (a reflection of the scene across the camera's y-z plane; a left
    hand becomes a right hand). Differentiable."""
    flipped = torch.flip(image, dims=[-1])
    sign = torch.ones(image.shape[1], device=image.device, dtype=image.dtype)
    sign[1] = -1.0
    return flipped * sign[None, :, None, None]


# ----------------------------------------------------------------------------- renderings


@dataclass(frozen=True)
class SDSRenderConfig:
    """Renderings for score distillation.

    view: random viewpoints (must match the prior's training data, ``RenderDataConfig.view``).
    volume: SDF volume sampling (``default_sds_volume_config``: 24 + 16 samples, jittered,
        finite-difference normals).
    render_size: side (px) at which the object SDF is volume-rendered; None = the prior's
        ``view.image_size``. A smaller size renders the same camera on fewer pixels and
        upsamples the encoded image bilinearly to ``view.image_size`` (the SDS gradient goes
        back through the upsampling): the volume rendering and its backward, most of an SDS
        step, scale with the pixel count. Default 32 of the prior's 64 px (a third of the
        step's cost with the sampling above: benchmarks/bench_sds.py; quality in
        BENCHMARKS.md, issue 22). The hand condition is always rasterized at full size.
    """

    view: ViewConfig = field(default_factory=ViewConfig)
    volume: VolumeRenderConfig = field(default_factory=default_sds_volume_config)
    render_size: int | None = 32

    def __post_init__(self):
        if self.render_size is not None and not 2 <= self.render_size <= self.view.image_size:
            raise UserError(f"SDS render size must be in 2..{self.view.image_size}, got {self.render_size}")


@dataclass
class SDSRenderings:
    """Inputs of ``sds_loss`` for a batch of random views (B = one view per input frame).

    object_image: (B, 5, S, S) differentiable; hand_cond: (B, 7, S, S) constant;
    T_hand_to_view: (B, 4, 4); K: (B, 3, 3) at S px; z_ref: (B,) depth origin (m);
    object: the raw ObjectSDFRendering (opacity, depth, normals, SDF gradients) at
    ``SDSRenderConfig.render_size`` px.
    """

    object_image: torch.Tensor
    hand_cond: torch.Tensor
    T_hand_to_view: torch.Tensor
    K: torch.Tensor
    z_ref: torch.Tensor
    object: ObjectSDFRendering


@dataclass
class SDSViews:
    """Random SDS viewpoints of a batch (one per input frame), drawn before rendering so that a
    caller can weigh (or skip) a view without rendering it.

    T_hand_to_view: (B, 4, 4); K: (B, 3, 3) at ``ViewConfig.image_size`` px; center: (B, 3)
    the look-at point before jitter (hand frame, m).
    """

    T_hand_to_view: torch.Tensor
    K: torch.Tensor
    center: torch.Tensor


def draw_sds_views(
    T_hand_to_obj: torch.Tensor,
    hand_verts: torch.Tensor,
    sphere_center: torch.Tensor,
    cfg: SDSRenderConfig = SDSRenderConfig(),
    generator: torch.Generator | None = None,
) -> SDSViews:
    """Random cameras around the hand-object pair of each frame (``sample_views``), in the hand frame.

    Args:
        T_hand_to_obj: (B, 4, 4) hand -> object frame (only read, detached).
        hand_verts: (B, V, 3) hand vertices in the hand frame; sphere_center: (3,) object-frame
            bounding sphere centre.
        cfg: view settings; generator: CPU torch.Generator (the only random numbers of a view).

    Returns:
        SDSViews. The view looks at the midpoint of the hand's vertex centroid and the
        bounding-sphere centre (as the training data looks at the hand centroid / object
        bounding-box centre midpoint).
    """
    if hand_verts.ndim != 3 or T_hand_to_obj.shape != (hand_verts.shape[0], 4, 4):
        raise UserError(
            f"SDS views need hand_verts (B, V, 3) and T_hand_to_obj (B, 4, 4), "
            f"got {tuple(hand_verts.shape)} and {tuple(T_hand_to_obj.shape)}"
        )
    B = hand_verts.shape[0]
    like = dict(device=hand_verts.device, dtype=hand_verts.dtype)
    T_obj_to_hand = invert_rigid(T_hand_to_obj.detach())
    c_obj = torch.as_tensor(sphere_center, **like).reshape(1, 1, 3).expand(B, 1, 3)
    c_hand = transform_points(T_obj_to_hand, c_obj)[:, 0]
    center = 0.5 * (hand_verts.detach().mean(1) + c_hand)
    T_hand_to_view, K = sample_views(center, cfg.view, generator)
    return SDSViews(T_hand_to_view, K, center)


def render_sds_inputs(
    sdf_fn: SDFCallable,
    beta: torch.Tensor | float,
    T_hand_to_obj: torch.Tensor,
    hand_verts: torch.Tensor,
    hand_faces: torch.Tensor,
    hand_vert_uv: torch.Tensor,
    sphere_center: torch.Tensor,
    sphere_radius: float,
    cfg: SDSRenderConfig = SDSRenderConfig(),
    generator: torch.Generator | None = None,
    views: SDSViews | None = None,
) -> SDSRenderings:
    """Render object (SDF) and hand geometry from random views around the hand-object centre.

    Args:
        sdf_fn: object SDF in the object frame, ``x (N, 3) -> sdf (N,)`` (or
            ``(sdf, feature)``), metres.
        beta: VolSDF Laplace scale of the scene (e.g. ``density.beta()``).
        T_hand_to_obj: (B, 4, 4) hand -> object frame of each input frame (gradients flow).
        hand_verts: (B, V, 3) hand vertices in the hand frame (hand model output with
            ``wrist_rot = 0``, ``transl = None``); hand_faces: (F, 3); hand_vert_uv: (V, 2).
        sphere_center: (3,) object-frame bounding sphere centre; sphere_radius: metres.
        cfg: view and volume settings; generator: CPU torch.Generator for the views.
        views: views already drawn by ``draw_sds_views`` (same arguments); None draws them
            here (the same random numbers either way).

    Returns:
        SDSRenderings (views: see ``draw_sds_views``).
    """
    if views is None:
        views = draw_sds_views(T_hand_to_obj, hand_verts, sphere_center, cfg, generator)
    like = dict(device=hand_verts.device, dtype=hand_verts.dtype)
    hv = hand_verts.detach()
    T_hand_to_view, K, center = views.T_hand_to_view, views.K, views.center
    look_at_z = transform_points(T_hand_to_view, center[:, None])[:, 0, 2]
    hand = render_hand_condition(
        transform_points(T_hand_to_view, hv), hand_faces, hand_vert_uv, K, cfg.view.image_size, look_at_z
    )
    T_view_to_obj = T_hand_to_obj @ invert_rigid(T_hand_to_view)
    size = cfg.render_size or cfg.view.image_size
    obj = render_object_sdf(
        sdf_fn, beta, T_view_to_obj, scale_intrinsics(K, size / cfg.view.image_size), size, hand.z_ref,
        torch.as_tensor(sphere_center, **like), sphere_radius, cfg.volume,
    )
    image = obj.image
    if size != cfg.view.image_size:
        # align_corners=False matches scale_intrinsics' pixel-centre convention.
        image = F.interpolate(image, size=(cfg.view.image_size,) * 2, mode="bilinear", align_corners=False)
    return SDSRenderings(image, hand.image, T_hand_to_view, K, hand.z_ref, obj)


def score_distillation_loss(
    prior: NoisePredictor,
    category,
    sdf_fn: SDFCallable,
    beta: torch.Tensor | float,
    T_hand_to_obj: torch.Tensor,
    hand_verts: torch.Tensor,
    hand_faces: torch.Tensor,
    hand_vert_uv: torch.Tensor,
    sphere_center: torch.Tensor,
    sphere_radius: float,
    progress: float = 0.0,
    sds_cfg: SDSConfig = SDSConfig(),
    render_cfg: SDSRenderConfig = SDSRenderConfig(),
    generator: torch.Generator | None = None,
    side: str = "right",
    views: SDSViews | None = None,
) -> tuple[SDSOutput, SDSRenderings]:
    """One SDS evaluation for the fit: ``render_sds_inputs`` then ``sds_loss``.

    ``side`` is the hand's side; for "left" the pair is mirrored before the prior sees it
    (``mirror_geometry``). ``views``: drawn beforehand by ``draw_sds_views`` (None: drawn
    here). Returns (SDSOutput, SDSRenderings); add ``weight * out.loss`` to the fit's loss.
    """
    if side not in ("right", "left"):
        raise UserError(f"hand side must be 'right' or 'left', got {side!r}")
    r = render_sds_inputs(
        sdf_fn, beta, T_hand_to_obj, hand_verts, hand_faces, hand_vert_uv, sphere_center, sphere_radius,
        render_cfg, generator, views,
    )
    out = sds_loss(prior, r.object_image, r.hand_cond, category, sds_cfg, progress, generator, mirror=side == "left")
    return out, r


class TextPromptPrior:
    """Adapter: a text-prompted prior -> ``NoisePredictor``.

    For models with ``predict_noise(x_t, t, cond_hand, text: Sequence[str], guidance_scale)``
    (the authors' GLIDE prior, ``hoirecon.backends.diffhoi_prior.DiffHOIGlideUNet``).
    ``prompt(category)`` builds the text (default: DiffHOI's "an image of a hand grasping a
    {category}", with "_" -> " "); "unknown" maps to the empty (unconditional) prompt.
    ``alphas_cumprod`` ((T,) tensor) is the schedule SDS noises with (for the authors' model:
    ``diffhoi_prior.alphas_cumprod("sds")``).
    """

    def __init__(
        self,
        model,
        prompt: Callable[[str], str] | None = None,
        alphas_cumprod: torch.Tensor | None = None,
    ):
        self.model = model
        self.prompt = prompt or (
            lambda c: "" if c == "unknown" else f"an image of a hand grasping a {c.replace('_', ' ')}")
        if alphas_cumprod is not None:
            self.alphas_cumprod = alphas_cumprod

    def predict_noise(self, x_t, t, hand_cond, category, guidance_scale: float = 4.0) -> torch.Tensor:
        if isinstance(category, torch.Tensor):
            raise UserError("TextPromptPrior needs category names, not ids")
        names: Sequence[str] = [category] if isinstance(category, str) else list(category)
        return self.model.predict_noise(x_t, t, hand_cond, [self.prompt(n) for n in names],
                                        guidance_scale=guidance_scale)
