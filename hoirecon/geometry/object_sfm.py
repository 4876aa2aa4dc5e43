"""Object-frame cameras and the focal length from structure from motion on the object's pixels.

A held object is rigid, so the pixels inside its masks behave like a static scene seen by a
moving camera. COLMAP's incremental mapper (``pycolmap``, SIFT + exhaustive matching) on
those pixels alone (COLMAP image masks hide the hand and the background) gives, for each
frame it registers, the rotation and the (scale-free) translation of the object in the
camera, and one shared focal length. Where the object has little texture it registers few
frames or none; callers fall back to the hand-derived cameras there.

``object_sfm(frames, object_masks, workdir)`` -> :class:`ObjectSfM`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from hoirecon.io.quiet import quiet_native_stderr


@dataclass(frozen=True)
class ObjectSfMConfig:
    """max_features: SIFT features per image. min_registered: below this many registered
    frames the result is not used. mask_dilate_px: the object mask is grown by this much so
    that features on its silhouette keep their support region. min_focal_ratio,
    max_focal_ratio: bounds on focal / max(W, H) (COLMAP's own defaults are looser; a
    focal outside these means the masks leaked into the background). attempts: the
    mapper's start is random and an unlucky initial pair registers only a few frames, so it
    is rerun with other seeds (features and matches are kept) until at least
    ``enough_fraction`` of the frames register; the largest model wins. num_threads: 1 (features,
    matching and mapping), so that a clip's result is the same on every run (with 2, COLMAP's
    worker threads draw their own random numbers: toy_plane's focal came out 814 and 819 px
    from the same frames and masks)."""

    max_features: int = 4096
    min_registered: int = 3
    mask_dilate_px: int = 3
    min_focal_ratio: float = 0.5
    max_focal_ratio: float = 3.0
    num_threads: int = 1
    attempts: int = 4
    enough_fraction: float = 0.6


@dataclass
class ObjectSfM:
    """Per-frame object poses in the camera from structure from motion.

    registered: (T,) bool. R_cam_from_obj: (T, 3, 3), t_cam_from_obj: (T, 3) (COLMAP's
    arbitrary scale; identity / zero where not registered). focal_px: shared focal (pixels)
    or None. num_points: 3D points in the model. center: (3,) median of the 3D points (the
    object's centre in the model's frame and scale). reason: why nothing usable came out
    ('' if ok).
    """

    registered: np.ndarray
    R_cam_from_obj: np.ndarray
    t_cam_from_obj: np.ndarray
    focal_px: float | None
    num_points: int
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.focal_px is not None and not self.reason


def _write_inputs(frames: Sequence[np.ndarray], object_masks: np.ndarray, workdir: Path, dilate_px: int) -> list[str]:
    images, masks = workdir / "images", workdir / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1,) * 2)
    names = []
    for t, (image, mask) in enumerate(zip(frames, object_masks)):
        name = f"{t:06d}.png"
        cv2.imwrite(str(images / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        # COLMAP reads <mask_path>/<image name>.png; zero pixels get no features.
        cv2.imwrite(str(masks / f"{name}.png"), cv2.dilate(mask.astype(np.uint8), kernel) * 255)
        names.append(name)
    return names


def object_sfm(frames: Sequence[np.ndarray], object_masks: np.ndarray, workdir: Path,
               cfg: ObjectSfMConfig = ObjectSfMConfig(), focal_px: float | None = None) -> ObjectSfM:
    """Structure from motion on the object's pixels.

    Args:
        frames: T x (H, W, 3) uint8 RGB. object_masks: (T, H, W) bool.
        workdir: an empty scratch folder (images, masks, database, model).
        focal_px: the known focal length (kept fixed), or None to estimate it.
    Returns:
        :class:`ObjectSfM` (``usable`` False, with ``reason``, when pycolmap is missing or
        too few frames register).
    """
    T = len(frames)
    h, w = frames[0].shape[:2]
    empty = ObjectSfM(np.zeros(T, bool), np.tile(np.eye(3), (T, 1, 1)), np.zeros((T, 3)), None, 0)
    try:
        import pycolmap
    except ImportError:
        empty.reason = "pycolmap is not installed"
        return empty
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)  # COLMAP would reuse a killed run's database
    names = _write_inputs(frames, object_masks, workdir, cfg.mask_dilate_px)
    database = workdir / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.mask_path = str(workdir / "masks")
    reader.camera_model = "SIMPLE_PINHOLE"
    if focal_px is not None:
        reader.camera_params = f"{focal_px},{(w - 1) / 2.0},{(h - 1) / 2.0}"
    pycolmap.set_random_seed(0)  # COLMAP seeds from the clock by default
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.max_num_features = cfg.max_features
    extraction.num_threads = cfg.num_threads
    with quiet_native_stderr():
        pycolmap.extract_features(database, workdir / "images", image_names=names,
                                  camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  extraction_options=extraction, device=pycolmap.Device.cpu)
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = cfg.num_threads
        verification = pycolmap.TwoViewGeometryOptions()
        verification.ransac.random_seed = 0
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=pycolmap.Device.cpu)
    model = None
    for attempt in range(cfg.attempts):
        candidate = _map(pycolmap, database, workdir, attempt, cfg, refine_focal=focal_px is None)
        if candidate is not None and (model is None or candidate.num_reg_images() > model.num_reg_images()):
            model = candidate
        if model is not None and model.num_reg_images() >= cfg.enough_fraction * T:
            break
    if model is None:
        empty.reason = "no frames registered (too little texture on the object?)"
        return empty
    return _from_model(model, names, (w, h), cfg, empty)


def _map(pycolmap, database: Path, workdir: Path, seed: int, cfg: ObjectSfMConfig, refine_focal: bool):
    """One incremental mapping run; its largest model or None."""
    options = pycolmap.IncrementalPipelineOptions()
    options.ba_refine_focal_length = refine_focal
    options.num_threads = cfg.num_threads
    options.min_focal_length_ratio = cfg.min_focal_ratio
    options.max_focal_length_ratio = cfg.max_focal_ratio
    options.random_seed = seed
    output = workdir / f"model_{seed}"
    output.mkdir(parents=True, exist_ok=True)
    with quiet_native_stderr():
        models = pycolmap.incremental_mapping(database, workdir / "images", output, options=options)
    if not models:
        return None
    return max(models.values(), key=lambda m: m.num_reg_images())


def _from_model(model, names: list[str], size_wh: tuple[int, int], cfg: ObjectSfMConfig, out: ObjectSfM) -> ObjectSfM:
    index = {name: t for t, name in enumerate(names)}
    for image in model.images.values():
        if not image.has_pose:
            continue
        t = index[image.name]
        pose = image.cam_from_world()
        out.R_cam_from_obj[t] = np.asarray(pose.rotation.matrix())
        out.t_cam_from_obj[t] = np.asarray(pose.translation)
        out.registered[t] = True
    out.num_points = int(model.num_points3D())
    if out.num_points:
        out.center = np.median(np.stack([np.asarray(p.xyz) for p in model.points3D.values()]), 0)
    camera = next(iter(model.cameras.values()))
    out.focal_px = float(camera.params[0])
    ratio = out.focal_px / max(size_wh)
    if out.registered.sum() < cfg.min_registered:
        out.reason = f"only {int(out.registered.sum())} of {len(names)} frames registered"
    elif not cfg.min_focal_ratio <= ratio <= cfg.max_focal_ratio:
        out.reason = f"implausible focal {out.focal_px:.0f} px (object masks leaking into the background?)"
    return out
