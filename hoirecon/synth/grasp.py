"""Placing the hand on the object: a power grasp whose fingers touch the surface.

The recipe (in the spirit of GraspIt's "auto-grasp", done with signed distances):

1. Orientation. The palm faces the gripped part: the palm normal (``-y`` of the hand
   frame, see ``hoirecon.hand.model``) points along the grasp's ``approach`` direction,
   and the line across the knuckles (hand ``z``, thumb side) runs along the part's
   ``axis``, so the fingers wrap around the part. A small random tilt about the approach
   (grip angle) and about the axis, and a small slide along the axis, vary the grasp.
2. Palm contact. The open hand (fingers straight) is placed so that the part lies across
   the palm just below the knuckles (where a handle sits in a power grip), well outside
   the object, and slid along ``approach`` until its closest vertex is ``contact_gap_m``
   from the surface (thumb excluded: it sticks out of the palm plane and is placed in
   step 3).
3. Finger closing, joint by joint. For each finger the proximal joint flexes (the distal
   joints follow with fixed ratios) until one of the finger's moving vertices would
   reach deeper than ``penetration_tol_m`` into the object; that joint is then frozen and
   the next joint continues, and so on to the fingertip. Each stop is found on a grid of
   angles and refined by two finer grids, all batched through the hand model. Joint
   limits end the closing of a finger that touches nothing. The thumb first opens, if it
   starts inside the object, then closes towards the fingers the same way.

Signed distances come from the object's analytic SDF when it has one (procedural
objects) or from ``MeshSDF`` (any watertight mesh). The reported penetration is measured
on the mesh itself, exactly: ``penetration_depth`` uses winding numbers for the inside test
and exact point-triangle distances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from hoirecon.errors import RunError
from hoirecon.eval.metrics import sample_surface
from hoirecon.geometry.rotations import rotation_about_axis
from hoirecon.hand.model import HandModel
from hoirecon.synth.objects import GraspRegion

__all__ = [
    "GraspConfig",
    "Grasp",
    "MeshSDF",
    "winding_number",
    "penetration_depth",
    "generic_grasp_region",
    "mesh_grasp_candidates",
    "place_grasp",
    "SearchedGrasp",
    "search_grasp",
]

SDF = Callable[[np.ndarray], np.ndarray]

# MANO keypoint indices (``HandOutput.keypoints_mano_order``) of each finger's three joints
# and its tip, and the offset of the finger's first joint in the 15 articulated joints.
_FINGERS: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "index": ((1, 2, 3, 17), 0),
    "middle": ((4, 5, 6, 18), 3),
    "pinky": ((7, 8, 9, 20), 6),
    "ring": ((10, 11, 12, 19), 9),
    "thumb": ((13, 14, 15, 16), 12),
}
_LONG_FINGERS = ("index", "middle", "ring", "pinky")


@dataclass(frozen=True)
class GraspConfig:
    """How the hand is placed and closed.

    contact_gap_m: the open palm stops this far from the surface (m).
    penetration_tol_m: a closing joint stops before any moving vertex is deeper (m).
    step_deg: angle grid of the closing search (then refined 2 x 8-fold).
    flex_limits_deg: max flexion of the (proximal, middle, distal) joint of a long finger.
    thumb_limits_deg: the same for the thumb (CMC, MCP, IP).
    follow_ratio: while joint k closes, joint j > k closes ``follow_ratio[j]`` times as fast.
    thumb_open_deg: how far the thumb may open to get out of the object before closing.
    tilt_deg, roll_deg: std of the random tilt about the approach direction / the part
        axis (the grip angle varies between clips).
    slide_m: std of the random slide of the hand along the part axis.
    anchor_back_m: range of the distance from the knuckle line (finger bases) to where the
        part crosses the palm, towards the wrist.
    max_penetration_mm, min_contacts: a grasp is kept only when no hand vertex is deeper
        than this inside the object mesh (exact test) and at least this many fingers touch
        it (``Grasp.contacts``); a ground truth with the hand inside the object would make
        every score computed on the clip meaningless.
    max_tries: ``search_grasp`` gives up after this many placements.
    """

    contact_gap_m: float = 0.0015
    penetration_tol_m: float = 0.0005
    step_deg: float = 4.0
    flex_limits_deg: tuple[float, float, float] = (85.0, 100.0, 70.0)
    thumb_limits_deg: tuple[float, float, float] = (50.0, 55.0, 75.0)
    follow_ratio: tuple[float, float, float] = (1.0, 1.0, 0.75)
    thumb_open_deg: float = 70.0
    tilt_deg: float = 10.0
    roll_deg: float = 6.0
    slide_m: float = 0.003
    anchor_back_m: tuple[float, float] = (0.012, 0.022)
    max_penetration_mm: float = 1.0
    min_contacts: int = 3
    max_tries: int = 32


@dataclass
class Grasp:
    """A hand placed on an object.

    T_hand_to_obj: (4, 4) float64, hand frame -> object frame.
    articulation: (45,) float32 MANO-layout finger axis-angles.
    shape: (10,) float32.
    finger_gap_mm: closest distance (mm, negative = inside) of each finger to the object.
    contacts: fingers whose closest vertex is within 2 mm of the surface.
    """

    T_hand_to_obj: np.ndarray
    articulation: np.ndarray
    shape: np.ndarray
    finger_gap_mm: dict
    contacts: list


# ----------------------------------------------------------------------------- distances


class MeshSDF:
    """Approximate signed distance (m, negative inside) to a watertight mesh.

    Candidates: the faces of the 4 surface samples (out of ``n_samples``) nearest to the
    point; magnitude: the exact distance to the closest of those faces (exact whenever the
    closest face is among them, which a sample spacing below the face size makes nearly
    certain near the surface); sign: the side of the samples' face normals (a vote of the
    4, robust at edges). Good near the surface, where grasping needs it; no rtree/embree
    needed. ``penetration_depth`` measures penetration exactly.
    """

    def __init__(self, mesh: trimesh.Trimesh, n_samples: int = 40_000, seed: int = 0):
        rng = np.random.default_rng(seed)
        area = np.asarray(mesh.area_faces, dtype=np.float64)
        face = rng.choice(len(area), size=n_samples, p=area / area.sum())
        u, v = rng.random(n_samples), rng.random(n_samples)
        su = np.sqrt(u)
        self.triangles = np.asarray(mesh.triangles, dtype=np.float64)
        tri = self.triangles[face]
        self.points = ((1 - su)[:, None] * tri[:, 0] + (su * (1 - v))[:, None] * tri[:, 1]
                       + (su * v)[:, None] * tri[:, 2])
        self.face = face
        self.normals = np.asarray(mesh.face_normals)[face]
        self.tree = cKDTree(self.points)

    def __call__(self, points: np.ndarray, band: float | None = None) -> np.ndarray:
        """Signed distances (N,) of points (N, 3).

        band: if given, points farther than ``band`` from every sample get ``+band`` (sign
        not determined): much faster for far points, enough for contact searches that move
        in steps smaller than the band.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        bound = np.inf if band is None else band
        dist, idx = self.tree.query(points, k=4, distance_upper_bound=bound)
        far = ~np.isfinite(dist[:, 0])
        idx = np.where(np.isfinite(dist), idx, idx[:, :1])  # missing neighbours: repeat the nearest
        idx[far] = 0
        offsets = points[:, None, :] - self.points[idx]  # (N, 4, 3)
        side = np.einsum("nkc,nkc->n", offsets, self.normals[idx])
        near = np.flatnonzero(~far)
        tri = self.triangles[self.face[idx[near]]].reshape(-1, 3, 3)  # (n*4, 3, 3)
        closest = trimesh.triangles.closest_point(tri, np.repeat(points[near], 4, axis=0))
        exact = np.linalg.norm(closest - np.repeat(points[near], 4, axis=0), axis=1).reshape(-1, 4).min(1)
        out = np.full(len(points), bound)
        out[near] = np.where(side[near] >= 0, exact, -exact)
        return out


