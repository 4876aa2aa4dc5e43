"""A noisy hand initialisation from ground truth, erring the way a per-frame estimator does.

DiffHOI starts from an off-the-shelf per-frame hand estimator (FrankMocap): articulation,
shape, wrist rotation and a weak-perspective camera ``(s, tx, ty)`` turned into a full
perspective translation by eq. 4 (``l = ((tx - px)/s, (ty - py)/s, f/s)``). Its errors
have two parts, and so does this noise:

- a per-clip **bias**, the same in every frame (a given hand in a given clip is misread
  consistently: a wrong shape, a systematically wrong finger curl, a wrong scale), and
- a per-frame **jitter**, independent between frames (the estimator runs per frame).

Depth is where weak perspective errs most: the scale ``s`` fixes the depth ``f/s``, and an
error in ``s`` moves the hand along its viewing ray (its projection stays put while its
distance, and so the translation vector, scales). So depth noise is applied as a relative
scaling of the wrist position ``t_hand_in_cam``; a smaller image-plane shift (mm at the
hand) models the 2D localisation error.

Default levels (1 std): articulation 6 deg bias + 4 deg jitter per axis-angle component;
shape 0.5 per coefficient (unit-variance coefficients, ~5 mm of hand length for
component 0); global rotation 6 deg bias + 3 deg jitter per axis-angle component;
image-plane translation 4 mm bias + 2 mm jitter per axis; depth 8 % bias + 3 % jitter.
These are of the order of FrankMocap's reported errors on HO3D-like data (mean joint
errors of 1-2 cm after alignment, several cm without), and put the initial hand at a few
centimetres from the truth in the camera frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from hoirecon.errors import UserError

__all__ = ["NoiseConfig", "perturb_hand"]


@dataclass(frozen=True)
class NoiseConfig:
    """Noise levels (1 std) of the initialisation; each = per-clip bias + per-frame jitter.

    articulation_bias_deg, articulation_jitter_deg: per finger axis-angle component.
    shape_std: per shape coefficient (the shared shape only has a bias).
    rotation_bias_deg, rotation_jitter_deg: per component of the axis-angle of the error
        rotation applied to the hand's orientation in the camera (about the wrist).
    translation_bias_mm, translation_jitter_mm: per image-plane axis (camera x, y).
    depth_bias_pct, depth_jitter_pct: relative error of the hand's distance, applied as a
        scaling of the wrist position (moves it along its viewing ray).
    invalid_fraction: fraction of frames marked ``valid = False`` (the estimator "missed"
        them); their values are interpolated from the valid neighbours, as the hand stage does.
    """

    articulation_bias_deg: float = 6.0
    articulation_jitter_deg: float = 4.0
    shape_std: float = 0.5
    rotation_bias_deg: float = 6.0
    rotation_jitter_deg: float = 3.0
    translation_bias_mm: float = 4.0
    translation_jitter_mm: float = 2.0
    depth_bias_pct: float = 8.0
    depth_jitter_pct: float = 3.0
    invalid_fraction: float = 0.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not np.isfinite(value) or value < 0:
                raise UserError(f"noise level {name} must be a finite number >= 0, got {value}")
        if self.invalid_fraction >= 1:
            raise UserError(f"invalid_fraction must be < 1, got {self.invalid_fraction}")

    @classmethod
    def none(cls) -> "NoiseConfig":
        """No noise at all: the initialisation equals the ground truth."""
        return cls(**{k: 0.0 for k in asdict(cls())})

    def scaled(self, factor: float) -> "NoiseConfig":
        """All levels times ``factor`` (invalid_fraction kept)."""
        values = {k: v * factor for k, v in asdict(self).items() if k != "invalid_fraction"}
        return NoiseConfig(**values, invalid_fraction=self.invalid_fraction)


def _bias_plus_jitter(rng: np.random.Generator, n: int, dim: int, bias: float, jitter: float) -> np.ndarray:
    """(n, dim): one bias draw shared by all rows + an independent draw per row."""
    return rng.normal(0.0, bias, size=(1, dim)) + rng.normal(0.0, jitter, size=(n, dim))


def perturb_hand(
    T_cam_to_hand: np.ndarray,
    articulation: np.ndarray,
    shape: np.ndarray,
    cfg: NoiseConfig,
    rng: np.random.Generator | int,
) -> dict:
    """Perturb ground-truth hand parameters into a plausible estimator output.

    Args:
        T_cam_to_hand: (T, 4, 4) true camera -> hand poses (hand frame with wrist_rot = 0).
        articulation: (T, 45) true articulation.
        shape: (10,) true shape.
        cfg: noise levels.
        rng: Generator or seed (same seed -> same noise).

    Returns:
        dict with ``T_cam_to_hand`` (T, 4, 4) float32, ``articulation`` (T, 45) float32,
        ``shape`` (10,) float32, ``valid`` (T,) bool — the keys of ``hands.npz``.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    T_cam_to_hand = np.asarray(T_cam_to_hand, dtype=np.float64)
    articulation = np.asarray(articulation, dtype=np.float64)
    n = len(T_cam_to_hand)
    if T_cam_to_hand.shape != (n, 4, 4) or articulation.shape != (n, 45):
        raise UserError(f"perturb_hand needs (T,4,4) poses and (T,45) articulation, got "
                        f"{T_cam_to_hand.shape} and {articulation.shape}")
    deg = np.pi / 180.0
    # Every draw happens regardless of the levels, so one level does not shift another's noise.
    d_art = _bias_plus_jitter(rng, n, 45, cfg.articulation_bias_deg * deg, cfg.articulation_jitter_deg * deg)
    d_shape = rng.normal(0.0, cfg.shape_std, size=np.shape(shape))
    d_rot = _bias_plus_jitter(rng, n, 3, cfg.rotation_bias_deg * deg, cfg.rotation_jitter_deg * deg)
    d_xy = _bias_plus_jitter(rng, n, 2, cfg.translation_bias_mm / 1000.0, cfg.translation_jitter_mm / 1000.0)
    d_depth = _bias_plus_jitter(rng, n, 1, cfg.depth_bias_pct / 100.0, cfg.depth_jitter_pct / 100.0)
    invalid_order = rng.permutation(n)

    T_hand_to_cam = np.linalg.inv(T_cam_to_hand)
    R = Rotation.from_rotvec(d_rot).as_matrix() @ T_hand_to_cam[:, :3, :3]
    # Depth error scales the wrist position along its ray (weak-perspective scale error);
    # clamp so a huge configured error never puts the hand behind the camera.
    t = T_hand_to_cam[:, :3, 3] * np.clip(1.0 + d_depth, 0.2, None)
    t[:, :2] += d_xy
    noisy_art = articulation + d_art

    valid = np.ones(n, dtype=bool)
    n_invalid = min(int(round(cfg.invalid_fraction * n)), n - 1)
    if n_invalid > 0:
        valid[invalid_order[:n_invalid]] = False
        R, t, noisy_art = _interpolate_invalid(valid, R, t, noisy_art)

    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = R
    out[:, :3, 3] = t
    return {
        "T_cam_to_hand": np.linalg.inv(out).astype(np.float32),
        "articulation": noisy_art.astype(np.float32),
        "shape": (np.asarray(shape, dtype=np.float64) + d_shape).astype(np.float32),
        "valid": valid,
    }


def _interpolate_invalid(valid: np.ndarray, R: np.ndarray, t: np.ndarray, art: np.ndarray):
    """Replace invalid frames by interpolation of the valid ones (held at the ends)."""
    frames = np.arange(len(valid))
    good = frames[valid]
    query = np.clip(frames, good[0], good[-1]).astype(np.float64)
    R = R.copy()
    if len(good) > 1:
        R = Slerp(good, Rotation.from_matrix(R[good]))(query).as_matrix()
    else:
        R = np.repeat(R[good], len(valid), axis=0)
    t = np.stack([np.interp(frames, good, t[good, i]) for i in range(3)], 1)
    art = np.stack([np.interp(frames, good, art[good, i]) for i in range(art.shape[1])], 1)
    return R, t, art
