"""The stages' settings: one config dataclass per stage, each field declared once.

A field's default, help and flag live here (``hoirecon.settings.setting``); the CLI builds
its options from them (``hoirecon.cli_options``), so a new setting is one new field. The
configs validate themselves in ``__post_init__`` (UserError, exit 2).

Light on purpose: ``hoirecon --help`` and ``hoirecon status`` import this module, so it
imports no torch, numpy or stage module. Choices owned by a library that imports torch
(hand models, blend modes, priors, mesh formats) are checked with that library imported
inside ``__post_init__``: only commands that run the stage build its config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hoirecon.categories import category_name
from hoirecon.errors import UserError
from hoirecon.io.boxes import Box, check_box_numbers, parse_box
from hoirecon.settings import setting

DETECTORS = ("auto", "boxes", "doh100")
SEGMENTERS = ("grabcut", "pointrend")
TRACKERS = ("auto", "foreground", "flow", "stcn")
BACKENDS = ("mediapipe", "frankmocap")
SIDE_AUTO = "auto"  # the hand side read from the clip (hoirecon.handpose.handedness)
SIDES = (SIDE_AUTO, "right", "left")
FIT_INIT_SOURCES = ("default", "pose")
FIT_PRESETS = ("fast", "paper")  # what each one sets: stages.fit.PRESETS
WORLDS = ("object", "camera")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {name} '{value}': choose one of {', '.join(choices)}")


def _resolved(path: Optional[Path]) -> Optional[str]:
    """A path given on the command line, absolute (the cache records where it was)."""
    return str(Path(path).resolve()) if path is not None else None


def parse_frames(text: str | int | None) -> Optional[int]:
    """CLI value of ``--frames``: 'all' -> None, 'N' -> N (>= 1); UserError otherwise."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return None
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"--frames must be 'all' or a number >= 1, got '{text}'")
    return n


# Settings two stages share: `run` gives both stages the one value of its single flag.
def _side():
    return setting("auto", "The hand holding the object: auto (read from the clip: the hand landmark model's "
                   "handedness on frames through the clip and on their mirror images) | right | left.")


def _hand_model():
    return setting("anny", "Hand model: anny (open) | mano (needs weights).")


def _fov():
    return setting(None, "The camera's horizontal field of view in degrees (instead of --focal).", flag="--fov")


def _check_camera(focal_px: Optional[float], fov_deg: Optional[float]) -> None:
    if focal_px is not None and not (math.isfinite(focal_px) and focal_px > 0):
        raise UserError(f"--focal must be a positive number of pixels, got {focal_px}")
    if fov_deg is not None and not (math.isfinite(fov_deg) and 1.0 <= fov_deg <= 170.0):
        raise UserError(f"--fov must be in [1, 170] degrees, got {fov_deg}")
    if focal_px is not None and fov_deg is not None:
        raise UserError("give --focal or --fov, not both")


