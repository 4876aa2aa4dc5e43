"""Tests for the hand-model interface, the default (anny) backend and the rotation helpers.

The anny backend's assets are built from the ``anny`` package on first use and cached
under ~/.cache/hoirecon (about a minute the very first time on a machine, then < 1 s).
"""

from __future__ import annotations

import pytest
import torch

from hoirecon.errors import UserError
from hoirecon.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_rotation_matrix,
    reflect_axis_angle,
    rotation_6d_to_matrix,
    rotation_between_vectors,
)
from hoirecon.hand import (
    MANO_KEYPOINT_NAMES,
    MANO_TO_MEDIAPIPE,
    MEDIAPIPE_KEYPOINT_NAMES,
    MEDIAPIPE_TO_MANO,
    build_hand_model,
)
from hoirecon.hand.model import FINGER_FIRST_JOINT, MANO_PARENTS, mesh_signed_volume

MP = {name: i for i, name in enumerate(MEDIAPIPE_KEYPOINT_NAMES)}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
MP_JOINTS = {f: ("mcp", "pip", "dip", "tip") for f in FINGERS}
MP_JOINTS["thumb"] = ("cmc", "mcp", "ip", "tip")


@pytest.fixture(scope="module")
def hand():
    return build_hand_model("anny")


def _zeros(batch: int = 1):
    return torch.zeros(batch, 45), torch.zeros(batch, 3)


def _finger_keypoints(finger: str) -> list[int]:
    return [MP[f"{finger}_{part}"] for part in MP_JOINTS[finger]]


def _palm_centre(keypoints: torch.Tensor) -> torch.Tensor:
    names = ("wrist", "index_mcp", "middle_mcp", "ring_mcp", "pinky_mcp")
    return keypoints[[MP[n] for n in names]].mean(0)


def _flexion_axis(hand, finger: str) -> torch.Tensor:
    """Axis that turns the finger's rest direction d toward the palm.

    Long fingers: d x (-y), MANO's palm normal (= +z for a finger along -x). The thumb
    rests beside and below the palm, so "toward the palm" is toward the palm centre:
    d x (centre - first joint).
    """
    kp = hand(*_zeros()).keypoints[0]
    first, tip = _finger_keypoints(finger)[0], _finger_keypoints(finger)[-1]
    direction = kp[tip] - kp[first]
    if finger == "thumb":
        toward = _palm_centre(kp) - kp[first]
    else:
        toward = torch.tensor([0.0, -1.0, 0.0])
    return torch.nn.functional.normalize(torch.linalg.cross(direction, toward, dim=0), dim=0)


# ---------------------------------------------------------------- keypoint layout


def test_keypoint_mappings_are_inverse_permutations():
    assert sorted(MANO_TO_MEDIAPIPE) == list(range(21))
    assert [MANO_TO_MEDIAPIPE[MEDIAPIPE_TO_MANO[i]] for i in range(21)] == list(range(21))
    mano_to_mp_name = {"wrist": "wrist"}
    for finger in FINGERS:
        mano = [f"{finger}1", f"{finger}2", f"{finger}3", f"{finger}_tip"]
        mano_to_mp_name.update(zip(mano, (f"{finger}_{p}" for p in MP_JOINTS[finger])))
    for mp_index, mano_index in enumerate(MANO_TO_MEDIAPIPE):
        mano_name = MANO_KEYPOINT_NAMES[mano_index]
        assert mano_to_mp_name[mano_name] == MEDIAPIPE_KEYPOINT_NAMES[mp_index]


# ---------------------------------------------------------------- anny backend


def test_shapes_dtype_and_attributes(hand):
    batch = 3
    art, rot = _zeros(batch)
    out = hand(art + 0.1, rot, torch.zeros(batch, 10), torch.zeros(batch, 3))
    assert out.verts.shape == (batch, hand.num_verts, 3) and hand.num_verts == 1609
    assert out.verts.dtype == torch.float32 and out.keypoints.dtype == torch.float32
    assert out.keypoints.shape == (batch, 21, 3)
    assert out.faces.dtype == torch.long and out.faces.shape == (hand.num_faces, 3)
    assert int(out.faces.max()) == hand.num_verts - 1 and int(out.faces.min()) == 0
    assert hand.vert_uv.shape == (hand.num_verts, 2)
    assert float(hand.vert_uv.min()) >= 0.0 and float(hand.vert_uv.max()) <= 1.0
    assert torch.isfinite(out.verts).all()
    # (B, 15, 3) articulation and a (1, 10) shape broadcast the same way.
    out2 = hand(art.reshape(batch, 15, 3) + 0.1, rot, torch.zeros(1, 10))
    assert torch.allclose(out.verts, out2.verts)
    with pytest.raises(ValueError):
        hand(art, rot, side="middle")
    with pytest.raises(ValueError):
        hand(torch.zeros(batch, 44), rot)


