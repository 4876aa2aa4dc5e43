"""Command-line interface: parses arguments and calls stages; nothing else lives here.

Exit codes: 0 success, 1 failed run (RunError or an unexpected error), 2 bad input
(UserError, usage errors). Errors are one line on stderr; ``HOIRECON_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer

# typer >= 0.26 vendors its own click: usage errors come from there, Exit/Abort from typer.
from typer import Abort as _Abort, Exit as _Exit
from typer._click.exceptions import ClickException as _ClickException, NoArgsIsHelpError as _NoArgsIsHelp

# Only light modules here: `--help` and `status` must not pay for torch. The stage configs
# are light (stages/configs.py), and a stage's module is imported when the runner first runs it.
from hoirecon import __version__
from hoirecon.categories import category_name, normalize_category
from hoirecon.cli_options import Group, Settings, with_settings
from hoirecon.errors import HoireconError, UserError
from hoirecon.pipeline.report import Reporter
from hoirecon.pipeline.runner import STAGE_ORDER, StageResult, read_manifest, run_pipeline, status_table
from hoirecon.stages.configs import ExportConfig, FitConfig, FramesConfig, HandConfig, MasksConfig, PoseConfig
from hoirecon.stages.registry import STAGES

app = typer.Typer(
    name="hoirecon",
    help="Reconstruct a hand and the object it holds in 3D from a short video clip (DiffHOI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: a box written [x0,y0,x1,y1] must show as written
    context_settings={"help_option_names": ["-h", "--help"]},
)

QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or info lines (for batch loops).")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable JSON summary on stdout.")
def _checked_device(name: str) -> str:
    """The --device value if this torch can run on it, else a one-line UserError naming what it supports."""
    if name == "cpu":  # every torch runs there: bad input is answered without importing torch first
        return name
    import torch

    supported = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
        (["mps"] if torch.backends.mps.is_available() else [])
    try:
        kind = torch.device(name).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in supported:
        raise UserError(f"--device {name!r} is not available: this torch ({torch.__version__}) supports "
                        f"{', '.join(supported)}")
    index = torch.device(name).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise UserError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


DeviceOpt = typer.Option("cpu", "--device", callback=_checked_device,
                         help="Torch device for learned stages, e.g. cpu or cuda.")
OutOpt = typer.Option(None, "--out", "-o", help="Output folder (default: hoirecon_out/<clip name>).")
ForceOpt = typer.Option(None, "--force", help=f"Recompute this stage and all after it ({', '.join(STAGE_ORDER)}).")
StageForceOpt = typer.Option(False, "--force", help="Recompute even if cached.")
SeedOpt = typer.Option(0, "--seed", help="Seed of initialisation and sampling.")

# Which stage settings a command offers; the options themselves come from the config fields.
# `run` and `batch` offer the settings a first run needs (every stage command offers all of
# its own) and call the hand's estimator --hand-backend: --backend alone names no stage there.
RUN_SETTINGS = {
    "frames": Group(FramesConfig),
    "masks": Group(MasksConfig),
    "hand": Group(HandConfig, only=("backend", "side", "hand_model", "focal_px", "fov_deg"),
                  flags={"backend": "--hand-backend"}),
    "fit": Group(FitConfig, only=("preset", "prior", "sds_weight", "sds_every", "steps", "seed", "hand_model")),
    "export": Group(ExportConfig, only=("format",)),
}
# batch offers what applies to every clip alike: boxes and the focal length come per clip from its manifest.
BATCH_SETTINGS = {
    **RUN_SETTINGS,
    "masks": Group(MasksConfig, only=("detector", "segmenter", "tracker", "iou_threshold")),
    "hand": Group(HandConfig, only=("backend", "side", "hand_model"), flags={"backend": "--hand-backend"}),
}


class _Session:
    """Per-command output policy (quiet/json) and the JSON summary being built."""

    def __init__(self, quiet: bool, as_json: bool, command: str):
        self.as_json = as_json
        self.reporter = Reporter(quiet=quiet or as_json)
        self.summary: dict[str, Any] = {"command": command, "ok": True}

    def stage_done(self, result: StageResult) -> None:
        # the runner's status/seconds win over a stage summary's own keys of the same name
        self.summary.setdefault("stages", {})[result.name] = {
            **result.summary, "status": result.status, "seconds": round(result.seconds, 3)}
        word = {"cached": "cached", "edited": "kept as edited by hand"}.get(result.status,
                                                                          f"done in {result.seconds:.1f} s")
        self.reporter.info(f"[green]✓[/green] {result.name:<7} {word}")

    def finish(self) -> None:
        if self.as_json:
            print(json.dumps(self.summary, indent=2, default=str))


_CURRENT: Optional[_Session] = None


def _session(quiet: bool, as_json: bool, command: str, torch_threads: bool = True) -> _Session:
    """Start a command's session. torch_threads=False: torch's threads are set later, if at all
    (``status`` never runs torch; the stage commands set them in ``_run_stages``, after their
    settings are checked, so that bad input is answered without the seconds torch takes to import)."""
    global _CURRENT
    _threads_from_env()
    if torch_threads:
        _set_threads()
    _CURRENT = _Session(quiet, as_json, command)
    return _CURRENT


def _threads_from_env() -> int:
    """CPU threads for torch: $HOIRECON_THREADS, default 1.

    Measured on 2-core machines: with any other process busy, 2 threads made the fit and the
    renderers 3-10x slower than 1 (spin-waiting threads); raise it on idle many-core machines.
    """
    value = os.environ.get("HOIRECON_THREADS", "1")
    try:
        n = int(value)
        if n < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"HOIRECON_THREADS must be a positive integer, got '{value}'") from None
    return n


def _set_threads() -> None:
    import torch

    torch.set_num_threads(_threads_from_env())


def _default_out(clip: Path) -> Path:
    return Path("hoirecon_out") / (clip.stem if clip.is_file() else clip.name)


def _frames_config(clip: Path, settings: Optional[dict] = None) -> FramesConfig:
    return FramesConfig(source=str(clip.resolve()), **(settings or {}))


def _is_output_folder(path: Path) -> bool:
    return path.is_dir() and read_manifest(path / "frames") is not None


@app.command()
@with_settings(**RUN_SETTINGS)
def run(
    clip: Path = typer.Argument(..., help="Video file or folder of images."),
    category: str = typer.Option(..., "--category", "-c", help="The object's name, e.g. mug, bottle, kettle; any "
                                 "name (one the prior does not know runs it category-agnostic), or unknown."),
    out: Optional[Path] = OutOpt,
    force: Optional[str] = ForceOpt,
    settings: Settings = None,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run every stage on CLIP: frames -> masks -> hand -> fit -> export (cached)."""
    s = _session(quiet, as_json, "run", torch_threads=False)
    category = category_name(category)
    out = out or _default_out(clip)
    s.summary.update(out=str(out), category=category)
    stages = [(STAGES["frames"], _frames_config(clip, settings.frames)),
              (STAGES["masks"], MasksConfig(**settings.masks)),
              (STAGES["hand"], HandConfig(**settings.hand)),
              (STAGES["fit"], FitConfig(category=category, **settings.fit)),
              (STAGES["export"], ExportConfig(**settings.export))]
    _run_stages(s, out, stages, force, device)
    _print_outputs(s, out)
    s.finish()


