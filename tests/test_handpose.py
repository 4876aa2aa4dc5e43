"""The hand stage: eq. 4, IK on synthetic landmarks, smoothing, MediaPipe on rendered hands, the stage."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from hoirecon.errors import MissingWeightsError, RunError
from hoirecon.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, random_rotation_matrix
from hoirecon.geometry.transforms import invert_rigid
from hoirecon.hand import build_hand_model
from hoirecon.handpose.ik import IKConfig, KeypointModel, fit_hand_to_landmarks, kabsch_rotation
from hoirecon.handpose.perspective import (
    intrinsics_from_focal,
    normalized_to_pixels,
    pixels_to_normalized,
    project_weak,
    translate_first_to_scale_first,
    weak_to_cam_to_hand,
    weak_to_hand_to_cam,
    weak_to_translation,
)
from hoirecon.handpose.smooth import SmoothConfig, fill_missing, interpolate_missing, slerp_missing, smooth_hand_track
from hoirecon.render.camera import make_intrinsics, project_points
from hoirecon.stages.outputs import MasksOutput


@pytest.fixture(scope="module")
def hand():
    return build_hand_model("anny")



def _rot_err_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (degrees) between rotation matrices (..., 3, 3)."""
    rel = a.transpose(-1, -2) @ b
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def _grasp_articulation(batch: int, gen: torch.Generator) -> torch.Tensor:
    """(B, 45) plausible finger poses: flexion of the long fingers, small spread, thumb moves."""
    art = torch.zeros(batch, 15, 3)
    art[:, :12, 2] = torch.rand(batch, 12, generator=gen) * 1.2
    art[:, 0:12:3, 1] = (torch.rand(batch, 4, generator=gen) - 0.5) * 0.3
    art[:, 12:] = (torch.rand(batch, 3, 3, generator=gen) - 0.5) * 0.6
    return art.reshape(batch, 45)


# ----------------------------------------------------------------------------- eq. 4


def test_eq4_hand_computed_case():
    # Scale-first weak camera in pixels: x = s X + t, focal f and principal point p in pixels.
    s, tx, ty, f, px, py = 800.0, 400.0, 260.0, 1000.0, 320.0, 240.0
    transl = weak_to_translation(torch.tensor([[s, tx, ty]]), focal=f, principal=(px, py))[0]
    assert torch.allclose(transl, torch.tensor([(400 - 320) / 800, (260 - 240) / 800, 1000 / 800]))
    # Points of the hand near the reference point project to (nearly) the same pixels both ways.
    X = torch.tensor([[0.0, 0.0, 0.0], [0.01, -0.02, 0.0], [0.03, 0.01, 0.0], [0.02, 0.02, 0.01]])
    weak = s * X[:, :2] + torch.tensor([tx, ty])
    K = make_intrinsics(f, f, px, py)
    full = project_points((X + transl)[None], K)[0]
    assert torch.allclose(full[:3], weak[:3], atol=1e-3)  # same depth: exact
    # 1 cm deeper at 1.25 m: the perspective image moves 0.8% toward the principal point.
    by_hand = torch.tensor([320 + 1000 * (0.1 + 0.02) / 1.26, 240 + 1000 * (0.025 + 0.02) / 1.26])
    assert torch.allclose(full[3], by_hand, atol=1e-3) and (full[3] - weak[3]).norm() < 1.0


def test_normalised_coordinates_and_intrinsics_agree():
    W, H, focal = 640, 480, 1.3
    K = intrinsics_from_focal(focal, W, H)
    assert K[0, 0] == pytest.approx(focal * 320) and K[0, 2] == pytest.approx(319.5) and K[1, 2] == pytest.approx(239.5)
    pix = torch.tensor([[0.0, 0.0], [639.0, 479.0], [319.5, 239.5]])
    xy = pixels_to_normalized(pix, W, H)
    assert torch.allclose(xy[2], torch.zeros(2)) and xy[1, 0] == pytest.approx(1.0 - 0.5 / 320)
    assert torch.allclose(normalized_to_pixels(xy, W, H), pix)
    # Pinhole of focal f in normalised units == K in pixels.
    P = torch.tensor([[0.05, -0.03, 0.4], [-0.1, 0.02, 0.7]])
    assert torch.allclose(pixels_to_normalized(project_points(P[None], K[None])[0], W, H),
                          focal * P[:, :2] / P[:, 2:], atol=1e-6)


