"""Shape augmentation of the prior's training objects: a smooth, invertible warp.

``ShapeWarp`` maps object-frame points: scale each axis, then along the object's longest
axis (``along``, normalised coordinate t in [-1, 1] over its half length) taper the
cross-section by ``1 + taper * t`` and bend it sideways (axis ``bend_axis``) by
``bend * half_length * t**2``, then shift so the warped bounding box is centred again
(the object frame's convention). Every step is a bijection (the taper factor stays
positive), so a watertight mesh stays watertight and the inverse is exact: the warped
object's SDF is the original one at the inverse point, scaled by the warp's smallest
stretch so it stays a bound (the grasp search only needs the sign exact and the
magnitude close near the surface).

The warp runs before a grasp is placed, so the hand is placed on the warped object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from hoirecon.synth.objects import SDF, GraspRegion


@dataclass(frozen=True)
class ShapeWarp:
    """scale: (3,) per-axis factors; along / bend_axis: axis indices (different);
    half_length: half extent along ``along`` after scaling (m); taper, bend: see the module;
    shift: (3,) subtracted at the end (the warped bounding-box centre, m)."""

    scale: np.ndarray
    along: int
    bend_axis: int
    half_length: float
    taper: float
    bend: float
    shift: np.ndarray

    def _across(self) -> list[int]:
        return [i for i in range(3) if i != self.along]

    def _bent(self, p: np.ndarray) -> np.ndarray:
        """Scale, taper and bend of points (N, 3), before the shift."""
        q = np.asarray(p, dtype=np.float64).reshape(-1, 3) * self.scale
        t = q[:, self.along] / self.half_length
        q[:, self._across()] *= (1.0 + self.taper * t)[:, None]
        q[:, self.bend_axis] += self.bend * self.half_length * t * t
        return q

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Warped points (N, 3) of object-frame points (N, 3)."""
        return self._bent(p) - self.shift

    def invert(self, q: np.ndarray) -> np.ndarray:
        """Object-frame points (N, 3) that ``apply`` maps to ``q`` (N, 3)."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, 3) + self.shift
        t = q[:, self.along] / self.half_length
        q[:, self.bend_axis] -= self.bend * self.half_length * t * t
        q[:, self._across()] /= (1.0 + self.taper * t)[:, None]
        return q / self.scale

    def jacobian(self, p: np.ndarray) -> np.ndarray:
        """(3, 3) derivative of ``apply`` at one object-frame point p (3,)."""
        eps = 1e-6
        cols = [(self.apply(p + eps * e) - self.apply(p - eps * e))[0] / (2 * eps) for e in np.eye(3)]
        return np.stack(cols, axis=1)

    def min_stretch(self) -> float:
        """A lower bound of the warp's smallest local stretch over the object (|t| <= 1)."""
        return float(self.scale.min() * (1.0 - abs(self.taper)))


def sample_warp(
    mesh: trimesh.Trimesh, rng: np.random.Generator, axis_scale: tuple[float, float], max_taper: float,
    max_bend: float,
) -> ShapeWarp:
    """A random warp of ``mesh`` (object frame, centred on its bounding box).

    Each axis scale is log-uniform in ``axis_scale``; taper uniform in +-``max_taper``; bend
    uniform in +-``max_bend`` (offset at the ends, in half lengths), towards a random other
    axis; the shift re-centres the warped mesh's bounding box.
    """
    if not 0 <= max_taper < 1:
        raise ValueError(f"max_taper must be in [0, 1), got {max_taper}")
    scale = np.exp(rng.uniform(np.log(axis_scale[0]), np.log(axis_scale[1]), 3))
    scaled = np.asarray(mesh.extents, dtype=np.float64) * scale
    along = int(np.argmax(scaled))
    bend_axis = int(rng.choice([i for i in range(3) if i != along]))
    warp = ShapeWarp(scale, along, bend_axis, 0.5 * float(scaled[along]), float(rng.uniform(-max_taper, max_taper)),
                     float(rng.uniform(-max_bend, max_bend)), np.zeros(3))
    bent = warp.apply(np.asarray(mesh.vertices))
    return ShapeWarp(scale, along, bend_axis, warp.half_length, warp.taper, warp.bend,
                     0.5 * (bent.min(0) + bent.max(0)))


def warp_mesh(mesh: trimesh.Trimesh, warp: ShapeWarp) -> trimesh.Trimesh:
    """The mesh with warped vertices and the same faces (so it stays watertight)."""
    return trimesh.Trimesh(warp.apply(np.asarray(mesh.vertices)), np.asarray(mesh.faces), process=False)


def warp_sdf(sdf: SDF, warp: ShapeWarp) -> SDF:
    """Signed distance of the warped object: points (N, 3) -> (N,), a bound with the exact sign."""
    k = warp.min_stretch()

    def warped(points: np.ndarray) -> np.ndarray:
        return k * sdf(warp.invert(points))

    return warped


def warp_grasp(region: GraspRegion, warp: ShapeWarp) -> GraspRegion:
    """The grasp region carried along: point warped, directions by the local derivative, width
    stretched as the approach direction is."""
    J = warp.jacobian(np.asarray(region.point, dtype=np.float64))
    approach = J @ region.approach
    axis = J @ region.axis
    stretch = float(np.linalg.norm(approach) / np.linalg.norm(region.approach))
    return GraspRegion(region.name, warp.apply(region.point)[0], approach / np.linalg.norm(approach),
                       axis / np.linalg.norm(axis), float(region.width) * stretch)
