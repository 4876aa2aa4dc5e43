"""`hoirecon eval`: score a reconstruction against the ground truth of a synthetic clip.

Reads the fit output contract (``<out>/fit/poses.npz`` + ``<out>/fit/object.ply``, or a
mesh given explicitly) and, when present, the hand initialisation (``<out>/hand/hands.npz``),
and the ground truth written by ``hoirecon synth`` (``<gt>/gt/gt.npz`` + ``<gt>/gt/object.ply``).

Metrics (``hoirecon.eval.metrics``; the paper's protocol, the authors' evaluation code):

- ``f5``, ``f10``: object F-score at 5 / 10 mm after aligning the predicted mesh to the true
  one (similarity ICP, several rotation starts), 10,000 surface samples each.
- ``cd``: object Chamfer distance (cm^2) after the same alignment.
- ``cd_h``: hand-object Chamfer distance (cm^2): no alignment; each frame's object goes
  into that frame's hand frame with the predicted (resp. true) ``T_hand_to_obj``, averaged
  over frames.
- ``kp_cam_mm``: mean hand keypoint error (mm) in the camera frame, keypoints of the hand
  model (21, MediaPipe order) with the predicted vs. the true parameters
  (articulation, shape, ``T_cam_to_hand``; the hand model named by the file's ``hand_model``
  key, default anny); ``kp_rel_mm``: the same after subtracting each
  frame's wrist (root-relative: articulation + shape + orientation only).

- ``cd_h_true_object``: CD_h of the *true* object at its true position in the camera,
  expressed in the evaluated hand frames (``T_hand_to_obj = T_cam_to_obj_true @
  inv(T_cam_to_hand)``): what the hand-pose errors alone cost (0 for true hand poses).

The initialisation is scored too (``init``): the hand numbers of ``hand/hands.npz``, and,
when the fit stage saved them, its starting object and object poses
(``fit/object_init.ply`` + ``fit/init.npz``: the visual hull) for ``f5``, ``f10``, ``cd``
and ``cd_h``, so a reader sees what the optimisation gained.

Writes ``<out>/eval.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from hoirecon.errors import RunError, UserError
from hoirecon.eval.metrics import hand_object_chamfer, keypoint_error_mm, object_metrics, sample_surface
from hoirecon.hand import build_hand_model
from hoirecon.stages.outputs import EvalOutput, FitOutput, FitPoses, GroundTruth, HandsOutput

__all__ = ["resolve_gt_dir", "load_ground_truth", "hand_keypoints_cam", "evaluate", "print_eval_table"]

def resolve_gt_dir(gt_dir: str | Path) -> Path:
    """The folder holding ``gt.npz``: ``gt_dir/gt`` (a synth output folder) or ``gt_dir`` itself."""
    gt_dir = Path(gt_dir)
    for candidate in (gt_dir / GroundTruth.DIR, gt_dir):
        if (candidate / GroundTruth.FILE).is_file():
            return candidate
    raise UserError(f"no ground truth in {gt_dir}: expected {GroundTruth.file(gt_dir)} (written by 'hoirecon synth')")


def _load_mesh(path: Path, what: str) -> trimesh.Trimesh:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as err:  # trimesh raises many types for unreadable files
        raise UserError(f"cannot read {what} {path}: {err}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise RunError(f"{what} {path} is empty (no triangles)")
    # The metrics raise ValueError on these; a mesh given by the user is bad input.
    if not np.isfinite(mesh.vertices).all():
        raise UserError(f"{what} {path} has non-finite coordinates")
    if not mesh.area > 0:
        raise UserError(f"{what} {path} has zero surface area; cannot sample points on it")
    return mesh


def load_ground_truth(gt_dir: str | Path) -> tuple[GroundTruth, trimesh.Trimesh]:
    """(gt.npz, object mesh) of a synthetic clip."""
    folder = resolve_gt_dir(gt_dir)
    return GroundTruth.load(folder), _load_mesh(folder / GroundTruth.MESH_FILE, "ground-truth mesh")


def _side(side: str | None) -> str:
    side = side if side is not None else "right"
    if side not in ("right", "left"):
        raise UserError(f"hand side must be 'right' or 'left', got {side!r}")
    return side


def _poses(poses: np.ndarray, key: str, n: int, what: str) -> np.ndarray:
    """``poses`` (n, 4, 4) as float64; UserError naming ``key`` when the frame count differs from the
    ground truth's ``n``, RunError when not finite."""
    T = np.asarray(poses, dtype=np.float64)
    if T.shape != (n, 4, 4):
        raise UserError(f"{what}: {key} has shape {T.shape}, the ground truth has {n} frames")
    if not np.isfinite(T).all():
        raise RunError(f"{what}: {key} has non-finite values")
    return T


