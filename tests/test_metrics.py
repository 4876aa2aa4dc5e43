"""Evaluation metrics: closed-form cases, alignment recovery, CD_h and joint error."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from hoirecon.eval import (
    align_points,
    chamfer_cm2,
    fscore,
    hand_object_chamfer,
    keypoint_error_mm,
    object_metrics,
    rotation_starts,
    sample_surface,
)
from hoirecon.synth import make_object


def _rotation(axis, angle_deg):
    return trimesh.transformations.rotation_matrix(np.deg2rad(angle_deg), axis)[:3, :3]


def _sphere(radius):
    return trimesh.creation.icosphere(subdivisions=5, radius=radius)


def test_sample_surface_uniform_and_seeded():
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    a = sample_surface(box.vertices, box.faces, 20000, seed=3)
    b = sample_surface(box.vertices, box.faces, 20000, seed=3)
    assert a.shape == (20000, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, sample_surface(box.vertices, box.faces, 20000, seed=4))
    # All points lie on the surface and each face pair gets its share of the area.
    assert np.allclose((np.abs(a) / np.array([0.05, 0.1, 0.15])).max(axis=1), 1.0)
    on_z = np.isclose(np.abs(a[:, 2]), 0.15)
    area_z = 2 * 0.1 * 0.2
    assert abs(on_z.mean() - area_z / box.area) < 0.01


def test_chamfer_of_concentric_spheres_is_2d2():
    r, d, n = 0.05, 0.003, 20000
    inner, outer = _sphere(r), _sphere(r + d)
    p_inner = sample_surface(inner.vertices, inner.faces, n, seed=0)
    p_inner2 = sample_surface(inner.vertices, inner.faces, n, seed=1)
    p_outer = sample_surface(outer.vertices, outer.faces, n, seed=2)
    # Two independent samples of one surface differ only by the sampling floor; the
    # radial gap adds d^2 per direction on top of it.
    floor = chamfer_cm2(p_inner, p_inner2)
    expected = 2 * d**2 * 1e4  # cm^2
    cd = chamfer_cm2(p_inner, p_outer)
    assert floor < 0.1 * expected
    assert abs(cd - floor - expected) < 0.05 * expected, (cd, floor, expected)
    # Symmetric, and zero for identical sets.
    assert np.isclose(chamfer_cm2(p_outer, p_inner), cd)
    assert chamfer_cm2(p_inner, p_inner) == 0.0


def test_fscore_hand_computed():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    # pred: two points 3 mm from gt points 0 and 1, two points 0.5 m away from everything.
    pred = np.array([[0.003, 0, 0], [1.003, 0, 0], [0.5, 0.5, 0], [2.5, 0.5, 0]])
    f, p, r = fscore(pred, gt, 0.005)
    assert p == 0.5 and r == 0.5 and f == 0.5
    f, p, r = fscore(pred, gt, 0.002)
    assert (f, p, r) == (0.0, 0.0, 0.0)
    # Recall counts gt points near any prediction: 3 preds on gt0 -> R = 1/4, P = 3/4.
    pred2 = np.array([[0.001, 0, 0], [0.002, 0, 0], [0, 0.001, 0], [9.0, 9, 9]])
    f, p, r = fscore(pred2, gt, 0.005)
    assert p == 0.75 and r == 0.25 and np.isclose(f, 2 * 0.75 * 0.25 / 1.0)


def test_identical_meshes_score_perfectly():
    sphere = _sphere(0.05)
    res = object_metrics(sphere.vertices, sphere.faces, sphere.vertices, sphere.faces, n=10000, align=False)
    assert res["f5"] == 1.0 and res["f10"] == 1.0
    assert res["cd"] < 0.03  # only the sampling floor of two independent 10k samples
    assert np.array_equal(res["transform"], np.eye(4))


def test_rotation_starts_cover_so3():
    rots = rotation_starts(24)
    assert rots.shape == (24, 3, 3)
    assert np.allclose(rots[0], np.eye(3))
    assert np.allclose(np.linalg.det(rots), 1.0)
    assert np.allclose(rots @ np.swapaxes(rots, 1, 2), np.eye(3), atol=1e-12)
    # All distinct, and every random rotation is within 62.8 degrees of one of them.
    assert len({tuple(np.round(r, 6).ravel()) for r in rots}) == 24
    probe = rotation_starts(124, seed=5)[24:]
    cos = (np.einsum("aij,bij->ab", probe, rots) - 1) / 2
    worst = np.degrees(np.arccos(np.clip(cos.max(axis=1), -1, 1))).max()
    assert worst < 62.9
    assert rotation_starts(30).shape == (30, 3, 3)


def test_alignment_recovers_similarity_on_mug():
    mug = make_object("mug", 0)
    R = _rotation([0.3, -0.8, 0.5], 137.0)
    s, t = 1.3, np.array([0.2, -0.1, 0.35])
    moved = s * mug.vertices @ R.T + t
    res = object_metrics(moved, mug.faces, mug.vertices, mug.faces, n=10000, seed=0)
    T = res["transform"]
    # T should undo the applied similarity.
    scale = np.cbrt(np.linalg.det(T[:3, :3]))
    R_est = T[:3, :3] / scale
    angle = np.degrees(np.arccos(np.clip((np.trace(R_est @ R) - 1) / 2, -1, 1)))
    assert abs(scale * s - 1) < 0.005, scale
    assert angle < 1.0, angle
    err = np.linalg.norm(moved @ T[:3, :3].T + T[:3, 3] - mug.vertices, axis=1).max()
    assert err < 0.001, err
    # The Chamfer distance falls to the floor of two independent samples of one surface.
    floor = object_metrics(mug.vertices, mug.faces, mug.vertices, mug.faces, n=10000, align=False)["cd"]
    assert res["f5"] > 0.99 and res["f10"] == 1.0 and res["cd"] < 1.1 * floor
    # Without alignment the same pair scores nothing.
    raw = object_metrics(moved, mug.faces, mug.vertices, mug.faces, n=2000, align=False)
    assert raw["f10"] < 0.05


def test_alignment_finds_handle_of_a_different_mug():
    # Two different mugs: only the handles break the symmetry, and ICP alone leaves a
    # handle on the wrong side from many starts (this pose did before the spin search).
    a, b = make_object("mug", 10), make_object("mug", 11)
    pa = sample_surface(a.vertices, a.faces, 10000, seed=0)
    pb = sample_surface(b.vertices, b.faces, 10000, seed=1)
    reference = chamfer_cm2(align_points(pa, pb)[1], pb)
    R = _rotation([0.3, 0.1, 1.0], 135.0)
    _, aligned = align_points(0.8 * pa @ R.T + 0.05, pb)
    assert chamfer_cm2(aligned, pb) < 1.03 * reference


def test_alignment_without_scale_keeps_scale():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(500, 3)) * np.array([0.05, 0.02, 0.01])
    R = _rotation([1, 2, 3], 40.0)
    dst = 1.5 * src @ R.T
    T, aligned = align_points(src, dst, n_starts=24, with_scale=False)
    assert np.isclose(np.linalg.det(T[:3, :3]), 1.0)
    T_s, aligned_s = align_points(src, dst, n_starts=24, with_scale=True)
    assert np.abs(aligned_s - dst).max() < 1e-6
    assert np.allclose(aligned_s, src @ T_s[:3, :3].T + T_s[:3, 3])
    assert chamfer_cm2(aligned, dst) > 10 * chamfer_cm2(aligned_s, dst)


def test_hand_object_chamfer():
    rng = np.random.default_rng(1)
    n_frames = 6
    # Object points known in the hand frame: far apart, so nearest neighbours are exact.
    pts_hand = rng.uniform(-1, 1, size=(8, 3))

    def random_pose():
        T = np.eye(4)
        T[:3, :3] = _rotation(rng.normal(size=3), rng.uniform(0, 180))
        T[:3, 3] = rng.normal(size=3) * 0.1
        return T

    T_gt = np.stack([random_pose() for _ in range(n_frames)])
    T_pred = np.stack([random_pose() for _ in range(n_frames)])
    gt_obj = np.einsum("ij,nj->ni", T_gt[0, :3, :3], pts_hand) + T_gt[0, :3, 3]
    pred_obj = np.einsum("ij,nj->ni", T_pred[0, :3, :3], pts_hand) + T_pred[0, :3, 3]
    # Per-frame points in each object frame, consistent with the poses: CD_h = 0.
    gt_obj_t = np.einsum("tij,nj->tni", T_gt[:, :3, :3], pts_hand) + T_gt[:, None, :3, 3]
    pred_obj_t = np.einsum("tij,nj->tni", T_pred[:, :3, :3], pts_hand) + T_pred[:, None, :3, 3]
    assert hand_object_chamfer(pred_obj_t, T_pred, gt_obj_t, T_gt) < 1e-20
    # Shift the predicted pose by u_t in the hand frame: every point moves by |u_t|.
    shifts = rng.normal(size=(n_frames, 3)) * 0.002
    T_pred_shifted = T_gt.copy()
    for i in range(n_frames):
        Tu = np.eye(4)
        Tu[:3, 3] = -shifts[i]
        T_pred_shifted[i] = T_gt[i] @ Tu  # inv(T @ Tu) = Tu^-1 inv(T): hand points + u
    cd = hand_object_chamfer(gt_obj_t, T_pred_shifted, gt_obj_t, T_gt)
    expected = np.mean(2 * (shifts**2).sum(1)) * 1e4
    assert np.isclose(cd, expected, rtol=1e-9)
    # A static object given once as (N, 3) works too (rigid poses: a faster path that
    # must give the same value as moving both clouds into every hand frame).
    assert hand_object_chamfer(pred_obj, T_pred[:1], gt_obj, T_gt[:1]) < 1e-20
    blob_p, blob_g = rng.normal(size=(300, 3)) * 0.05, rng.normal(size=(200, 3)) * 0.05
    static = hand_object_chamfer(blob_p, T_pred, blob_g, T_gt)
    per_frame = hand_object_chamfer(
        np.broadcast_to(blob_p, (n_frames, 300, 3)), T_pred, np.broadcast_to(blob_g, (n_frames, 200, 3)), T_gt
    )
    assert static > 1.0 and np.isclose(static, per_frame, rtol=1e-9)
    # Non-rigid poses (a scale) take the general path and still map with inv(T).
    T_scaled = T_gt.copy()
    T_scaled[:, :3, :3] *= 2.0
    scaled_obj = np.einsum("tij,nj->tni", T_scaled[:, :3, :3], pts_hand) + T_scaled[:, None, :3, 3]
    assert hand_object_chamfer(scaled_obj, T_scaled, gt_obj_t, T_gt) < 1e-20
    with pytest.raises(ValueError):
        hand_object_chamfer(pred_obj, T_pred, gt_obj, T_gt[:2])


def test_keypoint_error_mm():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(5, 21, 3)) * 0.05
    pred = gt + np.array([0.01, 0.0, 0.0])
    np.testing.assert_allclose(keypoint_error_mm(pred, gt), np.full(5, 10.0))
    np.testing.assert_allclose(keypoint_error_mm(pred, gt, root_relative=True), np.zeros(5), atol=1e-9)
    noisy = gt + rng.normal(size=gt.shape) * 0.003
    manual = np.sqrt(((noisy - gt) ** 2).sum(-1)).mean(-1) * 1000
    np.testing.assert_allclose(keypoint_error_mm(noisy, gt), manual)
    with pytest.raises(ValueError):
        keypoint_error_mm(pred[:, :20], gt)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError):
        chamfer_cm2(np.zeros((0, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        fscore(np.zeros((4, 2)), np.zeros((4, 3)), 0.01)
    flat = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    with pytest.raises(ValueError, match="zero surface area"):
        sample_surface(flat, np.array([[0, 1, 2]]), 10)
