"""Procedural, watertight objects of the paper's six categories, at real-world sizes.

Each family is a signed distance function (SDF) built from primitives (frustums,
stadium-shaped tori for handles, ellipsoids, rounded boxes, tapered capsules) with
smooth unions and subtractions, sampled on a grid and meshed with marching cubes
(PyMCubes). Sizes are drawn from a ``numpy.random.Generator``, so a seed gives the same
object every time.

Object frame (metres, origin at the centre of the mesh's axis-aligned bounding box):

- containers (``mug``, ``bottle``, ``kettle``, ``bowl``): +z up (axis of revolution);
  handles at +x; the kettle's spout at -x.
- ``knife``: along +x (tip at +x, handle at -x), blade in the x-z plane with the
  spine at +z and the cutting edge at -z; y across the blade's thickness.
- ``toy_car``: front at +x, roof at +z, wheels on the y sides.

Sizes (the size is the extent named): mug height 8-12 cm, bottle height 18-28 cm,
kettle height 15-25 cm (its largest extent also stays within 15-25 cm), bowl rim
diameter 12-18 cm, knife length 18-28 cm, toy car length 8-15 cm.

``wide=True`` (the prior's training data, ``hoirecon prior render-data --wide-shapes``) draws
from a wider distribution: every range of a family's sampler twice as wide about its middle,
and variants the benchmark's objects never have: flattened (elliptical) bodies, box-bodied
bottles, lidded and spouted mugs. The default draws, and so the ``synth`` benchmark clips,
are unchanged.

The SDFs are exact where the primitives are and a bound elsewhere (after smooth unions,
subtractions, ellipsoids and the tapered spout): their zero set is the surface and their
sign is right everywhere, which is what tests and meshing need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mcubes
import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hoirecon.errors import RunError, UserError
from hoirecon.geometry.meshes import largest_component

__all__ = [
    "CATEGORIES",
    "GraspRegion",
    "ObjectInfo",
    "LoadedMesh",
    "HANDHELD_EXTENT_M",
    "DEFAULT_MESH_SIZE_M",
    "WIDE_RANGE_FACTOR",
    "sample_object_params",
    "object_sdf",
    "make_object_info",
    "make_object",
    "load_object_mesh",
]

CATEGORIES: tuple[str, ...] = ("mug", "bottle", "kettle", "bowl", "knife", "toy_car")

# Face-count window of the meshes (the grid is re-scaled once when a mesh falls outside).
MIN_FACES, MAX_FACES = 2000, 20000

SDF = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- primitives
# All take points p: (N, 3) and return signed distances (N,), negative inside.


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union (polynomial smooth minimum); k = blend width in metres (0: sharp)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth intersection; ``_smax(a, -b, k)`` is a smooth subtraction of b from a."""
    return -_smin(-a, -b, k)


def _frustum_2d(rho: np.ndarray, z: np.ndarray, z0: float, z1: float, r0: float, r1: float) -> np.ndarray:
    """Exact SDF of a solid frustum of revolution about z, in the (rho, z) half-plane.

    The frustum spans z0 < z1 with radius r0 at z0 and r1 at z1.
    """
    h = 0.5 * (z1 - z0)
    qy = z - 0.5 * (z0 + z1)
    k2x, k2y = r1 - r0, 2.0 * h
    # Distance to the flat caps.
    ca_x = rho - np.minimum(rho, np.where(qy < 0.0, r0, r1))
    ca_y = np.abs(qy) - h
    # Distance to the slanted side (segment from (r0, -h) to (r1, h)).
    t = np.clip(((r1 - rho) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y), 0.0, 1.0)
    cb_x = rho - r1 + k2x * t
    cb_y = qy - h + k2y * t
    sign = np.where((cb_x < 0.0) & (ca_y < 0.0), -1.0, 1.0)
    return sign * np.sqrt(np.minimum(ca_x**2 + ca_y**2, cb_x**2 + cb_y**2))


def _frustum_z(p: np.ndarray, z0: float, z1: float, r0: float, r1: float, rounding: float = 0.0) -> np.ndarray:
    """Frustum about the z axis (see ``_frustum_2d``), edges rounded by ``rounding``."""
    rho = np.hypot(p[:, 0], p[:, 1])
    rr = rounding
    return _frustum_2d(rho, p[:, 2], z0 + rr, z1 - rr, r0 - rr, r1 - rr) - rr


def _cylinder_y(p: np.ndarray, center: np.ndarray, radius: float, half_width: float, rounding: float) -> np.ndarray:
    """Capped cylinder with its axis along y (a wheel), edges rounded."""
    q = p - center
    rho = np.hypot(q[:, 0], q[:, 2])
    rr = rounding
    return _frustum_2d(rho, q[:, 1], -half_width + rr, half_width - rr, radius - rr, radius - rr) - rr