def test_zero_pose_is_flat_right_hand_in_hand_frame(hand):
    out = hand(*_zeros(2))
    kp, verts = out.keypoints[0], out.verts[0]
    assert torch.equal(out.verts[0], out.verts[1])
    assert torch.allclose(kp[MP["wrist"]], torch.zeros(3))
    length = float((kp[MP["middle_tip"]] - kp[MP["wrist"]]).norm())
    assert 0.16 < length < 0.21, length  # metres, adult hand
    for finger in ("index", "middle", "ring", "pinky"):
        mcp, pip, dip, tip = kp[_finger_keypoints(finger)]
        assert tip[0] < dip[0] < pip[0] < mcp[0] < 0  # fingers point along -x
        # Flat: the finger is straight and its segments stay within ~6 deg of the x-z plane.
        for a, b in ((mcp, pip), (pip, dip), (dip, tip)):
            seg = b - a
            assert abs(float(seg[1])) < 0.1 * float(seg.norm())
    assert kp[MP["thumb_tip"], 2] > kp[MP["index_mcp"], 2] > kp[MP["pinky_mcp"], 2]  # thumb at +z
    # Outward-facing faces (positive signed volume) for the right hand.
    assert mesh_signed_volume(verts, out.faces) > 0
    # The palm faces -y: palm-side skin lies below the back-of-hand skin near the MCPs.
    assert float(verts[:, 1].min()) < -0.01 and float(verts[:, 1].max()) > 0.005


def test_gradients_reach_all_inputs(hand):
    batch = 2
    for scale in (0.0, 0.3):  # zero pose (where fits start) and a generic pose
        torch.manual_seed(0)
        art = (scale * torch.randn(batch, 45)).requires_grad_()
        rot = (scale * torch.randn(batch, 3)).requires_grad_()
        shape = (scale * torch.randn(batch, 10)).requires_grad_()
        transl = torch.zeros(batch, 3, requires_grad=True)
        out = hand(art, rot, shape, transl)
        target = torch.randn_like(out.verts)
        loss = (out.verts * target).sum() + out.keypoints.square().sum()
        loss.backward()
        for name, t in [("art", art), ("rot", rot), ("shape", shape), ("transl", transl)]:
            assert t.grad is not None and torch.isfinite(t.grad).all(), name
            assert float(t.grad.abs().min()) > 0 or name == "shape", name
        # Every articulation value and the size component influence the loss.
        assert (art.grad.abs() > 0).all()
        assert (shape.grad[:, 0].abs() > 0).all()


def test_gradients_match_finite_differences(hand):
    torch.manual_seed(1)
    weights = torch.randn(1, hand.num_verts, 3, dtype=torch.float64)
    for scale in (0.0, 0.5):
        inputs = tuple(
            (scale * torch.randn(1, n, dtype=torch.float64)).requires_grad_() for n in (45, 3, 10)
        )

        def f(art, rot, shape):
            out = hand(art, rot, shape)
            return (out.verts * weights).sum() + out.keypoints.sum()

        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("finger", FINGERS)
def test_flexion_bends_finger_toward_palm_and_moves_only_that_finger(hand, finger):
    rest = hand(*_zeros()).keypoints[0]
    palm_centre = _palm_centre(rest)
    axis = _flexion_axis(hand, finger)
    first_joint = FINGER_FIRST_JOINT[finger]
    tip = MP[f"{finger}_tip"]
    for joint in range(3):  # flex each joint of the finger on its own
        art = torch.zeros(1, 15, 3)
        art[0, first_joint + joint] = 0.8 * axis
        posed = hand(art.reshape(1, 45), torch.zeros(1, 3)).keypoints[0]
        extended = hand((-art).reshape(1, 45), torch.zeros(1, 3)).keypoints[0]
        rest_dist = float((rest[tip] - palm_centre).norm())
        assert float((posed[tip] - palm_centre).norm()) < rest_dist, (finger, joint)
        if finger != "thumb":  # toward the palm side (-y), away from it when extended
            assert posed[tip, 1] < rest[tip, 1] - 0.005 and extended[tip, 1] > rest[tip, 1]
        moved = (posed - rest).norm(dim=-1) > 1e-6
        assert set(torch.nonzero(moved).flatten().tolist()) <= set(_finger_keypoints(finger))
        # Vertices far from this finger (the other fingertips) do not move either.
        other_tips = [MP[f"{f}_tip"] for f in FINGERS if f != finger]
        assert torch.equal(posed[other_tips], rest[other_tips])


