"""DDIM sampling from the geometry prior and the paper's B.1 figure (generations per hand).

Figure layout (``sample_figure``), one block of rows per hand:

- column "hand": the hand condition (rows: normal, depth, mask, uv);
- column "data" (when reference objects are given): the object the hand really held;
- then ``num_samples`` generations per category prompt (rows: normal, depth, mask, and the
  hand (blue) / object (red) masks overlaid; the model does not output that last row).

Normals are shown in DiffHOI's camera axes as RGB = 0.5 + 0.5 n; depth as a blue (near) to
red (far) ramp over +-15 cm around the hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hoirecon.categories import normalize_category
from hoirecon.errors import UserError
from hoirecon.prior.geometry import ViewConfig, geometry_panels, overlay_masks
from hoirecon.prior.model import GeometryPrior, load_geometry_prior

PAD = 2


@torch.no_grad()
def ddim_sample(
    model: GeometryPrior,
    hand_cond: torch.Tensor,
    category,
    num_steps: int = 50,
    guidance_scale: float = 4.0,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """Sample object images given hand conditions (classifier-free guided DDIM).

    Args:
        model: the prior; hand_cond: (B, 7, S, S); category: name, B names or ids (B,);
        num_steps: DDIM steps (trailing spacing: the first step is t = 999);
        guidance_scale: classifier-free guidance (4 = the paper's);
        generator: CPU torch.Generator for the initial noise (and eta > 0 noise).

    Returns:
        (B, 5, S, S) object images (``hoirecon.prior.geometry`` encoding).
    """
    B = hand_cond.shape[0]
    S = model.config.image_size
    device = hand_cond.device
    ids = model.category_ids(category, B, device)
    sched = model.ddim_scheduler(num_steps)
    x = torch.randn(B, 5, S, S, generator=generator).to(device)
    for t in sched.timesteps:
        eps = model.predict_noise(x, int(t), hand_cond, ids, guidance_scale=guidance_scale)
        noise = torch.randn(x.shape, generator=generator).to(device) if eta > 0 else None
        x = sched.step(eps, int(t), x, eta=eta, variance_noise=noise).prev_sample
    return x


def _tile(cells: list[list[np.ndarray | None]], cell: int) -> np.ndarray:
    """Rows x columns of (cell, cell, 3) uint8 images (None = blank) on a grey canvas."""
    rows, cols = len(cells), max(len(r) for r in cells)
    canvas = np.full((rows * (cell + PAD) + PAD, cols * (cell + PAD) + PAD, 3), 200, np.uint8)
    for i, row in enumerate(cells):
        for j, img in enumerate(row):
            if img is not None:
                y, x = PAD + i * (cell + PAD), PAD + j * (cell + PAD)
                canvas[y : y + cell, x : x + cell] = img
    return canvas


def _label(image: np.ndarray, labels: list[tuple[int, str]], height: int = 14) -> np.ndarray:
    """Add a header strip with text labels at the given x positions."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (image.shape[1], height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for x, text in labels:
        draw.text((x + 2, 1), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), image], axis=0)


@torch.no_grad()
def sample_figure(
    model: GeometryPrior,
    hand_cond: torch.Tensor,
    categories: Sequence[str],
    num_samples: int = 4,
    reference_objects: torch.Tensor | None = None,
    num_steps: int = 50,
    guidance_scale: float = 4.0,
    seed: int = 0,
    scale: int = 2,
) -> np.ndarray:
    """The B.1 figure: generations for each hand under each category prompt.

    Args:
        hand_cond: (H, 7, S, S) hand conditions; categories: prompts (each gets
        ``num_samples`` columns); reference_objects: optional (H, 5, S, S) true objects;
        seed: noise seed (the same noise is used for every category, so columns differ only
        by the prompt); scale: nearest-neighbour upscaling of each panel.

    Returns:
        (rows, cols, 3) uint8 image.
    """
    H = hand_cond.shape[0]
    device = next(model.parameters()).device
    hand_cond = hand_cond.to(device)
    hand_rows = geometry_panels(hand_cond)  # (H, 4, S, S, 3)
    samples = {}
    for name in categories:
        gen = torch.Generator().manual_seed(seed)
        cond = hand_cond.repeat_interleave(num_samples, 0)
        samples[name] = ddim_sample(model, cond, name, num_steps, guidance_scale, gen).cpu()
    cells: list[list[np.ndarray | None]] = []
    for h in range(H):
        block: list[list[np.ndarray | None]] = [[hand_rows[h, r]] for r in range(4)]
        if reference_objects is not None:
            ref = reference_objects[h : h + 1].cpu()
            panels = geometry_panels(ref)[0]
            ov = overlay_masks(hand_cond[h : h + 1].cpu(), ref)[0]
            for r in range(3):
                block[r].append(panels[r])
            block[3].append(ov)
        for name in categories:
            objs = samples[name][h * num_samples : (h + 1) * num_samples]
            panels = geometry_panels(objs)
            ov = overlay_masks(hand_cond[h : h + 1].cpu().expand(len(objs), -1, -1, -1), objs)
            for k in range(len(objs)):
                for r in range(3):
                    block[r].append(panels[k, r])
                block[3].append(ov[k])
        cells.extend(block)
    S = hand_cond.shape[-1]
    image = _tile(cells, S)
    if scale > 1:
        image = np.kron(image, np.ones((scale, scale, 1), np.uint8))
    step = (S + PAD) * scale
    labels = [(PAD * scale, "hand")]
    col = 1
    if reference_objects is not None:
        labels.append((PAD * scale + col * step, "data"))
        col += 1
    for name in categories:
        labels.append((PAD * scale + col * step, f"'{name}' x{num_samples}"))
        col += num_samples
    return _label(image, labels)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG (parent folders created)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    return path