@dataclass(frozen=True)
class FramesConfig:
    """Settings of the frames stage (`hoirecon frames CLIP`)."""

    source: str = setting(internal="the command's CLIP argument (video file or image folder), made absolute")
    max_frames: int | None = setting(None, "Keep at most this many frames (the first ones).")
    stride: int | None = setting(None, "Keep every N-th frame (default: 1, or for a clip longer than "
                                 "--frame-budget frames the smallest N that keeps at most that many).")
    size: int | None = setting(640, "Longer side of the working frames in pixels (only shrinks).")
    frame_budget: int = setting(120, "Without --stride or --max-frames, a longer clip is subsampled evenly to at "
                                "most this many frames: every later stage's time grows with the frames, and the "
                                "fit was tuned on clips of 20-100.")

    def __post_init__(self):
        if self.stride is not None and self.stride < 1:
            raise UserError(f"--stride must be >= 1, got {self.stride}")
        if self.frame_budget < 1:
            raise UserError(f"--frame-budget must be >= 1, got {self.frame_budget}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.size is not None and self.size < 16:
            raise UserError(f"--size must be >= 16 pixels, got {self.size}")


@dataclass(frozen=True)
class MasksConfig:
    """Settings of the masks stage. Boxes are (x0, y0, x1, y1) in pixels of the original video (before --size)."""

    hand_box: Optional[Box] = setting(None, "First-frame hand box x0,y0,x1,y1 (original video pixels).",
                                      cli_type=Optional[str], parse=lambda text: parse_box(text, "--hand-box"))
    object_box: Optional[Box] = setting(None, "First-frame object box x0,y0,x1,y1 (original video pixels).",
                                        cli_type=Optional[str], parse=lambda text: parse_box(text, "--object-box"))
    boxes_file: Optional[str] = setting(None, 'boxes.json: {"hand": [x0,y0,x1,y1], "object": [...]}.',
                                        flag="--boxes", cli_type=Optional[Path], parse=_resolved)
    masks_dir: Optional[str] = setting(None, "Your own masks (DIR/hand/*.png, DIR/object/*.png): skip detection "
                                             "and tracking.", cli_type=Optional[Path], parse=_resolved)
    detector: str = setting("auto", "First-frame boxes when none are given: auto (offline: MediaPipe hand search + "
                            "the held object next to it; check overlay.mp4) | boxes (require --hand-box/--object-box "
                            "or boxes.json) | doh100 (the paper's detector, needs weights).")
    segmenter: str = setting("grabcut", "First-frame masks from boxes: grabcut | pointrend.")
    tracker: str = setting("auto", "Mask tracking: auto (default: runs foreground, and flow from two first "
                           "frames, keeps the one that passes the forward-backward check best) | foreground (each "
                           "frame's learned foreground split by the hand's landmarks) | flow (optical flow + "
                           "GrabCut) | stcn (the paper's, needs weights).")
    iou_threshold: float = setting(0.4, "Minimum forward-backward IoU for hand and object.")
    hand_landmarks: bool = setting(True, internal="re-anchoring the flow tracker's hand mask on MediaPipe landmarks "
                                   "is how the stage works, not a choice; False exists for comparisons in code")
    side: str = _side()

    def __post_init__(self):
        for name, value, choices in (("detector", self.detector, DETECTORS), ("segmenter", self.segmenter, SEGMENTERS),
                                     ("tracker", self.tracker, TRACKERS), ("side", self.side, SIDES)):
            _check_choice(name, value, choices)
        for name, box in (("--hand-box", self.hand_box), ("--object-box", self.object_box)):
            if box is not None:
                check_box_numbers(tuple(box), name)
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise UserError(f"--iou-threshold must be in [0, 1], got {self.iou_threshold}")
        for name, path in (("--boxes", self.boxes_file), ("--masks-dir", self.masks_dir)):
            if path is not None and not Path(path).exists():
                raise UserError(f"{name}: not found: {path}")
        if self.boxes_file is not None and not Path(self.boxes_file).is_file():
            raise UserError(f"--boxes: {self.boxes_file} is a folder, expected a boxes.json file")
        if self.masks_dir is not None and not Path(self.masks_dir).is_dir():
            raise UserError(f"--masks-dir: {self.masks_dir} is a file, expected a folder with hand/ and object/")


@dataclass(frozen=True)
class HandConfig:
    """Settings of the hand stage (seed A.5, eq. 4).

    Without --focal or --fov (and with --sfm) the focal length is estimated by structure from
    motion on the object's pixels (``hoirecon.geometry.object_sfm``); where that fails (too
    little texture) 1.2 x the longer image side (45 degrees across it; COLMAP's prior for an
    unknown camera; the paper's focal of 1, 90 degrees, is ``--fov 90``).
    """

    backend: str = setting("mediapipe", "Hand estimator: mediapipe | frankmocap.")
    side: str = _side()
    hand_model: str = _hand_model()
    focal_px: Optional[float] = setting(None, "The camera's focal length in pixels of the original video (default: "
                                        "estimated by structure from motion on the object, else 1.2 x the longer "
                                        "side: 45 degrees across it).", flag="--focal")
    fov_deg: Optional[float] = _fov()
    sfm: bool = setting(True, "Structure from motion on the object's pixels for the focal length and the object's "
                        "own rotations.")
    smooth_weight: float = setting(1.0, "Joint-velocity smoothing weight (0 = off).", flag="--smooth")
    # MediaPipe's presence times mask and handedness agreement.
    presence_threshold: float = setting(0.5, "Landmark presence needed per frame.")
    # The second pass, with the mean shape, takes half as many.
    ik_iterations: int = setting(200, "IK optimisation steps per frame.")
    drop_below_iou: float = setting(0.5, internal="a frame whose fitted hand overlaps its hand mask (visible IoU) "
                                    "less than this fraction of the clip's median is dropped and interpolated like "
                                    "a frame without a hand (hoirecon.stages.hand.contradicted_frames)")
    world_weight: float = setting(1.0, internal="the IK's balance of MediaPipe's 3D world landmarks against its 2D "
                                  "ones (hoirecon.handpose.ik), tuned once; not a choice a user can judge")
    silhouette_steps: int = setting(20, "Steps fitting each frame's hand to its hand mask after the landmark fit "
                                    "(0 = landmarks only).")
    # The full pinhole cut the median reprojection error on toy_plane from 39 to 29 px (the
    # hand is close to the camera: weak perspective is poor there). Its camera is reported as
    # the weak camera that eq. 4 maps back to the fitted position, so the A.5 recipe holds.
    perspective_ik: bool = setting(True, "Second IK pass through the full pinhole camera (default), or a pure "
                                   "weak-perspective camera (the paper's).", flag="--perspective-ik/--weak-ik")

    def __post_init__(self):
        from hoirecon.hand.model import HAND_MODELS

        for name, value, choices in (("backend", self.backend, BACKENDS), ("side", self.side, SIDES),
                                     ("hand model", self.hand_model, HAND_MODELS)):
            _check_choice(name, value, choices)
        _check_camera(self.focal_px, self.fov_deg)
        if self.smooth_weight < 0:
            raise UserError(f"--smooth must be >= 0, got {self.smooth_weight}")
        if not 0.0 <= self.drop_below_iou < 1.0:
            raise UserError(f"drop_below_iou must be in [0, 1), got {self.drop_below_iou}")
        if not 0.0 <= self.presence_threshold <= 1.0:
            raise UserError(f"--presence-threshold must be in [0, 1], got {self.presence_threshold}")
        if self.world_weight < 0:
            raise UserError(f"world_weight must be >= 0, got {self.world_weight}")
        if self.ik_iterations < 1:
            raise UserError(f"--ik-iterations must be >= 1, got {self.ik_iterations}")


@dataclass(frozen=True)
class FitConfig:
    """Settings of the fit stage. A preset names the library settings it starts from
    (``hoirecon.stages.fit.PRESETS``); --steps and --rays override them."""

    preset: str = setting("fast", "fast (minutes on a CPU) | paper (the paper's 50k steps).")
    # Code that builds a FitConfig (tests, benchmarks) gets no prior unless it asks, so it
    # needs no weights; a person on the command line gets the shipped one.
    prior: str = setting("none", "Diffusion prior distilled into the object: hoirecon (the shipped one) | diffhoi "
                         "(authors' checkpoint) | a .pt | none.", cli_default="hoirecon")
    # A name outside the prior's vocabulary runs its category-agnostic branch.
    category: str = setting("unknown", "The object's name for the prior (any name; unknown = any object).",
                            short="-c", parse=category_name)
    # The authors' w_diffuse 1e-3, with the same summed reduction.
    sds_weight: float = setting(1e-3, "Weight of the score-distillation term.")
    # Each SDS step then weighs N x sds_weight. 2, not the paper's 1: the same F@10 within one
    # seed's noise (procedural 0.919 -> 0.910, held-out meshes 0.870 -> 0.872) at 0.8x the CPU of the
    # prior's fit (BENCHMARKS, issue 22; 1 = the paper's setting).
    sds_every: int = setting(2, "Score distillation on every N-th step (after step 100); 1 = the paper.")
    # hoirecon.fit.guidance.GuidanceConfig.fade_from / end_fraction (measured there).
    sds_fade_from: float = setting(1.0, "Score distillation's weight falls linearly from this fraction of the steps "
                                   "to 0 at --sds-end; 1 = constant (the paper).")
    sds_end: float = setting(1.0, "No score distillation from this fraction of the steps on; 1 = to the last step "
                             "(the paper).")
    # GuidanceConfig.view_seen_deg / view_unseen_deg: SDS on the unseen side. 20 / 60, not the
    # paper's 0 / 0 (off): F@10 held-out meshes 0.880 -> 0.890, procedural 0.910 -> 0.916, tuning
    # meshes 0.876 -> 0.880, with 11 % fewer SDS evaluations (docs/experiments.md, issue 22 item 3).
    sds_seen_deg: float = setting(20.0, "Score distillation skips random views within this angle (degrees) of an "
                                  "input camera, as seen from the object; see --sds-unseen-deg.")
    sds_unseen_deg: float = setting(60.0, "Score distillation's weight of a random view rises smoothly to 1 at this "
                                    "angle (degrees) from the nearest input camera; 0 = every view weighs 1 (the "
                                    "paper).")
    steps: Optional[int] = setting(None, "Override the preset's number of optimisation steps.")
    rays_per_step: Optional[int] = setting(None, "Override the preset's rays per step.", flag="--rays")
    seed: int = setting(0, "Seed of initialisation and sampling.")  # and of the rendering jitter
    hand_model: str = _hand_model()  # must be the one the hand stage fitted
    # paper: gamma 1e-4; hard: the paper's B.4 ablation (hoirecon.fit.scene.BlendConfig).
    blend: str = setting("occlusion", "Mask blending: occlusion (default) | paper (eq. 1-2) | hard (front surface wins "
                         "+ ordinal depth loss; an ablation).")
    # One shared pose is the paper's B.3 ablation.
    per_frame_object_pose: bool = setting(True, "Optimise a per-frame object pose (default) or one for the clip.",
                                          flag="--per-frame-object-pose/--shared-object-pose")
    time_budget_s: Optional[float] = setting(None, "Stop the optimisation after this many seconds (schedules still "
                                             "span the preset's steps).", flag="--time-budget")
    mesh_resolution: int = setting(128, "Marching-cubes grid of object.ply.")
    preview_every: int = setting(500, internal="steps between preview images (0 = only the last); a debugging aid "
                                 "that tests turn down, not a result setting")
    checkpoint_every: int = setting(100, internal="steps between resumable checkpoints; how often a killed fit "
                                    "saves, not what it computes")
    iou_stride: int = setting(2, internal="pixel stride of the final per-frame mask IoU report; a cost knob of "
                              "the summary, not of the fit")
    # False: the hand-derived cameras only, as the paper.
    object_cameras: bool = setting(True, internal="start each frame's object rotation from the hand stage's "
                                   "structure from motion where it registered; False exists for comparisons in code")
    # pose: the object frame is then the template's; the hand still starts from the hand stage.
    init: str = setting("default", "Where each frame's object pose starts: default (masks, hand and structure from "
                        "motion) | pose (the pose stage's poses: run hoirecon pose OUT --object-mesh first).")

    def __post_init__(self):
        from hoirecon.fit.guidance import PRIOR_NAMES
        from hoirecon.fit.scene import BLEND_MODES

        _check_choice("preset", self.preset, FIT_PRESETS)
        if self.prior.lower() not in PRIOR_NAMES and not self.prior.endswith((".pt", ".pth", ".ckpt")):
            raise UserError(f"unknown prior '{self.prior}': choose one of {', '.join(PRIOR_NAMES)} or a prior .pt file")
        category_name(self.category)
        if self.sds_weight < 0 or self.sds_every < 1:
            raise UserError(f"--sds-weight must be >= 0 and --sds-every >= 1, got {self.sds_weight}, {self.sds_every}")
        if not 0.0 <= self.sds_fade_from <= self.sds_end <= 1.0:
            raise UserError(f"need 0 <= --sds-fade-from <= --sds-end <= 1, got {self.sds_fade_from}, {self.sds_end}")
        if self.sds_unseen_deg and not 0.0 <= self.sds_seen_deg < self.sds_unseen_deg <= 180.0:
            raise UserError(f"need 0 <= --sds-seen-deg < --sds-unseen-deg <= 180 (or --sds-unseen-deg 0: off), got "
                            f"{self.sds_seen_deg}, {self.sds_unseen_deg}")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UserError(f"--time-budget must be > 0 seconds, got {self.time_budget_s}")
        if self.rays_per_step is not None and self.rays_per_step < 8:
            raise UserError(f"--rays must be >= 8, got {self.rays_per_step}")
        _check_choice("blend", self.blend, BLEND_MODES)
        _check_choice("init", self.init, FIT_INIT_SOURCES)


@dataclass(frozen=True)
class ExportConfig:
    """Settings of the export stage."""

    format: str = setting("glb", "Mesh format: glb | obj | ply.")
    frames: Optional[int] = setting(None, "Frames to export: all, or N evenly spaced.", cli_type=str,
                                    cli_default="all", parse=parse_frames)
    resolution: Optional[int] = setting(None, "Marching-cubes resolution (default: the fit's mesh).")
    world: str = setting("object", "World frame of the exported scene: object | camera.")
    turntable_frame: Optional[int] = setting(None, "Clip frame shown in the turntable (default: the middle exported "
                                             "frame).")
    turntable_views: int = setting(36, "Views per turn of the turntable.")
    view_size: int = setting(256, "Side in pixels of the turntable and novel views.")
    panel_size: int = setting(320, "Longer side in pixels of the side-by-side video's input panels (only shrinks).")
    novel_view_deg: float = setting(90.0, "Azimuth in degrees (about the first camera's up axis) of the novel view.")
    interpolation: str = setting("LINEAR", "Animation interpolation in the glb: LINEAR | STEP.")
    camera: bool = setting(True, "Put the animated input camera in the glb.")
    pictures: bool = setting(True, "Write turntable/side-by-side videos and the summary PNG.")
    ssaa: int = setting(2, "Supersampling per side for anti-aliased pictures (1 = off).")
    summary_frames: int = setting(4, "Frames on the summary page.")

    def __post_init__(self):
        from hoirecon.export.gltf import INTERPOLATIONS
        from hoirecon.export.meshes import MESH_FORMATS

        object.__setattr__(self, "interpolation", str(self.interpolation).upper())
        for name, value, choices in (("format", self.format, MESH_FORMATS), ("world", self.world, WORLDS),
                                     ("interpolation", self.interpolation, INTERPOLATIONS)):
            _check_choice(name, value, choices)
        if self.frames is not None and self.frames < 1:
            raise UserError(f"--frames must be 'all' or a number >= 1, got {self.frames}")
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise UserError(f"--resolution must be between 16 and 1024, got {self.resolution}")
        if self.turntable_frame is not None and self.turntable_frame < 0:
            raise UserError(f"--turntable-frame must be >= 0, got {self.turntable_frame}")
        for name, value, low in (("--turntable-views", self.turntable_views, 1), ("--view-size", self.view_size, 16),
                                 ("--panel-size", self.panel_size, 16), ("--ssaa", self.ssaa, 1),
                                 ("--summary-frames", self.summary_frames, 1)):
            if value < low:
                raise UserError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True)
class PoseConfig:
    """Settings of the pose stage (the pose network of Liu et al.)."""

    object_mesh: str = setting(help="The object's template mesh (watertight, metres).", cli_type=Path,
                               parse=_resolved)
    weights: str | None = setting(None, "Network weights (default: weights/pose/pose_cpu.pt).",
                                  cli_type=Optional[Path], parse=_resolved)
    focal_px: float | None = setting(None, "Focal length in pixels of the original video (default: 1.2 x the longer "
                                     "side, 45 degrees across it, as the hand stage without structure from motion).",
                                     flag="--focal")
    fov_deg: Optional[float] = _fov()

    def __post_init__(self):
        _check_camera(self.focal_px, self.fov_deg)
