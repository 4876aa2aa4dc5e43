"""Initialisation of the object: centre and bounding radius in the hand frame, visual hull.

- Centre: each frame's object-mask centroid defines a ray; the rays are taken to the hand
  frame with the initial ``T_cam_to_hand`` and the point closest to all of them is solved
  in closed form, with a ridge term pulling it to a prior point (the hand's centre).
  When the clip barely changes viewpoint the rays are nearly parallel and depth is
  unobservable; the ridge then picks the point on the rays nearest the hand, which is
  where a held object is.
- Radius: in every frame, the largest distance (pixels) from the projected centre to an
  object pixel, converted to metres at the centre's depth; the max over frames times a
  margin (the hand hides part of the object, and extents along the line of sight are
  unseen in any single frame).
- Visual hull (space carving with votes): grid nodes of the object-frame cube are
  projected into every frame; a node is carved by a frame when it lands inside the image
  on a pixel that is background in a dilated (object | hand) mask. Hand pixels and pixels
  outside the image are *unknown* and never carve (the hand occludes the object). A node
  survives when at most ``max_carve_votes`` frames carve it, which tolerates noisy
  cameras. The hull becomes a signed distance with Euclidean distance transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from hoirecon.errors import RunError
from hoirecon.geometry.regions import mask_iou
from hoirecon.geometry.rotations import rotation_angle_deg
from hoirecon.geometry.transforms import invert_rigid, transform_points
from hoirecon.render.raster import strided_silhouettes


def estimate_object_center(
    obj_masks: np.ndarray, K: np.ndarray, T_cam_to_hand: np.ndarray, prior_point_hand: np.ndarray,
    ridge: float = 0.05,
) -> np.ndarray:
    """Least-squares intersection of the object-centroid rays, regularised to a prior point.

    Args:
        obj_masks: (T, H, W) bool object masks.
        K: (3, 3) intrinsics. T_cam_to_hand: (T, 4, 4).
        prior_point_hand: (3,) hand-frame point the centre is pulled to (e.g. hand centre).
        ridge: weight of the prior relative to one ray (summed over rays: ridge * n_rays).
    Returns:
        centre: (3,) hand-frame point (m).
    """
    A = np.zeros((3, 3))
    b = np.zeros(3)
    Kinv = np.linalg.inv(K.astype(np.float64))
    n = 0
    for t in range(len(obj_masks)):
        ys, xs = np.nonzero(obj_masks[t])
        if len(xs) < 4:
            continue
        d_cam = Kinv @ np.array([xs.mean(), ys.mean(), 1.0])
        R, o = T_cam_to_hand[t, :3, :3].astype(np.float64), T_cam_to_hand[t, :3, 3].astype(np.float64)
        d = R @ d_cam
        d /= np.linalg.norm(d)
        P = np.eye(3) - np.outer(d, d)  # projector orthogonal to the ray
        A += P
        b += P @ o
        n += 1
    if n == 0:
        raise RunError("the object mask is empty in every frame; cannot place the object")
    lam = ridge * n
    A += lam * np.eye(3)
    b += lam * np.asarray(prior_point_hand, np.float64)
    return np.linalg.solve(A, b)


def estimate_object_radius(
    obj_masks: np.ndarray, K: np.ndarray, T_cam_to_hand: np.ndarray, center_hand: np.ndarray, margin: float = 1.3,
) -> float:
    """Bounding-sphere radius (m) from the mask extents at the centre's depth (see module doc).

    Args:
        obj_masks: (T, H, W) bool. K: (3, 3). T_cam_to_hand: (T, 4, 4). center_hand: (3,).
    """
    T_h2c = np.linalg.inv(T_cam_to_hand.astype(np.float64))
    f = float(np.sqrt(K[0, 0] * K[1, 1]))
    best = 0.0
    for t in range(len(obj_masks)):
        ys, xs = np.nonzero(obj_masks[t])
        if len(xs) < 4:
            continue
        c = T_h2c[t, :3, :3] @ center_hand + T_h2c[t, :3, 3]
        if c[2] <= 1e-3:
            continue
        u = K[0, 0] * c[0] / c[2] + K[0, 2]
        v = K[1, 1] * c[1] / c[2] + K[1, 2]
        px = np.sqrt((xs - u) ** 2 + (ys - v) ** 2).max() + 1.0
        best = max(best, px * c[2] / f)
    if best <= 0:
        raise RunError("cannot size the object: no frame sees the object in front of the camera")
    return margin * best


@torch.no_grad()
def visual_hull_sdf(
    obj_masks: torch.Tensor, hand_masks: torch.Tensor, K: torch.Tensor, T_cam_to_obj: torch.Tensor,
    radius: float, resolution: int, dilate_px: int = 2, max_carve_votes: int = 1,
) -> torch.Tensor:
    """Signed distance (m) of the vote-carved visual hull on the object-frame cube.

    Args:
        obj_masks, hand_masks: (T, H, W) bool.
        K: (3, 3) intrinsics. T_cam_to_obj: (T, 4, 4) initial cameras in the object frame.
        radius: half side of the cube [-radius, radius]^3 (and radius of the bounding sphere).
        resolution: nodes per side.
        dilate_px: masks are dilated by this many pixels before carving (camera noise).
        max_carve_votes: a node survives when at most this many frames carve it.
    Returns:
        sdf: (R, R, R) float32 indexed [z, y, x], negative inside the hull; positive
        outside the bounding sphere. Falls back to a sphere of radius/2 if the hull is empty.
    """
    device = obj_masks.device
    Tn, H, W = obj_masks.shape
    lin = torch.linspace(-radius, radius, resolution, device=device)
    z, y, x = torch.meshgrid(lin, lin, lin, indexing="ij")
    pts = torch.stack([x, y, z], -1).reshape(-1, 3)  # (N, 3)
    known_fg = (obj_masks | hand_masks).cpu().numpy()
    if dilate_px > 0:
        st = np.ones((2 * dilate_px + 1, 2 * dilate_px + 1), bool)
        known_fg = np.stack([ndimage.binary_dilation(m, st) for m in known_fg])
    fg = torch.from_numpy(known_fg).to(device)
    T_o2c = invert_rigid(T_cam_to_obj.to(device=device, dtype=pts.dtype))
    votes = torch.zeros(pts.shape[0], dtype=torch.int32, device=device)
    for t in range(Tn):
        pc = transform_points(T_o2c[t], pts)
        zc = pc[:, 2]
        ok = zc > 1e-4
        u = torch.round(K[0, 0] * pc[:, 0] / zc.clamp_min(1e-4) + K[0, 1] * pc[:, 1] / zc.clamp_min(1e-4) + K[0, 2])
        v = torch.round(K[1, 1] * pc[:, 1] / zc.clamp_min(1e-4) + K[1, 2])
        inside = ok & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
        idx = (v.clamp(0, H - 1) * W + u.clamp(0, W - 1)).long()
        bg = ~fg[t].reshape(-1)[idx]
        votes += (inside & bg).int()
    occ = (votes <= max_carve_votes) & (pts.norm(dim=-1) < radius * 0.98)
    occ = occ.reshape(resolution, resolution, resolution).cpu().numpy()
    voxel = 2.0 * radius / (resolution - 1)
    if occ.sum() < 8:
        return pts.norm(dim=-1).reshape(resolution, resolution, resolution).float() - 0.5 * radius
    occ = _piece_at_centre(occ, pts.norm(dim=-1).reshape(occ.shape).cpu().numpy())
    outside = ndimage.distance_transform_edt(~occ) * voxel
    inside = ndimage.distance_transform_edt(occ) * voxel
    # -0.5 voxel shifts put the zero level halfway between an inside and an outside node.
    sdf = np.where(occ, -(inside - 0.5 * voxel), outside - 0.5 * voxel)
    return torch.from_numpy(sdf.astype(np.float32)).to(device)



def _piece_at_centre(occ: np.ndarray, dist_to_centre: np.ndarray) -> np.ndarray:
    """The connected piece of ``occ`` (R, R, R) bool nearest the cube's centre (the object's
    centre, triangulated from the masks); others are survivors no frame could carve.

    The largest piece was kept before: on a 100-frame clip (hand_fan) the space above the
    image, outside every view, survived as a bigger piece than the object itself, and the
    fit started from a hull that no frame sees (docs/experiments.md).
    """
    lab, n = ndimage.label(occ)
    if n <= 1:
        return occ
    nearest = ndimage.minimum(dist_to_centre, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmin(nearest)))


@dataclass
class ObjectCameras:
    """Object-frame cameras from structure from motion (``hoirecon.geometry.object_sfm``).

    R_cam_from_obj: (T, 3, 3), t_cam_from_obj: (T, 3) in the model's frame and scale;
    registered: (T,) bool (at least one True); center: (3,) the object's centre in the model.
    """

    R_cam_from_obj: np.ndarray
    t_cam_from_obj: np.ndarray
    registered: np.ndarray
    center: np.ndarray


def object_in_hand_poses(cams: ObjectCameras, T_cam_to_hand: np.ndarray,
                         center_hand: np.ndarray) -> np.ndarray:
    """Per-frame pose of the object in the hand's frame, with the object's motion from structure
    from motion and the hand's own per-frame pose.

    The object frame has its origin at the model's centre and the model's axes. The model's
    scale is set so that the object centre's median depth equals that of ``center_hand``
    (the centre triangulated through the hand-derived cameras). Frames that did not register
    keep the nearest registered frame's object pose in the hand (the object then moves with
    the hand, as it does between registered frames).

    Args:
        cams: the object-frame cameras. T_cam_to_hand: (T, 4, 4). center_hand: (3,).
    Returns:
        T_hand_to_obj (T, 4, 4).
    """
    T_hand_to_cam = np.linalg.inv(np.asarray(T_cam_to_hand, np.float64))
    R, t = np.asarray(cams.R_cam_from_obj, np.float64), np.asarray(cams.t_cam_from_obj, np.float64)
    reg = cams.registered
    model_depth = (R @ cams.center + t)[:, 2]
    hand_depth = (T_hand_to_cam[:, :3, :3] @ center_hand + T_hand_to_cam[:, :3, 3])[:, 2]
    scale = float(np.median(hand_depth[reg]) / max(np.median(model_depth[reg]), 1e-9))
    T_obj_to_cam = np.tile(np.eye(4), (len(R), 1, 1))
    T_obj_to_cam[:, :3, :3] = R
    T_obj_to_cam[:, :3, 3] = scale * (R @ cams.center + t)
    return _nearest_known(np.linalg.inv(T_obj_to_cam) @ T_hand_to_cam, reg)


def camera_jumps(cams: ObjectCameras, min_deg: float, median_factor: float) -> np.ndarray:
    """(T,) bool: registered frames whose object rotation turns, from every registered neighbour
    (t - 1, t + 1), by more than ``min_deg`` and more than ``median_factor`` x the clip's median
    step: a camera structure from motion got wrong (hand_fan frame 47: 117 degrees in and out,
    against a median step of 7), not the object turning in the hand."""
    R, reg = np.asarray(cams.R_cam_from_obj, np.float64), np.asarray(cams.registered, bool)
    both = reg[:-1] & reg[1:]
    if not both.any():
        return np.zeros(len(R), bool)
    step = np.full(len(R) - 1, np.nan)
    step[both] = rotation_angle_deg(np.transpose(R[:-1][both], (0, 2, 1)) @ R[1:][both])
    limit = max(min_deg, median_factor * float(np.median(step[both])))
    before = np.concatenate([[np.nan], step])  # frame t's step from t - 1
    after = np.concatenate([step, [np.nan]])
    has_neighbour = ~np.isnan(before) | ~np.isnan(after)
    big = lambda v: np.isnan(v) | (v > limit)  # noqa: E731  a missing neighbour does not vouch for it
    return reg & has_neighbour & big(before) & big(after)


def _nearest_known(poses: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(T, 4, 4) poses with each unknown frame's replaced by the nearest known frame's."""
    idx = np.nonzero(known)[0]
    return poses[idx[np.abs(np.arange(len(poses))[:, None] - idx[None]).argmin(1)]]


