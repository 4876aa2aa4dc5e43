"""What one score-distillation step of the fit costs, by part, for several SDS settings (issue 22).

Loads a finished fit (``OUT/fit/scene.pt`` + ``poses.npz``: its grid SDF with gradients on, its hand
and object poses) and times ``PriorGuidance``'s work per SDS step, split into: the object's volume
rendering (forward), the hand condition's rasterization, the prior's UNet pass, and the backward
of the SDS loss into the grid. Each variant is an ``SDSRenderConfig`` / category; every variant
runs ``--reps`` steps on the same random draws (generator seeded alike), interleaved so that a
change in the machine's load hits all variants alike. CPU seconds are the process's own (1 thread).

Usage: .venv/bin/python benchmarks/bench_sds.py OUT [--reps 20] [--category mug] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit import machine  # noqa: E402
from common import write_section  # noqa: E402

from hoirecon.fit.sdf import build_object_sdf  # noqa: E402
from hoirecon.hand import build_hand_model  # noqa: E402
from hoirecon.io.checkpoints import read_torch_checkpoint  # noqa: E402
from hoirecon.prior import sds as sds_mod  # noqa: E402
from hoirecon.prior.model import load_geometry_prior  # noqa: E402
from hoirecon.prior.sds import SDSConfig, SDSRenderConfig, sds_loss  # noqa: E402
from hoirecon.render.volume import VolumeRenderConfig  # noqa: E402
from hoirecon.stages.outputs import FitOutput  # noqa: E402

FD = dict(perturb=True, normal_mode="finite_difference")
BEFORE_VOLUME = VolumeRenderConfig(n_coarse=32, n_importance=32, **FD)  # the SDS sampling before issue 22
# (name, render config, category override or None = --category); the first row is the reference.
VARIANTS = (
    ("before: 64 px, 32+32 samples, guided", SDSRenderConfig(render_size=None, volume=BEFORE_VOLUME), None),
    ("before, category unknown (one UNet pass)", SDSRenderConfig(render_size=None, volume=BEFORE_VOLUME), "unknown"),
    ("48 px rendered, 32+32", SDSRenderConfig(render_size=48, volume=BEFORE_VOLUME), None),
    ("32 px rendered, 32+32", SDSRenderConfig(render_size=32, volume=BEFORE_VOLUME), None),
    ("64 px, 16+16 samples", SDSRenderConfig(render_size=None, volume=VolumeRenderConfig(n_coarse=16, n_importance=16,
                                                                                          **FD)), None),
    ("default now: 32 px rendered, 24+16 samples", SDSRenderConfig(), None),
    ("default now, category unknown", SDSRenderConfig(), "unknown"),
)


def load_fit(out: Path):
    """(sdf module with gradients, beta, T_hand_to_obj (T,4,4), hand verts (T,V,3), faces, vert_uv, side)."""
    state = read_torch_checkpoint(out / "fit" / FitOutput.SCENE, "fitted scene")
    sdf = build_object_sdf(state["sdf_spec"])
    if "resolution" in state["sdf_spec"]:
        sdf.set_resolution(int(state["sdf_spec"]["resolution"]))
    sdf.load_state_dict(state["sdf_state"])
    poses = np.load(out / "fit" / "poses.npz")
    hand = build_hand_model("anny")
    with torch.no_grad():
        art = torch.as_tensor(poses["articulation"])
        verts = hand(art, torch.zeros(len(art), 3), torch.as_tensor(poses["shape"])[None], None,
                     side=str(poses["side"])).verts
    return (sdf, float(state["beta"]), torch.as_tensor(poses["T_hand_to_obj"]), verts, hand.faces,
            hand.vert_uv.detach(), str(poses["side"]))


def timed_step(prior, category, fit, render_cfg: SDSRenderConfig, gen: torch.Generator) -> dict[str, float]:
    """One SDS step as the fit does it, CPU seconds by part."""
    sdf, beta, T_h2o, verts, faces, uv, side = fit
    frame = int(torch.randint(len(verts), (1,), generator=gen))
    parts: dict[str, float] = {}
    real_hand = sds_mod.render_hand_condition

    def hand_timed(*a, **k):
        c = time.process_time()
        r = real_hand(*a, **k)
        parts["hand raster"] = time.process_time() - c
        return r

    sds_mod.render_hand_condition = hand_timed
    try:
        c = time.process_time()
        r = sds_mod.render_sds_inputs(sdf.as_render_fn(), beta, T_h2o[frame:frame + 1], verts[frame:frame + 1], faces,
                                      uv, torch.zeros(3), sdf.radius, render_cfg, gen)
        parts["object render"] = time.process_time() - c - parts["hand raster"]
    finally:
        sds_mod.render_hand_condition = real_hand
    c = time.process_time()
    out = sds_loss(prior, r.object_image, r.hand_cond, category, SDSConfig(), 0.5, gen, mirror=side == "left")
    parts["UNet"] = time.process_time() - c
    c = time.process_time()
    out.loss.backward()
    parts["backward"] = time.process_time() - c
    sdf.zero_grad(set_to_none=True)
    parts["total"] = sum(parts.values())
    return parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="a clip folder with a finished fit")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--category", default="mug")
    ap.add_argument("--variants", default=None, help="indices into VARIANTS, comma-separated (default all)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    prior = load_geometry_prior(None, "cpu").requires_grad_(False)
    fit = load_fit(args.out)
    fit[0].requires_grad_(True)
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else list(VARIANTS)
    gens = [torch.Generator().manual_seed(0) for _ in chosen]
    times: dict[str, list[dict]] = {name: [] for name, _, _ in chosen}
    for _ in range(args.reps):  # interleaved: load changes hit every variant alike
        for (name, cfg, cat), gen in zip(chosen, gens):
            times[name].append(timed_step(prior, cat or args.category, fit, replace(cfg), gen))
    keys = ("object render", "hand raster", "UNet", "backward", "total")
    base = float(np.median([t["total"] for t in times[chosen[0][0]]]))
    text = (f"Command: `.venv/bin/python benchmarks/bench_sds.py {args.out} --reps {args.reps} --category "
            f"{args.category}` (one SDS step of the fit on a finished `--preset fast` fit's grid SDF and poses; "
            f"median CPU ms per step over {args.reps} steps, variants interleaved). Machine: {machine()}, "
            f"load average {__import__('os').getloadavg()[0]:.1f}. Date: {datetime.date.today().isoformat()}.\n\n"
            "| variant | " + " | ".join(keys) + " | vs first row |\n|---|" + "---:|" * (len(keys) + 1) + "\n")
    for name, rows in times.items():
        med = {k: 1000 * float(np.median([r[k] for r in rows])) for k in keys}
        text += f"| {name} | " + " | ".join(f"{med[k]:.0f}" for k in keys) + f" | {med['total'] / 1000 / base:.2f}x |\n"
    print(text)
    if not args.no_write:
        write_section("bench_sds", text)


if __name__ == "__main__":
    main()