def test_weak_to_cam_to_hand_matches_weak_projection(hand):
    gen = torch.Generator().manual_seed(0)
    B, W, H, focal = 3, 320, 240, 1.0
    art = _grasp_articulation(B, gen)
    rot = matrix_to_axis_angle(random_rotation_matrix(B, generator=gen))
    kp_hand = hand(art, torch.zeros(B, 3)).keypoints
    origin = kp_hand.mean(1)
    weak = torch.tensor([[4.0, 0.1, -0.05], [6.0, -0.2, 0.1], [3.0, 0.0, 0.0]])
    T_c2h = weak_to_cam_to_hand(weak, rot, origin, focal)
    T_h2c = weak_to_hand_to_cam(weak, rot, origin, focal)
    assert torch.allclose(invert_rigid(T_c2h), T_h2c, atol=1e-5)
    assert torch.allclose(T_c2h @ T_h2c, torch.eye(4).expand(B, 4, 4), atol=1e-5)
    # The reference point lands where eq. 4 says; its projection equals the weak one.
    o_cam = (T_h2c[:, :3, :3] @ origin[..., None])[..., 0] + T_h2c[:, :3, 3]
    assert torch.allclose(o_cam, weak_to_translation(weak, focal), atol=1e-5)
    R = axis_angle_to_matrix(rot)
    kp_cam = kp_hand @ R.transpose(1, 2) + T_h2c[:, None, :3, 3]
    full = pixels_to_normalized(project_points(kp_cam, intrinsics_from_focal(focal, W, H).expand(B, 3, 3)), W, H)
    weak_xy = project_weak(kp_hand @ R.transpose(1, 2), weak, (R @ origin[..., None])[..., 0])
    # Hands ~20 cm deep: perspective differs from weak by a few percent of the hand size.
    size = (weak_xy.amax(1) - weak_xy.amin(1)).norm(dim=-1)
    assert ((full - weak_xy).norm(dim=-1).mean(-1) / size).max() < 0.1
    # Mapping camera points back gives the hand-frame keypoints.
    back = kp_cam @ T_c2h[:, :3, :3].transpose(1, 2) + T_c2h[:, None, :3, 3]
    assert torch.allclose(back, kp_hand, atol=1e-5)


def test_translate_first_to_scale_first():
    cam = torch.tensor([[2.0, 0.3, -0.1]])
    X = torch.tensor([[[0.1, 0.2, 0.0]]])
    a = cam[:, None, :1] * (X[..., :2] + cam[:, None, 1:])
    b = project_weak(X, translate_first_to_scale_first(cam))
    assert torch.allclose(a, b)


# ----------------------------------------------------------------------------- IK


def test_keypoint_model_matches_full_forward(hand):
    km = KeypointModel(hand)
    gen = torch.Generator().manual_seed(1)
    art, shape = _grasp_articulation(3, gen), torch.randn(3, 10, generator=gen)
    for side in ("right", "left"):
        full = hand(art, torch.zeros(3, 3), shape, side=side).keypoints
        assert torch.allclose(km(art, shape, side), full, atol=1e-6)


def test_ik_recovers_known_pose_and_camera(hand):
    gen = torch.Generator().manual_seed(2)
    B = 4
    art = _grasp_articulation(B, gen)
    R = random_rotation_matrix(B, generator=gen)
    shape = torch.randn(B, 10, generator=gen) * 0.5
    kp = hand(art, matrix_to_axis_angle(R), shape).keypoints
    world = kp + torch.tensor([0.02, -0.01, 0.03])  # arbitrary origin, as MediaPipe's
    s_true = torch.tensor([2.0, 3.0, 4.0, 2.5])
    t_true = torch.randn(B, 2, generator=gen) * 0.2
    image = s_true[:, None, None] * (kp - kp.mean(1, keepdim=True))[..., :2] + t_true[:, None]
    fit = fit_hand_to_landmarks(hand, world, image, "right", IKConfig(iterations=200))
    kp_fit = hand(fit.articulation, fit.wrist_rot, fit.shape).keypoints
    assert (kp_fit - kp).norm(dim=-1).mean(-1).max() < 0.005  # < 5 mm mean keypoint error
    assert _rot_err_deg(axis_angle_to_matrix(fit.wrist_rot), R).max() < 5.0
    assert torch.allclose(fit.weak_cam[:, 0], s_true, rtol=0.05)
    assert torch.allclose(fit.weak_cam[:, 1:], t_true, atol=0.01)
    assert (fit.image_rmse < 0.01).all()
    # Finger flexion (the dominant articulation) is recovered.
    flex_true = art.reshape(B, 15, 3)[:, :12, 2]
    flex_fit = fit.articulation.reshape(B, 15, 3)[:, :12, 2]
    assert (flex_fit - flex_true).abs().mean() < 0.15


