"""First-frame boxes given by the user: ``--hand-box``/``--object-box`` text, ``boxes.json`` files.

A box is ``(x0, y0, x1, y1)`` in pixels of the original video. Every way a box reaches the
masks stage goes through ``check_box`` against the first frame, so a box that cannot select
anything (NaN, inf, empty, entirely outside the image) is a one-line ``UserError`` naming the
image size, never an empty mask later.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from hoirecon.errors import UserError

Box = tuple[float, float, float, float]
BOX_KEYS = ("hand", "object")
_EXAMPLE = '{"hand": [x0,y0,x1,y1], "object": [x0,y0,x1,y1]}'


def parse_box(text: str | None, option: str) -> Optional[Box]:
    """'x0,y0,x1,y1' -> tuple of floats; UserError on bad syntax or non-finite numbers."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UserError(f"{option} must be four numbers x0,y0,x1,y1, got '{text}'")
    check_box_numbers(values, option)
    return values  # type: ignore[return-value]


def check_box_numbers(box: tuple, name: str) -> None:
    """UserError unless ``box`` is four finite numbers with x1 > x0 and y1 > y0."""
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise UserError(f"{name} must be four finite numbers x0,y0,x1,y1, got {list(box)}")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise UserError(f"{name} must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {list(box)}")


def check_box(box: Box, name: str, image_wh: tuple[int, int]) -> None:
    """UserError unless ``box`` is a valid box that overlaps an image of ``image_wh`` pixels.

    A box partly outside the image is fine (the masks stage clips it); one with no pixel in
    the image selects nothing.
    """
    check_box_numbers(box, name)
    w, h = image_wh
    if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
        raise UserError(f"{name} {[round(v, 1) for v in box]} is entirely outside the first frame, which is "
                        f"{w}x{h} pixels (boxes are x0,y0,x1,y1 in original video pixels)")


def read_boxes_file(path: Path) -> tuple[Optional[Box], Optional[Box]]:
    """boxes.json: ``{"hand": [x0,y0,x1,y1], "object": [x0,y0,x1,y1]}`` in original-video pixels.

    Either key may be missing (that box is then detected); any other key is refused, since a
    misspelt key would otherwise silently fall back to automatic boxes.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"boxes file {path} is a folder: expected a JSON file like {_EXAMPLE}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"cannot read boxes file {path}: expected JSON like {_EXAMPLE}") from None
    if not isinstance(data, dict):
        raise UserError(f"boxes file {path}: expected a JSON object like {_EXAMPLE}")
    unknown = sorted(set(data) - set(BOX_KEYS))
    if unknown or not data:
        got = ", ".join(f'"{k}"' for k in unknown) if unknown else "no keys"
        raise UserError(f"boxes file {path}: unknown keys {got}; expected \"hand\" and/or \"object\" "
                        f"(like {_EXAMPLE})")
    boxes = []
    for key in BOX_KEYS:
        value = data.get(key)
        if value is None:
            boxes.append(None)
            continue
        try:
            box = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4:
            raise UserError(f"boxes file {path}: \"{key}\" needs 4 numbers x0,y0,x1,y1, got {value!r}")
        check_box_numbers(box, f"boxes file {path}: \"{key}\"")
        boxes.append(box)
    return boxes[0], boxes[1]


def sidecar_boxes(source: str) -> Optional[Path]:
    """A ``boxes.json`` next to the clip (``<clip>.boxes.json`` or ``boxes.json`` in its folder)."""
    src = Path(source)
    for cand in (src.with_suffix(".boxes.json"), (src if src.is_dir() else src.parent) / "boxes.json"):
        if cand.is_file():
            return cand
    return None
