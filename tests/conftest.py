"""Shared test helpers: small clips the tests make themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for every test: the tests' tensors are small and the machines they run
    on are shared, where spinning OpenMP threads made them 3-10x slower (measured on 2 cores)."""
    from hoirecon.io.threads import torch_threads

    with torch_threads(1):
        yield


def look_at_np(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3,), (3,) -> T_world_to_cam (4, 4) float64 looking from eye at target, image "up" = world +y
    (``hoirecon.export.views.look_at``, in numpy for fixtures)."""
    import torch

    from hoirecon.export.views import look_at

    T = look_at(torch.as_tensor(eye, dtype=torch.float64)[None], torch.as_tensor(target, dtype=torch.float64),
                torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    return T[0].numpy()


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