def test_ik_left_hand(hand):
    gen = torch.Generator().manual_seed(7)
    art = _grasp_articulation(2, gen)
    R = random_rotation_matrix(2, generator=gen)
    kp = hand(art, matrix_to_axis_angle(R), None, side="left").keypoints
    image = 3.0 * (kp - kp.mean(1, keepdim=True))[..., :2]
    fit = fit_hand_to_landmarks(hand, kp, image, "left", IKConfig(iterations=150))
    kp_fit = hand(fit.articulation, fit.wrist_rot, fit.shape, side="left").keypoints
    assert (kp_fit - kp).norm(dim=-1).mean(-1).max() < 0.005
    # A right-hand fit cannot explain left-hand landmarks (the chirality is wrong).
    wrong = fit_hand_to_landmarks(hand, kp, image, "right", IKConfig(iterations=150))
    assert (wrong.world_rmse_cm > 3 * fit.world_rmse_cm).all()


def test_ik_perspective_recovers_depth(hand):
    gen = torch.Generator().manual_seed(3)
    B, focal = 3, 1.0
    art = _grasp_articulation(B, gen)
    R = random_rotation_matrix(B, generator=gen)
    kp = hand(art, matrix_to_axis_angle(R), None).keypoints
    centre = torch.tensor([[0.05, -0.02, 0.35], [-0.1, 0.05, 0.5], [0.0, 0.0, 0.25]])
    cam = kp - kp.mean(1, keepdim=True) + centre[:, None]
    image = focal * cam[..., :2] / cam[..., 2:]
    first = fit_hand_to_landmarks(hand, kp, image, "right", IKConfig(fit_landmark_offsets=False))
    fit = fit_hand_to_landmarks(hand, kp, image, "right",
                                IKConfig(iterations=150, perspective_focal=focal, fit_landmark_offsets=False),
                                shape=torch.zeros(10), init=first)
    # Eq. 4 applied to the returned weak camera gives the keypoint centroid's position.
    est = weak_to_translation(fit.weak_cam, focal)
    assert torch.allclose(est, centre, rtol=0.03, atol=0.005)
    assert (fit.image_rmse < 0.01).all()


def test_kabsch_is_a_proper_rotation():
    gen = torch.Generator().manual_seed(4)
    R = random_rotation_matrix(2, generator=gen)
    src = torch.randn(2, 6, 3, generator=gen)
    est = kabsch_rotation(src, src @ R.transpose(1, 2) + 1.0)
    assert torch.allclose(est, R, atol=1e-5)
    assert torch.allclose(torch.linalg.det(est), torch.ones(2), atol=1e-5)


# ----------------------------------------------------------------------------- smoothing


def test_interpolation_of_missing_frames():
    valid = torch.tensor([False, True, False, False, True, False])
    x = torch.tensor([[9.0], [2.0], [9.0], [9.0], [8.0], [9.0]])
    assert interpolate_missing(x, valid)[:, 0].tolist() == [2.0, 2.0, 4.0, 6.0, 8.0, 8.0]
    rot = torch.tensor([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0], [0.0, 0.0, 1.2]])
    mid = slerp_missing(rot, torch.tensor([True, False, True]))
    assert torch.allclose(mid[1], torch.tensor([0.0, 0.0, 0.6]), atol=1e-5)
    with pytest.raises(ValueError):
        fill_missing(torch.zeros(2, 45), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool))