def winding_number(verts: np.ndarray, faces: np.ndarray, points: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Generalized winding number of a closed mesh at points (1 inside, 0 outside).

    Sum of the triangles' signed solid angles (Van Oosterom & Strackee) over 4 pi.

    Args:
        verts: (V, 3); faces: (F, 3) outward winding; points: (N, 3).
    Returns:
        (N,) float64.
    """
    verts = np.asarray(verts, dtype=np.float64)
    centre = verts.mean(0)  # small coordinates keep the expanded products below accurate
    tri = torch.as_tensor((verts - centre)[np.asarray(faces)])  # (F, 3, 3)
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 3) - centre)
    A, B, C = tri[:, 0], tri[:, 1], tri[:, 2]
    # With a = A - p etc., every term is a per-triangle constant plus products with p,
    # so a chunk of points costs a few (n, F) matrix products instead of (n, F, 3, 3) temporaries:
    # det(a, b, c) = A.(B x C) - p.(A x B + B x C + C x A); a.b = A.B - p.(A + B) + |p|^2.
    det0 = (A * torch.linalg.cross(B, C, dim=-1)).sum(-1)
    cross_sum = torch.linalg.cross(A, B, dim=-1) + torch.linalg.cross(B, C, dim=-1) + torch.linalg.cross(C, A, dim=-1)
    AA, BB, CC = (A * A).sum(-1), (B * B).sum(-1), (C * C).sum(-1)
    AB, AC, BC = (A * B).sum(-1), (A * C).sum(-1), (B * C).sum(-1)
    out = []
    for start in range(0, len(pts), chunk):
        p = pts[start : start + chunk]
        pp = (p * p).sum(-1, keepdim=True)
        pA, pB, pC = p @ A.T, p @ B.T, p @ C.T
        det = det0 - p @ cross_sum.T
        la = (AA - 2 * pA + pp).clamp_min(0).sqrt()
        lb = (BB - 2 * pB + pp).clamp_min(0).sqrt()
        lc = (CC - 2 * pC + pp).clamp_min(0).sqrt()
        ab = AB - pA - pB + pp
        ac = AC - pA - pC + pp
        bc = BC - pB - pC + pp
        denom = la * lb * lc + ab * lc + ac * lb + bc * la
        out.append((2.0 * torch.atan2(det, denom)).sum(-1) / (4.0 * np.pi))
    return torch.cat(out).numpy() if out else np.zeros(0)


def penetration_depth(
    mesh: trimesh.Trimesh, points: np.ndarray, mesh_sdf: MeshSDF | None = None, near_m: float = 0.005
) -> np.ndarray:
    """Depth (m) of points inside a watertight mesh; 0 for points outside.

    Points within ``near_m`` of the surface (by ``mesh_sdf``'s distance) are classified
    exactly by their winding number, the others by ``mesh_sdf``'s sign (reliable that
    far from a smooth surface; the winding number costs (N x faces) and dominates
    otherwise). Depths are exact point-triangle distances.

    Args:
        mesh: watertight, outward winding. points: (N, 3) in the mesh's frame.
        mesh_sdf: a ``MeshSDF`` of ``mesh`` (built here if None).
        near_m: band around the surface where the exact inside test is used.
    Returns:
        (N,) float64 >= 0.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    mesh_sdf = mesh_sdf or MeshSDF(mesh)
    approx = mesh_sdf(points)
    depth = np.zeros(len(points))
    near = np.flatnonzero(np.abs(approx) < near_m)
    inside_mask = approx < 0
    if len(near):
        inside_mask[near] = winding_number(mesh.vertices, mesh.faces, points[near]) > 0.5
    inside = np.flatnonzero(inside_mask)
    triangles = np.asarray(mesh.triangles)
    for i in inside:
        closest = trimesh.triangles.closest_point(triangles, np.broadcast_to(points[i], (len(triangles), 3)))
        depth[i] = np.sqrt(((closest - points[i]) ** 2).sum(-1).min())
    return depth


# ----------------------------------------------------------------------------- grasp region


def generic_grasp_region(mesh: trimesh.Trimesh) -> GraspRegion:
    """A grasp for a mesh without one: across its middle, around its longest axis.

    Principal axes of the surface: the part axis is the longest one, the palm approaches
    along the shortest one (the object's thinnest direction fits the hand best).
    """
    pts = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), 20000, seed=0)
    centre = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    axis, approach = vt[0], vt[2]
    width = float(np.ptp((pts - centre) @ approach))
    return GraspRegion("body", centre, -approach / np.linalg.norm(approach), axis / np.linalg.norm(axis), width)


