"""Open hoirecon's pages in headless Chromium: a clip's ``view.html`` or a batch's ``index.html``.

    python benchmarks/check_viewer.py OUT/export/view.html DIR/index.html [--shots FOLDER]

For each page: Chromium loads it from disk (network off), runs it for a few seconds of virtual
time, dumps the DOM and takes a screenshot. A page passes when it logged no error and its
picture is not blank; a ``view.html`` must also report ``data-state="ready"`` (the glb was
parsed and rendered) and its 3D canvas area must show more than the background. Exit 0 when
every page passes, 1 otherwise, 2 without Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run",
                  # WebGL without a GPU: Chromium's software renderer, which it now wants asked for by name
                  "--enable-unsafe-swiftshader"]
WINDOW = (1200, 800)
VIRTUAL_TIME_MS = 8000
SIDE_PANEL_PX = 360  # view.html: the metrics column on the right; the canvas is the rest
MIN_STD = 8.0  # grey levels: a blank page or an empty canvas is flat
BACKGROUND = np.array([244, 244, 244])  # view.html's clear colour (#f4f4f4)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, page: Path, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--virtual-time-budget={VIRTUAL_TIME_MS}",
                               *extra, page.resolve().as_uri()], capture_output=True, text=True, timeout=300)


def page_state(dom: str) -> tuple[str, str]:
    """(data-state, data-errors) of the page's <body>; ("", "") when it has none (index.html)."""
    body = re.search(r"<body[^>]*>", dom)
    if not body:
        return "", ""
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(0)))
    return attrs.get("data-state", ""), attrs.get("data-errors", "")


def console_errors(stderr: str) -> list[str]:
    """Errors the page logged, as Chromium prints them with --enable-logging=stderr."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def picture_problems(png: Path, is_view: bool) -> list[str]:
    import cv2

    image = cv2.imread(str(png))
    if image is None:
        return ["no screenshot"]
    problems = []
    if image.std() < MIN_STD:
        problems.append(f"blank page (std {image.std():.1f})")
    if is_view:
        canvas = image[:, : image.shape[1] - SIDE_PANEL_PX, ::-1].astype(np.int32)
        drawn = np.abs(canvas - BACKGROUND).sum(axis=2) > 30
        if drawn.mean() < 0.005:
            problems.append(f"empty 3D canvas ({100 * drawn.mean():.2f} % of it drawn)")
    return problems


def check_page(browser: str, page: Path, shot: Path) -> list[str]:
    """Problems of one page (an empty list: it passed)."""
    is_view = page.name == "view.html"
    dom = _chromium(browser, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    state, errors = page_state(dom.stdout)
    problems = [f"console: {line}" for line in console_errors(dom.stderr)]
    if errors:
        problems.append(f"page errors: {errors}")
    if is_view and state != "ready":
        problems.append(f"page state '{state or 'none'}', expected 'ready'")
    _chromium(browser, page, f"--screenshot={shot.resolve()}")
    return problems + picture_problems(shot, is_view)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--shots", type=Path, default=None, help="Folder for the screenshots (default: a temp one).")
    args = parser.parse_args(argv)
    browser = find_chromium()
    if browser is None:
        print("check_viewer: no chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    shots = args.shots or Path(tempfile.mkdtemp(prefix="hoirecon_shots_"))
    shots.mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, page in enumerate(args.pages):
        if not page.is_file():
            print(f"FAIL {page}: not found")
            failed += 1
            continue
        shot = shots / f"{i:02d}_{page.parent.name}_{page.stem}.png"
        problems = check_page(browser, page, shot)
        print(("FAIL" if problems else "ok  ") + f" {page} (screenshot {shot})")
        for p in problems:
            print(f"     {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
