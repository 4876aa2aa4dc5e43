"""Which clips a batch runs, with their per-clip settings and output folder names.

A clip is a video file or a folder of images. Inputs may be files, folders or glob patterns:
a folder holding videos stands for its videos, a folder holding images is one clip, and a
folder holding neither stands for the clips in its subfolders (one level: ``hoirecon synth``
folders, HOI4D-style trees of one folder per clip).

A manifest (``--manifest``, CSV with a header or JSON: a list of objects, or
``{"clips": [...]}``) lists clips with their settings: ``clip`` (path, required),
``category``, ``boxes`` (a boxes.json), ``focal`` (the camera's focal length, passed to
``run --focal``), ``name`` (output folder name). Relative paths are relative to the manifest.
Without a ``boxes`` entry, a boxes.json beside the clip is picked up by the masks stage.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hoirecon.errors import UserError
from hoirecon.io.video import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
MANIFEST_COLUMNS = ("clip", "category", "boxes", "focal", "name")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class ClipJob:
    """One clip of a batch: where it is, its output folder name and its own settings (None: the batch's)."""

    name: str
    source: str
    category: Optional[str] = None
    boxes: Optional[str] = None
    focal: Optional[float] = None


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def clips_in_folder(folder: Path) -> list[Path]:
    """The clips a folder stands for (see the module docstring), sorted."""
    videos = sorted(p for p in folder.iterdir() if _is_video(p))
    if videos:
        return videos
    if _has_images(folder):
        return [folder]
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = sorted(p for p in sub.iterdir() if _is_video(p))
        found += videos or ([sub] if _has_images(sub) else [])
    return found


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders and glob patterns -> clip paths (absolute, in order, without repeats)."""
    clips: list[Path] = []
    for item in inputs:
        paths = [Path(p) for p in sorted(glob.glob(item))] if any(c in item for c in GLOB_CHARS) else [Path(item)]
        if not paths:
            raise UserError(f"no clip matches {item}")
        for path in paths:
            if path.is_dir():
                found = clips_in_folder(path)
                if not found:
                    raise UserError(f"no clips (videos or image folders) in folder {path}")
                clips += found
            elif path.is_file():
                clips.append(path)
            else:
                raise UserError(f"input not found: {path}")
    unique = dict.fromkeys(p.resolve() for p in clips)
    return list(unique)


def clip_names(sources: list[Path]) -> list[str]:
    """Output folder names: the file stem (or folder name), with parent folders prefixed while two are alike
    (``s1/video.mp4``, ``s2/video.mp4`` -> ``s1_video``, ``s2_video``)."""
    def name(path: Path, depth: int) -> str:
        base = path.name if path.is_dir() else path.stem
        parents = [p.name for p in list(path.parents)[:depth] if p.name][::-1]
        return "_".join(parents + [base])

    depth = [0] * len(sources)
    while True:
        names = [name(p, d) for p, d in zip(sources, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            return names
        grown = False
        for i, n in enumerate(names):
            if n in clashes and depth[i] < len(sources[i].parents):
                depth[i] += 1
                grown = True
        if not grown:  # identical paths cannot happen (expand_inputs removes repeats); be safe anyway
            return [f"{n}_{i}" if n in clashes else n for i, n in enumerate(names)]


def _manifest_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read manifest {path}: {err.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise UserError(f"manifest {path} is not valid JSON: {err}") from None
        rows = data.get("clips") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"manifest {path}: expected a list of objects (or {{\"clips\": [...]}})")
        return rows
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "clip" not in [f.strip() for f in reader.fieldnames]:
        raise UserError(f"manifest {path}: CSV needs a header with a 'clip' column ({', '.join(MANIFEST_COLUMNS)})")
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def _manifest_job(row: dict, where: str, base: Path) -> ClipJob:
    unknown = sorted(set(row) - set(MANIFEST_COLUMNS))
    if unknown:
        raise UserError(f"{where}: unknown column(s) {', '.join(unknown)} (known: {', '.join(MANIFEST_COLUMNS)})")
    clip = str(row.get("clip") or "")
    if not clip:
        raise UserError(f"{where}: no clip")
    source = (base / clip).resolve()
    if not source.exists():
        raise UserError(f"{where}: clip not found: {source}")
    boxes = str(row.get("boxes") or "") or None
    if boxes is not None:
        boxes = str((base / boxes).resolve())
        if not Path(boxes).is_file():
            raise UserError(f"{where}: boxes file not found: {boxes}")
    focal = row.get("focal")
    if focal in (None, ""):
        focal = None
    else:
        try:
            focal = float(focal)
        except (TypeError, ValueError):
            focal = -1.0
        if not focal > 0:
            raise UserError(f"{where}: focal must be a positive number, got '{row.get('focal')}'")
    category = str(row.get("category") or "").strip() or None  # `run` checks it, as for a single clip
    return ClipJob(str(row.get("name") or ""), str(source), category, boxes, focal)


def read_clip_list(path: Path) -> list[ClipJob]:
    """The manifest's clips (names still empty where the manifest gives none)."""
    path = Path(path)
    rows = _manifest_rows(path)
    return [_manifest_job(row, f"manifest {path} row {i + 1}", path.parent) for i, row in enumerate(rows)]


def plan_clips(inputs: list[str], manifest: Optional[Path] = None) -> list[ClipJob]:
    """Every clip of the batch: the manifest's, then the inputs' not already in it; names made unique."""
    jobs = read_clip_list(manifest) if manifest else []
    listed = {Path(j.source) for j in jobs}
    jobs += [ClipJob("", str(p)) for p in expand_inputs(inputs) if p not in listed]
    if not jobs:
        raise UserError("no clips given: pass clip files, folders or globs, or --manifest")
    auto = clip_names([Path(j.source) for j in jobs])
    names = [j.name or a for j, a in zip(jobs, auto)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"two clips would share the output folder {repeated[0]}: give them names in the manifest")
    bad = [n for n in names if n in (".", "..") or "/" in n or n.startswith(".")]
    if bad:
        raise UserError(f"clip name '{bad[0]}' cannot be an output folder name")
    return [ClipJob(n, j.source, j.category, j.boxes, j.focal) for j, n in zip(jobs, names)]