def test_long_finger_flexion_is_positive_about_z(hand):
    # MANO's convention for the four long fingers: flexion = positive rotation about +z.
    rest = hand(*_zeros()).keypoints[0]
    for finger in ("index", "middle", "ring", "pinky"):
        art = torch.zeros(1, 15, 3)
        art[0, FINGER_FIRST_JOINT[finger], 2] = 1.0
        posed = hand(art.reshape(1, 45), torch.zeros(1, 3)).keypoints[0]
        assert posed[MP[f"{finger}_tip"], 1] < rest[MP[f"{finger}_tip"], 1] - 0.02


def test_wrist_rotation_is_about_the_wrist_and_transl_shifts_exactly(hand):
    torch.manual_seed(2)
    art = 0.3 * torch.randn(2, 45)
    shape = torch.randn(2, 10)
    rot = torch.randn(2, 3)
    local = hand(art, torch.zeros(2, 3), shape)
    rotated = hand(art, rot, shape)
    r = axis_angle_to_matrix(rot)
    assert torch.allclose(rotated.verts, local.verts @ r.transpose(1, 2), atol=1e-6)
    transl = torch.tensor([[0.1, -0.2, 0.5], [1.0, 2.0, 3.0]])
    moved = hand(art, rot, shape, transl)
    shift = transl[:, None].expand_as(moved.verts)
    assert torch.allclose(moved.verts - rotated.verts, shift, atol=1e-6)
    assert torch.allclose(moved.keypoints[:, MP["wrist"]], transl, atol=1e-6)


def test_left_hand_is_mirror_of_right(hand):
    torch.manual_seed(3)
    art, rot, shape = 0.4 * torch.randn(2, 45), torch.randn(2, 3), torch.randn(2, 10)
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    right = hand(art, rot, shape, side="right")
    art_mirrored = reflect_axis_angle(art.reshape(2, 15, 3)).reshape(2, 45)
    left = hand(art_mirrored, reflect_axis_angle(rot), shape, side="left")
    assert torch.allclose(left.verts, right.verts * mirror, atol=1e-6)
    assert torch.allclose(left.keypoints, right.keypoints * mirror, atol=1e-6)
    assert torch.equal(left.faces, right.faces[:, [0, 2, 1]])
    zero_left = hand(*_zeros(), side="left")
    assert mesh_signed_volume(zero_left.verts[0], zero_left.faces) > 0  # still outward
    assert torch.allclose(zero_left.verts, hand(*_zeros()).verts * mirror)
    # A left hand with MANO-left flexion (about -z) curls toward its palm (-y) too.
    art_left = torch.zeros(1, 15, 3)
    art_left[0, FINGER_FIRST_JOINT["index"], 2] = -1.0
    curled = hand(art_left.reshape(1, 45), torch.zeros(1, 3), side="left").keypoints[0]
    assert curled[MP["index_tip"], 1] < zero_left.keypoints[0, MP["index_tip"], 1] - 0.02


def test_shape_component_0_is_monotonic_size(hand):
    lengths, widths = [], []
    for value in (-3.0, -1.5, 0.0, 1.5, 3.0):
        shape = torch.zeros(1, 10)
        shape[0, 0] = value
        kp = hand(*_zeros(), shape).keypoints[0]
        lengths.append(float((kp[MP["middle_tip"]] - kp[MP["wrist"]]).norm()))
        widths.append(float((kp[MP["index_mcp"]] - kp[MP["pinky_mcp"]]).norm()))
    assert all(a < b for a, b in zip(lengths, lengths[1:])), lengths
    assert all(a < b for a, b in zip(widths, widths[1:])), widths
    assert 0.01 < (lengths[3] - lengths[2]) < 0.03  # ~1.5 cm per 1.5 std
    # The other components are shape details: much smaller size changes.
    for k in range(1, 10):
        shape = torch.zeros(1, 10)
        shape[0, k] = 1.5
        kp = hand(*_zeros(), shape).keypoints[0]
        length = float((kp[MP["middle_tip"]] - kp[MP["wrist"]]).norm())
        assert abs(length - lengths[2]) < 0.25 * (lengths[3] - lengths[2]), k