def mesh_grasp_candidates(mesh: trimesh.Trimesh, thumb_along_axis: float) -> list[tuple[GraspRegion, float]]:
    """Grasps to try on a mesh without a known one, as (region, thumb side) pairs, first guess first.

    The first is ``generic_grasp_region`` with the given thumb side. Then, around the
    longest and the middle principal axis, the palm comes from either side of each other
    axis, with either thumb side; first across the middle, then a fifth of the length
    towards either end. The width along the approach is measured from the region's point
    to the farthest surface point, so the open hand always starts outside the object.
    """
    pts = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), 20000, seed=0)
    centre = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    out = [(generic_grasp_region(mesh), float(thumb_along_axis))]
    for shift in (0.0, 0.2, -0.2):
        for a in (0, 1):
            axis = vt[a]
            length = float(np.ptp((pts - centre) @ axis))
            point = centre + shift * length * axis
            for b in [i for i in range(3) if i != a]:
                for approach in (-vt[b], vt[b]):
                    width = 2.0 * float(np.abs((pts - point) @ approach).max())
                    region = GraspRegion("body", point, _unit(approach), _unit(axis), width)
                    out.extend((region, sign * thumb_along_axis) for sign in (1.0, -1.0))
    return out


@dataclass
class SearchedGrasp:
    """The grasp ``search_grasp`` kept.

    grasp: the placement. hand_verts_obj: (V, 3) float64 hand vertices in the object frame.
    penetration_mm: deepest hand vertex inside the object mesh (exact). tries: placements made.
    """

    grasp: Grasp
    hand_verts_obj: np.ndarray
    penetration_mm: float
    tries: int