def test_smoothing_reduces_jitter_and_fills_gaps(hand):
    gen = torch.Generator().manual_seed(5)
    T = 12
    t = torch.linspace(0, 1, T)[:, None]
    art_true = torch.zeros(T, 45)
    art_true[:, 2:36:3] = 0.3 + 0.5 * t  # long fingers close smoothly
    rot_true = torch.cat([0.4 * t, 0.2 * t, -0.3 + 0.0 * t], 1)
    tr_true = torch.cat([0.05 * t, -0.02 + 0.0 * t, 0.4 + 0.1 * t], 1)
    art = art_true + 0.05 * torch.randn(T, 45, generator=gen)
    rot = rot_true + 0.05 * torch.randn(T, 3, generator=gen)
    tr = tr_true + 0.01 * torch.randn(T, 3, generator=gen)
    valid = torch.ones(T, dtype=torch.bool)
    valid[5] = False
    art[5], rot[5], tr[5] = 5.0, 2.0, 3.0  # garbage in a frame without a hand
    shape = torch.zeros(10)
    km = KeypointModel(hand)

    def joints(a, r, x):
        return km(a, shape[None].expand(T, -1)) @ axis_angle_to_matrix(r).transpose(1, 2) + x[:, None]

    a2, r2, x2 = smooth_hand_track(hand, art, rot, tr, shape, valid, "right", SmoothConfig(velocity_weight=4.0))
    gt = joints(art_true, rot_true, tr_true)
    err_before = (joints(*fill_missing(art, rot, tr, valid)) - gt).norm(dim=-1).mean()
    err_after = (joints(a2, r2, x2) - gt).norm(dim=-1).mean()
    assert err_after < 0.8 * err_before
    assert (joints(a2, r2, x2)[5] - gt[5]).norm(dim=-1).mean() < 0.01  # the gap is filled near the truth
    jitter = lambda j: (j[2:] - 2 * j[1:-1] + j[:-2]).norm(dim=-1).mean()  # noqa: E731
    assert jitter(joints(a2, r2, x2)) < 0.6 * jitter(joints(*fill_missing(art, rot, tr, valid)))


# ----------------------------------------------------------------------------- MediaPipe


def _landmarks_available() -> bool:
    try:
        from hoirecon.handpose.landmarks import LANDMARK_MODEL, mediapipe_model_path

        mediapipe_model_path(LANDMARK_MODEL)
        import ai_edge_litert  # noqa: F401
    except Exception:
        return False
    return True


needs_mediapipe = pytest.mark.skipif(not _landmarks_available(),
                                     reason="mediapipe==0.10.14 (bundled hand_landmark_full.tflite) or "
                                            "ai-edge-litert not installed")


