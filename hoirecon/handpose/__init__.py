"""Per-frame hand estimation for the `hand` stage (DiffHOI supplementary A.5).

- ``landmarks``: MediaPipe's hand landmark model (bundled in the mediapipe wheel) run
  directly through ai-edge-litert on rotated crops from the hand masks, with rotation
  search and crop tracking; the palm detector for an automatic first-frame box
  (``detect_hand_box``).
- ``ik``: fit of the hand model (articulation, wrist rotation, shape) and a camera to the
  3D world landmarks and the 2D landmarks.
- ``perspective``: normalised image coordinates, pixel intrinsics, and eq. 4 (weak to full
  perspective) giving ``T_cam_to_hand``.
- ``smooth``: interpolation of frames without a hand and joint-velocity smoothing.

``landmarks`` is imported lazily (it needs cv2 and, when used, ai-edge-litert).
"""

from hoirecon.handpose.ik import IKConfig, IKResult, KeypointModel, fit_hand_to_landmarks
from hoirecon.handpose.perspective import (
    intrinsics_from_focal,
    normalized_to_pixels,
    pixels_to_normalized,
    weak_to_cam_to_hand,
    weak_to_hand_to_cam,
    weak_to_translation,
)
from hoirecon.handpose.smooth import SmoothConfig, fill_missing, smooth_hand_track

__all__ = [
    "IKConfig",
    "IKResult",
    "KeypointModel",
    "fit_hand_to_landmarks",
    "intrinsics_from_focal",
    "normalized_to_pixels",
    "pixels_to_normalized",
    "weak_to_cam_to_hand",
    "weak_to_hand_to_cam",
    "weak_to_translation",
    "SmoothConfig",
    "fill_missing",
    "smooth_hand_track",
]
