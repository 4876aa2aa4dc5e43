"""Benchmark the renderers on the CPU and write the table into BENCHMARKS.md.

Run: ``.venv/bin/python benchmarks/bench_render.py`` (``--quick`` for fewer repeats,
``--no-write`` to only print).

Cases:
- hand mesh (the real ``anny`` hand from ``hoirecon.hand.build_hand_model`` when it
  builds, else a deformed UV sphere of about the same size: ~1600 vertices, ~3200 faces)
  at 1024 sampled pixels of a 640x480 camera (half inside the hand's box, half anywhere),
  forward + backward of mask and depth;
- the same hand rendered to full 64x64 and 128x128 images (mask, depth, normal, uv),
  forward + backward and forward only under ``no_grad``;
- volume rendering of 1024 rays, 64 coarse (no grad) + 64 fine samples, through a 4 x 64
  Softplus(beta=100) MLP with 6-frequency positional encoding (the paper's object network
  size), forward + backward of opacity, depth, normal and an eikonal term; with the
  normal modes "autograd", "finite_difference" and "none".

Times: median wall-clock ms over repeats after warm-up, and the process CPU time per
repeat (less sensitive to other load on a shared machine).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, cpu_model, write_section  # noqa: E402

from hoirecon.render.camera import make_intrinsics, project_points  # noqa: E402
from hoirecon.render.mesh import MeshRenderConfig, render_mesh_image, render_mesh_pixels  # noqa: E402
from hoirecon.render.volume import LaplaceDensity, VolumeRenderConfig, render_sdf_volume  # noqa: E402

SECTION = "bench_render"


def deformed_sphere(n_lat: int = 40, n_lon: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed bumpy ellipsoid, hand-sized (metres): verts (V, 3), faces (F, 3)."""
    verts = [[0.0, 0.0, 1.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)])
    verts.append([0.0, 0.0, -1.0])
    last = len(verts) - 1
    faces = [[0, 1 + j, 1 + (j + 1) % n_lon] for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = 1 + i * n_lon + j, 1 + i * n_lon + (j + 1) % n_lon
            faces += [[a, a + n_lon, b + n_lon], [a, b + n_lon, b]]
    base = 1 + (n_lat - 2) * n_lon
    faces += [[base + j, last, base + (j + 1) % n_lon] for j in range(n_lon)]
    v = torch.tensor(verts)
    v = v * (1 + 0.2 * torch.sin(3 * v[:, :1]) * torch.cos(2 * v[:, 1:2]))
    return v * torch.tensor([0.09, 0.05, 0.03]), torch.tensor(faces)


def load_hand() -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, object, torch.Tensor]:
    """(description, verts (V, 3) centred, faces, uv (V, 2), hand model or None, centre (3,))."""
    try:
        from hoirecon.hand import model as hand_model_module

        hand = hand_model_module.build_hand_model("anny")
        art = torch.zeros(1, 45)
        art[0, 2::3] = 0.3  # curl the fingers a little
        with torch.no_grad():
            out = hand(art, torch.tensor([[0.3, 0.2, 0.1]]))
        verts = out.verts[0]
        return (f"anny hand ({verts.shape[0]} verts, {out.faces.shape[0]} faces)",
                verts - verts.mean(0), out.faces, hand.vert_uv.float(), hand, verts.mean(0))
    except Exception as err:  # the hand module is optional here: fall back to a stand-in mesh
        print(f"hand model unavailable ({type(err).__name__}: {err}); using a deformed sphere")
        v, f = deformed_sphere()
        return f"deformed sphere ({v.shape[0]} verts, {f.shape[0]} faces)", v, f, v[:, :2].clone(), None, torch.zeros(3)


def timeit(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median wall ms, mean process-CPU ms) of fn()."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return statistics.median(walls), statistics.mean(cpus)


class PEMLP(nn.Module):
    """4 x 64 Softplus(beta=100) MLP on a 6-frequency positional encoding (39 inputs)."""

    def __init__(self, n_freq: int = 6, width: int = 64, layers: int = 4):
        super().__init__()
        self.register_buffer("freq", 2.0 ** torch.arange(n_freq) * math.pi)
        mods, dim = [], 3 + 6 * n_freq
        for _ in range(layers):
            mods += [nn.Linear(dim, width), nn.Softplus(beta=100)]
            dim = width
        mods.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xf = (x[..., None] * self.freq).flatten(-2)
        y = self.net(torch.cat([x, xf.sin(), xf.cos()], dim=-1))
        # a sphere of radius 0.08 plus the network's (small) correction
        return x.norm(dim=-1) - 0.08 + 0.01 * y[:, 0], x[:, :0]


