"""Benchmark of `hoirecon fit` (issue 5): object F@5/F@10/CD and CD_h on synthetic clips.

For each of the six categories: a synthetic clip with ground-truth masks and a noisy hand
initialisation, then the fit stage (``--preset fast``), then the paper's metrics
(``hoirecon.eval.metrics``). Also the ``paper`` preset on one category for the same wall
time as ``fast``. Writes its table into BENCHMARKS.md between the ``bench_fit`` markers.

Clips come from ``hoirecon.synth.generator`` when it exists; otherwise from ``make_clip``
below (object from ``hoirecon.synth.objects``, hand placed against it on the palm side
without penetration, camera orbiting the hand by +-35 degrees, masks rendered with
``render_mesh_image``; init noise: articulation N(0, 0.05 rad), camera rotation
N(0, 2 deg), camera translation N(0, 5 mm) per frame and axis).

Usage: .venv/bin/python benchmarks/bench_fit.py [--categories mug,...] [--frames 30]
       [--steps N] [--paper-category mug] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hoirecon.eval.metrics import hand_object_chamfer, object_metrics, sample_surface  # noqa: E402
from hoirecon.geometry.rotations import axis_angle_to_matrix  # noqa: E402
from hoirecon.hand import build_hand_model  # noqa: E402
from hoirecon.io.masks import write_mask_folder  # noqa: E402
from hoirecon.render.mesh import render_mesh_image  # noqa: E402
from hoirecon.synth.objects import CATEGORIES, make_object_info  # noqa: E402


def _look_at(eye: np.ndarray, target: np.ndarray, up=np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """T_world_to_cam (4, 4) of an OpenCV camera at ``eye`` looking at ``target``."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0, 0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def make_clip(category: str, out: Path, n_frames: int = 30, size: int = 256, seed: int = 0) -> dict:
    """Write ``out/frames``, ``out/masks``, ``out/hand`` (as external stages) and return GT."""
    from hoirecon.pipeline.runner import write_external_stage

    rng = np.random.default_rng(seed)
    info = make_object_info(category, seed)
    mesh = info.mesh
    hand_model = build_hand_model("anny")
    art = torch.zeros(1, 45)
    art[0, 2::3] = 0.0
    # Mild flexion of the four fingers (about the hand frame's z axis) and a neutral thumb.
    for j in range(12):
        art[0, 3 * j + 2] = 0.35 if j % 3 == 0 else 0.25
    shape = torch.zeros(10)
    with torch.no_grad():
        hv = hand_model(art, torch.zeros(1, 3), shape[None]).verts[0].numpy().astype(np.float64)
        faces_h = hand_model.faces_for("right").numpy()
    # Object: random orientation, placed on the palm side (-y) of the palm centre, moved
    # out until no hand vertex is inside it (GT without penetration).
    R_o = axis_angle_to_matrix(torch.as_tensor(rng.normal(size=3) * 1.0, dtype=torch.float32)).numpy().astype(np.float64)
    palm = hv.mean(0)
    sdf = info.sdf
    offset = 0.0
    for _ in range(200):
        c = palm + np.array([0.0, -offset, 0.0])
        # object point = R_o^T (x_hand - c)
        d = sdf((hv - c) @ R_o)
        if d.min() > 0.002:
            break
        offset += 0.003
    T_hand_to_obj = np.eye(4)
    T_hand_to_obj[:3, :3] = R_o.T
    T_hand_to_obj[:3, 3] = -R_o.T @ c
    obj_v_hand = mesh.vertices @ R_o.T + c
    centre = 0.5 * (palm + c)
    f = size * 1.25
    K = np.array([[f, 0, size / 2 - 0.5], [0, f, size / 2 - 0.5], [0, 0, 1.0]])
    T_c2h = []
    ext = max(mesh.extents.max(), 0.1)
    dist = 2.2 * ext * 1.25 + 0.1
    for t in range(n_frames):
        a = np.deg2rad(-35 + 70 * t / max(1, n_frames - 1))
        el = np.deg2rad(25 + 10 * np.sin(2 * np.pi * t / n_frames))
        eye = centre + dist * np.array([np.sin(a) * np.cos(el), np.sin(el), np.cos(a) * np.cos(el)])
        T_h2c = _look_at(eye, centre, up=np.array([0.0, 1.0, 0.0]))
        T_c2h.append(np.linalg.inv(T_h2c))
    T_c2h = np.stack(T_c2h)
    T_h2c = np.linalg.inv(T_c2h)
    vh = torch.as_tensor(np.einsum("tij,nj->tni", T_h2c[:, :3, :3], hv) + T_h2c[:, None, :3, 3], dtype=torch.float32)
    vo = torch.as_tensor(np.einsum("tij,nj->tni", T_h2c[:, :3, :3], obj_v_hand) + T_h2c[:, None, :3, 3],
                         dtype=torch.float32)
    Kt = torch.as_tensor(K, dtype=torch.float32).expand(n_frames, 3, 3)
    with torch.no_grad():
        rh = render_mesh_image(vh, torch.as_tensor(faces_h), Kt, size, size)
        ro = render_mesh_image(vo, torch.as_tensor(mesh.faces, dtype=torch.long), Kt, size, size)
    mh = (rh.mask > 0.5).numpy()
    mo = (ro.mask > 0.5).numpy()
    dh = np.where(rh.depth.numpy() > 0, rh.depth.numpy(), np.inf)
    do = np.where(ro.depth.numpy() > 0, ro.depth.numpy(), np.inf)
    hand_lab = mh & (~mo | (dh <= do))
    obj_lab = mo & ~hand_lab
    # Noisy hand initialisation.
    noisy_art = art.numpy().repeat(n_frames, 0) + rng.normal(0, 0.05, (n_frames, 45))
    T_noise = np.stack([np.eye(4)] * n_frames)
    rot_noise = axis_angle_to_matrix(torch.as_tensor(rng.normal(0, np.deg2rad(2.0), (n_frames, 3)),
                                                     dtype=torch.float32)).numpy()
    T_noise[:, :3, :3] = rot_noise
    T_noise[:, :3, 3] = rng.normal(0, 0.005, (n_frames, 3))
    T_c2h_init = T_noise @ T_c2h

    def frames_writer(d: Path) -> None:
        import cv2

        for t in range(n_frames):
            img = np.full((size, size, 3), 90, np.uint8)
            img[hand_lab[t]] = (200, 160, 140)
            img[obj_lab[t]] = (60, 120, 200)
            cv2.imwrite(str(d / f"{t:06d}.png"), img[..., ::-1])
        (d / "meta.json").write_text(json.dumps({"fps": 10.0, "num_frames": n_frames, "size": [size, size],
                                                 "original_size": [size, size], "stride": 1, "source": "bench",
                                                 "source_digest": "bench", "source_kind": "images"}))

    def hand_writer(d: Path) -> None:
        np.savez(d / "hands.npz", K=K.astype(np.float32), T_cam_to_hand=T_c2h_init.astype(np.float32),
                 articulation=noisy_art.astype(np.float32), shape=np.zeros(10, np.float32), side=np.array("right"),
                 valid=np.ones(n_frames, bool))

    out.mkdir(parents=True, exist_ok=True)
    write_external_stage(out, "frames", frames_writer, "bench_fit")
    write_external_stage(out, "masks", lambda d: write_mask_folder(d, hand_lab, obj_lab), "bench_fit")
    write_external_stage(out, "hand", hand_writer, "bench_fit")
    gt = {"obj_verts": mesh.vertices, "obj_faces": mesh.faces, "T_hand_to_obj": np.stack([T_hand_to_obj] * n_frames),
          "T_cam_to_hand": T_c2h}
    np.savez(out / "gt.npz", **gt)
    return gt