def render_hand_image(hand, articulation, R, transl, width=256, height=192, focal=1.0,
                      bg=(90, 110, 130)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shaded skin-coloured hand: image (H, W, 3) uint8, mask (H, W) bool, keypoints (21, 2) px.

    R: (3, 3) hand -> camera, transl: (3,) wrist in the camera; K from ``intrinsics_from_focal``.
    """
    from hoirecon.render.mesh import render_mesh_image

    out = hand(articulation[None], matrix_to_axis_angle(R[None]), transl=transl[None])
    K = intrinsics_from_focal(focal, width, height)[None]
    r = render_mesh_image(out.verts, out.faces, K, height, width)
    m, n = r.mask[0].numpy(), r.normal[0].numpy()
    light = np.clip(-(0.8 * n[2] - 0.3 * n[1] + 0.2 * n[0]), 0, 1)
    skin = np.array([225, 172, 140], np.float32)
    img = np.array(bg, np.float32) * (1 - m[..., None]) + m[..., None] * skin * (0.35 + 0.65 * light[..., None])
    kp = project_points(out.keypoints, K)[0].numpy()
    return img.clip(0, 255).astype(np.uint8), m > 0.5, kp


def _palm_facing_camera() -> torch.Tensor:
    """Hand -> camera rotation: fingers up in the image, palm toward the camera."""
    x_h, y_h = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    return torch.stack([x_h, y_h, torch.linalg.cross(x_h, y_h)], 1)


def _open_hand() -> torch.Tensor:
    art = torch.zeros(45)
    art[2:36:3] = 0.15
    return art


@needs_mediapipe
def test_landmarks_on_a_rendered_hand(hand):
    from hoirecon.geometry.regions import mask_box
    from hoirecon.handpose.landmarks import HandLandmarker, LandmarkTracker

    img, mask, kp_true = render_hand_image(hand, _open_hand(), _palm_facing_camera(), torch.tensor([0.0, 0.09, 0.25]))
    tracker = LandmarkTracker(HandLandmarker())
    res = tracker.search(img, mask_box(mask))
    assert res.keypoints_2d.shape == (21, 2) and res.world.shape == (21, 3)
    assert res.presence > 0.5
    size = np.ptp(kp_true, axis=0).max()
    assert np.linalg.norm(res.keypoints_2d - kp_true, axis=1).mean() < 0.1 * size
    # The handedness score is P(right hand) for an unmirrored image; mirroring flips it.
    assert res.right_hand_probability() > 0.5
    # The same crop of the mirrored image (a left hand): centre mirrored, rotation reversed.
    W = img.shape[1]
    rect = replace(res.rect, cx=W - 1 - res.rect.cx, angle=-res.rect.angle)
    mirrored = tracker.landmarker.run(np.ascontiguousarray(img[:, ::-1]), rect)
    assert mirrored.presence > 0.5 and mirrored.right_hand_probability() < 0.5
    # World landmarks: metres, camera axes (depth grows away from the camera, like the model's).
    out = hand(_open_hand()[None], matrix_to_axis_angle(_palm_facing_camera()[None]))
    z_true = out.keypoints[0, :, 2].numpy()
    assert np.corrcoef(res.world[:, 2], z_true)[0, 1] > 0.5
    xy_true = out.keypoints[0, :, :2].numpy()
    assert np.corrcoef(res.world[:, 1], xy_true[:, 1])[0, 1] > 0.9


@needs_mediapipe
def test_palm_detector_box_on_a_rendered_hand(hand):
    from hoirecon.geometry.regions import box_iou
    from hoirecon.handpose.landmarks import detect_hand_box

    img, mask, kp = render_hand_image(hand, _open_hand(), _palm_facing_camera(), torch.tensor([0.0, 0.09, 0.45]),
                                      width=320, height=320)
    box = detect_hand_box(img)
    assert box is not None
    true_box = np.array([kp[:, 0].min(), kp[:, 1].min(), kp[:, 0].max(), kp[:, 1].max()])
    assert box_iou(np.array(box), true_box) > 0.5
    assert detect_hand_box(np.full((200, 200, 3), 120, np.uint8)) is None


# ----------------------------------------------------------------------------- the stage


def _hand_clip(hand, out_root, n=4, width=256, height=192, empty=False):
    """frames (through the frames stage) + GT masks (as an external masks stage) of a turning hand."""
    from hoirecon.io.video import write_video
    from hoirecon.pipeline.runner import run_stage, write_external_stage
    from hoirecon.stages.frames import STAGE as FRAMES, FramesConfig

    frames, hands, poses = [], [], []
    for t in range(n):
        R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.08 * t])) @ _palm_facing_camera()
        transl = torch.tensor([0.01 * t, 0.09, 0.25])
        img, mask, _ = render_hand_image(hand, _open_hand(), R, transl, width, height)
        if empty:
            img, mask = np.full_like(img, 100), np.zeros_like(mask)
            mask[10:20, 10:20] = True  # a "hand" mask on an empty wall
        frames.append(img)
        hands.append(mask)
        poses.append((R, transl))
    video = out_root.parent / f"{out_root.name}.mp4"
    write_video(video, frames, fps=10)
    run_stage(out_root, FRAMES, FramesConfig(str(video)))
    obj = np.zeros((n, height, width), bool)
    obj[:, 150:180, 20:60] = True
    write_external_stage(out_root, "masks", lambda d: MasksOutput(hand=np.stack(hands), obj=obj).save(d), "test")
    return poses


@needs_mediapipe
def test_hand_stage_on_a_tiny_clip(hand, tmp_path):
    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.hand import STAGE, HandConfig

    out = tmp_path / "out"
    poses = _hand_clip(hand, out)
    # The landmark fit alone first: the paper's A.5 recipe, with the camera the clip was rendered
    # with (the paper's focal of 1: 90 degrees across).
    landmarks_only = HandConfig(ik_iterations=100, silhouette_steps=0, fov_deg=90.0)
    res = run_stage(out, STAGE, landmarks_only)
    assert res.status == "ran" and res.summary["valid_frames"] == 4
    d = np.load(out / "hand" / "hands.npz")
    T = 4
    assert d["K"].shape == (3, 3) and d["K"].dtype == np.float32
    assert np.allclose(d["K"], intrinsics_from_focal(1.0, 256, 192).numpy())
    assert d["T_cam_to_hand"].shape == (T, 4, 4) and d["T_cam_to_hand"].dtype == np.float32
    assert d["articulation"].shape == (T, 45) and d["shape"].shape == (10,)
    assert str(d["side"]) == "right" and d["valid"].dtype == bool and d["valid"].all()
    assert d["keypoints_2d"].shape == (T, 21, 2) and d["weak_cam"].shape == (T, 3) and d["wrist_rot"].shape == (T, 3)
    assert (out / "hand" / "overlay.mp4").stat().st_size > 0
    _assert_recovered(d, poses, max_rotation_deg=25.0)
    before = res.summary["mask_iou_median"]
    assert before > 0.6
    assert run_stage(out, STAGE, landmarks_only).status == "cached"
    # Then each frame's hand fitted to its mask: kept only where that raised the IoU. A flat palm
    # facing the camera has nearly the same outline a little turned: the orientation may move.
    res = run_stage(out, STAGE, HandConfig(ik_iterations=100, fov_deg=90.0))
    assert res.status == "ran" and res.summary["mask_iou_median"] > before
    report = json.loads((out / "hand" / "quality.json").read_text())
    # Masks that followed no hand (external here): the side is read from the clip itself.
    assert report["side"]["side"] == "right" and report["side"]["from"] == "auto"
    fitted = np.array(report["silhouette_fit_iou"], float)
    kept = report["silhouette_fit_kept_frames"]
    assert fitted.shape == (T, 2) and kept and all(fitted[t, 1] > fitted[t, 0] for t in kept)
    _assert_recovered(np.load(out / "hand" / "hands.npz"), poses, max_rotation_deg=35.0)


def _assert_recovered(hands, poses, max_rotation_deg: float) -> None:
    """The recovered pose agrees with the rendering's: orientation and where the wrist is."""
    T_h2c = np.linalg.inv(hands["T_cam_to_hand"])
    for t, (R, transl) in enumerate(poses):
        assert _rot_err_deg(torch.tensor(T_h2c[t, :3, :3]), R) < max_rotation_deg
        # Depth is only known through the hand's assumed size: compare the viewing direction.
        ray_est = T_h2c[t, :3, 3] / np.linalg.norm(T_h2c[t, :3, 3])
        ray_true = (transl / transl.norm()).numpy()
        assert np.degrees(np.arccos(np.clip(ray_est @ ray_true, -1, 1))) < 5.0
        assert T_h2c[t, 2, 3] == pytest.approx(0.25, rel=0.3)


@needs_mediapipe
def test_hand_stage_without_any_hand_fails_clearly(hand, tmp_path):
    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.hand import STAGE, HandConfig

    out = tmp_path / "out"
    _hand_clip(hand, out, n=2, empty=True)
    with pytest.raises(RunError, match="no hand found in any frame"):
        run_stage(out, STAGE, HandConfig(ik_iterations=20))
    assert not (out / "hand").exists()


class _FakeFrankMocap:
    """Stands in for FrankMocapHand: outputs made from our hand model with a known pose."""

    def __init__(self, hand, pose48, cam_weak_translate_first):
        self.hand, self.pose48, self.cam = hand, pose48, cam_weak_translate_first

    def predict(self, image, boxes, is_left):
        return [{"pose48": self.pose48, "shape10": torch.zeros(10), "cam_weak": self.cam} for _ in boxes]


def test_frankmocap_conversion_with_a_stand_in(hand, monkeypatch):
    from hoirecon.stages import hand as hand_stage

    # FrankMocap's fingers are offsets from MANO's mean pose; with no MANO file use a known mean.
    hands_mean = torch.full((45,), 0.05)
    monkeypatch.setattr(hand_stage, "_mano_hands_mean", lambda h: hands_mean)
    gen = torch.Generator().manual_seed(6)
    art = _grasp_articulation(1, gen)[0]
    rot = torch.tensor([0.3, -1.2, 0.4])
    cam = torch.tensor([2.5, 0.1, -0.05])  # translate first: x_n' = s (X + t), centre W/2, H/2
    W, H = 320, 240
    fake = _FakeFrankMocap(hand, torch.cat([rot, art - hands_mean]), cam)
    frames = [np.zeros((H, W, 3), np.uint8)] * 2
    masks = np.zeros((2, H, W), bool)
    masks[0, 50:150, 100:200] = True  # frame 1 has an empty mask: no box, invalid
    cfg = hand_stage.HandConfig(backend="frankmocap")
    est = hand_stage.estimate_frankmocap(frames, masks, hand, cfg, "cpu", regressor=fake)
    assert est.valid.tolist() == [True, False]
    assert torch.allclose(est.articulation[0], art, atol=1e-6)
    T_h2c = weak_to_hand_to_cam(est.weak_cam[:1], est.wrist_rot[:1], est.weak_origin[:1], 1.0)
    # The index MCP (FrankMocap's camera origin) projects exactly where FrankMocap's weak camera puts it.
    kp = hand(art[None], torch.zeros(1, 3)).keypoints
    mcp_cam = (T_h2c[0, :3, :3] @ kp[0, 5]) + T_h2c[0, :3, 3]
    pix = project_points(mcp_cam[None, None], intrinsics_from_focal(1.0, W, H)[None])[0, 0]
    half = max(W, H) / 2
    expected = cam[0] * cam[1:] * half + torch.tensor([W / 2, H / 2])  # FrankMocap pixels (no half-pixel shift)
    assert torch.allclose(pix, expected, atol=1e-3)


def test_frankmocap_without_weights_is_one_clear_line(hand, tmp_path, monkeypatch):
    from hoirecon.stages.hand import HandConfig, estimate_frankmocap

    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path / "no_weights"))
    with pytest.raises(MissingWeightsError) as err:
        estimate_frankmocap([np.zeros((8, 8, 3), np.uint8)], np.zeros((1, 8, 8), bool), hand,
                            HandConfig(backend="frankmocap"), "cpu")
    assert "\n" not in str(err.value) and "frankmocap" in str(err.value)