def search_grasp(
    hand: HandModel,
    mesh: trimesh.Trimesh,
    sdf: SDF,
    candidates: list[tuple[GraspRegion, float]],
    shape: np.ndarray,
    rng: np.random.Generator,
    cfg: GraspConfig = GraspConfig(),
    mesh_sdf: MeshSDF | None = None,
) -> SearchedGrasp:
    """Place grasps (``place_grasp``) until one meets ``cfg``'s limits on the mesh.

    Try i uses ``candidates[i % len(candidates)]`` (region, thumb side) with fresh random
    tilt/slide/anchor draws from ``rng``, so a single candidate is retried with new draws.
    The first placement that passes is kept, so an object whose first grasp is good gets
    the same grasp as without the search.

    Args:
        mesh: the object (watertight, object frame); penetration is measured on it.
        sdf: the signed distance the placement searches with (analytic or ``MeshSDF``).
        mesh_sdf: a ``MeshSDF`` of ``mesh`` (built here if None).

    Raises:
        RunError: no placement within ``cfg.max_tries`` meets the limits (one line with the best).
    """
    mesh_sdf = mesh_sdf or (sdf if isinstance(sdf, MeshSDF) else MeshSDF(mesh))
    ev = _HandEval(hand, shape)
    best = (np.inf, 0)
    for i in range(cfg.max_tries):
        region, thumb = candidates[i % len(candidates)]
        try:
            grasp = place_grasp(hand, sdf, region, shape, rng, cfg, thumb_along_axis=thumb)
        except RunError:
            continue  # this approach never reaches the surface; try another
        R_hand_to_obj, t_hand_to_obj = grasp.T_hand_to_obj[:3, :3], grasp.T_hand_to_obj[:3, 3]
        verts = _transform(ev.verts(grasp.articulation[None])[0], R_hand_to_obj, t_hand_to_obj)
        depth_mm = float(penetration_depth(mesh, verts, mesh_sdf).max() * 1000.0)
        if depth_mm <= cfg.max_penetration_mm and len(grasp.contacts) >= cfg.min_contacts:
            return SearchedGrasp(grasp, verts, depth_mm, i + 1)
        if len(grasp.contacts) >= cfg.min_contacts:
            best = min(best, (depth_mm, len(grasp.contacts)))
        elif not np.isfinite(best[0]):
            best = (np.inf, max(best[1], len(grasp.contacts)))
    found = f"best: {best[0]:.1f} mm deep" if np.isfinite(best[0]) else f"at most {best[1]} fingers in contact"
    raise RunError(f"no grasp with the hand at most {cfg.max_penetration_mm:g} mm inside the object and at least "
                   f"{cfg.min_contacts} fingers touching it in {cfg.max_tries} tries ({found}); "
                   "try another --seed or another mesh")


