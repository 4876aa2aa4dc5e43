"""Shared test helpers: small clips the tests make themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "official"


def make_frames(n: int = 12, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """A moving bright square on a checkerboard: (h, w, 3) uint8 frames."""
    yy, xx = np.mgrid[:h, :w]
    out = []
    for t in range(n):
        img = np.full((h, w, 3), 60, np.uint8)
        img[((xx // 8 + yy // 8) % 2) == 0] = 110
        x0 = 4 + 2 * t
        img[10:26, x0:x0 + 16] = (220, 80, 40)
        out.append(img)
    return out


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    from hoirecon.io.video import write_video

    path = tmp_path / "clip.mp4"
    write_video(path, make_frames(), fps=10)
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in a subprocess; returns (exit code, stdout, stderr)."""
    import subprocess

    p = subprocess.run([sys.executable, "-m", "hoirecon", *args], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr
