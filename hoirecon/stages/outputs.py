"""Stage artifacts as classes that save, load and validate themselves.

A module that reads or writes another stage's files goes through these classes, so a file
name or an array key is spelled in one place. Each class is the contract of one file:

- ``FramesMeta``: ``<out>/frames/meta.json`` and the numbered frame PNGs beside it (written by
  the frames stage and by ``hoirecon synth``; read by every later stage).
- ``MasksOutput``: ``<out>/masks/``: ``hand/`` and ``object/`` mask PNGs, ``quality.json`` and
  ``boxes.json`` (written by the masks stage and by ``hoirecon synth``; read by hand, fit,
  export and pose).
- ``ExportOutput``: ``<out>/export/``: the names of the export's files, and its
  ``poses.npz`` / ``poses.json`` (read by the viewer, ``batch``'s index and the benchmarks).
- ``GroundTruth``: ``<out>/gt/gt.npz`` (and the names of ``object.ply``, ``depth.npz`` and
  ``info.json`` beside it), the ground truth of a ``hoirecon synth`` clip (read by ``eval`` and
  the pose network's data).
- ``HandsOutput``: ``<out>/hand/hands.npz``, the hand stage's per-frame hand and camera
  (also written by ``hoirecon synth`` as a done hand stage; read by the fit and ``eval``).
- ``FitPoses``: ``<out>/fit/poses.npz``, the fit's per-frame poses (read by export and
  ``eval``).
- ``PoseOutput``: ``<out>/pose/poses.npz``, the pose network's per-frame hand and object poses
  (read by the fit with ``--init pose``).

Shapes (T frames): ``K`` (3, 3) pixel intrinsics of the working frames; ``T_cam_to_hand``,
``T_hand_to_obj`` (T, 4, 4) rigid transforms, metres; ``articulation`` (T, 45); ``shape``
(10,). Full key lists and meanings: ``docs/stages.md``.

Errors: ``validate`` raises ``ValueError`` (a program built a bad artifact); ``load`` turns a
missing, unreadable or malformed file into a one-line ``UserError`` naming it (a folder given
by the user, or edited by hand, is input).

This module imports numpy and the standard library only: the CLI's ``status`` and light
commands may use it (``MasksOutput.save`` / ``load`` import the mask PNG I/O, OpenCV, when called).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hoirecon.errors import UserError

SIDES = ("right", "left")


def _npz_arrays(path: Path, missing_hint: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles); UserError when absent or unreadable."""
    if not path.is_file():
        raise UserError(f"missing {path}: {missing_hint}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _check_shapes(artifact, shapes: dict[str, tuple[int, ...]], num_frames: int) -> None:
    """ValueError unless each named field of ``artifact`` has its shape (None: the key is missing)."""
    for name, shape in shapes.items():
        value = getattr(artifact, name)
        got = "missing" if value is None else tuple(np.shape(value))
        if got != shape:
            raise ValueError(f"'{name}' must have shape {shape} for {num_frames} frames, got {got}")


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")


def _save_fields(artifact, folder: Path, compressed: bool = False) -> Path:
    """Validate a dataclass artifact and write its fields to ``folder/<artifact.FILE>``; its path."""
    artifact.validate()
    path = Path(folder) / artifact.FILE
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **_field_arrays(artifact))
    return path


def _field_arrays(artifact) -> dict[str, np.ndarray]:
    """{key: array} of a dataclass artifact's fields in declaration order, None fields left out
    (the order is the file's key order, so a rewrite gives the same bytes)."""
    arrays = {}
    for f in dataclasses.fields(artifact):
        value = getattr(artifact, f.name)
        if value is not None:
            arrays[f.name] = np.array(value) if isinstance(value, str) else value
    return arrays


def _json_file(path: Path, missing_hint: str) -> Any:
    """The JSON value of a file; UserError when absent or unreadable."""
    if not path.is_file():
        raise UserError(f"missing {path}: {missing_hint}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _wh(value) -> Optional[tuple[int, int]]:
    """(W, H) ints of a [W, H] pair, None stays None."""
    return None if value is None else tuple(int(v) for v in value)


@dataclass(frozen=True, eq=False)
class FramesMeta:
    """``frames/meta.json`` and the frames beside it (``000000.png ...``, RGB, working size).

    ``fps`` of the working frames (the source's divided by ``stride``); ``num_frames`` T, the
    number of PNGs; ``size`` (W, H) of the PNGs; ``original_size`` (W, H) of the source. The rest
    records where the frames came from: ``stride``, ``source`` (path), ``source_digest``
    (sha256), ``source_kind`` ("video" | "images"), ``synthetic`` (True in a synth clip). Only
    ``fps``, ``num_frames`` and ``size`` are required (a folder made by a test may hold only
    them); None fields are not written. The file's key order is ``KEYS``.
    """

    FILE = "meta.json"
    KEYS = ("fps", "num_frames", "original_size", "size", "stride", "source", "source_digest", "source_kind",
            "synthetic")
    FRAME_GLOB = "[0-9][0-9][0-9][0-9][0-9][0-9].png"

    fps: float
    num_frames: int
    size: tuple[int, int]
    original_size: Optional[tuple[int, int]] = None
    stride: Optional[int] = None
    source: Optional[str] = None
    source_digest: Optional[str] = None
    source_kind: Optional[str] = None
    synthetic: Optional[bool] = None

    @property
    def width(self) -> int:
        return int(self.size[0])

    @property
    def height(self) -> int:
        return int(self.size[1])

    @property
    def source_size(self) -> tuple[int, int]:
        """(W, H) of the source: ``original_size``, or ``size`` where it was not recorded."""
        return tuple(self.original_size if self.original_size is not None else self.size)

    @staticmethod
    def frame_path(folder: Path, t: int) -> Path:
        """``folder/NNNNNN.png``, frame ``t``."""
        return Path(folder) / f"{t:06d}.png"

    @classmethod
    def frame_paths(cls, folder: Path) -> list[Path]:
        """The numbered PNGs of a frames folder, in order."""
        return sorted(Path(folder).glob(cls.FRAME_GLOB))

    def to_dict(self) -> dict:
        """The file's JSON object: ``KEYS`` in order, None fields left out."""
        values = {k: getattr(self, k) for k in self.KEYS}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None}

    def validate(self, folder: Optional[Path] = None) -> None:
        """ValueError unless the sizes are positive (W, H) pairs, ``num_frames`` >= 0, ``fps``
        and ``stride`` positive where given, and (with ``folder``) ``num_frames`` equals the number
        of frame PNGs in it."""
        for name in ("size", "original_size"):
            value = getattr(self, name)
            if value is None and name == "original_size":
                continue
            if value is None or len(value) != 2 or min(int(v) for v in value) <= 0:
                raise ValueError(f"'{name}' must be a positive [W, H], got {value!r}")
        if int(self.num_frames) < 0:
            raise ValueError(f"'num_frames' must be >= 0, got {self.num_frames}")
        if not float(self.fps) > 0:
            raise ValueError(f"'fps' must be positive, got {self.fps}")
        if self.stride is not None and int(self.stride) <= 0:
            raise ValueError(f"'stride' must be positive, got {self.stride}")
        if folder is not None:
            found = len(self.frame_paths(folder))
            if found != int(self.num_frames):
                raise ValueError(f"'num_frames' is {self.num_frames} but {folder} holds {found} frame PNGs")

    def save(self, folder: Path) -> Path:
        """Write ``folder/meta.json`` (after ``validate`` against the PNGs in ``folder``, which
        are written first); returns its path."""
        self.validate(folder)
        path = Path(folder) / self.FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def from_dict(cls, values: dict) -> "FramesMeta":
        """From the file's JSON object (unknown keys ignored); ValueError when a required key is
        missing."""
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object, got {type(values).__name__}")
        missing = [k for k in ("fps", "num_frames", "size") if k not in values]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        return cls(**{k: values.get(k) for k in cls.KEYS if k in values} | {
            "size": _wh(values["size"]), "original_size": _wh(values.get("original_size")),
            "num_frames": int(values["num_frames"])})

    @classmethod
    def load(cls, folder: Path) -> "FramesMeta":
        """Read and validate ``folder/meta.json`` (``num_frames`` against the PNGs beside it);
        UserError naming the file when it is absent, unreadable or malformed."""
        path = Path(folder) / cls.FILE
        values = _json_file(path, "run the frames stage first")
        try:
            meta = cls.from_dict(values)
            meta.validate(folder)
        except (ValueError, TypeError) as err:
            raise UserError(f"{path}: {err}") from None
        return meta


def _write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value, indent=2))
    return path


@dataclass(frozen=True, eq=False)
class MasksOutput:
    """``masks/``: the hand and object masks of every frame, with the check and the boxes.

    ``hand``, ``obj`` (T, H, W) bool, stored as ``hand/NNNNNN.png`` and ``object/NNNNNN.png``
    (0 / 255; the layout of ``hoirecon.io.masks``, which ``--masks-dir`` also accepts).
    ``quality`` (``quality.json``): where the masks came from (``source``), whether they
    ``passed`` the forward-backward check, ``track_iou`` and ``per_frame_iou``. ``boxes``
    (``boxes.json``): the first-frame boxes the tracks started from (empty for the user's
    masks). Both are None where the file is absent (a folder made by a test holds masks only).
    A failed check writes only ``quality.json`` (``save_quality``) and its overlay into
    ``<out>/masks_failed/`` (``FAILED_DIR``).
    """

    QUALITY_FILE = "quality.json"
    BOXES_FILE = "boxes.json"
    OVERLAY_FILE = "overlay.mp4"
    FAILED_DIR = "masks_failed"  # beside the stage's folder: a failed check's overlay and quality.json

    hand: np.ndarray
    obj: np.ndarray
    quality: Optional[dict] = None
    boxes: Optional[dict] = None

    @property
    def num_frames(self) -> int:
        return int(np.shape(self.hand)[0]) if np.ndim(self.hand) else 0

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the masks."""
        return int(np.shape(self.hand)[2]), int(np.shape(self.hand)[1])

    def overlap_frames(self) -> np.ndarray:
        """(T,) bool: the frames where a pixel is both hand and object."""
        return (np.asarray(self.hand, bool) & np.asarray(self.obj, bool)).any(axis=(1, 2))

    def validate(self, frames: Optional[FramesMeta] = None, disjoint: bool = False) -> None:
        """ValueError unless ``hand`` and ``obj`` are (T, H, W) bool arrays of one shape (T and
        (W, H) those of ``frames`` where given), ``quality`` and ``boxes`` dicts or None, and
        (with ``disjoint``) no pixel is both hand and object. Disjointness is not required by
        default: the user's masks (``--masks-dir``) and the trackers' were never checked for it."""
        for name in ("hand", "obj"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != bool or value.ndim != 3:
                raise ValueError(f"'{name}' must be a (T, H, W) bool array, got "
                                 f"{getattr(value, 'dtype', type(value).__name__)} {np.shape(value)}")
        if self.hand.shape != self.obj.shape:
            raise ValueError(f"hand masks {self.hand.shape} and object masks {self.obj.shape} differ in shape")
        if frames is not None and (self.num_frames, self.size) != (frames.num_frames, tuple(frames.size)):
            raise ValueError(f"{self.num_frames} masks of {self.size[0]}x{self.size[1]} for {frames.num_frames} "
                             f"frames of {frames.width}x{frames.height}")
        for name in ("quality", "boxes"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"'{name}' must be a dict or None")
        if disjoint and self.overlap_frames().any():
            raise ValueError(f"hand and object masks overlap in {int(self.overlap_frames().sum())} frames")

    def save(self, folder: Path, frames: Optional[FramesMeta] = None, disjoint: bool = False) -> Path:
        """Write the mask PNGs, ``boxes.json`` and ``quality.json`` (those not None) into
        ``folder`` after ``validate``; returns ``folder``."""
        from hoirecon.io.masks import write_mask_folder  # cv2: not for the light commands

        self.validate(frames, disjoint)
        folder = Path(folder)
        write_mask_folder(folder, self.hand, self.obj)
        if self.boxes is not None:
            _write_json(folder / self.BOXES_FILE, self.boxes)
        if self.quality is not None:
            self.save_quality(folder, self.quality)
        return folder

    @classmethod
    def save_quality(cls, folder: Path, quality: dict) -> Path:
        """``folder/quality.json`` alone (what a failed check leaves in ``masks_failed/``)."""
        return _write_json(Path(folder) / cls.QUALITY_FILE, quality)

    @classmethod
    def load_quality(cls, folder: Path) -> Optional[dict]:
        """``folder/quality.json``, or None where absent; UserError naming it when unreadable."""
        path = Path(folder) / cls.QUALITY_FILE
        return _json_file(path, "") if path.is_file() else None

    @classmethod
    def load(cls, folder: Path, frames: Optional[FramesMeta] = None, *, num_frames: Optional[int] = None,
             size_wh: Optional[tuple[int, int]] = None) -> "MasksOutput":
        """Read a masks folder, the count and (W, H) checked against ``frames`` (or
        ``num_frames`` and ``size_wh``) where given; a one-line UserError naming the file or
        folder when something is missing or malformed."""
        from hoirecon.io.masks import read_mask_folder  # cv2: not for the light commands

        folder = Path(folder)
        if frames is not None:
            num_frames, size_wh = frames.num_frames, tuple(frames.size)
        hand, obj = read_mask_folder(folder, num_frames=num_frames, size_wh=size_wh)
        boxes_path = folder / cls.BOXES_FILE
        masks = cls(hand=hand, obj=obj, quality=cls.load_quality(folder),
                    boxes=_json_file(boxes_path, "") if boxes_path.is_file() else None)
        try:
            masks.validate(frames)
        except ValueError as err:
            raise UserError(f"{folder}: {err}") from None
        return masks


@dataclass(frozen=True, eq=False)
class HandsOutput:
    """``hand/hands.npz``: the hand initialisation of every frame.

    Required: ``K`` (3, 3), ``T_cam_to_hand`` (T, 4, 4), ``articulation`` (T, 45), ``shape`` (10,)
    float32 and ``side``. The rest is optional (a synth folder writes ``valid``,
    ``image_size`` and ``hand_model`` only); the hand stage writes all of it: the estimator's
    keypoints and weak cameras, and the structure-from-motion object cameras (``sfm_*``).
    Fields are declared in the file's key order.
    """

    FILE = "hands.npz"
    OVERLAY = "overlay.mp4"  # beside it: the fitted hands over the frames
    CAMERA = "camera.json"  # beside it: the intrinsics used and where they came from
    QUALITY = "quality.json"  # beside it: reprojection and mask IoU per frame

    K: np.ndarray
    T_cam_to_hand: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    side: str
    valid: Optional[np.ndarray] = None  # (T,) bool: the estimator found the hand
    keypoints_2d: Optional[np.ndarray] = None  # (T, 21, 2) pixels, MediaPipe order
    weak_cam: Optional[np.ndarray] = None  # (T, 3) scale-first weak cameras (s, t_x, t_y)
    weak_origin: Optional[np.ndarray] = None  # (T, 3) the weak camera's reference point, hand frame
    wrist_rot: Optional[np.ndarray] = None  # (T, 3) axis-angle, hand -> camera
    presence: Optional[np.ndarray] = None  # (T,) the estimator's confidence
    image_size: Optional[np.ndarray] = None  # (2,) int64 (W, H)
    focal: Optional[np.ndarray] = None  # () focal length in normalised units
    hand_model: Optional[str] = None  # "anny" | "mano"; None: anny (files written before it was recorded)
    sfm_registered: Optional[np.ndarray] = None  # (T,) bool
    R_cam_from_obj_sfm: Optional[np.ndarray] = None  # (T, 3, 3)
    t_cam_from_obj_sfm: Optional[np.ndarray] = None  # (T, 3)
    center_sfm: Optional[np.ndarray] = None  # (3,)

    @property
    def num_frames(self) -> int:
        """T, the length of ``T_cam_to_hand`` (0 where it is missing or not an array of poses)."""
        shape = np.shape(self.T_cam_to_hand)
        return int(shape[0]) if shape else 0

    def validate(self, num_frames: Optional[int] = None) -> None:
        """ValueError unless the required arrays have their shapes (T = ``num_frames`` if
        given, else the length of ``T_cam_to_hand``) and ``side`` is right or left."""
        T = self.num_frames if num_frames is None else num_frames
        shapes = {"K": (3, 3), "T_cam_to_hand": (T, 4, 4), "articulation": (T, 45), "shape": (10,)}
        _check_shapes(self, shapes if self.valid is None else {**shapes, "valid": (T,)}, T)
        _check_side(self.side)

    def trusted_frames(self) -> Optional[np.ndarray]:
        """(T,) bool: the frames whose estimate the fit trusts more. None where no ``valid`` was
        recorded; all True where no frame is valid (nothing to trust more than anything else)."""
        if self.valid is None:
            return None
        valid = np.asarray(self.valid, bool)
        return valid if valid.any() else np.ones(self.num_frames, bool)

    def save(self, folder: Path, compressed: bool = False) -> Path:
        """Write ``folder/hands.npz`` (after ``validate``); returns its path."""
        return _save_fields(self, folder, compressed)

    @classmethod
    def load(cls, folder: Path, num_frames: Optional[int] = None) -> "HandsOutput":
        """Read and validate ``folder/hands.npz``; unknown keys are ignored. UserError naming
        the file when it is absent, unreadable or malformed."""
        path = Path(folder) / cls.FILE
        arrays = _npz_arrays(path, "run the hand stage first")
        values = {f.name: arrays.get(f.name) for f in dataclasses.fields(cls)}  # None where absent
        values["side"] = str(values["side"]) if values["side"] is not None else "right"
        if values["hand_model"] is not None:
            values["hand_model"] = str(values["hand_model"])
        try:
            hands = cls(**values)
            hands.validate(num_frames)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        return hands


class FitOutput:
    """``fit/``'s files beside ``poses.npz`` (:class:`FitPoses`): ``object.ply`` (the fitted object,
    object frame, metres), ``object_init.ply`` (the visual hull the fit started from),
    ``init.npz`` (``T_hand_to_obj`` (T, 4, 4) it started from, ``center_hand`` (3,), ``radius``),
    ``scene.pt`` (``HOIScene.export_state``: read it with ``hoirecon.fit.scene.load_object_sdf``)
    and ``summary.json`` (steps, mask IoUs per frame, the initialisation and camera reports)."""

    MESH = "object.ply"
    INIT_MESH = "object_init.ply"
    INIT = "init.npz"
    SCENE = "scene.pt"
    SUMMARY = "summary.json"
    MISSING_HINT = "run `hoirecon fit OUT` first"

    @classmethod
    def save_init(cls, folder: Path, T_hand_to_obj: np.ndarray, center_hand, radius: float) -> None:
        np.savez(Path(folder) / cls.INIT, T_hand_to_obj=np.asarray(T_hand_to_obj), center_hand=np.asarray(center_hand),
                 radius=np.asarray(radius))

    @classmethod
    def initial_T_hand_to_obj(cls, folder: Path) -> np.ndarray:
        """(T, 4, 4) object poses in the hand frame the fit started from."""
        arrays = _npz_arrays(Path(folder) / cls.INIT, cls.MISSING_HINT)
        if "T_hand_to_obj" not in arrays:
            raise UserError(f"{Path(folder) / cls.INIT} has no T_hand_to_obj: {cls.MISSING_HINT}")
        return arrays["T_hand_to_obj"]

    @classmethod
    def save_summary(cls, folder: Path, summary: dict) -> None:
        (Path(folder) / cls.SUMMARY).write_text(json.dumps(summary, indent=2))

    @classmethod
    def summary(cls, folder: Path) -> dict:
        path = Path(folder) / cls.SUMMARY
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no fit summary at {path}: {cls.MISSING_HINT}") from None
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the fit summary {path}: {err}") from None


@dataclass(frozen=True, eq=False)
class FitPoses:
    """``fit/poses.npz``: the fitted hand and object poses of every frame.

    ``K`` (3, 3), ``T_cam_to_hand`` and ``T_hand_to_obj`` (T, 4, 4), ``articulation`` (T, 45),
    ``shape`` (10,) float32; ``side``; ``image_size`` (2,) int64 (W, H). The object frame is the
    one ``fit/object.ply`` lives in. Fields are declared in the file's key order.
    """

    FILE = "poses.npz"

    K: np.ndarray
    T_cam_to_hand: np.ndarray
    T_hand_to_obj: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    side: str
    image_size: np.ndarray

    @property
    def num_frames(self) -> int:
        """T, the length of ``T_cam_to_hand`` (0 where it is missing or not an array of poses)."""
        shape = np.shape(self.T_cam_to_hand)
        return int(shape[0]) if shape else 0

    def validate(self) -> None:
        """ValueError unless every array has its shape and ``side`` is right or left."""
        T = self.num_frames
        _check_shapes(self, {"K": (3, 3), "T_cam_to_hand": (T, 4, 4), "T_hand_to_obj": (T, 4, 4),
                             "articulation": (T, 45), "shape": (10,), "image_size": (2,)}, T)
        _check_side(self.side)

    def save(self, folder: Path) -> Path:
        """Write ``folder/poses.npz`` (after ``validate``); returns its path."""
        return _save_fields(self, folder)

    @classmethod
    def load(cls, folder: Path) -> "FitPoses":
        """Read ``folder/poses.npz`` (arrays as stored, ``shape`` and ``image_size`` flattened,
        ``side`` a str) and validate it; UserError naming the file when it is absent, unreadable
        or malformed."""
        path = Path(folder) / cls.FILE
        arrays = _npz_arrays(path, "run `hoirecon fit` first")
        keys = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}; rerun `hoirecon fit`")
        poses = cls(K=arrays["K"], T_cam_to_hand=arrays["T_cam_to_hand"], T_hand_to_obj=arrays["T_hand_to_obj"],
                    articulation=arrays["articulation"], shape=arrays["shape"].reshape(-1), side=str(arrays["side"]),
                    image_size=np.asarray(arrays["image_size"], np.int64).reshape(-1))
        try:
            poses.validate()
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        return poses

    def as_float32(self) -> "FitPoses":
        """The same poses with float32 arrays (what the fit writes; a hand-made file may differ)."""
        f32 = {name: np.asarray(getattr(self, name), np.float32)
               for name in ("K", "T_cam_to_hand", "T_hand_to_obj", "articulation", "shape")}
        return dataclasses.replace(self, **f32)


@dataclass(frozen=True, eq=False)
class PoseOutput:
    """``pose/poses.npz``: the pose network's hand and object poses of every frame.

    ``K`` (3, 3) the intrinsics the network's poses were solved with (they may differ from the
    hand stage's); ``image_size`` (2,) int64 (W, H); ``valid`` (T,) bool (both boxes found and
    PnP succeeded; other frames hold identity poses and NaN points). Hand, in the hand stage's
    layout: ``T_cam_to_hand`` (T, 4, 4), ``articulation`` (T, 45), ``shape`` (10,),
    ``shape_per_frame`` (T, 10), ``side``, ``hand_model``, ``keypoints_2d`` (T, 21, 2),
    ``keypoints_cam`` (T, 21, 3). Object, in the template's frame: ``T_obj_to_cam`` and
    ``T_hand_to_obj`` (T, 4, 4), ``control_points_3d`` (21, 3), ``control_points_2d`` (T, 21, 2),
    ``control_conf`` (T, 21). ``consistent_hand``, ``consistent_object`` (T,) bool: the
    pseudo-label filter's verdict. Fields are declared in the file's key order.
    """

    FILE = "poses.npz"
    MISSING_HINT = "run `hoirecon pose OUT --object-mesh MESH` first"

    K: np.ndarray
    image_size: np.ndarray
    valid: np.ndarray
    T_cam_to_hand: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    shape_per_frame: np.ndarray
    side: str
    hand_model: str
    keypoints_2d: np.ndarray
    keypoints_cam: np.ndarray
    T_obj_to_cam: np.ndarray
    T_hand_to_obj: np.ndarray
    control_points_3d: np.ndarray
    control_points_2d: np.ndarray
    control_conf: np.ndarray
    consistent_hand: np.ndarray
    consistent_object: np.ndarray

    @property
    def num_frames(self) -> int:
        """T, the length of ``valid`` (0 where it is missing or not an array)."""
        shape = np.shape(self.valid)
        return int(shape[0]) if shape else 0

    def validate(self, num_frames: Optional[int] = None) -> None:
        """ValueError unless every array has its shape (T = ``num_frames`` if given, else the
        length of ``valid``) and ``side`` is right or left."""
        T = self.num_frames if num_frames is None else num_frames
        _check_shapes(self, {
            "K": (3, 3), "image_size": (2,), "valid": (T,), "T_cam_to_hand": (T, 4, 4), "articulation": (T, 45),
            "shape": (10,), "shape_per_frame": (T, 10), "keypoints_2d": (T, 21, 2), "keypoints_cam": (T, 21, 3),
            "T_obj_to_cam": (T, 4, 4), "T_hand_to_obj": (T, 4, 4), "control_points_3d": (21, 3),
            "control_points_2d": (T, 21, 2), "control_conf": (T, 21), "consistent_hand": (T,),
            "consistent_object": (T,)}, T)
        _check_side(self.side)

    def save(self, folder: Path) -> Path:
        """Write ``folder/poses.npz`` (after ``validate``); returns its path."""
        return _save_fields(self, folder)

    @classmethod
    def load(cls, folder: Path, num_frames: Optional[int] = None) -> "PoseOutput":
        """Read and validate ``folder/poses.npz``; UserError naming the file when it is absent,
        unreadable or malformed."""
        path = Path(folder) / cls.FILE
        arrays = _npz_arrays(path, cls.MISSING_HINT)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in arrays]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}; rerun `hoirecon pose`")
        values = {f.name: arrays[f.name] for f in dataclasses.fields(cls)}
        values.update(side=str(values["side"]), hand_model=str(values["hand_model"]),
                      valid=np.asarray(values["valid"], bool))
        try:
            poses = cls(**values)
            poses.validate(num_frames)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        return poses


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """``gt/gt.npz``: the true scene of a ``hoirecon synth`` clip.

    Required (what ``eval`` reads): ``K`` (3, 3), ``T_cam_to_hand`` and ``T_hand_to_obj``
    (T, 4, 4), ``articulation`` (T, 45), ``shape`` (10,). The synth writes the rest too:
    ``image_size`` (2,) (W, H), ``wrist_rot`` (T, 3), ``side``, ``hand_model``, ``category``,
    ``penetration_mm``, ``keypoints_cam`` (T, 21, 3), ``keypoints_2d`` (T, 21, 2), ``fps``,
    ``seed``, ``view_span_deg``, ``fov_deg``, ``fov_y_deg`` (scalars). The file's key order is
    ``KEYS``; None fields are not written. Beside it in ``gt/``: ``object.ply`` (the object,
    in its own frame), ``depth.npz`` and ``info.json`` (the synth summary).

    Loading checks only that the required keys are there (what ``eval`` always did); their
    shapes are checked where they are used. A reader that needs less (the intrinsics of a real
    clip's hand-made ``gt.npz``) names its own ``required`` keys; the others are then None where
    absent.
    """

    DIR = "gt"
    FILE = "gt.npz"
    MESH_FILE = "object.ply"
    DEPTH_FILE = "depth.npz"
    INFO_FILE = "info.json"
    KEYS = ("K", "image_size", "T_cam_to_hand", "T_hand_to_obj", "articulation", "wrist_rot", "shape", "side",
            "hand_model", "category", "penetration_mm", "keypoints_cam", "keypoints_2d", "fps", "seed",
            "view_span_deg", "fov_deg", "fov_y_deg")
    REQUIRED = ("K", "T_cam_to_hand", "T_hand_to_obj", "articulation", "shape")
    TEXT = ("side", "hand_model", "category")

    K: np.ndarray
    T_cam_to_hand: np.ndarray
    T_hand_to_obj: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    image_size: Optional[np.ndarray] = None
    wrist_rot: Optional[np.ndarray] = None
    side: Optional[str] = None  # None: right (files that do not record it)
    hand_model: Optional[str] = None  # None: anny
    category: Optional[str] = None
    penetration_mm: Optional[np.ndarray] = None
    keypoints_cam: Optional[np.ndarray] = None
    keypoints_2d: Optional[np.ndarray] = None
    fps: Optional[np.ndarray] = None
    seed: Optional[np.ndarray] = None
    view_span_deg: Optional[np.ndarray] = None
    fov_deg: Optional[np.ndarray] = None
    fov_y_deg: Optional[np.ndarray] = None

    @classmethod
    def file(cls, clip_dir: Path) -> Path:
        """``clip_dir/gt/gt.npz`` of a synth output folder."""
        return Path(clip_dir) / cls.DIR / cls.FILE

    @classmethod
    def mesh_file(cls, clip_dir: Path) -> Path:
        """``clip_dir/gt/object.ply`` of a synth output folder."""
        return Path(clip_dir) / cls.DIR / cls.MESH_FILE

    @property
    def num_frames(self) -> int:
        shape = np.shape(self.T_cam_to_hand)
        return int(shape[0]) if shape else 0

    def validate(self) -> None:
        """ValueError unless the required arrays are there (None: missing)."""
        missing = [k for k in self.REQUIRED if getattr(self, k) is None]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")

    def save(self, folder: Path) -> Path:
        """Write ``folder/gt.npz`` (compressed, ``KEYS`` in order; after ``validate``)."""
        self.validate()
        path = Path(folder) / self.FILE
        arrays = {k: getattr(self, k) for k in self.KEYS if getattr(self, k) is not None}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **{k: np.array(v) if isinstance(v, str) else v for k, v in arrays.items()})
        return path

    @classmethod
    def load(cls, folder: Path, required: Optional[tuple[str, ...]] = None) -> "GroundTruth":
        """Read ``folder/gt.npz`` (unknown keys ignored); UserError naming the file when it is
        absent, unreadable or lacks a ``required`` key (default ``REQUIRED``)."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise UserError(f"missing {path}: written by 'hoirecon synth'")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read ground truth {path}: {err}") from None
        missing = [k for k in (cls.REQUIRED if required is None else required) if k not in arrays]
        if missing:
            raise UserError(f"ground truth {path} lacks {', '.join(missing)}")
        values = {k: arrays.get(k) for k in cls.KEYS}
        values.update({k: str(values[k]) for k in cls.TEXT if values[k] is not None})
        return cls(**values)