def object_poses_through(T_obj_to_cam: np.ndarray, K_from: np.ndarray, K_to: np.ndarray) -> np.ndarray:
    """Object poses solved with intrinsics ``K_from`` (the pose network's) carried to a camera
    with ``K_to`` (the hand stage's, which the fit renders with): each object origin keeps its
    pixel, and its depth scales with the focal length, so the object keeps its size in pixels.
    Rotations are kept.

    Args:
        T_obj_to_cam: (T, 4, 4). K_from, K_to: (3, 3).
    Returns:
        (T, 4, 4) float64.
    """
    T = np.array(T_obj_to_cam, np.float64)
    K_from, K_to = np.asarray(K_from, np.float64), np.asarray(K_to, np.float64)
    t = T[:, :3, 3]
    pixels = t @ K_from.T
    with np.errstate(divide="ignore", invalid="ignore"):  # a pose at the camera centre has no pixel
        pixels /= pixels[:, 2:3]
    focal_ratio = np.sqrt(K_to[0, 0] * K_to[1, 1] / (K_from[0, 0] * K_from[1, 1]))
    T[:, :3, 3] = (pixels @ np.linalg.inv(K_to).T) * (t[:, 2:3] * focal_ratio)
    return T


def object_in_hand_from_camera(T_obj_to_cam: np.ndarray, known: np.ndarray, T_cam_to_hand: np.ndarray) -> np.ndarray:
    """Per-frame pose of the object in the hand's frame from per-frame object poses in the camera
    (a pose network's); frames without one (``known`` False) keep the nearest known frame's
    object pose in the hand: the object moves with the hand.

    Args:
        T_obj_to_cam: (T, 4, 4). known: (T,) bool, at least one True. T_cam_to_hand: (T, 4, 4).
    Returns:
        T_hand_to_obj (T, 4, 4) float64.
    """
    known = np.asarray(known, bool)
    if not known.any():
        raise RunError("no frame has an object pose to start the fit from")
    T_hand_to_obj = np.linalg.inv(np.asarray(T_obj_to_cam, np.float64)) @ np.linalg.inv(
        np.asarray(T_cam_to_hand, np.float64))
    return _nearest_known(T_hand_to_obj, known)