def write_training_grid(
    model: GeometryPrior,
    hand_cond: torch.Tensor,
    objects: torch.Tensor,
    categories: Sequence[str],
    path: str | Path,
    num_steps: int = 25,
    seed: int = 0,
) -> Path:
    """The periodic grid of ``train_prior``: the figure with 2 samples per category."""
    was_training = model.training
    model.eval()
    try:
        image = sample_figure(model, hand_cond, categories, 2, objects, num_steps, seed=seed)
    finally:
        model.train(was_training)
    return write_png(path, image)


@torch.no_grad()
def synthetic_hand_conditions(
    category: str, num_hands: int = 2, seed: int = 0, view: ViewConfig = ViewConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand conditions of synthetic grasps of ``category`` (a fresh procedural object per hand,
    seeds outside the training set's range) and the objects they hold.

    Returns:
        hand_cond (num_hands, 7, S, S), objects (num_hands, 5, S, S).
    """
    from hoirecon.errors import RunError
    from hoirecon.geometry.transforms import invert_rigid, transform_points
    from hoirecon.hand import build_hand_model
    from hoirecon.prior.data import render_grasp_views
    from hoirecon.synth.grasp import place_grasp
    from hoirecon.synth.objects import make_object_info

    name = normalize_category(category)
    if name == "unknown":
        raise UserError("pick a real category to draw the hands from (not 'unknown')")
    hand = build_hand_model("anny")
    gen = torch.Generator().manual_seed(seed)
    hands, objs = [], []
    attempt = 0
    while len(hands) < num_hands:
        if attempt > 5 * num_hands:
            raise RunError(f"could not place a hand on a synthetic {name}")
        rng = np.random.default_rng(np.random.SeedSequence([10_000 + seed, attempt]))
        attempt += 1
        info = make_object_info(name, rng)
        shape = rng.normal(0.0, 0.8, 10).astype(np.float32)
        try:
            grasp = place_grasp(hand, info.sdf, info.grasp, shape, rng)
        except RunError:
            continue
        hv = hand(torch.as_tensor(grasp.articulation)[None], torch.zeros(1, 3), torch.as_tensor(shape)[None]).verts[0]
        T_obj_to_hand = invert_rigid(torch.as_tensor(grasp.T_hand_to_obj, dtype=torch.float32)[None])
        obj_verts = torch.as_tensor(np.asarray(info.mesh.vertices), dtype=torch.float32)[None]
        ov = transform_points(T_obj_to_hand, obj_verts)[0]
        obj_faces = torch.as_tensor(np.asarray(info.mesh.faces))
        views = render_grasp_views(hv, hand.faces, hand.vert_uv, ov, obj_faces, T_obj_to_hand[0, :3, 3], 1, view, gen)
        hands.append(views["hand"])
        objs.append(views["object"])
    return torch.cat(hands), torch.cat(objs)


def write_sample_grid(
    out: str | Path,
    category: str,
    weights: str | Path | None = None,
    compare: Sequence[str] | None = None,
    num_hands: int = 2,
    num_samples: int = 4,
    num_steps: int = 50,
    guidance_scale: float = 4.0,
    seed: int = 0,
    device=None,
) -> Path:
    """``hoirecon prior sample``: hands grasping synthetic ``category`` objects, with samples
    under the prompt ``category`` and under each ``compare`` prompt (B.1's left/right).

    Args:
        out: PNG path; weights: prior file (None = the shipped weights);
        compare: other prompts shown with the same hands (a prompt equal to ``category``
            is skipped); None = "knife" ("mug" when ``category`` is knife).
    """
    model = load_geometry_prior(weights, device)
    name = normalize_category(category)
    if compare is None:
        compare = ("mug",) if name == "knife" else ("knife",)
    prompts = [name] + [normalize_category(c) for c in compare if normalize_category(c) != name]
    hands, objs = synthetic_hand_conditions(name, num_hands, seed)
    image = sample_figure(model, hands, prompts, num_samples, objs, num_steps, guidance_scale, seed)
    return write_png(out, image)
