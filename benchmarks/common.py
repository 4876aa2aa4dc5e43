"""Shared helpers of the benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from datetime import date
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (ffmpeg, subprocesses)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed(fn):
    """(fn(), wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def machine() -> str:
    """'N cores, CPU model, load average, date' of this machine."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {cpu_model()}, load average {load:.1f} at start, {date.today().isoformat()}"


def slug(name: str) -> str:
    """``name`` as a folder name: every character that is not a letter or digit becomes '_'."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between <!-- name:start --> and <!-- name:end -->."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def hand_object_signed_distance(fit_dir: Path):
    """(T, V) signed distance (m) of every fitted hand vertex to the fitted object surface,
    negative inside, from a fit folder (``FitOutput.SCENE`` + ``FitPoses``)."""
    import torch

    from hoirecon.fit.scene import load_object_sdf
    from hoirecon.geometry.transforms import transform_points
    from hoirecon.hand import build_hand_model
    from hoirecon.stages.outputs import FitOutput, FitPoses

    with torch.no_grad():
        sdf = load_object_sdf(Path(fit_dir) / FitOutput.SCENE)
        poses = FitPoses.load(Path(fit_dir))
        hand = build_hand_model("anny")
        art = torch.as_tensor(poses.articulation)
        verts = hand(art, torch.zeros(len(art), 3), torch.as_tensor(poses.shape)[None], None,
                     side=str(poses.side)).verts
        verts_obj = transform_points(torch.as_tensor(poses.T_hand_to_obj), verts)
        return sdf(verts_obj.reshape(-1, 3)).reshape(verts_obj.shape[:2]).numpy()


def hand_penetration_mm(fit_dir: Path):
    """(T,) deepest hand vertex inside the fitted object per frame (mm, 0 = none inside)."""
    d = hand_object_signed_distance(fit_dir)
    return (-d.min(1)).clip(min=0.0) * 1000.0