def _print_outputs(s: "_Session", out: Path) -> None:
    """List what a person opens: the export stage's outputs."""
    outputs = s.summary.get("stages", {}).get("export", {}).get("outputs", {})
    if outputs:
        s.reporter.info("[bold]results[/bold]")
        for name, path in outputs.items():
            s.reporter.info(f"  {name:<14} {path}")


@app.command()
@with_settings(frames=Group(FramesConfig))
def frames(
    clip: Path = typer.Argument(..., help="Video file or folder of images."),
    out: Optional[Path] = OutOpt,
    settings: Settings = None,
    force: bool = StageForceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Decode CLIP into numbered PNG frames and meta.json."""
    s = _session(quiet, as_json, "frames", torch_threads=False)
    cfg = _frames_config(clip, settings.frames)
    _run_stages(s, out or _default_out(clip), [(STAGES["frames"], cfg)], "frames" if force else None)
    s.finish()


@app.command()
@with_settings(masks=Group(MasksConfig))
def masks(
    clip_or_out: Path = typer.Argument(..., help="A clip (frames are extracted first) or an output folder."),
    out: Optional[Path] = OutOpt,
    settings: Settings = None,
    force: bool = StageForceOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Hand and object masks for every frame (first-frame boxes, segmentation, tracking, IoU filter)."""
    s = _session(quiet, as_json, "masks", torch_threads=False)
    cfg = MasksConfig(**settings.masks)
    if _is_output_folder(clip_or_out):
        out = clip_or_out
        stages = []
    else:
        out = out or _default_out(clip_or_out)
        stages = [(STAGES["frames"], _frames_config(clip_or_out))]
    _run_stages(s, out, stages + [(STAGES["masks"], cfg)], "masks" if force else None, device)
    s.finish()


@app.command()
@with_settings(hand=Group(HandConfig))
def hand(
    out: Path = typer.Argument(..., help="Output folder with frames and masks."),
    settings: Settings = None,
    force: bool = StageForceOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Per-frame hand initialisation: articulation, shape, camera pose T_cam_to_hand (seed A.5, eq. 4)."""
    s = _session(quiet, as_json, "hand", torch_threads=False)
    cfg = HandConfig(**settings.hand)
    _run_stages(s, out, [(STAGES["hand"], cfg)], "hand" if force else None, device, existing=True)
    s.finish()


def _hand_config_with_camera(out: Path, focal_px: Optional[float], fov_deg: Optional[float]) -> HandConfig:
    manifest = read_manifest(out / "hand")
    if manifest is None:
        raise UserError(f"no hand stage in {out}: run `hoirecon hand {out} --focal ...` first")
    known = {f for f in HandConfig.__dataclass_fields__}
    settings = {k: v for k, v in manifest.get("config", {}).items() if k in known}
    settings.update(focal_px=focal_px, fov_deg=fov_deg)
    return HandConfig(**settings)


def _require_output_folder(out: Path) -> None:
    if not out.is_dir():
        raise UserError(f"output folder not found: {out}")


def _run_stages(s: "_Session", out: Path, stages: list, force_from: Optional[str], device: str = "cpu",
                existing: bool = False) -> None:
    """The tail every stage command shares: record OUT, run the stages (cached), report.

    existing: OUT must already be an output folder (the stage reads earlier stages' results).
    """
    s.summary["out"] = str(out)
    if existing:
        _require_output_folder(out)
    _set_threads()
    run_pipeline(out, stages, force_from=force_from, reporter=s.reporter, device=device, on_result=s.stage_done)


@app.command()
@with_settings(fit=Group(FitConfig), camera=Group(HandConfig, only=("focal_px", "fov_deg")))
def fit(
    out: Path = typer.Argument(..., help="Output folder with frames, masks and hand (or a synth folder)."),
    settings: Settings = None,
    force: bool = StageForceOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Optimise the hand-object scene (object SDF, object and camera poses, hand) against the masks."""
    s = _session(quiet, as_json, "fit", torch_threads=False)
    cfg = FitConfig(**settings.fit)
    stages = [(STAGES["fit"], cfg)]
    camera = settings.camera
    if any(v is not None for v in camera.values()):
        # The camera is the hand stage's: redo it with this one, keeping its other settings.
        _require_output_folder(out)
        stages.insert(0, (STAGES["hand"], _hand_config_with_camera(out, **camera)))
    _run_stages(s, out, stages, "fit" if force else None, device, existing=True)
    s.finish()


@app.command()
@with_settings(export=Group(ExportConfig))
def export(
    out: Path = typer.Argument(..., help="Output folder with fit results."),
    settings: Settings = None,
    force: bool = StageForceOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export meshes (glb/obj/ply), the animated interaction, poses, and videos to look at."""
    s = _session(quiet, as_json, "export", torch_threads=False)
    cfg = ExportConfig(**settings.export)
    _run_stages(s, out, [(STAGES["export"], cfg)], "export" if force else None, device, existing=True)
    _print_outputs(s, out)
    s.finish()


@app.command()
def synth(
    category: str = typer.Option(..., "--category", "-c", help="Object category (mug, bottle, kettle, bowl, knife, "
                                                               "toy_car), or unknown with --object-mesh."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a valid OUT for fit/eval)."),
    frames: int = typer.Option(30, "--frames", help="Number of frames."),
    size: str = typer.Option("256", "--size", help="Frame size in pixels: N (square) or WxH, e.g. 640x480."),
    fov: Optional[float] = typer.Option(None, "--fov", help="Horizontal field of view in degrees (default: drawn in "
                                                            "50-60 from the paper); the true intrinsics go to gt/."),
    seed: int = typer.Option(0, "--seed", help="Everything random follows from it."),
    texture: str = typer.Option("plain", "--texture", help="The object's surface: plain (smooth colours and stripes) "
                                                           "| printed (with a sharp-edged random print on top, like "
                                                           "labels and decals, that feature matching can find)."),
    object_mesh: Optional[Path] = typer.Option(None, "--object-mesh", help="A closed mesh file instead of a "
                                                                           "procedural object (seams merged, small "
                                                                           "holes filled)."),
    object_size: Optional[float] = typer.Option(None, "--object-size", help="Largest extent of the object in metres "
                                                                            "(default: a mesh keeps its size when it "
                                                                            "is a hand-held size in metres, else "
                                                                            "0.15)."),
    view_range: float = typer.Option(90.0, "--view-range", help="Arc of viewing directions over the clip (deg)."),
    noise_scale: float = typer.Option(1.0, "--noise-scale", help="Scale of the noisy hand initialisation "
                                                                 "(0 = ground truth)."),
    invalid_fraction: float = typer.Option(0.0, "--invalid-fraction", help="Share of frames whose hand estimate is "
                                                                           "marked missing."),
    fps: float = typer.Option(15.0, "--fps", help="Frame rate of the clip."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Render a synthetic hand-object clip with ground truth (GT masks, noisy hand init, gt/)."""
    import dataclasses

    from hoirecon.synth.generator import generate_clip
    from hoirecon.synth.noise import NoiseConfig

    s = _session(quiet, as_json, "synth")
    category = normalize_category(category)
    if noise_scale < 0 or not 0 <= invalid_fraction < 1:
        raise UserError("--noise-scale must be >= 0 and --invalid-fraction in [0, 1)")
    noise = dataclasses.replace(NoiseConfig().scaled(noise_scale), invalid_fraction=invalid_fraction)
    with s.reporter.task(f"synth {category}", total=None):
        summary = generate_clip(category, out, frames=frames, size=size, seed=seed, object_mesh=object_mesh,
                                object_size=object_size, view_range_deg=view_range, noise=noise, fps=fps,
                                fov_deg=fov, texture=texture)
    s.summary.update({**summary, "out": str(out)})
    for note in summary["object_mesh_notes"]:
        s.reporter.info(f"  object mesh: {note}")
    cam = summary["intrinsics"]
    s.reporter.info(f"[green]✓[/green] synth   {category} clip with ground truth in {out} ({cam['width']}x"
                    f"{cam['height']}, fov {cam['fov_deg']:.1f} deg, focal {cam['fx']:.1f} px; grasp "
                    f"{summary['penetration_mm']:.2f} mm deep, {len(summary['contacts'])} fingers in contact)")
    s.finish()


@app.command(name="eval")
def evaluate_cmd(
    out: Path = typer.Argument(..., help="Output folder with fit results."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth: a synth folder or its gt/ subfolder."),
    mesh: Optional[Path] = typer.Option(None, "--mesh", help="Score this mesh instead of <out>/fit/object.ply."),
    points: int = typer.Option(10000, "--points", help="Surface samples per mesh."),
    as_json: bool = JsonOpt,
) -> None:
    """Score a reconstruction against ground truth: F@5mm, F@10mm, CD, CD_h, hand keypoint error."""
    from hoirecon.stages.evaluate import evaluate, print_eval_table

    s = _session(False, as_json, "eval")
    result = evaluate(out, gt, pred_mesh=mesh, n_points=points)
    s.summary.update({**result, "out": str(out)})
    if as_json:
        s.finish()
    else:
        print_eval_table(result)


prior_app = typer.Typer(help="The geometry diffusion prior: render training data, train, sample.",
                        no_args_is_help=True)
app.add_typer(prior_app, name="prior")


@prior_app.command("render-data")
def prior_render_data(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset file to write (.npz)."),
    shapes: Optional[int] = typer.Option(None, "--shapes", help="Procedural objects per category [default: 24]."),
    mesh_copies: Optional[int] = typer.Option(None, "--mesh-copies", help="Copies of each --mesh (warped with "
                                                                          "--augment) [default: 20]."),
    grasps: Optional[int] = typer.Option(None, "--grasps", help="Hand placements per object [default: 3]."),
    views: Optional[int] = typer.Option(None, "--views", help="Random viewpoints per placement [default: 10]."),
    wide_shapes: Optional[bool] = typer.Option(None, "--wide-shapes/--no-wide-shapes",
                                               help="Draw the procedural objects from the wider distribution "
                                                    "(ranges twice as wide, flat and box bodies, lids, spouts) "
                                                    "[default: off, the synth benchmark's shapes]."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment",
                                           help="Warp every object before grasping it (per-axis scale, taper, "
                                                "bend) [default: off]."),
    mesh: Optional[list[str]] = typer.Option(None, "--mesh", help="Extra object mesh PATH[:CATEGORY], repeatable; "
                                                                  "a category outside the prior's vocabulary (or "
                                                                  "none) trains its unconditional branch."),
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Render hand + object geometry pairs (normal, depth, mask, uv at 64x64) from random viewpoints."""
    from hoirecon.prior.data import RenderDataConfig, parse_mesh_spec, render_prior_dataset

    s = _session(quiet, as_json, "prior render-data")
    # Only the options given override the config's defaults (RenderDataConfig declares them).
    given = {"shapes_per_category": shapes, "copies_per_mesh": mesh_copies, "grasps_per_shape": grasps,
             "views_per_grasp": views,
             "wide_shapes": wide_shapes, "augment": augment}
    cfg = RenderDataConfig(seed=seed, meshes=tuple(parse_mesh_spec(m) for m in mesh or ()),
                           **{k: v for k, v in given.items() if v is not None})
    with s.reporter.task("rendering prior data", total=None) as task:
        summary = render_prior_dataset(out, cfg, progress=lambda done, total: task.update(completed=done,
                                                                                          total=total))
    s.summary.update({"out": str(out), "summary": summary})
    s.reporter.info(f"[green]✓[/green] prior data written to {out}")
    s.finish()


@prior_app.command("train")
def prior_train(
    data: Path = typer.Option(..., "--data", help="Dataset from `hoirecon prior render-data`."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint (resumed from when it exists)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps."),
    recipe: str = typer.Option("paper", "--recipe", help="paper (AdamW 1e-4, wd 0.01, batch 8) | small (the "
                                                         "shipped CPU recipe)."),
    export_to: Optional[Path] = typer.Option(None, "--export", help="Also write the averaged weights here."),
    hand_condition: bool = typer.Option(True, "--hand-condition/--no-hand-condition",
                                        help="Condition on the hand renderings (off: the category-only ablation "
                                             "prior)."),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the prior (resumable; sample grids every N steps next to the checkpoint)."""
    import dataclasses

    from hoirecon.prior.model import PriorConfig
    from hoirecon.prior.train import RECIPES, export_weights, train_prior

    s = _session(quiet, as_json, "prior train")
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe '{recipe}': choose {' or '.join(RECIPES)}")
    cfg = dataclasses.replace(RECIPES[recipe], device=device, **({"steps": steps} if steps else {}))
    with s.reporter.task("training prior", total=cfg.steps) as task:
        result = train_prior(data, out, cfg, PriorConfig(hand_condition=hand_condition),
                             progress=lambda step, total, info: task.update(completed=step))
    if export_to:
        export_weights(out, export_to)
    s.summary.update({"out": str(out), "result": result})
    s.reporter.info(f"[green]✓[/green] prior checkpoint {out}")
    s.finish()


@prior_app.command("sample")
def prior_sample(
    category: str = typer.Option(..., "--category", "-c", help="Category prompt."),
    out: Path = typer.Option(Path("prior_samples.png"), "--out", "-o", help="PNG grid to write."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Prior weights (default: the shipped ones)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Other prompts, comma separated."),
    samples: int = typer.Option(4, "--samples", help="Generations per hand."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Generate objects for hand renderings (the paper's figure B.1) into a PNG grid."""
    from hoirecon.prior.sample import write_sample_grid

    s = _session(quiet, as_json, "prior sample")
    category = normalize_category(category)
    others = [normalize_category(c) for c in compare.split(",")] if compare else None
    path = write_sample_grid(out, category, weights=weights, compare=others, num_samples=samples, num_steps=steps,
                             seed=seed, device=device)
    s.summary["out"] = str(path)
    s.reporter.info(f"[green]✓[/green] samples written to {path}")
    s.finish()


@app.command()
@with_settings(**BATCH_SETTINGS)
def batch(
    clips: Optional[list[str]] = typer.Argument(None, help="Clip files (videos), folders or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Batch folder: DIR/<clip name>/ per clip, batch.jsonl, "
                                                      "batch.csv, index.html."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="CSV or JSON list of clips with columns clip, "
                                                                     "category, boxes, focal (and name)."),
    category: Optional[str] = typer.Option(None, "--category", "-c", help="Category of the clips whose manifest "
                                                                          "row gives none."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Clips at once on this machine (default: "
                                                                        "what fits the cores and memory)."),
    ray: bool = typer.Option(False, "--ray", help="Run the clips as Ray tasks ($RAY_ADDRESS or a local Ray; "
                                                  "needs the extra 'ray' of hoirecon)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="A running Ray cluster (implies --ray)."),
    rerun_done: bool = typer.Option(False, "--rerun-done", help="Run clips an earlier batch finished with the same "
                                                                "settings again (their fresh stages stay cached)."),
    force: Optional[str] = ForceOpt,
    settings: Settings = None,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run every stage on many clips (one output folder each), resumable, with one report."""
    from hoirecon.batch import BatchConfig, run_batch
    from hoirecon.errors import RunError

    s = _session(quiet, as_json, "batch")
    # The run options are checked here once (the same configs `run` builds), not in every clip.
    MasksConfig(**settings.masks)
    HandConfig(**settings.hand)
    FitConfig(**settings.fit)
    ExportConfig(**settings.export)
    if force is not None and force not in STAGE_ORDER:
        raise UserError(f"--force: unknown stage '{force}' (choose from {', '.join(STAGE_ORDER)})")
    run_options = (["--force", force] if force is not None else []) + settings.as_argv()
    cfg = BatchConfig(inputs=tuple(clips or ()), out=str(out), manifest=str(manifest) if manifest else None,
                      category=category, run_options=tuple(run_options), device=device, workers=workers, ray=ray,
                      ray_address=ray_address, rerun_done=rerun_done)
    summary = run_batch(cfg, s.reporter)
    s.summary.update(summary)
    if summary["failed"]:
        raise RunError(f"{summary['failed']} of {summary['clips']} clips failed: see {summary['reports']['jsonl']}")
    s.finish()


@app.command()
def status(
    out: Path = typer.Argument(..., help="Output folder."),
    as_json: bool = JsonOpt,
) -> None:
    """Show which stages of OUT are done, stale or missing, with their times."""
    s = _session(False, as_json, "status", torch_threads=False)
    if not out.is_dir():
        raise UserError(f"output folder not found: {out}")
    rows = status_table(out, [STAGES[n] for n in STAGE_ORDER])
    s.summary.update(out=str(out), stages=rows)
    if as_json:
        s.finish()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(out))
    for col in ("stage", "state", "seconds", "finished", "reason"):
        table.add_column(col)
    colour = {"done": "green", "edited": "cyan", "stale": "yellow", "missing": "red"}
    for r in rows:
        table.add_row(r["stage"], f"[{colour[r['state']]}]{r['state']}[/]",
                      "" if r["seconds"] is None else f"{r['seconds']:.1f}", r["finished"] or "", r["reason"])
    Console().print(table)


# ----------------------------------------------------------------------------- pose (Liu et al.)

from typer.core import TyperGroup as _TyperGroup  # noqa: E402


class _PoseGroup(_TyperGroup):
    """``hoirecon pose CLIP ...`` runs the stage (the ``run`` subcommand); ``pose train`` trains."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


pose_app = typer.Typer(cls=_PoseGroup, no_args_is_help=True,
                       help="Per-frame hand and object poses from the pose network (Liu et al.), given the object's "
                            "template mesh: `hoirecon pose CLIP --object-mesh MESH`; `hoirecon pose train`.")
app.add_typer(pose_app, name="pose")


@pose_app.command("run")
@with_settings(pose=Group(PoseConfig))
def pose_run(
    clip_or_out: Path = typer.Argument(..., help="A clip (frames and masks are made first) or an output folder "
                                                 "with frames and masks (e.g. a synth folder)."),
    settings: Settings = None,
    out: Optional[Path] = OutOpt,
    force: bool = StageForceOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Per-frame hand and object poses (poses.npz) and an overlay video, cached as stage `pose`."""
    s = _session(quiet, as_json, "pose", torch_threads=False)
    cfg = PoseConfig(**settings.pose)
    if _is_output_folder(clip_or_out):
        out, stages = clip_or_out, []
    else:
        if not clip_or_out.exists():
            raise UserError(f"clip not found: {clip_or_out}")
        out = out or _default_out(clip_or_out)
        stages = [(STAGES["frames"], _frames_config(clip_or_out)), (STAGES["masks"], MasksConfig())]
    _run_stages(s, out, stages + [(STAGES["pose"], cfg)], "pose" if force else None, device)
    s.finish()


@pose_app.command("train")
def pose_train(
    data: Path = typer.Option(..., "--data", help="Folder of labelled clips (synth folders)."),
    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write."),
    unlabeled: Optional[Path] = typer.Option(None, "--unlabeled", help="Folder of unlabelled clips (frames, masks, "
                                             "object.ply): the semi-supervised phase."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights."),
    network: str = typer.Option("cpu", "--network", help="cpu | paper (512 px, ResNet-50-FPN)."),
    steps: int = typer.Option(1000, "--steps", help="Supervised steps (0 with --init: only the semi phase)."),
    semi_steps: int = typer.Option(150, "--semi-steps", help="Steps of the semi-supervised phase."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Seconds per phase at most."),
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the pose network on labelled clips, then (with --unlabeled) on consistent pseudo-labels too."""
    import dataclasses

    from hoirecon.pose.recipe import RecipeConfig, train_recipe

    s = _session(quiet, as_json, "pose train")
    base = RecipeConfig(network=network)
    cfg = dataclasses.replace(
        base, sup=dataclasses.replace(base.sup, steps=steps, seed=seed, time_budget_s=time_budget),
        semi=dataclasses.replace(base.semi, steps=semi_steps, seed=seed + 1, time_budget_s=time_budget))
    with s.reporter.task("training pose network", total=None) as task:
        summary = train_recipe(data, out, cfg, unlabeled=unlabeled, init=init,
                               progress=lambda phase, step, total, v: task.update(
                                   description=f"{phase} {step}/{total} loss {v['total']:.3f}"))
    s.summary.update({"out": str(out), "result": summary})
    s.reporter.info(f"[green]✓[/green] pose weights written to {out}")
    s.finish()



def _version_callback(value: bool) -> None:
    if value:
        print(f"hoirecon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Reconstruct a hand and the object it holds in 3D from a short video clip (DiffHOI)."""


def _fail(message: str, code: int, argv: list[str] | None = None) -> int:
    print(f"hoirecon: error: {message}", file=sys.stderr)
    if _CURRENT is not None and _CURRENT.as_json:
        print(json.dumps({**_CURRENT.summary, "ok": False, "error": message, "exit_code": code}, indent=2,
                         default=str))
    elif _CURRENT is None and "--json" in (sys.argv[1:] if argv is None else argv):
        # refused before the command started (bad option value, unknown option, missing
        # argument): batch scripts that parse stdout still get a summary
        print(json.dumps({"command": _command_name(argv), "ok": False, "error": message, "exit_code": code},
                         indent=2))
    return code


def _command_name(argv: list[str] | None) -> str | None:
    """The (sub)command words of a command line, e.g. "run" or "prior sample"."""
    words = []
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("-"):
            break
        words.append(arg)
        if arg != "prior":
            break
    return " ".join(words) or None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (never lets a traceback reach the user)."""
    global _CURRENT
    _CURRENT = None
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="hoirecon", standalone_mode=False)
        return 0
    except _Exit as e:
        return e.exit_code
    except _Abort:
        return _fail("aborted", 130, argv)
    except _NoArgsIsHelp as e:
        print(e.format_message() if hasattr(e, "format_message") else str(e), file=sys.stderr)
        return 2
    except _ClickException as e:  # usage errors: unknown option, bad value, missing argument
        return _fail(" ".join(e.format_message().split()), 2, argv)
    except HoireconError as e:
        return _fail(" ".join(str(e).split()), e.exit_code, argv)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, argv)
    except Exception as e:  # a bug: still one line, traceback on request
        if os.environ.get("HOIRECON_DEBUG"):
            traceback.print_exc()
        return _fail(f"internal error: {type(e).__name__}: {e} (set HOIRECON_DEBUG=1 for the traceback)", 1, argv)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