def test_forward_kinematics_matches_parent_recursion(hand):
    from hoirecon.hand.anny_hand import _LEVEL_ORDER, forward_kinematics_levels

    torch.manual_seed(4)
    rot = axis_angle_to_matrix(torch.randn(2, 16, 3))
    joints = torch.randn(2, 16, 3)
    level = list(_LEVEL_ORDER)
    g_rot, g_pos = forward_kinematics_levels(rot[:, level], joints[:, level])
    inverse = [level.index(j) for j in range(16)]
    g_rot, g_pos = g_rot[:, inverse], g_pos[:, inverse]
    for j in range(16):
        p = MANO_PARENTS[j]
        if p < 0:
            ref_rot, ref_pos = rot[:, j], joints[:, j]
        else:
            ref_rot = g_rot[:, p] @ rot[:, j]
            ref_pos = g_pos[:, p] + (g_rot[:, p] @ (joints[:, j] - joints[:, p])[..., None])[..., 0]
        assert torch.allclose(g_rot[:, j], ref_rot, atol=1e-5)
        assert torch.allclose(g_pos[:, j], ref_pos, atol=1e-5)


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="unknown hand model"):
        build_hand_model("nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(hand):
    torch.manual_seed(5)
    art, rot, shape = 0.3 * torch.randn(2, 45), torch.randn(2, 3), torch.randn(2, 10)
    cpu = hand(art, rot, shape)
    gpu = build_hand_model("anny", device="cuda")(art.cuda(), rot.cuda(), shape.cuda())
    assert gpu.verts.device.type == "cuda"
    assert torch.allclose(gpu.verts.cpu(), cpu.verts, atol=1e-5)


# ---------------------------------------------------------------- rotation helpers


def test_rotation_conversions_round_trip():
    torch.manual_seed(6)
    rot = random_rotation_matrix(500, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye.expand_as(rot), atol=1e-12)
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(rot)), rot, atol=1e-10)
    assert torch.allclose(quaternion_to_matrix(matrix_to_quaternion(rot)), rot, atol=1e-10)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(rot)), rot, atol=1e-10)
    aa = matrix_to_axis_angle(rot)
    assert torch.allclose(quaternion_to_axis_angle(axis_angle_to_quaternion(aa)), aa, atol=1e-10)
    q1, q2 = matrix_to_quaternion(rot[:250]), matrix_to_quaternion(rot[250:])
    product = quaternion_to_matrix(quaternion_multiply(q1, q2))
    assert torch.allclose(product, rot[:250] @ rot[250:], atol=1e-10)
    # Angles near pi and near zero.
    axis = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    for angle in (torch.pi - 1e-6, 1e-7):
        r = axis_angle_to_matrix(axis * angle)
        assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(r)), r, atol=1e-9)
    tiny = axis * 1e-7
    assert torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(tiny)), tiny, atol=1e-15)
    # Right-hand rule: +90 deg about z takes x to y.
    r = axis_angle_to_matrix(torch.tensor([0.0, 0.0, torch.pi / 2]))
    x_axis, y_axis = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(r @ x_axis, y_axis, atol=1e-6)


def test_rotation_gradients_including_identity():
    for scale in (0.0, 1e-5, 1.0):
        x = (scale * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (x,))
        assert torch.autograd.gradcheck(axis_angle_to_quaternion, (x,))
    r = random_rotation_matrix(3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (r,))
    q = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_axis_angle, (q,))
    six = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (six,))


def test_rotation_between_vectors_and_reflection():
    torch.manual_seed(7)
    a, b = torch.randn(100, 3, dtype=torch.float64), torch.randn(100, 3, dtype=torch.float64)
    r = rotation_between_vectors(a, b)
    unit = torch.nn.functional.normalize
    assert torch.allclose((r @ unit(a, dim=-1)[..., None])[..., 0], unit(b, dim=-1), atol=1e-10)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(rotation_between_vectors(x, -x) @ x, -x, atol=1e-10)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    aa = torch.randn(20, 3, dtype=torch.float64)
    reflected = axis_angle_to_matrix(reflect_axis_angle(aa))
    assert torch.allclose(reflected, mirror @ axis_angle_to_matrix(aa) @ mirror)
