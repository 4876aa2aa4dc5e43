"""Training data for the geometry prior: rendered synthetic grasps, written to one ``.npz``.

Recipe (``render_prior_dataset``): for each category, ``shapes_per_category`` procedural
objects (``hoirecon.synth.objects``, seeded; ``wide_shapes`` draws them from the wider
distribution, ``augment`` warps each one, ``hoirecon.prior.augment``), and as many (warped)
copies of each extra mesh file (``meshes``), ``grasps_per_shape`` right-hand power grasps
on each (``hoirecon.synth.grasp.place_grasp`` with a random hand shape, random thumb
direction along the part and the generator's random tilt/roll/slide), and
``views_per_grasp`` random viewpoints of each grasp (``hoirecon.prior.geometry
.sample_views`` around the midpoint of the hand's vertex centroid and the object's
bounding-box centre, the same sampler score distillation uses). A mesh file has no known
grasp: its grasps are searched as ``hoirecon synth --object-mesh`` searches them
(``mesh_grasp_candidates`` + ``search_grasp``). Each view gives one pair:
the encoded object image (5 channels) and hand condition (7 channels), rendered with the
exact hard rasterizer.

File layout (``np.load`` keys):

- ``object``: (N, 5, S, S) float16, encoded object images (``OBJECT_CHANNELS``);
- ``hand``: (N, 7, S, S) float16, encoded hand conditions (``HAND_CHANNELS``);
- ``category``: (N,) int16, index into ``categories``;
- ``categories``: (C,) str, the prior's vocabulary (``hoirecon.categories.CATEGORIES``);
- ``object_index``: (N,) int32, which object (0.. per file) the pair shows (procedural objects
  first, then the copies of each mesh file);
- ``T_hand_to_view``: (N, 4, 4) float32; ``K``: (N, 3, 3) float32;
- ``config``: JSON string of the ``RenderDataConfig`` used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hoirecon.categories import CATEGORIES, PAPER_CATEGORIES, UNKNOWN, category_name, normalize_category
from hoirecon.errors import RunError, UserError
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.prior.geometry import (
    ViewConfig,
    render_hand_condition,
    render_object_mesh,
    sample_views,
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RenderDataConfig:
    """What ``render_prior_dataset`` renders.

    categories: object categories (names of ``hoirecon.categories``).
    shapes_per_category: procedural objects per category.
    grasps_per_shape: hand placements per object.
    views_per_grasp: random viewpoints per placement.
    hand_shape_std: std of the random hand shape coefficients (10, Gaussian).
    view: viewpoint sampling (shared with score distillation).
    hand_model: hand backend ("anny" works offline).
    seed: base seed; object k of category c uses seed (seed, c, k); copy k of mesh m uses
        (seed, len(categories) + m, k).
    wide_shapes: draw the procedural objects from the wider distribution
        (``make_object_info(..., wide=True)``: every range twice as wide, flattened and box
        bodies, lids, spouts); off, they are the ``synth`` benchmark's distribution.
    augment: warp every object before its grasps are placed (``hoirecon.prior.augment``):
        each axis scaled by a log-uniform factor in ``axis_scale``, the cross-section tapered
        by up to ``max_taper`` and the length bent by up to ``max_bend`` half lengths.
    meshes: extra objects, (mesh file, category) pairs, each rendered ``copies_per_mesh``
        times (warped copies when ``augment``). The category is one of the prior's or
        ``unknown``: a name outside the vocabulary trains the unconditional branch, the branch
        ``fit --category NAME`` runs for such a name (``mesh_category``).
    """

    categories: tuple[str, ...] = PAPER_CATEGORIES
    shapes_per_category: int = 24
    grasps_per_shape: int = 3
    views_per_grasp: int = 10
    hand_shape_std: float = 0.8
    view: ViewConfig = field(default_factory=ViewConfig)
    hand_model: str = "anny"
    seed: int = 0
    wide_shapes: bool = False
    augment: bool = False
    axis_scale: tuple[float, float] = (0.8, 1.25)
    max_taper: float = 0.15
    max_bend: float = 0.1
    meshes: tuple[tuple[str, str], ...] = ()
    copies_per_mesh: int = 20


def mesh_category(name: str) -> str:
    """The label an extra mesh trains: its category if the prior knows it, else ``unknown``.

    Not the closest known category: a user's "can" or "duck" runs the unconditional branch
    at fit time (``hoirecon.categories``), so that is the branch that should learn it;
    filing it under "bottle" would teach the bottle prompt a shape nobody calls a bottle.
    """
    key = category_name(name)
    return key if key in CATEGORIES else UNKNOWN


def parse_mesh_spec(spec: str) -> tuple[str, str]:
    """``PATH[:CATEGORY]`` (``--mesh``) -> (path, label of ``mesh_category``; ``unknown`` without one)."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or "/" in name:
        path, name = str(spec), UNKNOWN
    if not Path(path).is_file():
        raise UserError(f"--mesh {spec}: no such file {path} (give PATH or PATH:CATEGORY)")
    return path, mesh_category(name or UNKNOWN)


