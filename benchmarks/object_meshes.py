"""Benchmark clips of the fit: the procedural categories, or real-object meshes from installed packages.

``benchmarks/object_meshes.json`` names each mesh by package, version and path inside it and puts it
in the tuning or the held-out set (held-out: reported, never tuned on). The meshes are not in this
repository: ``mesh_file`` finds them in the installed package (a benchmark-time dependency only:
``pip install pybullet==3.2.7`` and ``pip install --no-deps robosuite==1.5.2``), and ``benchmark_clips``
renders each with ``hoirecon synth --object-mesh`` (the command a user runs), so a clip carries GT
masks, the noisy hand initialisation and gt/ like a procedural one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MESH_LIST = Path(__file__).resolve().parent / "object_meshes.json"
CLIP_SETS = ("procedural", "tuning", "heldout")


@dataclass(frozen=True)
class MeshEntry:
    """One line of ``object_meshes.json``: ``path`` is relative to the installed ``module``'s folder."""

    name: str
    set: str
    package: str
    module: str
    version: str
    path: str
    category: str
    license: str = ""


@dataclass(frozen=True)
class BenchClip:
    """A rendered benchmark clip: ``name`` labels the column (category or mesh name), ``category`` is
    what ``fit --category`` gets, ``out`` the synth folder."""

    name: str
    category: str
    seed: int
    out: Path


def load_mesh_set(which: str) -> list[MeshEntry]:
    """The entries of ``object_meshes.json`` in set ``which`` ("tuning" | "heldout")."""
    entries = [MeshEntry(**m) for m in json.loads(MESH_LIST.read_text())["meshes"]]
    return [e for e in entries if e.set == which]


def mesh_file(entry: MeshEntry) -> Path:
    """The mesh file inside the installed package; SystemExit naming the pip command when it is missing
    or another version is installed (another version may ship another mesh)."""
    hint = f"pip install {'--no-deps ' if entry.package == 'robosuite' else ''}{entry.package}=={entry.version}"
    try:
        version = importlib.metadata.version(entry.package)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"mesh '{entry.name}' needs the package {entry.package}: {hint}") from None
    if version != entry.version:
        raise SystemExit(f"mesh '{entry.name}' is listed from {entry.package} {entry.version}, "
                         f"{version} is installed: {hint}")
    # find_spec locates the top-level package without importing it (robosuite is installed without
    # its dependencies: only its mesh files are used).
    spec = importlib.util.find_spec(entry.module)
    path = Path(next(iter(spec.submodule_search_locations))) / entry.path
    if not path.is_file():
        raise SystemExit(f"{path} is missing from {entry.package} {version}")
    return path


def synth_mesh_clip(entry: MeshEntry, out: Path, frames: int, size: int, seed: int, view_range: float) -> None:
    """``hoirecon synth --object-mesh`` of one entry into ``out`` (skipped when ``out/gt`` exists)."""
    if (out / "gt").is_dir():
        return
    exe = Path(sys.executable).with_name("hoirecon")
    cmd = [str(exe), "synth", "-c", "unknown", "--object-mesh", str(mesh_file(entry)), "--out", str(out),
           "--frames", str(frames), "--size", str(size), "--seed", str(seed), "--view-range", f"{view_range:g}",
           "--quiet"]
    env = {**os.environ, "HOIRECON_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"synth failed for mesh '{entry.name}': {proc.stderr.strip()[-500:]}")


def benchmark_clips(which: str, work: Path, frames: int, size: int, view_range: float, seeds: list[int],
                    categories: list[str] | None = None, seed0: int = 0,
                    meshes: list[str] | None = None) -> list[BenchClip]:
    """Render (or reuse) the clips of a set under ``work``.

    ``which`` = "procedural": category i of ``categories`` with clip seed ``seed0 + i`` (the clips of
    ``bench_fit.py``); "tuning" / "heldout": every mesh of that set (or only those named in ``meshes``)
    once per seed in ``seeds``.
    """
    if which not in CLIP_SETS:
        raise SystemExit(f"--clips must be one of {', '.join(CLIP_SETS)}, got {which!r}")
    clips = []
    if which == "procedural":
        from hoirecon.synth.generator import generate_clip

        for i, cat in enumerate(categories or []):
            out = work / f"{cat}_s{seed0 + i}"
            generate_clip(cat, out, frames=frames, size=size, seed=seed0 + i, view_range_deg=view_range)
            clips.append(BenchClip(cat, cat, seed0 + i, out))
        return clips
    entries = load_mesh_set(which)
    unknown = set(meshes or []) - {e.name for e in entries}
    if unknown:
        raise SystemExit(f"no mesh {sorted(unknown)} in the {which} set of {MESH_LIST.name}")
    for entry in entries:
        if meshes and entry.name not in meshes:
            continue
        for seed in seeds:
            out = work / which / f"{entry.name}_s{seed}_f{frames}"
            synth_mesh_clip(entry, out, frames, size, seed, view_range)
            clips.append(BenchClip(entry.name if len(seeds) == 1 else f"{entry.name} s{seed}", entry.category,
                                   seed, out))
    return clips
