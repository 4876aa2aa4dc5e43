"""Video and image-folder reading/writing through the ffmpeg that imageio-ffmpeg ships.

All frames are ``(H, W, 3) uint8`` RGB numpy arrays. A phone video filmed upright is often
stored landscape with a rotation in its metadata; ffmpeg applies it, so the frames (and the size
reported) are as the video is meant to be seen.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import imageio_ffmpeg
import numpy as np

from hoirecon.errors import UserError
from hoirecon.io.folders import IMAGE_SUFFIXES, list_image_files

# A container that declares N frames but yields fewer than this share of them is truncated.
_TRUNCATION_TOLERANCE = 0.9

# imageio-ffmpeg warns on stderr whenever ffmpeg's rotation makes the frames' size differ from
# the stored one: the expected case for an upright phone video, and not the user's concern.
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


@dataclass
class ClipInfo:
    """What is known about a clip before decoding it fully."""

    fps: float
    width: int
    height: int
    declared_frames: int | None  # from the container (None for image folders or when unknown)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; UserError if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot read image {path}: not an image or corrupt")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB (H,W,3) or single-channel (H,W) uint8 image as PNG."""
    arr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")


def iter_clip(source: Path) -> tuple[ClipInfo, Iterator[np.ndarray]]:
    """Open a video file or an image folder; returns its info and a frame iterator.

    Raises UserError for a missing path, a file ffmpeg cannot decode, or an empty folder.
    The iterator raises UserError if decoding fails midway.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"input not found: {source}")
    if source.is_dir():
        files = list_image_files(source)
        if not files:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
        first = read_rgb(files[0])
        info = ClipInfo(fps=30.0, width=first.shape[1], height=first.shape[0], declared_frames=len(files))

        def gen_images() -> Iterator[np.ndarray]:
            for f in files:
                img = read_rgb(f)
                if img.shape != first.shape:
                    raise UserError(f"image {f.name} is {img.shape[1]}x{img.shape[0]}, expected "
                                    f"{first.shape[1]}x{first.shape[0]} like the first image")
                yield img

        return info, gen_images()
    if not os.access(source, os.R_OK):
        raise UserError(f"cannot read {source}: permission denied")
    try:
        reader = imageio_ffmpeg.read_frames(str(source), pix_fmt="rgb24")
        meta = reader.__next__()
    except (OSError, RuntimeError, StopIteration) as err:
        raise UserError(f"cannot read video {source}: not a video ffmpeg can decode ({_first_line(err)})") from None
    width, height = meta.get("size", (0, 0))
    if not width or not height:
        raise UserError(f"cannot read video {source}: it has no video stream")
    fps = float(meta.get("fps") or 30.0)
    declared = None
    duration = meta.get("duration")
    if duration and fps:
        declared = int(round(float(duration) * fps))
    info = ClipInfo(fps=fps, width=int(width), height=int(height), declared_frames=declared)

    def gen_video() -> Iterator[np.ndarray]:
        nbytes = width * height * 3
        try:
            for raw in reader:
                if len(raw) != nbytes:
                    raise UserError(f"video {source} is truncated: a frame has {len(raw)} of {nbytes} bytes")
                yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        except (OSError, RuntimeError) as err:
            raise UserError(f"video {source} is corrupt or truncated: {_first_line(err)}") from None
        finally:
            reader.close()

    return info, gen_video()


def check_frame_count(source: Path, info: ClipInfo, decoded: int) -> None:
    """UserError for zero frames, or far fewer frames than the container declares (truncation)."""
    if decoded == 0:
        raise UserError(f"{source} has zero decodable frames")
    if info.declared_frames and decoded < _TRUNCATION_TOLERANCE * info.declared_frames - 1:
        raise UserError(f"video {source} looks truncated: decoded {decoded} of {info.declared_frames} frames")


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Encode (H,W,3) uint8 RGB frames as H.264 MP4 (yuv420p; sizes padded to even). Returns count."""
    writer = None
    count = 0
    try:
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(path), (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264", quality=7,
                    macro_block_size=1, ffmpeg_log_level="error")
                writer.send(None)
            writer.send(frame)
            count += 1
    finally:
        if writer is not None:
            writer.close()
    return count


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1][:200] if text else type(err).__name__