def _stadium_torus_y(p: np.ndarray, center: np.ndarray, ring: float, tube: float, half_straight: float) -> np.ndarray:
    """Torus in the x-z plane (axis along y) stretched into a stadium along z.

    ``ring`` is the centre-line radius of the round ends, ``half_straight`` the half
    length of the straight vertical parts, ``tube`` the tube radius. Exact.
    """
    q = p - center
    qz = q[:, 2] - np.clip(q[:, 2], -half_straight, half_straight)
    return np.hypot(np.hypot(q[:, 0], qz) - ring, q[:, 1]) - tube


def _round_box(p: np.ndarray, center: np.ndarray, half: np.ndarray, rounding: float) -> np.ndarray:
    """Box with half extents ``half`` and all edges rounded by ``rounding``. Exact."""
    q = np.abs(p - center) - (np.asarray(half) - rounding)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    inside = np.minimum(q.max(axis=1), 0.0)
    return outside + inside - rounding


def _ellipsoid(p: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Ellipsoid (a bound, accurate near the surface)."""
    q = (p - center) / radii
    k0 = np.linalg.norm(q, axis=1)
    k1 = np.linalg.norm(q / radii, axis=1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _tapered_capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Capsule from a (radius ra) to b (radius rb), radius interpolated along the axis."""
    ba = b - a
    t = np.clip((p - a) @ ba / (ba @ ba), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ba), axis=1) - (ra + (rb - ra) * t)


def _squash_y(sdf_of: Callable[[np.ndarray], np.ndarray], p: np.ndarray, aspect: float) -> np.ndarray:
    """``sdf_of`` of a part squashed across y by ``aspect`` (<= 1): an elliptical / flattened
    cross-section. Scaled by ``aspect`` so it stays a bound; ``aspect`` 1 is ``sdf_of(p)`` exactly."""
    if aspect == 1.0:
        return sdf_of(p)
    return aspect * sdf_of(p * np.array([1.0, 1.0 / aspect, 1.0]))


# ----------------------------------------------------------------------------- grasp info


@dataclass(frozen=True)
class GraspRegion:
    """Where a hand should hold the object, in the object frame.

    Attributes:
        name: the part ("handle", "body", "rim").
        point: (3,) centre of the gripped part's cross-section (m).
        approach: (3,) unit direction the palm moves along to reach ``point`` (from
            outside towards the part).
        axis: (3,) unit direction the gripped part extends along (the fingers wrap
            around it).
        width: thickness of the part across the grip (m).
    """

    name: str
    point: np.ndarray
    approach: np.ndarray
    axis: np.ndarray
    width: float