@dataclass(frozen=True, eq=False)
class ExportOutput:
    """``export/``: the export's files, and its poses (``poses.npz`` and ``poses.json``).

    Files (those the settings ask for): ``object.<fmt>`` (the object in the world frame),
    ``object_camera.<fmt>`` (``--world camera``), ``interaction.glb`` (glb) or
    ``hands/NNNNNN.<fmt>``, ``poses.npz``, ``poses.json``, ``turntable.mp4``,
    ``side_by_side.mp4``, ``summary.png`` and ``view.html`` (glb only). The fields are the
    poses of every clip frame: ``K`` (3, 3), ``image_size`` (2,) int64 (W, H), ``fps``, ``side``,
    ``shape`` (10,), ``T_cam_to_hand``, ``T_hand_to_obj``, ``T_cam_to_obj`` (T, 4, 4),
    ``articulation`` (T, 45), ``T_obj_to_world`` (4, 4), ``world`` ("object" | "camera"),
    ``exported_frames`` (N,) int64. ``poses.json`` holds the same with its conventions spelled
    out. Fields are declared in ``poses.npz``'s key order.
    """

    GLB = "interaction.glb"
    HANDS_DIR = "hands"
    POSES_NPZ = "poses.npz"
    POSES_JSON = "poses.json"
    TURNTABLE = "turntable.mp4"
    SIDE_BY_SIDE = "side_by_side.mp4"
    SUMMARY = "summary.png"
    VIEW = "view.html"
    CONVENTIONS = ("metres; OpenCV camera (x right, y down, z forward); T_a_to_b maps points of frame a "
                   "into frame b (x_b = T @ x_a); hand frame = hand model with wrist_rot 0, wrist at origin")

    K: np.ndarray
    image_size: np.ndarray
    fps: float
    side: str
    shape: np.ndarray
    T_cam_to_hand: np.ndarray
    T_hand_to_obj: np.ndarray
    T_cam_to_obj: np.ndarray
    articulation: np.ndarray
    T_obj_to_world: np.ndarray
    world: str
    exported_frames: np.ndarray

    @staticmethod
    def object_file(fmt: str, camera: bool = False) -> str:
        """``object.<fmt>``, or ``object_camera.<fmt>`` (the object in the camera's world)."""
        return f"object_camera.{fmt}" if camera else f"object.{fmt}"

    @staticmethod
    def hand_file(t: int, fmt: str) -> str:
        """``hands/NNNNNN.<fmt>``, frame ``t``'s hand mesh (formats other than glb)."""
        return f"{ExportOutput.HANDS_DIR}/{t:06d}.{fmt}"

    @property
    def num_frames(self) -> int:
        shape = np.shape(self.T_cam_to_hand)
        return int(shape[0]) if shape else 0

    def validate(self) -> None:
        """ValueError unless every array has its shape, ``side`` is right or left and the
        exported frames are frames of the clip."""
        T = self.num_frames
        _check_shapes(self, {"K": (3, 3), "image_size": (2,), "shape": (10,), "T_cam_to_hand": (T, 4, 4),
                             "T_hand_to_obj": (T, 4, 4), "T_cam_to_obj": (T, 4, 4), "articulation": (T, 45),
                             "T_obj_to_world": (4, 4)}, T)
        _check_side(self.side)
        frames = np.asarray(self.exported_frames)
        if frames.ndim != 1 or (frames.size and (frames.min() < 0 or frames.max() >= T)):
            raise ValueError(f"'exported_frames' must be frame indices below {T}")

    def to_json(self) -> dict:
        """``poses.json``'s document."""
        fps = self.fps
        W, H = (int(v) for v in self.image_size)
        return {
            "conventions": self.CONVENTIONS,
            "world": self.world, "fps": fps, "image_size": [W, H], "K": self.K.tolist(), "side": self.side,
            "shape": self.shape.tolist(), "T_obj_to_world": self.T_obj_to_world.tolist(),
            "exported_frames": self.exported_frames.tolist(),
            "frames": [{"index": t, "time": t / fps, "T_cam_to_hand": self.T_cam_to_hand[t].tolist(),
                        "T_hand_to_obj": self.T_hand_to_obj[t].tolist(), "T_cam_to_obj": self.T_cam_to_obj[t].tolist(),
                        "articulation": self.articulation[t].tolist()} for t in range(self.num_frames)],
        }

    def save(self, folder: Path) -> tuple[Path, Path]:
        """Write ``folder/poses.npz`` and ``folder/poses.json`` (after ``validate``)."""
        self.validate()
        folder = Path(folder)
        arrays = _field_arrays(self)
        arrays["fps"] = np.float32(self.fps)
        np.savez(folder / self.POSES_NPZ, **arrays)
        (folder / self.POSES_JSON).write_text(json.dumps(self.to_json()))
        return folder / self.POSES_NPZ, folder / self.POSES_JSON

    @classmethod
    def load(cls, folder: Path) -> "ExportOutput":
        """Read and validate ``folder/poses.npz``; UserError naming it when absent, unreadable
        or malformed."""
        path = Path(folder) / cls.POSES_NPZ
        arrays = _npz_arrays(path, "run `hoirecon export` first")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in arrays]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}; rerun `hoirecon export`")
        values = {f.name: arrays[f.name] for f in dataclasses.fields(cls)}
        values.update(fps=float(values["fps"]), side=str(values["side"]), world=str(values["world"]))
        try:
            poses = cls(**values)
            poses.validate()
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        return poses


class EvalOutput:
    """``<out>/eval.json``: ``hoirecon eval``'s metrics against a ground truth (see
    ``hoirecon.stages.evaluate``); what is shown of it elsewhere (the export's summary and
    viewer) is optional, so ``load`` returns None where it is missing or unreadable."""

    FILE = "eval.json"

    @classmethod
    def save(cls, out_dir: Path, result: dict) -> None:
        (Path(out_dir) / cls.FILE).write_text(json.dumps(result, indent=2))

    @classmethod
    def load(cls, out_dir: Path) -> Optional[dict]:
        try:
            data = json.loads((Path(out_dir) / cls.FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def read_json(folder: Path, name: str) -> Optional[dict]:
    """A stage's small JSON file (e.g. ``HandsOutput.CAMERA``) or None where it is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