@torch.no_grad()
def hand_keypoints_cam(hand, T_cam_to_hand: np.ndarray, articulation: np.ndarray, shape: np.ndarray,
                       side: str = "right") -> np.ndarray:
    """Hand keypoints in the camera frame.

    Args:
        hand: a ``HandModel``.
        T_cam_to_hand: (T, 4, 4); articulation: (T, 45); shape: (10,) or (T, 10).
    Returns:
        (T, 21, 3) float64, MediaPipe order, metres.
    """
    art = torch.as_tensor(np.asarray(articulation, dtype=np.float32))
    n = art.shape[0]
    shp = torch.as_tensor(np.asarray(shape, dtype=np.float32)).reshape(-1, 10)
    kp = hand(art.reshape(n, 45), torch.zeros(n, 3), shp, side=side).keypoints.double().numpy()
    T_hand_to_cam = np.linalg.inv(np.asarray(T_cam_to_hand, dtype=np.float64))
    return kp @ np.swapaxes(T_hand_to_cam[:, :3, :3], 1, 2) + T_hand_to_cam[:, None, :3, 3]


def _hand_errors(kp_pred: np.ndarray, kp_gt: np.ndarray) -> dict:
    cam = keypoint_error_mm(kp_pred, kp_gt)
    rel = keypoint_error_mm(kp_pred, kp_gt, root_relative=True)
    return {
        "kp_cam_mm": float(cam.mean()),
        "kp_rel_mm": float(rel.mean()),
        "per_frame": {"kp_cam_mm": [round(float(v), 3) for v in cam], "kp_rel_mm": [round(float(v), 3) for v in rel]},
    }


class _Scorer:
    """Scores reconstructions of one synthetic clip against its ground truth (the clip's ``n``
    frames, its mesh sampled at ``n_points``); hand models are built once per name."""

    def __init__(self, gt: GroundTruth, gt_mesh: trimesh.Trimesh, n_points: int, seed: int):
        self.n = int(np.asarray(gt.T_cam_to_hand).shape[0])
        T_cam_to_hand_gt = _poses(gt.T_cam_to_hand, "T_cam_to_hand", self.n, "ground truth")
        self.T_hand_to_obj_gt = _poses(gt.T_hand_to_obj, "T_hand_to_obj", self.n, "ground truth")
        self.gt_mesh, self.n_points, self.seed = gt_mesh, n_points, seed
        self._models: dict[str, object] = {}
        self.kp_gt = hand_keypoints_cam(self.hand_model(gt.hand_model), T_cam_to_hand_gt, gt.articulation, gt.shape,
                                        _side(gt.side))
        self.gt_pts = sample_surface(gt_mesh.vertices, gt_mesh.faces, n_points, seed + 1)
        self.T_cam_to_obj_gt = self.T_hand_to_obj_gt @ T_cam_to_hand_gt

    def hand_model(self, name: str | None):
        # The parameters mean something only for the model that produced them (None: files
        # that do not record it, which are anny's).
        name = name or "anny"
        if name not in self._models:
            self._models[name] = build_hand_model(name)
        return self._models[name]

    def object_scores(self, mesh_path: Path, T_hand_to_obj: np.ndarray, what: str) -> dict:
        mesh = _load_mesh(mesh_path, what)
        gt_mesh = self.gt_mesh
        obj = object_metrics(mesh.vertices, mesh.faces, gt_mesh.vertices, gt_mesh.faces, n=self.n_points,
                             seed=self.seed)
        pred_pts = sample_surface(mesh.vertices, mesh.faces, self.n_points, self.seed)
        return {
            "mesh": str(mesh_path),
            "object": {k: (np.asarray(v).tolist() if k == "transform" else float(v)) for k, v in obj.items()},
            "cd_h": hand_object_chamfer(pred_pts, T_hand_to_obj, self.gt_pts, self.T_hand_to_obj_gt),
        }

    def hand_scores(self, T_cam_to_hand: np.ndarray, articulation: np.ndarray, shape: np.ndarray, side: str,
                    hand_model: str | None) -> dict:
        kp = hand_keypoints_cam(self.hand_model(hand_model), T_cam_to_hand, articulation, shape, side)
        # The true object, where it truly is in the camera, seen from these hand frames.
        T_hand_to_true_obj = self.T_cam_to_obj_gt @ np.linalg.inv(T_cam_to_hand)
        return {"hand": _hand_errors(kp, self.kp_gt),
                "cd_h_true_object": hand_object_chamfer(self.gt_pts, T_hand_to_true_obj, self.gt_pts,
                                                        self.T_hand_to_obj_gt)}


def _fit_scores(scorer: _Scorer, fit_dir: Path, pred_mesh: str | Path | None) -> dict | None:
    """The fit's object and hand (``fit/poses.npz``, its mesh or ``pred_mesh``); None without a fit."""
    if not (fit_dir / FitPoses.FILE).is_file() and pred_mesh is None:
        return None
    n = scorer.n
    poses = FitPoses.load(fit_dir)
    T_hand_to_obj = _poses(poses.T_hand_to_obj, "T_hand_to_obj", n, "fit poses")
    T_cam_to_hand = _poses(poses.T_cam_to_hand, "T_cam_to_hand", n, "fit poses")
    mesh_path = Path(pred_mesh) if pred_mesh is not None else fit_dir / FitOutput.MESH
    # the fit's poses record no hand model: its articulation is the hand stage's model's (anny by default)
    return {**scorer.object_scores(mesh_path, T_hand_to_obj, "predicted mesh"),
            **scorer.hand_scores(T_cam_to_hand, poses.articulation, poses.shape, poses.side, None)}