# ----------------------------------------------------------------------------- helpers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class _HandEval:
    """Batched hand-model evaluation in the object frame (numpy in, numpy out)."""

    def __init__(self, hand: HandModel, shape: np.ndarray):
        self.hand = hand
        param = next(iter(hand.buffers()))
        self.like = dict(dtype=torch.float32, device=param.device)
        self.shape = torch.as_tensor(shape, **self.like)[None]

    @torch.no_grad()
    def verts(self, articulation: np.ndarray) -> np.ndarray:
        """articulation (B, 45) -> hand-frame vertices (B, V, 3) float64."""
        art = torch.as_tensor(np.asarray(articulation, dtype=np.float32), **self.like)
        out = self.hand(art, torch.zeros(art.shape[0], 3, **self.like), self.shape)
        return out.verts.double().cpu().numpy()

    @torch.no_grad()
    def joints(self, articulation: np.ndarray) -> np.ndarray:
        art = torch.as_tensor(np.asarray(articulation, dtype=np.float32), **self.like)
        out = self.hand(art, torch.zeros(art.shape[0], 3, **self.like), self.shape)
        return out.keypoints_mano_order().double().cpu().numpy()


def _flex_axes(rest_joints: np.ndarray) -> dict[str, np.ndarray]:
    """Per finger, (3, 3) flexion axes (rows) of its joints, in the rest hand frame.

    A rotation by a positive angle about the axis moves the distal segment towards the
    palm: for the long fingers, from the segment direction towards ``-y`` (palm side);
    for the thumb, towards a point under the index/middle fingers' middle segments (a
    power grasp wraps the thumb around the part, opposite the fingers).
    """
    axes = {}
    palm_side = np.array([0.0, -1.0, 0.0])
    target = 0.5 * (rest_joints[2] + rest_joints[5]) + np.array([0.0, -0.04, 0.0])
    for name, (chain, _) in _FINGERS.items():
        rows = []
        for k in range(3):
            seg = _unit(rest_joints[chain[k + 1]] - rest_joints[chain[k]])
            towards = palm_side if name != "thumb" else _unit(target - rest_joints[chain[k]])
            rows.append(_unit(np.cross(seg, towards)))
        axes[name] = np.stack(rows)
    return axes


# ----------------------------------------------------------------------------- the grasp


