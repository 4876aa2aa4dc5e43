"""Weak- to full-perspective cameras (DiffHOI supplementary A.5, eq. 4).

Normalised image coordinates (used by every weak camera in this package)::

    x_n = (u - cx) / (L / 2),   y_n = (v - cy) / (L / 2)
    cx = (W - 1) / 2, cy = (H - 1) / 2   (the frame centre; pixel centres at integers, OpenCV)
    L = max(W, H)

so the longer image side spans [-1, 1] and the principal point is at (0, 0). A pinhole of
focal ``f`` in these units has the pixel intrinsics (:func:`intrinsics_from_focal`)::

    K = [[f L / 2, 0, cx], [0, f L / 2, cy], [0, 0, 1]]

The paper uses f = 1 ("a pinhole camera with a focal length of 1 and the principal point at
the center of the frame", following PHOSA), i.e. a 90 degree field of view across the
longer side. ``K`` is what ``hands.npz`` stores, so the fit stage, working in pixels with K,
sees exactly the camera assumed here.

Weak perspective (scale first, the form eq. 4 is written for): a point ``X`` of the hand,
expressed relative to the camera's reference point ``o`` and rotated into camera axes,
projects to ``x_n = s X_xy + t``. Placing ``o`` at depth ``f / s`` in a pinhole of focal ``f``
with principal point ``p`` gives the same image for every point at that depth (and a
perspective effect for the others)::

    l = ((t_x - p_x) / s, (t_y - p_y) / s, f / s)          (eq. 4)

In our normalised coordinates p = (0, 0). (FrankMocap writes its weak camera translation
first, ``x_n = s (X_xy + t)``; the same camera is then ``l = (t_x, t_y, f / s)``, see
:func:`translate_first_to_scale_first`.)

Eq. 4 gives the camera position of the weak camera's reference point ``o``, not of the
wrist. The pose is ``T_hand_to_cam = [R | l - R o_hand]`` with ``R`` = Rot(wrist rotation)
and ``o_hand`` the reference point in the hand frame; ``T_cam_to_hand`` is its inverse.
(The paper's estimator, FrankMocap, uses the index knuckle as reference point; our
MediaPipe fit uses the centroid of the 21 keypoints, where the weak camera is the best
approximation of the perspective one.)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from hoirecon.geometry.rotations import axis_angle_to_matrix
from hoirecon.geometry.transforms import invert_rigid
from hoirecon.render.camera import make_intrinsics


def image_half_extent(width: int, height: int) -> float:
    """``L / 2``: pixels per normalised unit."""
    return max(int(width), int(height)) / 2.0


def principal_point(width: int, height: int) -> tuple[float, float]:
    """The frame centre in pixels (OpenCV pixel centres): ``((W - 1) / 2, (H - 1) / 2)``."""
    return (int(width) - 1) / 2.0, (int(height) - 1) / 2.0


def pixels_to_normalized(pix: Tensor, width: int, height: int) -> Tensor:
    """(..., 2) pixels -> (..., 2) normalised coordinates (module doc)."""
    cx, cy = principal_point(width, height)
    return (pix - pix.new_tensor([cx, cy])) / image_half_extent(width, height)


def normalized_to_pixels(xy: Tensor, width: int, height: int) -> Tensor:
    """(..., 2) normalised coordinates -> (..., 2) pixels."""
    cx, cy = principal_point(width, height)
    return xy * image_half_extent(width, height) + xy.new_tensor([cx, cy])


# The focal length of a camera nobody names and structure from motion cannot measure (an object
# without texture): COLMAP's prior for images without EXIF, 1.2 x the longer image side (45
# degrees across it), instead of the paper's focal of 1 (90 degrees). A focal too short costs
# more than one too long: it puts the hand close and the scene in a strong perspective the
# video does not show (docs/experiments.md, session 24).
DEFAULT_FOCAL_PER_LONGER_SIDE = 1.2
DEFAULT_FOCAL_SOURCE = (f"default ({DEFAULT_FOCAL_PER_LONGER_SIDE} x the longer side, "
                        f"{math.degrees(2 * math.atan(0.5 / DEFAULT_FOCAL_PER_LONGER_SIDE)):.0f} degrees across it: "
                        "COLMAP's prior for an unknown camera)")


def user_focal_px(focal_px: Optional[float], fov_deg: Optional[float], width: int, height: int,
                  source_width: int) -> tuple[float, str]:
    """The focal length in pixels of the working frames (``width`` x ``height``, scaled from a
    video ``source_width`` wide) and where it came from: the user's ``focal_px`` (pixels of the
    original video), else ``fov_deg`` (horizontal field of view), else the default above.
    A caller that can measure the focal (structure from motion) replaces the default's."""
    if focal_px is not None:
        return float(focal_px) * width / float(source_width), "--focal"
    if fov_deg is not None:
        return (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0), "--fov"
    return DEFAULT_FOCAL_PER_LONGER_SIDE * max(width, height), DEFAULT_FOCAL_SOURCE