@dataclass
class DatasetSummary:
    """What was written: path, number of pairs, per-category counts, failed grasps, seconds."""

    path: Path
    num_pairs: int
    per_category: dict
    failed_grasps: int
    seconds: float


def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


@torch.no_grad()
def render_grasp_views(
    hand_verts: torch.Tensor,
    hand_faces: torch.Tensor,
    vert_uv: torch.Tensor,
    obj_verts_hand: torch.Tensor,
    obj_faces: torch.Tensor,
    obj_center_hand: torch.Tensor,
    num_views: int,
    view: ViewConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Render one hand-object placement from ``num_views`` random viewpoints.

    Args:
        hand_verts: (V, 3) hand vertices in the hand frame; hand_faces: (F, 3);
        vert_uv: (V, 2); obj_verts_hand: (Vo, 3) object vertices in the hand frame;
        obj_faces: (Fo, 3); obj_center_hand: (3,) object centre in the hand frame.

    Returns:
        dict with ``object`` (n, 5, S, S), ``hand`` (n, 7, S, S), ``T_hand_to_view``
        (n, 4, 4), ``K`` (n, 3, 3); float32.
    """
    n = num_views
    center = 0.5 * (hand_verts.mean(0) + obj_center_hand)
    T, K = sample_views(center.expand(n, 3), view, generator)
    hv = transform_points(T, hand_verts.expand(n, -1, -1))
    ov = transform_points(T, obj_verts_hand.expand(n, -1, -1))
    look_at_z = transform_points(T, center.expand(n, 1, 3))[:, 0, 2]
    hand = render_hand_condition(hv, hand_faces, vert_uv, K, view.image_size, look_at_z)
    obj = render_object_mesh(ov, obj_faces, K, view.image_size, hand.z_ref)
    return {"object": obj, "hand": hand.image, "T_hand_to_view": T, "K": K}


@dataclass
class _TrainingObject:
    """One object to grasp and render: mesh (object frame), the signed distance the grasp
    search uses, and its grasp: a family's region (placed once) or candidates to search."""

    mesh: object
    sdf: object
    region: object = None
    candidates: list | None = None


def _procedural_object(cat: str, rng: np.random.Generator, cfg: RenderDataConfig) -> _TrainingObject:
    from hoirecon.prior.augment import sample_warp, warp_grasp, warp_mesh, warp_sdf
    from hoirecon.synth.objects import make_object_info

    info = make_object_info(cat, rng, wide=cfg.wide_shapes)
    if not cfg.augment:
        return _TrainingObject(info.mesh, info.sdf, info.grasp)
    warp = sample_warp(info.mesh, rng, cfg.axis_scale, cfg.max_taper, cfg.max_bend)
    return _TrainingObject(warp_mesh(info.mesh, warp), warp_sdf(info.sdf, warp), warp_grasp(info.grasp, warp))


def _mesh_object(mesh, rng: np.random.Generator, cfg: RenderDataConfig) -> _TrainingObject:
    from hoirecon.prior.augment import sample_warp, warp_mesh
    from hoirecon.synth.grasp import MeshSDF, mesh_grasp_candidates

    if cfg.augment:
        mesh = warp_mesh(mesh, sample_warp(mesh, rng, cfg.axis_scale, cfg.max_taper, cfg.max_bend))
    thumb = 1.0 if rng.random() < 0.5 else -1.0
    return _TrainingObject(mesh, MeshSDF(mesh), candidates=mesh_grasp_candidates(mesh, thumb))


def _grasp(hand, obj: _TrainingObject, shape: np.ndarray, rng: np.random.Generator):
    """A grasp on ``obj`` (``synth.grasp.Grasp``); RunError when none could be placed."""
    from hoirecon.synth.grasp import place_grasp, search_grasp

    if obj.candidates is not None:  # a mesh file: searched and checked as `synth --object-mesh` does
        return search_grasp(hand, obj.mesh, obj.sdf, obj.candidates, shape, rng).grasp
    thumb = float(rng.choice([-1.0, 1.0]))
    return place_grasp(hand, obj.sdf, obj.region, shape, rng, thumb_along_axis=thumb)


def render_prior_dataset(
    out: str | Path, cfg: RenderDataConfig = RenderDataConfig(), progress: Progress | None = None
) -> DatasetSummary:
    """Render the prior's training pairs and write them to ``out`` (.npz, layout above).

    Args:
        out: output file (written atomically: a temporary file renamed into place).
        cfg: what to render.
        progress: optional ``progress(done_objects, total_objects)`` callback.

    Raises:
        UserError: bad config or mesh file; RunError: no grasp could be placed at all.
    """
    from hoirecon.hand import build_hand_model
    from hoirecon.synth.objects import load_object_mesh

    t0 = time.perf_counter()
    out = Path(out)
    if min(cfg.shapes_per_category, cfg.grasps_per_shape, cfg.views_per_grasp, cfg.copies_per_mesh) < 1:
        raise UserError("render-data needs at least 1 shape, 1 mesh copy, 1 grasp and 1 view")
    if not 0 < cfg.axis_scale[0] <= cfg.axis_scale[1] or not 0 <= cfg.max_taper < 1 or cfg.max_bend < 0:
        raise UserError(f"render-data augmentation out of range: axis scale {cfg.axis_scale} (0 < lo <= hi), "
                        f"taper {cfg.max_taper} (0-1), bend {cfg.max_bend} (>= 0)")
    cats = [normalize_category(c) for c in cfg.categories]
    if UNKNOWN in cats:
        raise UserError("render-data renders real categories; 'unknown' is the prior's unconditional label")
    meshes = [(load_object_mesh(path).mesh, mesh_category(name)) for path, name in cfg.meshes]
    hand = build_hand_model(cfg.hand_model)
    faces = hand.faces
    vert_uv = hand.vert_uv
    chunks: dict[str, list] = {k: [] for k in ("object", "hand", "T_hand_to_view", "K", "category", "object_index")}
    per_category = {c: 0 for c in cats + [c for _, c in meshes]}
    failed = 0
    # (label, source index, procedural category or loaded mesh) of every object family to render
    sources = [(c, ci, c) for ci, c in enumerate(cats)] + [(c, len(cats) + mi, m) for mi, (m, c) in enumerate(meshes)]
    counts = [cfg.shapes_per_category] * len(cats) + [cfg.copies_per_mesh] * len(meshes)
    first_index = np.concatenate([[0], np.cumsum(counts)])  # object_index of each source's first object
    total = int(first_index[-1])
    done = 0
    gen = torch.Generator().manual_seed(cfg.seed)
    for label, si, source in sources:
        cat_id = CATEGORIES.index(label)
        for k in range(counts[si]):
            rng = _seed(cfg.seed, si, k)
            try:
                make = _procedural_object if isinstance(source, str) else _mesh_object
                obj = make(source, rng, cfg)
            except RunError:  # a wide draw whose mesh came out open: its grasps count as failed
                failed += cfg.grasps_per_shape
                done += 1
                continue
            obj_v = torch.as_tensor(np.asarray(obj.mesh.vertices), dtype=torch.float32)
            obj_f = torch.as_tensor(np.asarray(obj.mesh.faces), dtype=torch.long)
            for _ in range(cfg.grasps_per_shape):
                shape = (rng.normal(0.0, cfg.hand_shape_std, 10)).astype(np.float32)
                try:
                    grasp = _grasp(hand, obj, shape, rng)
                except RunError:
                    failed += 1
                    continue
                art = torch.as_tensor(grasp.articulation)[None]
                hv = hand(art, torch.zeros(1, 3), torch.as_tensor(shape)[None]).verts[0]
                T_obj_to_hand = invert_rigid(torch.as_tensor(grasp.T_hand_to_obj, dtype=torch.float32)[None])
                ov = transform_points(T_obj_to_hand, obj_v[None])[0]
                oc = T_obj_to_hand[0, :3, 3]  # object-frame origin = bounding-box centre
                views = render_grasp_views(hv, faces, vert_uv, ov, obj_f, oc, cfg.views_per_grasp, cfg.view, gen)
                for key in ("object", "hand"):
                    chunks[key].append(views[key].half().numpy())
                chunks["T_hand_to_view"].append(views["T_hand_to_view"].numpy())
                chunks["K"].append(views["K"].numpy())
                chunks["category"].append(np.full(cfg.views_per_grasp, cat_id, np.int16))
                chunks["object_index"].append(np.full(cfg.views_per_grasp, first_index[si] + k, np.int32))
                per_category[label] += cfg.views_per_grasp
            done += 1
            if progress is not None:
                progress(done, total)
    if not chunks["object"]:
        raise RunError("render-data placed no grasp on any object")
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    cfg_json = json.dumps(asdict(cfg))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, categories=np.array(CATEGORIES), config=np.array(cfg_json), **arrays)
    tmp.replace(out)
    return DatasetSummary(out, int(arrays["category"].shape[0]), per_category, failed, time.perf_counter() - t0)