def score(fit_dir: Path, gt: dict) -> dict:
    import trimesh

    pred = trimesh.load(fit_dir / "object.ply", force="mesh")
    poses = np.load(fit_dir / "poses.npz")
    om = object_metrics(pred.vertices, pred.faces, gt["obj_verts"], gt["obj_faces"])
    pp = sample_surface(pred.vertices, pred.faces, 3000, 0)
    gp = sample_surface(gt["obj_verts"], gt["obj_faces"], 3000, 1)
    cdh = hand_object_chamfer(pp, poses["T_hand_to_obj"], gp, gt["T_hand_to_obj"])
    return {"f5": om["f5"], "f10": om["f10"], "cd": om["cd"], "cd_h": cdh}


START, END = "<!-- bench_fit:start -->", "<!-- bench_fit:end -->"


def render_table(rows: list[dict], note: str) -> str:
    """Markdown of the seed's tables 6/7 layout: per category F@5, F@10, CD, CD_h (+ mean)."""
    cats = [r["category"] for r in rows]
    head = "| metric | " + " | ".join(cats) + " | mean |\n|---|" + "---|" * (len(cats) + 1) + "\n"
    lines = []
    for key, name, fmt in (("f5", "F@5 ^", "{:.2f}"), ("f10", "F@10 ^", "{:.2f}"), ("cd", "CD (cm^2) v", "{:.2f}"),
                           ("cd_h", "CD_h (cm^2) v", "{:.1f}"), ("init_cd_h", "CD_h of the init (cm^2)", "{:.1f}"),
                           ("seconds", "wall time (s)", "{:.0f}"), ("peak_rss_gb", "peak RSS (GB)", "{:.2f}")):
        vals = [r.get(key) for r in rows]
        if any(v is None for v in vals):
            continue
        lines.append(f"| {name} | " + " | ".join(fmt.format(v) for v in vals) + " | "
                     + fmt.format(float(np.mean(vals))) + " |")
    return head + "\n".join(lines) + "\n\n" + note + "\n"