def bench(quick: bool) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    rows: list[tuple[str, float, float]] = []
    rep_fast, rep_slow = (5, 2) if quick else (30, 5)
    desc, verts0, faces, uv, hand, centre = load_hand()
    print(desc)

    # --- hand at 1024 sampled pixels (640x480, f = 600, hand 0.5 m away)
    K = make_intrinsics(600.0, 600.0, 319.5, 239.5)
    verts_cam = (verts0 + torch.tensor([0.0, 0.0, 0.5]))[None]
    with torch.no_grad():
        uvp = project_points(verts_cam, K)[0]
    lo, hi = uvp.amin(0), uvp.amax(0)
    pix = torch.cat([lo + (hi - lo) * torch.rand(512, 2), torch.rand(512, 2) * torch.tensor([640.0, 480.0])])[None]
    cfg = MeshRenderConfig()
    leaf = verts_cam.clone().requires_grad_(True)

    def mesh_pixels():
        out = render_mesh_pixels(leaf, faces, K, pix, cfg)
        (out.mask.sum() + out.depth.sum()).backward()

    out = render_mesh_pixels(leaf, faces, K, pix, cfg)
    print(f"  pixels: mean mask {out.mask.mean():.3f}, covered {(out.face_index >= 0).float().mean():.3f}")
    rows.append((f"mesh: {desc}, 1024 pixels, mask+depth fwd+bwd", *timeit(mesh_pixels, rep_fast)))

    if hand is not None:
        art = torch.zeros(1, 45)
        art[0, 2::3] = 0.3
        art.requires_grad_(True)
        wrist = torch.tensor([[0.3, 0.2, 0.1]], requires_grad=True)
        transl = (torch.tensor([0.0, 0.0, 0.5]) - centre)[None]  # the same placement as above

        def hand_and_pixels():
            h = hand(art, wrist, transl=transl)
            o = render_mesh_pixels(h.verts, h.faces, K, pix, cfg)
            (o.mask.sum() + o.depth.sum()).backward()

        rows.append(("hand model forward + the same render, fwd+bwd to articulation",
                     *timeit(hand_and_pixels, rep_fast)))

    # --- full images (hand fills ~80% of the frame)
    for size in (64, 128):
        ext = (hi - lo).max().item() / 600.0 * 0.5  # metric extent of the hand at 0.5 m
        focal = 0.8 * size * 0.5 / ext
        Ki = make_intrinsics(focal, focal, (size - 1) / 2, (size - 1) / 2)

        def image_fb(Ki=Ki, size=size):
            o = render_mesh_image(leaf, faces, Ki, size, size, cfg, vert_attrs=uv)
            (o.mask.sum() + o.depth.sum() + o.normal.sum() + o.attrs.sum()).backward()

        def image_fwd(Ki=Ki, size=size):
            with torch.no_grad():
                render_mesh_image(verts_cam, faces, Ki, size, size, cfg, vert_attrs=uv)

        rows.append((f"mesh image {size}x{size} (mask, depth, normal, uv) fwd+bwd", *timeit(image_fb, rep_fast)))
        rows.append((f"mesh image {size}x{size} (mask, depth, normal, uv) fwd, no_grad", *timeit(image_fwd, rep_fast)))

    # --- volume rendering, 1024 rays through the object's sphere
    net = PEMLP()
    density = LaplaceDensity(beta_init=0.002)
    R = 1024
    origins = torch.zeros(R, 3)
    dirs = torch.randn(R, 3) * 0.1
    dirs[:, 2] = 1.0
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    center = torch.tensor([0.0, 0.0, 0.5])
    obj = lambda x: net(x - center)  # noqa: E731
    for mode in ("autograd", "finite_difference", "none"):
        vcfg = VolumeRenderConfig(n_coarse=64, n_importance=64, perturb=True, normal_mode=mode)

        def volume(vcfg=vcfg):
            out = render_sdf_volume(obj, origins, dirs, density.beta(), center, 0.12, vcfg)
            loss = out.opacity.mean() + out.depth.mean()
            if out.sdf_grad is not None:
                loss = loss + ((out.sdf_grad.norm(dim=-1) - 1) ** 2).mean() + out.normal.sum()
            loss.backward()

        rows.append((f"volume 1024 rays x (64 coarse + 64 fine), 4x64 PE MLP, normals {mode}, fwd+bwd",
                     *timeit(volume, rep_slow, warmup=1)))
    vcfg = VolumeRenderConfig(n_coarse=32, n_importance=64, perturb=True)

    def volume_32():
        out = render_sdf_volume(obj, origins, dirs, density.beta(), center, 0.12, vcfg)
        (out.opacity.mean() + out.depth.mean() + ((out.sdf_grad.norm(dim=-1) - 1) ** 2).mean()).backward()

    rows.append(("volume 1024 rays x (32 coarse + 64 fine), normals autograd, fwd+bwd",
                 *timeit(volume_32, rep_slow, warmup=1)))

    def mlp_only():
        x = torch.randn(R * 64, 3, requires_grad=True)
        s, _ = net(x)
        (g,) = torch.autograd.grad(s.sum(), x, create_graph=True)
        (s.mean() + g.square().mean()).backward()

    rows.append(("reference: the MLP alone on 1024x64 points, sdf + autograd gradient, fwd+bwd",
                 *timeit(mlp_only, rep_slow, warmup=1)))
    return rows



def write_table(rows: list[tuple[str, float, float]], command: str, load: float) -> str:
    lines = [
        "## Rendering (`hoirecon.render`)",
        "",
        f"Machine: {os.cpu_count()} cores (`nproc`), {cpu_model()}, torch {torch.__version__}, "
        f"torch threads: {torch.get_num_threads()}, load average {load:.1f} at start; "
        f"date {datetime.date.today().isoformat()}; command: `{command}`.",
        "Wall = median wall-clock ms per call; CPU = mean process CPU ms per call (all threads). "
        "On a shared machine wall time grows with the load of others; CPU time does not.",
        "",
        "| operation | wall ms (median) | CPU ms |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {wall:.1f} | {cpu:.1f} |" for name, wall, cpu in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: on a small shared machine OpenMP threads that wait "
        "for each other cost more than they gain; 0 = torch's default)",
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = bench(args.quick)
    command = ".venv/bin/python benchmarks/bench_render.py" + (" --quick" if args.quick else "")
    command += f" --threads {args.threads}" if args.threads != 1 else ""
    table = write_table(rows, command, load)
    print(table)
    if args.no_write:
        return
    write_section(SECTION, table)
    print(f"wrote {BENCHMARKS}")


if __name__ == "__main__":
    main()