@dataclass
class PriorDataset:
    """A loaded dataset (CPU tensors).

    object: (N, 5, S, S) float16; hand: (N, 7, S, S) float16; category: (N,) long ids into
    the file's ``categories`` (checked to equal the prior's vocabulary); config: dict.
    """

    object: torch.Tensor
    hand: torch.Tensor
    category: torch.Tensor
    categories: tuple[str, ...]
    config: dict

    def __len__(self) -> int:
        return int(self.category.shape[0])


def load_prior_dataset(path: str | Path) -> PriorDataset:
    """Read a file written by ``render_prior_dataset``. Raises UserError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prior dataset not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            obj, hand, cat = z["object"], z["hand"], z["category"]
            categories = tuple(str(c) for c in z["categories"])
            config = json.loads(str(z["config"]))
    except (KeyError, ValueError, OSError) as err:
        raise UserError(f"{path} is not a prior dataset (render it with `hoirecon prior render-data`): {err}") from err
    if obj.ndim != 4 or obj.shape[1] != 5 or hand.shape[1] != 7 or len(obj) != len(hand) or len(obj) != len(cat):
        raise UserError(f"{path}: inconsistent arrays object {obj.shape}, hand {hand.shape}, category {cat.shape}")
    return PriorDataset(torch.from_numpy(obj), torch.from_numpy(hand), torch.from_numpy(cat.astype(np.int64)),
                        categories, config)