@dataclass(frozen=True)
class ObjectInfo:
    """A generated object: mesh, parameters, analytic SDF and suggested grasp.

    Attributes:
        category: one of ``CATEGORIES``.
        mesh: watertight ``trimesh.Trimesh`` in the object frame (m).
        params: the family's parameters (m), including ``frame_offset`` (the build-frame
            position of the object-frame origin).
        grasp: the suggested ``GraspRegion``.
    """

    category: str
    mesh: trimesh.Trimesh
    params: dict = field(repr=False)
    grasp: GraspRegion

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (m, negative inside) of points (N, 3) in the object frame -> (N,)."""
        return object_sdf(self.category, self.params)(points)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- families
# Each family: sample(rng) -> params; build(params) -> (sdf, lo, hi) in the build frame;
# grasp(params) -> GraspRegion in the build frame; spacing(params) -> (3,) grid steps.


def _mug_sample(rng: np.random.Generator) -> dict:
    H = rng.uniform(0.085, 0.115)
    r_bot = rng.uniform(0.034, 0.044)
    r_top = r_bot * rng.uniform(1.0, 1.12)
    tube = rng.uniform(0.0042, 0.0055)
    ring = rng.uniform(0.012, 0.017)
    z_c = H * rng.uniform(0.45, 0.55)
    # Keep the handle at least 8 mm from the rim and the base.
    room = min(H - 0.008 - z_c, z_c - 0.008) - ring - tube
    half_straight = max(0.0, min(H * rng.uniform(0.08, 0.2), room))
    r_at_handle = r_bot + (r_top - r_bot) * z_c / H
    return {
        "height": H,
        "r_bottom": r_bot,
        "r_top": r_top,
        "wall": rng.uniform(0.0045, 0.006),
        "base": rng.uniform(0.007, 0.010),
        "handle_tube": tube,
        "handle_ring": ring,
        "handle_half_straight": half_straight,
        "handle_z": z_c,
        "handle_x": r_at_handle + ring * rng.uniform(0.35, 0.6),
    }


def _mug_build(P: dict):
    H, rb, rt, w = P["height"], P["r_bottom"], P["r_top"], P["wall"]
    center = np.array([P["handle_x"], 0.0, P["handle_z"]])
    # Variants of the wide sampler (absent keys: the plain mug): flattened body, lid, pouring spout.
    aspect, lid_h, spout = P.get("body_aspect", 1.0), P.get("lid_h", 0.0), P.get("spout_reach", 0.0)
    cavity_top = H + 0.02 if lid_h <= 0 else H - lid_h
    lip_h = 0.006 if lid_h > 0 else 0.0
    spout_a = np.array([-(rt - 0.004), 0.0, 0.8 * H])
    spout_b = np.array([-(rt + spout), 0.0, H + 0.002])

    def sdf(p):
        outer = _squash_y(lambda q: _frustum_z(q, 0.0, H, rb, rt, rounding=0.003), p, aspect)
        handle = _stadium_torus_y(p, center, P["handle_ring"], P["handle_tube"], P["handle_half_straight"])
        solid = _smin(outer, handle, 0.004)
        if lid_h > 0:
            solid = _smin(solid, _frustum_z(p, H - 0.004, H + lip_h, 0.55 * rt, 0.45 * rt, rounding=0.002), 0.003)
        if spout > 0:
            solid = _smin(solid, _tapered_capsule(p, spout_a, spout_b, 0.012, 0.005), 0.004)
        # The cavity's walls run parallel to the outer ones; it is open above the rim.
        cavity = _squash_y(lambda q: _frustum_z(q, P["base"], cavity_top, rb - w, rt - w + (rt - rb) * 0.02 / H,
                                                rounding=0.002), p, aspect)
        return _smax(solid, -cavity, 0.0015)

    reach = P["handle_x"] + P["handle_ring"] + P["handle_tube"]
    lo = np.array([-rt - (spout + 0.005 if spout > 0 else 0.0), -rt, 0.0]) - 0.004
    hi = np.array([max(rt, reach), rt, H + max(lip_h, 0.007 if spout > 0 else 0.0)]) + 0.004
    return sdf, lo, hi


def _mug_grasp(P: dict) -> GraspRegion:
    point = np.array([P["handle_x"] + P["handle_ring"], 0.0, P["handle_z"]])
    return GraspRegion("handle", point, _unit([-1, 0, 0]), _unit([0, 0, 1]), 2 * P["handle_tube"])


def _bottle_sample(rng: np.random.Generator) -> dict:
    H = rng.uniform(0.185, 0.275)
    R = H * rng.uniform(0.12, 0.16)
    r_neck = rng.uniform(0.011, 0.015)
    cap_h = rng.uniform(0.015, 0.022)
    neck_len = rng.uniform(0.02, 0.045)
    shoulder_h = (R - r_neck) * rng.uniform(0.6, 1.3)
    return {
        "height": H,
        "radius": R,
        "r_neck": r_neck,
        "r_cap": r_neck + rng.uniform(0.001, 0.003),
        "cap_h": cap_h,
        "neck_len": neck_len,
        "z_shoulder": H - cap_h - neck_len - shoulder_h,
        "shoulder_h": shoulder_h,
    }


def _bottle_build(P: dict):
    H, R, rn, rc = P["height"], P["radius"], P["r_neck"], P["r_cap"]
    zs, zn, zc = P["z_shoulder"], P["z_shoulder"] + P["shoulder_h"], H - P["cap_h"]

    aspect, box = P.get("body_aspect", 1.0), P.get("box_body", False)
    box_half = np.array([R, R * aspect, 0.5 * (zs + 0.01)])

    def sdf(p):
        if box:  # a square-shouldered, non-revolved body (a detergent or milk bottle)
            body = _round_box(p, np.array([0.0, 0.0, box_half[2]]), box_half, 0.2 * min(R * aspect, box_half[2]))
        else:
            body = _squash_y(lambda q: _frustum_z(q, 0.0, zs + 0.01, R, R, rounding=0.006), p, aspect)
        shoulder = _frustum_z(p, zs, zn, R, rn)
        neck = _frustum_z(p, zn - 0.005, zc + 0.002, rn, rn)
        cap = _frustum_z(p, zc, H, rc, rc, rounding=0.002)
        d = _smin(body, shoulder, 0.012)
        d = _smin(d, neck, 0.008)
        return np.minimum(d, cap)

    return sdf, np.array([-R, -R, 0.0]) - 0.005, np.array([R, R, H]) + 0.005


def _bottle_grasp(P: dict) -> GraspRegion:
    point = np.array([0.0, 0.0, 0.5 * P["z_shoulder"]])
    return GraspRegion("body", point, _unit([-1, 0, 0]), _unit([0, 0, 1]), 2 * P["radius"])


def _kettle_sample(rng: np.random.Generator) -> dict:
    H = rng.uniform(0.16, 0.21)
    Hb = H * rng.uniform(0.72, 0.8)
    Rb = H * rng.uniform(0.27, 0.32)
    Rt = Rb * rng.uniform(0.65, 0.85)
    knob = rng.uniform(0.010, 0.013)
    ring = H * rng.uniform(0.13, 0.17)
    tube = rng.uniform(0.007, 0.010)
    z_c = Hb * rng.uniform(0.5, 0.58)
    room = min(Hb - 0.004 - z_c, z_c - 0.015) - ring - tube
    r_at_handle = Rb + (Rt - Rb) * z_c / Hb
    return {
        "height": H,
        "body_h": Hb,
        "r_bottom": Rb,
        "r_top": Rt,
        "knob": knob,
        "handle_ring": ring,
        "handle_tube": tube,
        "handle_half_straight": max(0.0, min(Hb * rng.uniform(0.08, 0.16), room)),
        "handle_z": z_c,
        "handle_x": r_at_handle + ring * rng.uniform(0.3, 0.5),
        "spout_z0": Hb * rng.uniform(0.25, 0.35),
        "spout_z1": Hb * rng.uniform(0.85, 0.98),
        "spout_reach": H * rng.uniform(0.18, 0.24),
        "spout_r0": rng.uniform(0.011, 0.015),
        "spout_r1": rng.uniform(0.006, 0.008),
    }


def _kettle_build(P: dict):
    H, Hb, Rb, Rt, knob = P["height"], P["body_h"], P["r_bottom"], P["r_top"], P["knob"]
    center = np.array([P["handle_x"], 0.0, P["handle_z"]])
    r0_spout = Rb + (Rt - Rb) * P["spout_z0"] / Hb
    a = np.array([-(r0_spout - 0.015), 0.0, P["spout_z0"]])
    b = np.array([-(Rt + P["spout_reach"]), 0.0, P["spout_z1"]])
    lid_top = H - 2 * knob + 0.004

    aspect = P.get("body_aspect", 1.0)

    def sdf(p):
        body = _squash_y(lambda q: _frustum_z(q, 0.0, Hb, Rb, Rt, rounding=0.012), p, aspect)
        lid = _squash_y(lambda q: _frustum_z(q, Hb - 0.01, lid_top, Rt * 0.92, Rt * 0.55, rounding=0.006), p, aspect)
        knob_d = np.linalg.norm(p - np.array([0.0, 0.0, H - knob]), axis=1) - knob
        handle = _stadium_torus_y(p, center, P["handle_ring"], P["handle_tube"], P["handle_half_straight"])
        spout = _tapered_capsule(p, a, b, P["spout_r0"], P["spout_r1"])
        d = _smin(body, lid, 0.008)
        d = _smin(d, knob_d, 0.004)
        d = _smin(d, handle, 0.006)
        return _smin(d, spout, 0.008)

    reach = P["handle_x"] + P["handle_ring"] + P["handle_tube"]
    lo = np.array([b[0] - P["spout_r1"], -Rb, 0.0]) - 0.006
    hi = np.array([max(reach, Rb), Rb, H]) + 0.006
    return sdf, lo, hi


def _kettle_grasp(P: dict) -> GraspRegion:
    point = np.array([P["handle_x"] + P["handle_ring"], 0.0, P["handle_z"]])
    return GraspRegion("handle", point, _unit([-1, 0, 0]), _unit([0, 0, 1]), 2 * P["handle_tube"])


def _bowl_sample(rng: np.random.Generator) -> dict:
    D = rng.uniform(0.125, 0.175)
    return {
        "diameter": D,
        "depth": D * rng.uniform(0.36, 0.46),
        "wall": rng.uniform(0.005, 0.0065),
        "foot_r": D * 0.5 * rng.uniform(0.3, 0.42),
        "foot_h": rng.uniform(0.005, 0.009),
    }


def _bowl_build(P: dict):
    a, c, w = 0.5 * P["diameter"], P["depth"], P["wall"]
    origin = np.zeros(3)

    def bowl(p):
        outer = _ellipsoid(p, origin, np.array([a, a, c]))
        outer = _smax(outer, p[:, 2], 0.002)  # cut at the rim plane z = 0, edge rounded
        foot = _frustum_z(p, -c - P["foot_h"], -c + 0.015, P["foot_r"], P["foot_r"], rounding=0.002)
        solid = _smin(outer, foot, 0.008)
        cavity = _ellipsoid(p, origin, np.array([a - w, a - w, c - w]))
        return _smax(solid, -cavity, 0.002)

    aspect = P.get("body_aspect", 1.0)  # an oval dish in the wide sampler

    def sdf(p):
        return _squash_y(bowl, p, aspect)

    lo = np.array([-a, -a, -c - P["foot_h"]]) - 0.004
    hi = np.array([a, a, 0.0]) + 0.004
    return sdf, lo, hi


def _bowl_grasp(P: dict) -> GraspRegion:
    a, w = 0.5 * P["diameter"], P["wall"]
    point = np.array([a - 0.5 * w, 0.0, -0.01])
    return GraspRegion("rim", point, _unit([-1, 0, 0]), _unit([0, 1, 0]), w)


def _knife_sample(rng: np.random.Generator) -> dict:
    L = rng.uniform(0.185, 0.275)
    handle_h = rng.uniform(0.020, 0.026)
    return {
        "length": L,
        "handle_len": L * rng.uniform(0.36, 0.44),
        "handle_thick": rng.uniform(0.014, 0.020),
        "handle_h": handle_h,
        "blade_h": rng.uniform(0.025, 0.045),
        "blade_thick": rng.uniform(0.0022, 0.003),
        "spine_drop": rng.uniform(0.002, 0.006),
    }


def _knife_build(P: dict):
    L, lh, th, hh = P["length"], P["handle_len"], P["handle_thick"], P["handle_h"]
    hb, tb = P["blade_h"], P["blade_thick"]
    x_heel = -0.5 * L + lh - 0.004  # blade starts just inside the handle's end
    x_tip = 0.5 * L
    z_spine = 0.5 * hh - P["spine_drop"]
    lb = x_tip - x_heel
    # The edge is a circular arc, lowest (full blade height) at the heel and meeting the
    # straight spine at the tip.
    arc_r = (lb * lb + hb * hb) / (2.0 * hb)
    arc_c = np.array([x_heel, z_spine - hb + arc_r])
    handle_center = np.array([-0.5 * L + 0.5 * lh, 0.0, 0.0])
    handle_half = np.array([0.5 * lh, 0.5 * th, 0.5 * hh])

    def sdf(p):
        x, z = p[:, 0], p[:, 2]
        disk = np.hypot(x - arc_c[0], z - arc_c[1]) - arc_r
        profile = np.maximum(np.maximum(disk, z - z_spine), x_heel - x)
        # Extrude the x-z profile across y by the blade thickness.
        wy = np.abs(p[:, 1]) - 0.5 * tb
        blade = np.minimum(np.maximum(profile, wy), 0.0) + np.hypot(np.maximum(profile, 0.0), np.maximum(wy, 0.0))
        handle = _round_box(p, handle_center, handle_half, 0.45 * min(th, hh))
        return _smin(handle, blade, 0.003)

    lo = np.array([-0.5 * L, -0.5 * th, min(-0.5 * hh, z_spine - hb)]) - 0.004
    hi = np.array([0.5 * L, 0.5 * th, 0.5 * hh]) + 0.004
    return sdf, lo, hi


def _knife_grasp(P: dict) -> GraspRegion:
    point = np.array([-0.5 * P["length"] + 0.5 * P["handle_len"], 0.0, 0.0])
    return GraspRegion("handle", point, _unit([0, -1, 0]), _unit([1, 0, 0]), P["handle_h"])


def _car_sample(rng: np.random.Generator) -> dict:
    L = rng.uniform(0.085, 0.145)
    W = L * rng.uniform(0.40, 0.48)
    r_w = L * rng.uniform(0.11, 0.14)
    return {
        "length": L,
        "width": W,
        "wheel_r": r_w,
        "wheel_w": W * rng.uniform(0.18, 0.24),
        "chassis_h": L * rng.uniform(0.16, 0.22),
        "cabin_len": L * rng.uniform(0.4, 0.55),
        "cabin_x": -L * rng.uniform(0.0, 0.1),
        "cabin_h": L * rng.uniform(0.12, 0.17),
    }


def _car_build(P: dict):
    L, W, rw, ww = P["length"], P["width"], P["wheel_r"], P["wheel_w"]
    z0 = 0.55 * rw
    hc = P["chassis_h"]
    half_body_w = 0.5 * W - 0.35 * ww  # wheels stick out of the body a little
    chassis_c = np.array([0.0, 0.0, z0 + 0.5 * hc])
    chassis_half = np.array([0.5 * L, half_body_w, 0.5 * hc])
    cabin_c = np.array([P["cabin_x"], 0.0, z0 + hc + 0.5 * P["cabin_h"] - 0.004])
    cabin_half = np.array([0.5 * P["cabin_len"], 0.85 * half_body_w, 0.5 * P["cabin_h"]])
    wheel_x = 0.5 * L - 1.25 * rw
    wheels = [np.array([sx * wheel_x, sy * (0.5 * W - 0.5 * ww), rw]) for sx in (-1, 1) for sy in (-1, 1)]

    def sdf(p):
        d = _round_box(p, chassis_c, chassis_half, 0.22 * hc)
        cabin = _round_box(p, cabin_c, cabin_half, 0.3 * min(P["cabin_h"], cabin_half[1]))
        d = _smin(d, cabin, 0.005)
        for c in wheels:
            d = _smin(d, _cylinder_y(p, c, rw, 0.5 * ww, 0.0015), 0.001)
        return d

    top = z0 + hc + P["cabin_h"]
    return sdf, np.array([-0.5 * L, -0.5 * W, 0.0]) - 0.004, np.array([0.5 * L, 0.5 * W, top]) + 0.004


def _car_grasp(P: dict) -> GraspRegion:
    z_mid = 0.55 * P["wheel_r"] + 0.5 * P["chassis_h"]
    point = np.array([0.0, 0.0, z_mid])
    return GraspRegion("body", point, _unit([0, 0, -1]), _unit([1, 0, 0]), P["width"])


@dataclass(frozen=True)
class _Family:
    sample: Callable[[np.random.Generator], dict]
    build: Callable[[dict], tuple]
    grasp: Callable[[dict], GraspRegion]
    spacing: Callable[[dict], np.ndarray]


def _mug_spacing(P: dict) -> np.ndarray:
    # Across the wall keep >= 1.5 nodes so the shell never gets tunnels.
    return np.full(3, min(0.028 * P["height"], P["wall"] / 1.55))


# Grid steps scale with the object's size so the face count stays near 14k.
_FAMILIES: dict[str, _Family] = {
    "mug": _Family(_mug_sample, _mug_build, _mug_grasp, _mug_spacing),
    "bottle": _Family(
        _bottle_sample, _bottle_build, _bottle_grasp, lambda P: P["height"] * np.array([0.0108, 0.0108, 0.0135])
    ),
    "kettle": _Family(_kettle_sample, _kettle_build, _kettle_grasp, lambda P: np.full(3, 0.0187 * P["height"])),
    "bowl": _Family(
        _bowl_sample, _bowl_build, _bowl_grasp, lambda P: np.full(3, min(0.021 * P["diameter"], P["wall"] / 1.5))
    ),
    # The blade is 2-3 mm thick: fine steps across it (y) only.
    "knife": _Family(
        _knife_sample, _knife_build, _knife_grasp, lambda P: np.array([0.002, P["blade_thick"] / 2.6, 0.0015])
    ),
    "toy_car": _Family(_car_sample, _car_build, _car_grasp, lambda P: np.full(3, 0.0156 * P["length"])),
}


class _StretchedRanges:
    """A Generator whose ``uniform(a, b)`` draws from the range stretched ``factor`` times about
    its middle (a non-negative range stays positive: its low end is at least ``a / 2``).

    The wide sampler runs each family's own sampler through it, so every size and proportion
    widens together and the families' derived quantities (handle room, grid steps) still hold.
    """

    def __init__(self, rng: np.random.Generator, factor: float):
        self._rng, self._factor = rng, factor

    def uniform(self, low: float = 0.0, high: float = 1.0, size=None):
        mid, half = 0.5 * (low + high), 0.5 * self._factor * (high - low)
        lo = max(mid - half, 0.5 * low) if low >= 0 else mid - half
        return self._rng.uniform(lo, mid + half, size)

    def __getattr__(self, name: str):
        return getattr(self._rng, name)


# Range factor of the wide sampler; variants it adds, each with its probability.
WIDE_RANGE_FACTOR = 2.0


def _wide_variants(key: str, P: dict, rng: np.random.Generator) -> dict:
    """Shapes the six families' own samplers never draw (``make_object_info(..., wide=True)``):
    flattened / elliptical bodies, box bottles, lidded and spouted mugs. Keys the builds read."""
    out = dict(P)
    if key in ("mug", "bottle", "kettle", "bowl") and rng.random() < 0.5:
        out["body_aspect"] = float(rng.uniform(0.6, 0.95))
    if key == "mug":
        if rng.random() < 0.3:
            out["lid_h"] = float(rng.uniform(0.004, 0.012))
        elif rng.random() < 0.3:
            out["spout_reach"] = float(rng.uniform(0.008, 0.02))
    if key == "bottle" and rng.random() < 0.35:
        out["box_body"] = True
    return out


def _category(category: str) -> str:
    key = str(category).strip().lower().replace(" ", "_").replace("-", "_")
    key = {"toycar": "toy_car", "car": "toy_car"}.get(key, key)
    if key not in _FAMILIES:
        raise UserError(f"unknown object category '{category}'; known: {', '.join(CATEGORIES)}")
    return key


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# ----------------------------------------------------------------------------- public API


def sample_object_params(category: str, rng: np.random.Generator | int | None = None, wide: bool = False) -> dict:
    """Draw a family's parameters (metres) in the build frame (no ``frame_offset`` yet).

    wide: the prior's wider shape distribution (every range ``WIDE_RANGE_FACTOR`` times as
    wide, plus ``_wide_variants``); off, the draws are the benchmark clips' (unchanged).
    """
    key = _category(category)
    rng = _rng(rng)
    if not wide:
        return _FAMILIES[key].sample(rng)
    return _wide_variants(key, _FAMILIES[key].sample(_StretchedRanges(rng, WIDE_RANGE_FACTOR)), rng)


def object_sdf(category: str, params: dict) -> SDF:
    """The family's analytic SDF as a function of points (N, 3) -> (N,) (m, negative inside).

    Points are in the object frame when ``params`` has ``frame_offset`` (as the params of
    an ``ObjectInfo`` do), else in the build frame of ``sample_object_params``.
    """
    raw, _, _ = _FAMILIES[_category(category)].build(params)
    offset = np.asarray(params.get("frame_offset", np.zeros(3)), dtype=np.float64)

    def sdf(points: np.ndarray) -> np.ndarray:
        return raw(np.asarray(points, dtype=np.float64).reshape(-1, 3) + offset)

    return sdf


def _mesh_sdf(sdf: SDF, lo: np.ndarray, hi: np.ndarray, spacing: np.ndarray) -> trimesh.Trimesh:
    """Marching cubes of an SDF over the box [lo, hi] (padded) with per-axis steps."""
    # The odd fraction keeps flat faces at round coordinates off the grid's node planes.
    lo = lo - 2.37 * spacing
    hi = hi + 2 * spacing
    counts = np.ceil((hi - lo) / spacing).astype(int) + 1
    axes = [lo[i] + spacing[i] * np.arange(counts[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    d = sdf(grid).reshape(*counts)
    # A value ~0 on a node puts several vertices within trimesh's merge tolerance (1e-8
    # m) of it; merging them tears holes. Push such nodes 1 micron outside.
    d[np.abs(d) < 1e-6] = 1e-6
    # PyMCubes treats values above the iso level as inside.
    verts, tris = mcubes.marching_cubes(-d, 0.0)
    if len(tris) == 0:
        raise RunError("object generation produced an empty surface")
    verts = lo + verts * spacing
    mesh = largest_component(trimesh.Trimesh(verts, tris, process=True))
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def make_object_info(category: str, rng: np.random.Generator | int | None = None, wide: bool = False) -> ObjectInfo:
    """Generate an object of ``category`` with its SDF and suggested grasp.

    Args:
        category: one of ``CATEGORIES`` (case-insensitive; "toy car"/"toycar" accepted).
        rng: a Generator or a seed; the same seed gives the same object.
        wide: draw from the wider distribution of ``sample_object_params`` (the prior's data).

    Returns:
        ``ObjectInfo`` whose mesh is watertight, in metres, centred on its bounding box.
    """
    key = _category(category)
    family = _FAMILIES[key]
    params = sample_object_params(key, rng, wide)
    sdf, lo, hi = family.build(params)
    spacing = family.spacing(params)
    mesh = _mesh_sdf(sdf, lo, hi, spacing)
    # Faces scale as 1/spacing^2: one re-scaled pass brings an outlier into range.
    n = len(mesh.faces)
    if n > MAX_FACES or n < MIN_FACES:
        spacing = spacing * np.sqrt(n / (0.85 * MAX_FACES if n > MAX_FACES else 4 * MIN_FACES))
        mesh = _mesh_sdf(sdf, lo, hi, spacing)
    if not mesh.is_watertight:
        raise RunError(f"generated {key} mesh is not watertight (params {params})")
    offset = mesh.bounds.mean(axis=0)
    mesh.apply_translation(-offset)
    params = dict(params, frame_offset=tuple(float(v) for v in offset))
    g = family.grasp(params)
    grasp = GraspRegion(g.name, g.point - offset, g.approach, g.axis, float(g.width))
    return ObjectInfo(category=key, mesh=mesh, params=params, grasp=grasp)


def make_object(category: str, rng: np.random.Generator | int | None = None) -> trimesh.Trimesh:
    """A watertight mesh of ``category`` in the object frame (m). See ``make_object_info``."""
    return make_object_info(category, rng).mesh


# Largest extents (m) of a hand-held object: a mesh file whose largest extent falls here is
# taken to be in metres already and keeps its size; outside it the units are unknown.
HANDHELD_EXTENT_M = (0.03, 0.40)
# The size a mesh of unknown units is scaled to (largest extent, m).
DEFAULT_MESH_SIZE_M = 0.15


@dataclass
class LoadedMesh:
    """A user's object mesh ready for ``synth``.

    mesh: watertight, outward winding, centred on its bounding box, in metres.
    scale: factor applied to the file's coordinates (1.0: kept as metres).
    notes: one sentence per thing done to the file's mesh (repairs, rescaling), for the user.
    """

    mesh: trimesh.Trimesh
    scale: float
    notes: list[str] = field(default_factory=list)


def _close_mesh(mesh: trimesh.Trimesh) -> list[str]:
    """Repair ``mesh`` in place towards a closed, outward-wound surface; say what was done.

    Scanned meshes (e.g. YCB's ``textured_simple.obj``) duplicate every vertex on a texture
    or normal seam, which leaves them open along the seams although the surface is closed:
    merging those first closes most of them without touching the geometry. Small holes are
    then filled and the winding made consistent.
    """
    notes = []
    if not mesh.is_watertight:
        before = len(mesh.vertices)
        mesh.merge_vertices(merge_tex=True, merge_norm=True)
        if len(mesh.vertices) < before:
            notes.append(f"merged {before - len(mesh.vertices)} vertices split by texture/normal seams")
    if not mesh.is_watertight:
        faces = len(mesh.faces)
        mesh.update_faces(mesh.nondegenerate_faces())
        mesh.update_faces(mesh.unique_faces())
        mesh.remove_unreferenced_vertices()
        if len(mesh.faces) < faces:
            notes.append(f"removed {faces - len(mesh.faces)} degenerate or duplicate faces")
    if not mesh.is_watertight:
        faces = len(mesh.faces)
        trimesh.repair.fill_holes(mesh)
        loops = _fan_fill_loops(mesh)
        if len(mesh.faces) > faces:
            notes.append(f"filled holes with {len(mesh.faces) - faces} faces"
                         + (f" ({loops} larger hole{'s' if loops > 1 else ''} closed by a fan)" if loops else ""))
    if mesh.is_watertight and not mesh.is_winding_consistent:
        trimesh.repair.fix_winding(mesh)
        notes.append("made the face winding consistent")
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
        notes.append("turned the faces outwards (the file's winding was inside out)")
    return notes


def _boundary_edges(mesh: trimesh.Trimesh) -> np.ndarray:
    """(E, 2) edges used by only one face, directed as in that face."""
    return mesh.edges[trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)]


def _fan_fill_loops(mesh: trimesh.Trimesh) -> int:
    """Close every hole whose boundary is one simple loop by a fan around its centroid.

    ``trimesh.repair.fill_holes`` closes only holes of three or four edges; a part glued on
    without its end caps (a scanned mug's handle) leaves larger loops. Returns the number
    of loops closed; the mesh is changed in place.
    """
    edges = _boundary_edges(mesh)
    if len(edges) == 0:
        return 0
    n = len(mesh.vertices)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    degree = np.bincount(edges.ravel(), minlength=n)
    verts = np.asarray(mesh.vertices)
    new_verts, new_faces = [], []
    for label in np.unique(component[edges[:, 0]]):
        loop_edges = edges[component[edges[:, 0]] == label]
        loop = np.unique(loop_edges)
        if (degree[loop] != 2).any():
            continue  # not a simple loop (holes touching each other): left open
        centre = len(verts) + len(new_verts)
        new_verts.append(verts[loop].mean(0))
        # The fan's triangles run along each edge backwards, so they wind like their neighbours.
        new_faces.extend([b, a, centre] for a, b in loop_edges)
    if new_verts:
        mesh.vertices = np.concatenate([verts, np.asarray(new_verts)])
        mesh.faces = np.concatenate([np.asarray(mesh.faces), np.asarray(new_faces, dtype=np.int64)])
    return len(new_verts)


def _open_edges(mesh: trimesh.Trimesh) -> int:
    """Number of edges used by only one face (the boundary of the holes)."""
    return len(_boundary_edges(mesh))


def load_object_mesh(path: str | Path, size_m: float | None = None) -> LoadedMesh:
    """Load a mesh file as a watertight object in metres, centred on its bounding box.

    Any format trimesh reads (a scene is flattened into one mesh). A mesh that is not
    watertight is repaired when possible (seams merged, holes filled, winding fixed;
    ``LoadedMesh.notes`` says what was done). Scale: ``size_m`` sets the largest extent;
    without it a mesh whose largest extent is a hand-held size in metres
    (``HANDHELD_EXTENT_M``) keeps its own scale, any other is scaled to
    ``DEFAULT_MESH_SIZE_M`` (and a note says so).

    Raises:
        UserError: unreadable file, empty mesh, bad size, or a mesh that stays open.
    """
    path = Path(path)
    if size_m is not None and not size_m > 0:
        raise UserError(f"object size must be positive metres, got {size_m}")
    if not path.is_file():
        raise UserError(f"object mesh not found: {path}")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as err:  # trimesh raises many types for unreadable files
        raise UserError(f"cannot read object mesh {path}: {err}") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UserError(f"object mesh {path} has no triangles")
    extent = float(np.max(mesh.extents))
    if not extent > 0 or not np.isfinite(extent):
        raise UserError(f"object mesh {path} is degenerate (zero or infinite size)")
    notes = _close_mesh(mesh)
    if not mesh.is_watertight:
        raise UserError(f"object mesh {path} is not watertight and could not be repaired "
                        f"({_open_edges(mesh)} open edges left after merging seams and filling holes); "
                        "close its holes first")
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    lo, hi = HANDHELD_EXTENT_M
    if size_m is not None:
        scale = size_m / extent
        if not np.isclose(scale, 1.0):
            notes.append(f"scaled by {scale:.4g} to a largest extent of {size_m:g} m (--object-size)")
    elif lo <= extent <= hi:
        scale = 1.0
        notes.append(f"kept the file's scale: largest extent {extent:.3f} m, a hand-held size in metres")
    else:
        scale = DEFAULT_MESH_SIZE_M / extent
        notes.append(f"rescaled by {scale:.4g}: the largest extent {extent:.4g} is not a hand-held size in metres "
                     f"({lo:g}-{hi:g}), so the units are unknown; it is now {DEFAULT_MESH_SIZE_M:g} m "
                     "(--object-size sets it)")
    if scale != 1.0:
        mesh.apply_scale(scale)
    return LoadedMesh(mesh=mesh, scale=float(scale), notes=notes)