def _init_scores(scorer: _Scorer, out_dir: Path) -> dict | None:
    """The hand stage's hand and, when the fit saved them, its starting object and object poses;
    None without a hand stage."""
    if not (out_dir / "hand" / HandsOutput.FILE).is_file():
        return None
    n, fit_dir = scorer.n, out_dir / "fit"
    hands = HandsOutput.load(out_dir / "hand")
    init = scorer.hand_scores(_poses(hands.T_cam_to_hand, "T_cam_to_hand", n, "hand initialisation"),
                              hands.articulation, hands.shape, hands.side, hands.hand_model)
    # The fit stage also saves its starting object (visual hull) and object poses.
    if (fit_dir / FitOutput.INIT_MESH).is_file() and (fit_dir / FitOutput.INIT).is_file():
        T_start = _poses(FitOutput.initial_T_hand_to_obj(fit_dir), "T_hand_to_obj", n, "fit initialisation")
        init.update(scorer.object_scores(fit_dir / FitOutput.INIT_MESH, T_start, "initial mesh"))
    return init


def evaluate(
    out_dir: str | Path,
    gt_dir: str | Path,
    pred_mesh: str | Path | None = None,
    n_points: int = 10000,
    seed: int = 0,
    write: bool = True,
) -> dict:
    """Score ``out_dir`` (fit results and/or the hand initialisation) against ``gt_dir``.

    Args:
        out_dir: a pipeline output folder (``fit/`` and/or ``hand/``).
        gt_dir: a ``hoirecon synth`` folder (or its ``gt/`` subfolder).
        pred_mesh: object mesh to score instead of ``<out>/fit/object.ply`` (object frame of
            the fit, so that ``fit/poses.npz`` applies to it).
        n_points: surface samples per mesh.
        seed: sampling/alignment seed.
        write: write ``<out>/eval.json``.

    Returns:
        {"out_dir", "gt_dir", "category", "num_frames", "fit": {...} | None,
        "init": {...} | None, "seconds"} (see the module docstring for the metrics).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"output folder not found: {out_dir}")
    gt, gt_mesh = load_ground_truth(gt_dir)
    scorer = _Scorer(gt, gt_mesh, n_points, seed)
    fit = _fit_scores(scorer, out_dir / "fit", pred_mesh)
    init = _init_scores(scorer, out_dir)
    if fit is None and init is None:
        raise UserError(f"nothing to evaluate in {out_dir}: no fit/{FitPoses.FILE} and no hand/{HandsOutput.FILE}")

    result = {
        "out_dir": str(out_dir),
        "gt_dir": str(resolve_gt_dir(gt_dir)),
        "category": gt.category,
        "num_frames": scorer.n,
        "n_points": n_points,
        "fit": fit,
        "init": init,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if write:
        EvalOutput.save(out_dir, result)
    return result


def _fmt(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_eval_table(result: dict, console=None) -> None:
    """Print ``evaluate``'s result as a table (rich): metric | initialisation | fit."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    fit, init = result.get("fit") or {}, result.get("init") or {}
    table = Table(title=f"hoirecon eval — {result.get('category') or 'object'}, {result['num_frames']} frames",
                  caption="CD in cm² after alignment; CD_h in cm² in the hand frame, no alignment. "
                          "Init: hand/hands.npz, and the fit's starting object (visual hull) when saved. "
                          "'true object' rows: the true object at its true camera pose, in the hand frames "
                          "(hand-pose error only).")
    table.add_column("metric")
    table.add_column("init", justify="right")
    table.add_column("fit", justify="right")
    table.add_column("better", justify="center")

    def get(block: dict, *keys):
        for k in keys:
            block = block.get(k) if isinstance(block, dict) else None
        return block

    rows = [
        ("F@5mm ↑", ("object", "f5"), 3, True),
        ("F@10mm ↑", ("object", "f10"), 3, True),
        ("CD (cm²) ↓", ("object", "cd"), 3, False),
        ("CD_h (cm²) ↓", ("cd_h",), 2, False),
        ("CD_h, true object (cm²) ↓", ("cd_h_true_object",), 2, False),
        ("hand kp, camera (mm) ↓", ("hand", "kp_cam_mm"), 1, False),
        ("hand kp, root-rel. (mm) ↓", ("hand", "kp_rel_mm"), 1, False),
    ]
    for name, keys, digits, higher_better in rows:
        a, b = get(init, *keys), get(fit, *keys)
        better = ""
        if a is not None and b is not None and a != b:
            better = "[green]fit[/green]" if (b > a) == higher_better else "[red]init[/red]"
        table.add_row(name, _fmt(a, digits), _fmt(b, digits), better)
    console.print(table)