def test_hand_config_rejects_bad_values():
    from hoirecon.errors import UserError
    from hoirecon.stages.hand import HandConfig

    for kw in ({"backend": "x"}, {"side": "middle"}, {"focal_px": 0.0}, {"focal_px": float("nan")}, {"fov_deg": 0.5},
               {"fov_deg": 200.0}, {"focal_px": 500.0, "fov_deg": 60.0}, {"smooth_weight": -1.0}):
        with pytest.raises(UserError):
            HandConfig(**kw)


def test_a_poor_fit_names_the_other_side_when_it_fits_far_better(monkeypatch):
    from types import SimpleNamespace

    from hoirecon.pipeline.report import Reporter
    from hoirecon.stages import hand as hand_stage
    from hoirecon.stages.hand import HandConfig

    tried = []

    def fake_estimate(ctx, cfg, frames, **_):
        tried.append(cfg.side)
        return SimpleNamespace(valid=torch.tensor([True, True, False]))

    def fake_track(est, hand, cfg, focal, size_wh, device, masks):
        assert cfg.side == "right" and cfg.silhouette_steps == 0  # the other side, on its landmark fit
        return SimpleNamespace(reproj=torch.tensor([12.0, 14.0, 99.0])), {}

    monkeypatch.setattr(hand_stage, "_estimate_hands", fake_estimate)
    monkeypatch.setattr(hand_stage, "_hand_track", fake_track)
    ctx = SimpleNamespace(reporter=Reporter(quiet=True))
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3

    def warnings(iou, reprojection):
        quality, ours = {}, SimpleNamespace(reproj=torch.full((3,), reprojection))
        out = hand_stage._other_side_warnings(ctx, HandConfig(side="left"), frames, ours, np.full(3, iou),
                                              np.ones(3, bool), hand_masks=None, obj_masks=None, hand=None,
                                              device="cpu", focal=1.0, quality=quality)
        return out, quality

    out, quality = warnings(0.48, 49.0)  # the other side reprojects 13 px (median of its valid frames)
    assert tried == ["right"] and len(out) == 1 and "--side right" in out[0]
    assert quality["other_side"] == {"side": "right", "reprojection_px_median": 13.0}
    assert warnings(0.48, 20.0)[0] == []  # 13 px is not half of 20: not named
    tried.clear()
    assert warnings(0.75, 49.0)[0] == [] and tried == []  # a good fit is not second-guessed


def test_frames_whose_hand_contradicts_its_mask_are_dropped():
    from hoirecon.stages.hand import contradicted_frames

    ious = np.array([0.21, 0.22, 0.65, 0.80, 0.84, 0.83, 0.10])
    valid = np.array([True, True, True, True, True, True, False])
    assert contradicted_frames(ious, valid, 0.5).tolist() == [True, True, False, False, False, False, False]
    assert not contradicted_frames(ious, valid, 0.0).any()
    # Never every frame: a clip whose hand fits no mask keeps its estimates.
    assert not contradicted_frames(np.full(4, 0.1), np.ones(4, bool), 0.5).any()