def grasp_consensus(T_hand_to_obj: np.ndarray, max_angle_deg: float = 45.0,
                    max_shift: float = 0.05) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The grasp most frames agree on, and the frames whose hand pose contradicts it.

    A held object moves with the hand, so the hand's pose in the object frame changes little
    over a clip; a frame far from the others is the hand estimator's error (a hand seen from
    above read as seen from below, a hand cut by the frame's edge put twice as far away).

    Args:
        T_hand_to_obj: (T, 4, 4) per-frame hand-to-object poses.
        max_angle_deg, max_shift: a frame whose hand rotation (degrees) or position in the
            object frame (m) is farther than this from the consensus frame's is an outlier.
    Returns:
        consensus frame (the medoid: least median rotation angle to the others), rotation
        deviation (T,) degrees, position deviation (T,) m, outliers (T,) bool.
    """
    R = np.asarray(T_hand_to_obj, np.float64)[:, :3, :3]
    pairwise = rotation_angle_deg(np.transpose(R, (0, 2, 1))[:, None] @ R[None])
    ref = int(np.argmin(np.median(pairwise, 1)))
    hand_in_obj = np.asarray(T_hand_to_obj, np.float64)[:, :3, 3]
    angle = pairwise[ref]
    shift = np.linalg.norm(hand_in_obj - np.median(hand_in_obj, 0), axis=-1)
    return ref, angle, shift, (angle > max_angle_deg) | (shift > max_shift)


def hand_mask_ious(hand_verts: torch.Tensor, hand_faces: torch.Tensor, T_cam_to_hand: np.ndarray, K: np.ndarray,
                   hand_masks: np.ndarray, stride: int = 2) -> np.ndarray:
    """IoU of the hand mesh's silhouette, seen through each camera, against the hand masks.

    Object pixels count against a pose here, unlike ``hoirecon.handpose.silhouette.visible_hand_iou``: to
    choose between two poses of one hand, the one that covers the object less is the likelier.

    Args:
        hand_verts: (T, V, 3) hand-frame vertices (m). hand_faces: (F, 3).
        T_cam_to_hand: (T, 4, 4). K: (3, 3). hand_masks: (T, H, W) bool.
        stride: the silhouettes and masks are compared on every ``stride``-th pixel.
    Returns:
        (T,) IoU (1 where both are empty).
    """
    T, H, W = hand_masks.shape
    verts_cam = transform_points(invert_rigid(torch.as_tensor(T_cam_to_hand, dtype=torch.float32)),
                                 hand_verts.float().cpu())
    seen = strided_silhouettes(verts_cam, hand_faces, torch.as_tensor(K), H, W, stride).numpy()
    return np.array([mask_iou(seen[t], hand_masks[t, ::stride, ::stride]) for t in range(T)])