def user_intrinsics(focal_px: Optional[float], fov_deg: Optional[float], width: int, height: int,
                    source_width: int, dtype=torch.float32, device=None) -> Tensor:
    """(3, 3) pixel intrinsics of ``user_focal_px``'s camera, principal point at the frame centre
    (for the stages that measure no focal of their own)."""
    focal_px, _ = user_focal_px(focal_px, fov_deg, width, height, source_width)
    return intrinsics_from_focal(focal_px / image_half_extent(width, height), width, height, dtype, device)


def intrinsics_from_focal(focal: float, width: int, height: int, dtype=torch.float32, device=None) -> Tensor:
    """(3, 3) pixel intrinsics of a pinhole with focal ``focal`` in normalised units.

    ``fx = fy = focal * max(W, H) / 2``, principal point at the frame centre.
    """
    f_pix = float(focal) * image_half_extent(width, height)
    cx, cy = principal_point(width, height)
    return make_intrinsics(f_pix, f_pix, cx, cy, device=device, dtype=dtype)[0]


def weak_to_translation(weak_cam: Tensor, focal: float = 1.0, principal: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """Eq. 4: ``l = ((t_x - p_x) / s, (t_y - p_y) / s, f / s)``.

    Args:
        weak_cam: (B, 3) scale-first weak cameras (s, t_x, t_y): ``x = s X + t``.
        focal: pinhole focal length, same units as t and p.
        principal: (p_x, p_y), same units (0, 0 in our normalised coordinates).
    Returns:
        (B, 3) camera-frame position of the weak camera's reference point.
    """
    s = weak_cam[:, :1]
    p = weak_cam.new_tensor(principal)
    return torch.cat([(weak_cam[:, 1:] - p) / s, focal / s], dim=1)


def translate_first_to_scale_first(weak_cam: Tensor) -> Tensor:
    """(B, 3) ``x = s (X + t)`` cameras -> (B, 3) ``x = s X + t'`` cameras (``t' = s t``)."""
    return torch.cat([weak_cam[:, :1], weak_cam[:, :1] * weak_cam[:, 1:]], dim=1)


def project_weak(points: Tensor, weak_cam: Tensor, origin: Tensor | None = None) -> Tensor:
    """Scale-first weak perspective ``x_n = s (P - o)_xy + t``.

    Args:
        points: (B, N, 3) points in camera axes (rotated, not translated).
        weak_cam: (B, 3) (s, t_x, t_y).
        origin: (B, 3) reference point ``o`` in the same axes, or None (= 0).
    Returns:
        (B, N, 2) normalised coordinates.
    """
    rel = points if origin is None else points - origin[:, None, :]
    return weak_cam[:, None, :1] * rel[..., :2] + weak_cam[:, None, 1:]


def rigid_transform(rotation: Tensor, translation: Tensor) -> Tensor:
    """(B, 3, 3), (B, 3) -> (B, 4, 4) ``[R | t; 0 0 0 1]``."""
    batch = rotation.shape[0]
    T = torch.zeros(batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    T[:, :3, :3] = rotation
    T[:, :3, 3] = translation
    T[:, 3, 3] = 1.0
    return T


def weak_to_hand_to_cam(
    weak_cam: Tensor, wrist_rot: Tensor, origin_hand: Tensor, focal: float = 1.0
) -> Tensor:
    """``T_hand_to_cam = [Rot(wrist_rot) | l - R o_hand]`` with ``l`` from eq. 4.

    Args:
        weak_cam: (B, 3) scale-first weak cameras in normalised coordinates.
        wrist_rot: (B, 3) axis-angle: the hand model's wrist rotation (hand frame -> camera axes).
        origin_hand: (B, 3) the weak camera's reference point in the hand frame (metres).
        focal: focal length in normalised units (paper: 1).
    Returns:
        (B, 4, 4) T_hand_to_cam; the paper's ``T_c->h`` matrix of eq. 4 when o_hand = 0.
    """
    R = axis_angle_to_matrix(wrist_rot)
    l_origin = weak_to_translation(weak_cam, focal)
    t = l_origin - (R @ origin_hand[..., None])[..., 0]
    return rigid_transform(R, t)


def weak_to_cam_to_hand(weak_cam: Tensor, wrist_rot: Tensor, origin_hand: Tensor, focal: float = 1.0) -> Tensor:
    """(B, 4, 4) ``T_cam_to_hand``: the inverse of :func:`weak_to_hand_to_cam` (the contract's pose)."""
    return invert_rigid(weak_to_hand_to_cam(weak_cam, wrist_rot, origin_hand, focal))