def _transform(verts: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return verts @ R.T + t


def _first_hit(values: np.ndarray, threshold: float) -> int:
    """Index of the first value below threshold, or -1."""
    below = np.flatnonzero(values < threshold)
    return int(below[0]) if len(below) else -1


def place_grasp(
    hand: HandModel,
    sdf: SDF,
    region: GraspRegion,
    shape: np.ndarray,
    rng: np.random.Generator,
    cfg: GraspConfig = GraspConfig(),
    thumb_along_axis: float = 1.0,
) -> Grasp:
    """Place a right hand on an object in a power grasp (see the module docstring).

    Args:
        hand: the hand model (MANO parameter layout).
        sdf: signed distance of object-frame points (N, 3) -> (N,) (m, negative inside).
        region: where to grasp (object frame).
        shape: (10,) hand shape.
        rng: randomness of the tilt/slide/anchor.
        cfg: placement settings.
        thumb_along_axis: +1 puts the thumb side of the palm towards ``region.axis``, -1 away.

    Returns:
        Grasp (pose, articulation, per-finger gaps).
    """
    if isinstance(sdf, MeshSDF):
        # Every search below moves vertices by less than 1 cm per step from a state
        # without penetration, so distances beyond 1.5 cm only need to be "far".
        mesh_sdf = sdf
        sdf = lambda p: mesh_sdf(p, band=0.015)  # noqa: E731
    ev = _HandEval(hand, shape)
    zero = np.zeros((1, 45))
    rest_verts = ev.verts(zero)[0]
    rest_joints = ev.joints(zero)[0]
    axes = _flex_axes(rest_joints)
    n_verts = len(rest_verts)

    # 1. Orientation: columns are the hand axes in the object frame.
    approach = _unit(np.asarray(region.approach, dtype=np.float64))
    part_axis = np.asarray(region.axis, dtype=np.float64)
    part_axis = _unit(part_axis - (part_axis @ approach) * approach)
    y_h = -approach
    z_h = thumb_along_axis * part_axis
    x_h = np.cross(y_h, z_h)
    R = np.stack([x_h, y_h, z_h], axis=1)
    R = rotation_about_axis(approach, np.deg2rad(rng.normal(0.0, cfg.tilt_deg))) @ R
    R = rotation_about_axis(part_axis, np.deg2rad(rng.normal(0.0, cfg.roll_deg))) @ R

    # The part crosses the palm just below the knuckles: anchor on the palm surface.
    mcp = rest_joints[[1, 4, 7, 10]].mean(0)
    back = rng.uniform(*cfg.anchor_back_m)
    anchor = np.array([mcp[0] + back, rest_verts[:, 1].min() * 0.5, mcp[2]])
    near = np.linalg.norm(rest_verts[:, [0, 2]] - anchor[[0, 2]], axis=1) < 0.012
    if near.any():
        anchor[1] = rest_verts[near, 1].min()  # palm skin under the anchor
    slide = rng.normal(0.0, cfg.slide_m) * part_axis

    # Vertices that move with each joint (found by perturbing it), thumb for step 2.
    moving: dict[tuple[str, int], np.ndarray] = {}
    perturbed = []
    keys = []
    for name, (_, first) in _FINGERS.items():
        for k in range(3):
            art = np.zeros(45)
            art[3 * (first + k) : 3 * (first + k) + 3] = 0.4 * axes[name][k]
            perturbed.append(art)
            keys.append((name, k))
    moved = ev.verts(np.stack(perturbed))
    for key, verts in zip(keys, moved):
        moving[key] = np.flatnonzero(np.linalg.norm(verts - rest_verts, axis=1) > 1e-6)
    not_thumb = np.setdiff1d(np.arange(n_verts), moving[("thumb", 0)])

    # 2. Slide the open hand along the approach until the palm (or a finger) touches.
    start = np.asarray(region.point, dtype=np.float64) + slide - approach * (0.5 * region.width + 0.05)
    travel = 0.05 + region.width + 0.02
    palm = rest_verts[not_thumb]

    def min_sdf_at(us: np.ndarray) -> np.ndarray:
        t = start[None] + us[:, None] * approach - (R @ anchor)[None]
        pts = (palm @ R.T)[None] + t[:, None]
        return sdf(pts.reshape(-1, 3)).reshape(len(us), -1).min(1)

    us = np.arange(0.0, travel, 0.002)
    hit = _first_hit(min_sdf_at(us), cfg.contact_gap_m)
    if hit < 0:
        raise RunError("could not place the hand on the object: the palm never reaches its surface")
    lo, hi = (us[hit - 1], us[hit]) if hit > 0 else (us[0] - 0.002, us[0])
    for _ in range(2):
        fine = np.linspace(lo, hi, 9)
        j = _first_hit(min_sdf_at(fine), cfg.contact_gap_m)
        j = max(j, 1)
        lo, hi = fine[j - 1], fine[j]
    t = start + lo * approach - R @ anchor

    # 3. Close the fingers joint by joint; the five fingers move disjoint vertices, so they
    # are searched together (one batch of hand poses per search step).
    limits = {n: np.deg2rad(cfg.thumb_limits_deg if n == "thumb" else cfg.flex_limits_deg) for n in _FINGERS}
    angles = {n: np.zeros(3) for n in _FINGERS}
    angles["thumb"] = _open_thumb(ev, sdf, R, t, axes, moving[("thumb", 0)], cfg)
    for k in range(3):
        angles = _close_joints(ev, sdf, R, t, axes, k, angles, limits, {n: moving[(n, k)] for n in _FINGERS}, cfg)
    articulation = _articulations(axes, {n: a[None] for n, a in angles.items()})[0]

    verts = _transform(ev.verts(articulation[None])[0], R, t)
    d = sdf(verts)
    gaps = {name: float(d[moving[(name, 0)]].min() * 1000.0) for name in _FINGERS}
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return Grasp(
        T_hand_to_obj=T,
        articulation=articulation.astype(np.float32),
        shape=np.asarray(shape, dtype=np.float32),
        finger_gap_mm=gaps,
        contacts=[n for n, g in gaps.items() if g < 2.0],
    )


def _articulations(axes: dict, rows: dict) -> np.ndarray:
    """(B, 45) articulations from per-finger joint angles ``rows[name]`` (B, 3) about ``axes[name]`` (3, 3)."""
    batch = len(next(iter(rows.values())))
    arts = np.zeros((batch, 45))
    for name, angles in rows.items():
        first = _FINGERS[name][1]
        arts[:, 3 * first : 3 * first + 9] = (angles[:, :, None] * axes[name][None]).reshape(batch, 9)
    return arts


def _min_sdf(ev, sdf, R, t, arts: np.ndarray, ids: dict) -> dict:
    """Per finger, the min signed distance (B,) of its vertices ``ids[name]`` for each articulation."""
    verts = ev.verts(arts)
    needed = np.unique(np.concatenate(list(ids.values())))
    pts = verts[:, needed] @ R.T + t
    d = sdf(pts.reshape(-1, 3)).reshape(len(arts), -1)
    column = {v: i for i, v in enumerate(needed)}
    return {name: d[:, [column[v] for v in vs]].min(1) for name, vs in ids.items()}


def _close_joints(ev, sdf, R, t, axes, k, angles, limits, ids, cfg) -> dict:
    """Flex joint k of every finger (distal joints following) until contact.

    Returns the new angles per finger (3,). A finger stops at the last angle before one of
    its moving vertices goes deeper than the tolerance, found on a grid then refined twice.
    """
    ratio = np.zeros(3)
    ratio[k:] = np.asarray(cfg.follow_ratio)[: 3 - k] / cfg.follow_ratio[0]
    room = {n: max(float((limits[n] - angles[n])[k]) / ratio[k], 0.0) for n in angles}

    def rows(name: str, cs: np.ndarray) -> np.ndarray:
        return np.minimum(angles[name][None] + cs[:, None] * ratio[None], limits[name][None])

    def search(cs: dict) -> dict:
        return _min_sdf(ev, sdf, R, t, _articulations(axes, {n: rows(n, c) for n, c in cs.items()}), ids)

    n_steps = int(np.ceil(max(room.values()) / np.deg2rad(cfg.step_deg))) + 1
    grid = np.linspace(0.0, 1.0, max(n_steps, 2))
    cs = {n: grid * room[n] for n in angles}
    d = search(cs)
    final, bracket = {}, {}
    for n in angles:
        hit = _first_hit(d[n], -cfg.penetration_tol_m)
        if room[n] == 0 or hit == 0:
            final[n] = 0.0  # at its limit, or already touching: this joint stays
        elif hit < 0:
            final[n] = room[n]
        else:
            bracket[n] = (cs[n][hit - 1], cs[n][hit])
    for _ in range(2):
        if not bracket:
            break
        fine = {n: np.linspace(*bracket.get(n, (final.get(n, 0.0),) * 2), 9) for n in angles}
        d = search(fine)
        for n in bracket:
            j = max(_first_hit(d[n], -cfg.penetration_tol_m), 1)
            bracket[n] = (fine[n][j - 1], fine[n][j])
    final.update({n: lo for n, (lo, _) in bracket.items()})
    return {n: rows(n, np.array([final[n]]))[0] for n in angles}


def _open_thumb(ev, sdf, R, t, axes, ids, cfg) -> np.ndarray:
    """Start angles (3,) of the thumb: 0, or opened (negative CMC flexion) until it is outside."""
    opens = -np.deg2rad(np.arange(0.0, cfg.thumb_open_deg + 1e-9, 4.0))
    rows = np.zeros((len(opens), 3))
    rows[:, 0] = opens
    d = _min_sdf(ev, sdf, R, t, _articulations(axes, {"thumb": rows}), {"thumb": ids})["thumb"]
    free = np.flatnonzero(d >= -cfg.penetration_tol_m)
    return rows[free[0]] if len(free) else rows[-1]
