"""Score distillation of a geometry diffusion prior as a pluggable guidance term of the fit.

``build_guidance(cfg, hand_model, device)`` loads a prior once and returns a
``PriorGuidance`` (or ``None`` for ``prior="none"``); the optimisation loop calls it every
step and adds the returned loss to its total::

    guidance = build_guidance(GuidanceConfig(prior="hoirecon", category="mug"), hand_model, device)
    ...
    sds, info = guidance(scene, step, total_steps, gen)   # None when the step has no SDS
    if sds is not None:
        total = total + sds

Each evaluation (``hoirecon.prior.sds.score_distillation_loss``, seed A.3) picks one random
frame, renders the object SDF (mask / normal / depth at ``SDSRenderConfig.render_size``,
upsampled to the prior's 64x64) and the hand (the condition, 64x64)
from a random viewpoint around the hand-object pair, noises the object image at a random
t and pulls it towards the prior's classifier-free-guided (scale 4) denoising.

What receives gradients: only the object SDF. The object pose ``T_hand_to_obj`` and the
Laplace beta are detached before rendering (the hand rendering is constant anyway): the
prior speaks about the object's *shape* next to the hand; letting it move the object
relative to the hand or blur it through beta would fight the observed masks, which are the
only evidence of pose. (DiffHOI's released fit also back-propagates SDS into the pose; we
choose not to, see ``GuidanceConfig``.)

Priors (``GuidanceConfig.prior``):

- ``"none"``: no guidance (``build_guidance`` returns None);
- ``"hoirecon"``: the shipped ``weights/hoirecon/prior_small.pt`` (``load_geometry_prior``);
- ``"diffhoi"``: the authors' GLIDE prior (``hoirecon.backends.diffhoi_prior``, text prompt
  from the category, noised with their SDS schedule ``alphas_cumprod("sds")``); a missing
  checkpoint raises ``MissingWeightsError``;
- a path to a prior ``.pt`` file (``save_prior_weights`` output or a training checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hoirecon.categories import UNKNOWN, category_name
from hoirecon.errors import UserError
from hoirecon.fit.losses import smoothstep
from hoirecon.geometry.transforms import invert_rigid
from hoirecon.prior.sds import SDSConfig, SDSRenderConfig, draw_sds_views, score_distillation_loss

PRIOR_NAMES = ("none", "hoirecon", "diffhoi")


@dataclass(frozen=True)
class GuidanceConfig:
    """Score-distillation guidance of the fit.

    prior: "none" | "hoirecon" (shipped weights) | "diffhoi" (authors' checkpoint) | a path
        to a prior ``.pt`` file.
    category: the object's name (``hoirecon.categories.category_name``: any name; one outside
        the prior's vocabulary, or "unknown", runs the prior's category-agnostic branch).
    weight: weight of the SDS loss. Default 1e-3 = the authors' ``w_diffuse``:
        ``hoirecon.prior.sds.sds_loss`` uses the same reduction as their code (the
        per-pixel gradient ``w(t) (eps_hat - eps)`` summed over the 5 x 64 x 64 image, not
        averaged), so no conversion is needed. With ``every`` > 1 the loss of an SDS step is
        multiplied by ``every`` so that the time-averaged pull equals ``weight`` applied at
        every step (the authors' setting).
    start_step: no SDS before this step (the paper's A.2: the first 100 steps fit the masks alone,
        so the prior sees a rough object next to the hand, not the initial blob).
    every: SDS on every ``every``-th step from ``start_step``. Default 1 (the paper's
        setting). Cost, measured with ``benchmarks/bench_sds.py`` (CPU ms of one SDS step on
        a 48^3 grid fit of ``--preset fast``, 1 thread): 168 ms with the object rendered at
        64 px with 32 + 32 samples per ray (before issue 22), 59 ms with the defaults of
        ``SDSRenderConfig`` (32 px upsampled, 24 + 16 samples), of which the prior's guided
        UNet pass is ~30 ms (~21 ms for a category the prior does not know: one unguided
        pass). The extra time of a fit is (steps - start_step) / every x that cost: ~80 s
        CPU for the 1500 steps of ``fast``. The fit stage's default is 2
        (``FitConfig.sds_every``): the same F@10 within noise at 0.8x the CPU.
    fade_from, end_fraction: an annealed end (``sds_schedule``): the weight is constant from
        ``start_step`` to ``fade_from`` x steps, then falls linearly to 0 at ``end_fraction`` x
        steps; from there on no SDS is evaluated at all. Why: the prior shapes what no mask
        constrains early, while the learning rates are high; at the end the masks alone settle
        the surface they see, and the fit saves the SDS steps it skips. Default 1.0 / 1.0:
        constant to the last step (the paper's setting), also the fit stage's: 0.4 / 0.7
        lost F@10 on every held-out mesh but one (mean 0.880 -> 0.856; docs/experiments.md),
        for ~1/3 fewer SDS evaluations; the prior's pull is needed to the end.
    view_seen_deg, view_unseen_deg: SDS on the unseen side (``unseen_view_weight``): each
        evaluation is weighted by how far its random viewpoint is from the nearest observed
        camera direction in the object frame: 0 within ``view_seen_deg`` (not evaluated at
        all), rising smoothly to 1 at ``view_unseen_deg``. Why: a rendering from near an
        observed camera shows the side the masks already constrain, where the prior could only
        pull the surface away from them. Default 0 / 0: off (every view weighs 1, the paper's
        setting). The fit stage's default is 20 / 60 (``FitConfig.sds_seen_deg`` /
        ``sds_unseen_deg``), measured with ``benchmarks/bench_fit.py`` against the same fit
        without the weighting (docs/experiments.md, issue 22 item 3): F@10 held-out meshes
        0.880 -> 0.890 (no mesh worse), procedural seeds 0-5 0.910 -> 0.916 (worst -0.004),
        tuning meshes 0.876 -> 0.880 (duck -0.032): better on 11 of 14 clips, a small gain of
        the size one seed moves. 11 % of the SDS evaluations are skipped (views within 20 deg
        of a camera, the cameras spanning a 90 deg arc). Without ``view_keep_pull`` the same
        angles weakened the prior and lost F@10 (held-out 0.872).
    view_keep_pull: with the view weighting, divide each view's weight by the mean weight of
        all view directions (``mean_view_weight``, floored at 0.5) so that the prior's pull,
        averaged over the views, stays what it was: it is moved to the unseen side, not
        weakened (at most 2x on an unseen view). False: the weights as they are (the mean pull
        falls to ~0.7 with 20 / 60 deg on a 90 deg arc of cameras).
    sds: t range / annealing / weighting / guidance scale (``SDSConfig`` defaults: the
        authors': t in [0.02, 0.98] of the schedule, no annealing, "bell" w(t), scale 4).
    render: SDS viewpoints and volume sampling (``SDSRenderConfig`` defaults).
    """

    prior: str = "none"
    category: str = "unknown"
    weight: float = 1e-3
    start_step: int = 100
    every: int = 1
    fade_from: float = 1.0
    end_fraction: float = 1.0
    view_seen_deg: float = 0.0
    view_unseen_deg: float = 0.0
    view_keep_pull: bool = True
    sds: SDSConfig = field(default_factory=SDSConfig)
    render: SDSRenderConfig = field(default_factory=SDSRenderConfig)

    def __post_init__(self):
        if self.weight < 0:
            raise UserError(f"SDS weight must be >= 0, got {self.weight}")
        if self.every < 1:
            raise UserError(f"SDS every must be >= 1, got {self.every}")
        if self.start_step < 0:
            raise UserError(f"SDS start step must be >= 0, got {self.start_step}")
        if not 0.0 <= self.fade_from <= self.end_fraction <= 1.0:
            raise UserError(f"SDS needs 0 <= fade_from <= end_fraction <= 1, got {self.fade_from}, {self.end_fraction}")
        if self.view_unseen_deg and not 0.0 <= self.view_seen_deg < self.view_unseen_deg <= 180.0:
            raise UserError(f"SDS needs 0 <= view_seen_deg < view_unseen_deg <= 180 (or view_unseen_deg 0 = off), "
                            f"got {self.view_seen_deg}, {self.view_unseen_deg}")

    @property
    def view_weighting(self) -> bool:
        """Whether SDS views are weighted by their distance to the observed cameras."""
        return self.view_unseen_deg > 0


def sds_schedule(step: int, total_steps: int, start_step: int, fade_from: float = 1.0,
                 end_fraction: float = 1.0) -> float:
    """Factor (0..1) of the SDS weight at ``step`` (0-based) of a ``total_steps`` run.

    0 before ``start_step``; 1 up to ``fade_from`` x total_steps; then linear down to 0 at
    ``end_fraction`` x total_steps and 0 from there on (``fade_from == end_fraction``: a hard
    stop). With the defaults 1.0 / 1.0 it is exactly 1 on every step from ``start_step``:
    step / total_steps < 1.
    """
    if step < start_step:
        return 0.0
    progress = step / max(1, total_steps)
    if progress < fade_from:
        return 1.0
    if progress >= end_fraction:
        return 0.0
    return (end_fraction - progress) / (end_fraction - fade_from)


def camera_directions(T_cam_to_obj: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) camera-to-object poses -> (B, 3) unit directions from the object-frame origin
    (the centre of the object's bounding sphere) to each camera centre."""
    return torch.nn.functional.normalize(T_cam_to_obj[:, :3, 3], dim=-1)


def unseen_view_weight(view_dirs: torch.Tensor, observed_dirs: torch.Tensor, seen_deg: float,
                       unseen_deg: float) -> torch.Tensor:
    """Weight of SDS viewpoints by their angle to the nearest observed camera direction.

    Args:
        view_dirs: (B, 3) unit directions of the SDS cameras; observed_dirs: (T, 3) unit
            directions of the input cameras (``camera_directions``), same frame.
        seen_deg, unseen_deg: 0 <= seen_deg < unseen_deg (degrees).
    Returns:
        (B,) weights: 0 where the angle is <= ``seen_deg`` (the view shows what a mask
        constrains), 1 where it is >= ``unseen_deg`` (no input camera looked from anywhere
        near), a smoothstep (C1, no kink for the optimiser to feel) in between.
    """
    cos = (view_dirs @ observed_dirs.T).amax(dim=-1).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.acos(cos))
    return smoothstep((angle - seen_deg) / (unseen_deg - seen_deg))


def sphere_directions(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(n, 3) unit vectors spread evenly over the sphere (Fibonacci lattice; deterministic)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = (1.0 - z * z).sqrt()
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).to(dtype=dtype, device=device)


def mean_view_weight(observed_dirs: torch.Tensor, seen_deg: float, unseen_deg: float, n: int = 1024) -> torch.Tensor:
    """Scalar: the mean ``unseen_view_weight`` over all view directions (``sphere_directions``),
    for observed camera directions ``observed_dirs`` (T, 3). SDS views are drawn uniformly
    over the sphere (``sample_views``), so this is the weighting's mean factor on the pull."""
    dirs = sphere_directions(n, observed_dirs.dtype, observed_dirs.device)
    return unseen_view_weight(dirs, observed_dirs, seen_deg, unseen_deg).mean()


class PriorGuidance:
    """The SDS term of the fit for one loaded prior (stateless apart from the frozen prior).

    Args:
        prior: a ``NoisePredictor`` (``GeometryPrior`` or ``TextPromptPrior``), frozen.
        category: the name the prior is conditioned on (in its vocabulary, or "unknown").
        hand_vert_uv: (V, 2) per-vertex uv of the hand model (``HandModel.vert_uv``).
        cfg: GuidanceConfig.
    """

    def __init__(self, prior, category: str, hand_vert_uv: torch.Tensor, cfg: GuidanceConfig):
        self.prior = prior
        self.category = category
        self.hand_vert_uv = hand_vert_uv
        self.cfg = cfg

    def schedule(self, step: int, total_steps: int) -> float:
        """Factor (0..1) of the SDS weight at ``step`` of a ``total_steps`` run (``sds_schedule``;
        the ``every`` cycle is not in it)."""
        c = self.cfg
        return sds_schedule(step, total_steps, c.start_step, c.fade_from, c.end_fraction)

    def active(self, step: int, total_steps: int) -> bool:
        """Whether step ``step`` (0-based) of a ``total_steps`` run gets an SDS evaluation (before
        its view is drawn: ``view_seen_deg`` may still skip it)."""
        c = self.cfg
        return (c.weight > 0 and step >= c.start_step and (step - c.start_step) % c.every == 0
                and self.schedule(step, total_steps) > 0)

    INFO_KEYS = ("sds", "sds_raw", "sds_t", "sds_grad", "sds_w")

    @classmethod
    def idle_info(cls) -> dict[str, float]:
        """The info of a step without SDS."""
        return {"sds": 0.0, "sds_raw": 0.0, "sds_t": -1.0, "sds_grad": 0.0, "sds_w": 0.0}

    def __call__(self, scene, step: int, total_steps: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, dict]:
        """Weighted SDS loss of ``scene`` at ``step``.

        Args:
            scene: ``hoirecon.fit.scene.HOIScene``.
            step: 0-based step index; total_steps: the run's step count (drives annealing).
            generator: CPU ``torch.Generator`` for the frame, the view, t and the noise (the
                loop's sampler generator, so a resumed run draws the same numbers).
        Returns:
            (loss, info): loss is a scalar tensor on the scene's device with gradients to
            the SDF parameters only, or None (before ``start_step`` / off-cycle / weight 0 /
            after the annealed end / a view next to an observed camera);
            info = {"sds": weighted loss, "sds_raw": unweighted loss, "sds_t": t, "sds_grad":
            RMS of the per-pixel SDS gradient w(t)(eps_hat - eps), "sds_w": the factor of
            ``weight`` x ``every`` applied (schedule x view weight)} (floats; ``idle_info()``,
            the same keys at 0 and t = -1, when loss is None, so log rows keep one layout). The SDS "loss"
            is a surrogate whose gradient is the SDS gradient; its value
            is not a distance (it swings with t and the noise), ``sds_grad`` is the better
            monitor.
        """
        if not self.active(step, total_steps):
            return None, self.idle_info()
        dev = scene.K.device
        frame = torch.randint(scene.num_frames, (1,), generator=generator).to(dev)
        centre = torch.zeros(3, device=dev)
        with torch.no_grad():
            verts, faces = scene.hand_verts_hand(frame)
            T_hand_to_obj = scene.T_hand_to_obj(frame)
            beta = scene.density.beta()
        factor = self.schedule(step, total_steps)
        views = None
        if self.cfg.view_weighting:
            # Draw the view first (the same random numbers the renderer would draw) to skip
            # the rendering and the prior where the view weighs nothing.
            views = draw_sds_views(T_hand_to_obj, verts, centre, self.cfg.render, generator)
            factor *= float(self.view_weight(scene, T_hand_to_obj, views.T_hand_to_view)[0])
            if factor <= 0:
                return None, self.idle_info()
        out, _ = score_distillation_loss(
            self.prior, self.category, scene.sdf.as_render_fn(), beta, T_hand_to_obj, verts, faces,
            self.hand_vert_uv.to(dev), centre, scene.sdf.radius,
            progress=step / max(1, total_steps), sds_cfg=self.cfg.sds, render_cfg=self.cfg.render,
            generator=generator, side=scene.side, views=views,
        )
        # x every: an SDS step stands in for the `every` steps of its cycle (see GuidanceConfig).
        # factor == 1 (the defaults) leaves the product bit-identical to the unscheduled one.
        loss = (self.cfg.weight * self.cfg.every * factor) * out.loss
        raw = float(out.loss.detach())
        return loss, {"sds": float(loss.detach()), "sds_raw": raw, "sds_t": float(out.t[0]),
                      "sds_grad": float(out.grad.pow(2).mean().sqrt()), "sds_w": factor}

    @torch.no_grad()
    def view_weight(self, scene, T_hand_to_obj: torch.Tensor, T_hand_to_view: torch.Tensor) -> torch.Tensor:
        """(B,) ``unseen_view_weight`` of SDS cameras ``T_hand_to_view`` (B, 4, 4) of frames whose
        hand-to-object poses are ``T_hand_to_obj`` (B, 4, 4), against all of ``scene``'s cameras
        (``HOIScene.T_cam_to_obj``, as fitted so far); over ``mean_view_weight`` with
        ``view_keep_pull``."""
        c = self.cfg
        T_view_to_obj = T_hand_to_obj @ invert_rigid(T_hand_to_view)
        observed = camera_directions(scene.T_cam_to_obj())
        w = unseen_view_weight(camera_directions(T_view_to_obj), observed, c.view_seen_deg, c.view_unseen_deg)
        if c.view_keep_pull:
            w = w / mean_view_weight(observed, c.view_seen_deg, c.view_unseen_deg).clamp_min(0.5)
        return w


def _load_prior(name: str, device: torch.device):
    """The ``NoisePredictor`` named by a ``GuidanceConfig.prior`` value, frozen, on ``device``."""
    if name == "hoirecon":
        from hoirecon.prior.model import load_geometry_prior

        return load_geometry_prior(None, device).requires_grad_(False)
    if name == "diffhoi":
        from hoirecon.backends.diffhoi_prior import alphas_cumprod, load_diffhoi_prior
        from hoirecon.prior.sds import TextPromptPrior

        model = load_diffhoi_prior(device)  # MissingWeightsError without the checkpoint
        return TextPromptPrior(model, alphas_cumprod=alphas_cumprod("sds"))
    path = Path(name).expanduser()
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        from hoirecon.prior.model import load_geometry_prior

        return load_geometry_prior(path, device).requires_grad_(False)  # UserError if absent / foreign
    raise UserError(f"unknown prior '{name}': choose one of {', '.join(PRIOR_NAMES)} or a path to a prior .pt file")


def is_no_prior(prior: str) -> bool:
    """Whether a ``GuidanceConfig.prior`` value (any case, spaces around) asks for no prior."""
    return str(prior).strip().lower() == "none"


def build_guidance(cfg: GuidanceConfig, hand_model, device: str | torch.device = "cpu") -> PriorGuidance | None:
    """Load the prior named by ``cfg.prior`` onto ``device`` and wrap it for the fit loop.

    Args:
        cfg: GuidanceConfig. hand_model: ``hoirecon.hand.HandModel`` (for ``vert_uv``).
        device: where the prior runs (the scene's device).
    Returns:
        PriorGuidance (its ``category``: the name the prior is conditioned on), or None for
        ``prior="none"``. Raises UserError for an unknown prior name, MissingWeightsError for
        "diffhoi" without its checkpoint.
    """
    if is_no_prior(cfg.prior):
        return None
    name = str(cfg.prior).strip()
    prior = _load_prior(name.lower() if name.lower() in PRIOR_NAMES else name, torch.device(device))
    return PriorGuidance(prior, prior_category(prior, category_name(cfg.category)),
                         hand_model.vert_uv.detach().to(device), cfg)


def prior_category(prior, category: str) -> str:
    """The name ``prior`` is conditioned on for ``category``: the name itself where the prior
    knows it (a text prior such as DiffHOI's reads any name), else "unknown", the
    unconditional branch a classifier-free-guided prior is trained with."""
    if not hasattr(prior, "category_ids"):  # free text
        return category
    try:
        prior.category_ids(category, 1)
    except UserError:
        return UNKNOWN
    return category