def write_benchmarks_md(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{START}\n{text}{END}"
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## fit (issue 5)\n\n" + block + "\n"
    path.write_text(doc)


def init_cd_h(fit_dir: Path, gt: dict) -> float:
    """CD_h of the initialisation (visual hull with the initial poses)."""
    import trimesh

    m = trimesh.load(fit_dir / "object_init.ply", force="mesh")
    init = np.load(fit_dir / "init.npz")
    return hand_object_chamfer(sample_surface(m.vertices, m.faces, 3000, 0), init["T_hand_to_obj"],
                               sample_surface(gt["obj_verts"], gt["obj_faces"], 3000, 1), gt["T_hand_to_obj"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--work", default="/tmp/bench_fit")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--table-from", default=None, help="write the table from JSON rows (one per line) and exit")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    if args.table_from:
        rows = [json.loads(line) for line in Path(args.table_from).read_text().splitlines() if line.startswith("{")]
        write_benchmarks_md(render_table(rows, args.note))
        return
    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.fit import STAGE, FitConfig

    torch.set_num_threads(1)
    rows = []
    for cat in args.categories.split(","):
        out = Path(args.work) / cat
        gt = make_clip(cat, out, args.frames)
        cfg = FitConfig(preset=args.preset, steps=args.steps)
        t0 = time.perf_counter()
        run_stage(out, STAGE, cfg, force=True)
        sec = time.perf_counter() - t0
        m = score(out / "fit", gt)
        summ = json.loads((out / "fit" / "summary.json").read_text())
        m.update(category=cat, seconds=sec, init_cd_h=init_cd_h(out / "fit", gt), steps=summ["steps"],
                 peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
        print(json.dumps(m), flush=True)
        rows.append(m)
        (Path(args.work) / f"results_{args.preset}.json").write_text(json.dumps(rows, indent=2))
    if not args.no_write:
        write_benchmarks_md(render_table(rows, args.note))


if __name__ == "__main__":
    main()
