"""Mask folders on disk: ``<dir>/hand/NNNNNN.png`` and ``<dir>/object/NNNNNN.png`` (0 / 255).

This is the layout the masks stage writes and the layout ``--masks-dir`` accepts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hoirecon.errors import UserError
from hoirecon.io.video import IMAGE_SUFFIXES, list_image_files

KINDS = ("hand", "object")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """(H, W) bool -> PNG with 0/255."""
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
        raise OSError(f"could not write {path}")


def read_mask(path: Path) -> np.ndarray:
    """PNG/JPG mask -> (H, W) bool (any non-zero pixel, or > 127 for 8-bit greyscale)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserError(f"cannot read mask {path}: not an image or corrupt")
    if img.ndim == 3:
        img = img[..., :3].max(axis=2)
    return img > (127 if img.dtype == np.uint8 else 0)


def write_mask_folder(root: Path, hand: np.ndarray, obj: np.ndarray) -> None:
    """hand, obj: (T, H, W) bool."""
    for kind, masks in zip(KINDS, (hand, obj)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for t, m in enumerate(masks):
            write_mask(root / kind / f"{t:06d}.png", m)


def read_mask_folder(root: Path, num_frames: int | None = None,
                     size_wh: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate a mask folder -> (hand (T,H,W) bool, object (T,H,W) bool).

    UserError (one line) for: missing subfolder, wrong count, wrong size, unreadable file, a kind
    that is empty in every frame.
    """
    root = Path(root)
    out = []
    for kind in KINDS:
        sub = root / kind
        if not sub.is_dir():
            raise UserError(f"mask folder {root} has no '{kind}/' subfolder (expected {root}/{kind}/000000.png ...)")
        files = list_image_files(sub)
        if not files:
            raise UserError(f"no mask images ({', '.join(IMAGE_SUFFIXES)}) in {sub}")
        if num_frames is not None and len(files) != num_frames:
            raise UserError(f"{sub} has {len(files)} masks but the clip has {num_frames} frames")
        masks = []
        for f in files:
            m = read_mask(f)
            if size_wh is not None and (m.shape[1], m.shape[0]) != tuple(size_wh):
                raise UserError(f"mask {f} is {m.shape[1]}x{m.shape[0]}, frames are {size_wh[0]}x{size_wh[1]}")
            masks.append(m)
        if len({m.shape for m in masks}) != 1:
            raise UserError(f"masks in {sub} do not all have the same size")
        if not any(m.any() for m in masks):
            raise UserError(f"every {kind} mask in {sub} is empty: nothing to reconstruct the {kind} from "
                            f"(masks are white on black)")
        out.append(np.stack(masks))
    return out[0], out[1]


def overlay_masks(image: np.ndarray, hand: np.ndarray, obj: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Tint hand pixels blue and object pixels orange; (H,W,3) uint8."""
    out = image.astype(np.float32).copy()
    for mask, colour in ((hand, (40, 120, 255)), (obj, (255, 150, 30))):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
        edge = mask ^ cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out[edge] = colour
    return out.clip(0, 255).astype(np.uint8)
