"""Throughput of `hoirecon batch` against the README's shell loop, in clips per hour.

Six synthetic 30-frame 256 px clips (one per paper category, seeds 0-5), every stage from the
video (`run` with `--prior none`), each way into a fresh output folder:
the shell loop (one `hoirecon run` after another), `batch --workers 1`, `batch --workers 2`.
Writes the section `bench_batch` of BENCHMARKS.md.

    python benchmarks/bench_batch.py [--clips 6] [--frames 30] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

CATEGORIES = ("mug", "bottle", "kettle", "bowl", "knife", "toy_car")
RUN_OPTIONS = ["--prior", "none"]


def hoirecon(*args: str) -> list[str]:
    return [sys.executable, "-m", "hoirecon", *args]


def make_clips(root: Path, count: int, frames: int) -> list[tuple[Path, str]]:
    clips = []
    for i in range(count):
        category = CATEGORIES[i % len(CATEGORIES)]
        folder = root / f"{category}_{i}"
        subprocess.run(hoirecon("synth", "-c", category, "--out", str(folder), "--frames", str(frames),
                                "--seed", str(i), "--quiet"), check=True)
        clips.append((folder / "video.mp4", category))
    return clips


def manifest(clips: list[tuple[Path, str]], path: Path) -> Path:
    path.write_text("clip,category,name\n" + "".join(f"{c},{cat},{c.parent.name}\n" for c, cat in clips))
    return path


def shell_loop(clips: list[tuple[Path, str]], out: Path) -> tuple[float, int]:
    """The README's loop: one `run` after another; (wall seconds, clips done)."""
    t0, done = time.perf_counter(), 0
    for clip, category in clips:
        p = subprocess.run(hoirecon("run", str(clip), "-c", category, "--out", str(out / clip.parent.name),
                                    *RUN_OPTIONS, "--quiet"))
        done += p.returncode == 0
    return time.perf_counter() - t0, done


def batch(manifest_path: Path, out: Path, workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    subprocess.run(hoirecon("batch", "--manifest", str(manifest_path), "--out", str(out), "--workers", str(workers),
                            *RUN_OPTIONS, "--quiet"))
    seconds = time.perf_counter() - t0
    done = sum('"status": "done"' in line for line in (out / "batch.jsonl").read_text().splitlines())
    return seconds, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temp one, removed).")
    args = parser.parse_args()
    where = machine()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_batch_"))
    clips = make_clips(work / "clips", args.clips, args.frames)
    listed = manifest(clips, work / "clips.csv")
    rows = []
    for label, fn in (("shell loop (`hoirecon run` per clip)", lambda: shell_loop(clips, work / "loop")),
                      ("`hoirecon batch --workers 1`", lambda: batch(listed, work / "w1", 1)),
                      ("`hoirecon batch --workers 2`", lambda: batch(listed, work / "w2", 2))):
        seconds, done = fn()
        rows.append(f"| {label} | {done}/{len(clips)} | {seconds:.0f} | {3600 * len(clips) / seconds:.1f} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "## Batch throughput (`benchmarks/bench_batch.py`)",
        "",
        f"{len(clips)} synthetic {args.frames}-frame 256 px clips (one per category, seeds 0-{len(clips) - 1}), every "
        "stage from the video, `--prior none`, each way into a fresh folder. "
        f"Command: `python benchmarks/bench_batch.py`. Machine: {where}.",
        "",
        "| how | clips done | wall seconds | clips per hour |",
        "|---|---|---|---|",
        *rows,
    ])
    write_section("bench_batch", body)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
