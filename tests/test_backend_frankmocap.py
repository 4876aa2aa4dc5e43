"""FrankMocap hand regressor: checkpoint layout and function against the official fixture,
crop preprocessing, camera conversion, left-hand un-mirroring, weight loading."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hoirecon.backends import frankmocap as fm
from hoirecon.errors import MissingWeightsError, UserError

FIXTURE_ROOT = Path(__file__).resolve().parent / "fixtures" / "official"  # tests/fixtures/official/README.md
FIXTURE = FIXTURE_ROOT / "frankmocap_hand"
# README "Verification and tolerances": max|diff| / max|ref| <= 1e-5, or atol ~2e-4.
REL_TOL = 1e-5


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    # numpy's check: torch.testing's first call costs seconds of lazy imports.
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected.detach().cpu().numpy(), atol=atol, rtol=rtol)


def _rotation_matrices(axis_angle: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 3, 3) by Rodrigues' formula (written here: importing kornia costs seconds)."""
    angle = axis_angle.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = (axis_angle / angle).unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    sin, cos = angle.sin()[..., None], angle.cos()[..., None]
    return torch.eye(3) + sin * skew + (1 - cos) * skew @ skew


def _detinit():
    spec = importlib.util.spec_from_file_location("detinit", FIXTURE_ROOT / "detinit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fixture_io() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def filled_encoder(fixture_io) -> fm.H3DWEncoder:
    encoder = fm.H3DWEncoder(torch.from_numpy(fixture_io["mean_params"][0]))
    _detinit().fill_(encoder)
    return encoder.eval()


def test_state_dict_matches_released_checkpoint_keys():
    keys = json.loads((FIXTURE / "keys.json").read_text())
    encoder = fm.H3DWEncoder(torch.zeros(61))
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in encoder.state_dict().items()]
    assert len(ours) == len(keys) == 324
    assert ours == keys  # same names, shapes, dtypes, order: no key mapping needed
    assert "mean_params" not in encoder.state_dict()


@pytest.mark.parametrize("tag", ["raw", "norm"])
def test_forward_matches_official_outputs(filled_encoder, fixture_io, tag):
    with torch.no_grad():
        out = filled_encoder.forward_with_intermediates(torch.from_numpy(fixture_io[f"input_{tag}"]))
    cam, pose, shape = fm.split_hand_params(out["params"])
    got = {**{k: out[k] for k in ("backbone_feat", "feat", "params")}, "deltas": out["deltas"][0],
           "cam": cam, "pose": pose, "shape": shape}
    for name, value in got.items():
        ref = fixture_io[f"{name}_{tag}"]
        assert value.shape == ref.shape, name
        err = np.abs(value.numpy() - ref).max()
        assert err <= REL_TOL * np.abs(ref).max() and err <= 2e-4, (name, err)


def test_normalisation_and_mean_params_match_fixture(fixture_io):
    # The demo's Normalize(0.5, 0.5) applied to the ToTensor output.
    norm = fm.normalize_crop(torch.from_numpy(fixture_io["input_raw"]))
    np.testing.assert_allclose(norm.numpy(), fixture_io["input_norm"], atol=1e-6)
    # Layout of the starting estimate: the wrist triple of mean_pose is dropped.
    mean_pose = torch.cat([torch.tensor([0.3, -0.2, 0.7]), torch.from_numpy(fixture_io["mean_params"][0, 6:51])])
    np.testing.assert_array_equal(fm.frankmocap_mean_params(mean_pose).numpy(), fixture_io["mean_params"][0])


def test_hand_crop_box_follows_the_demo():
    # w=20 > h=10 (after int truncation): pad y by 5, then a margin of int(0.3 * 20) = 6.
    assert fm.hand_crop_box((30.7, 20.2, 50.9, 30.8), (60, 100)) == (24, 9, 56, 41)
    assert fm.hand_crop_box((30.7, 20.2, 50.9, 30.8), (60, 100), add_margin=False) == (30, 15, 50, 35)
    # At the bottom-left corner every step is clamped: the crop is 15 wide but 13 tall.
    assert fm.hand_crop_box((2, 52, 12, 58), (60, 100)) == (0, 47, 15, 60)
    with pytest.raises(UserError):
        fm.hand_crop_box((200, 10, 220, 30), (60, 100))
    with pytest.raises(UserError):
        fm.hand_crop_box((20, 10, 20, 30), (60, 100))


def test_preprocess_crop_content_channel_order_and_mirroring():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    box = (30.7, 20.2, 50.9, 30.8)  # processed crop box (24, 9, 56, 41): 32x32, fully inside
    right = fm.preprocess_hand_crop(image, box, is_left=False)
    assert right.shape == (1, 3, 224, 224) and right.dtype == torch.float32
    expected_rgb = cv2.resize(image[9:41, 24:56], (224, 224), interpolation=cv2.INTER_LINEAR)
    expected = expected_rgb[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0 * 2.0 - 1.0
    np.testing.assert_allclose(right[0].numpy(), expected, atol=1e-6)
    left = fm.preprocess_hand_crop(image, box, is_left=True)
    np.testing.assert_array_equal(left.numpy(), right.flip(-1).numpy())


def test_preprocess_pads_clamped_crops_bottom_right():
    image = np.full((60, 100, 3), 255, np.uint8)
    crop = fm.preprocess_hand_crop(image, (2, 52, 12, 58), is_left=False)[0]
    # Crop (0, 47, 15, 60) is 15x13, pasted top-left into a black 15x15 canvas.
    assert torch.all(crop[:, :185] == 1.0)  # rows 0-12 of 15 (bilinear blends up to row ~201)
    assert torch.all(crop[:, 202:] == -1.0)
    with pytest.raises(UserError):
        fm.preprocess_hand_crop(image.astype(np.float32), (2, 52, 12, 58), is_left=False)


def test_crop_camera_to_full_image_camera_matches_frankmocap_pixels():
    torch.manual_seed(0)
    image_hw = (60, 100)
    crop_boxes = torch.tensor([[0.0, 47.0, 15.0, 60.0], [24.0, 9.0, 56.0, 41.0]])
    cam_crop = torch.tensor([[5.2, 0.03, -0.08], [7.5, -0.1, 0.02]])
    points = 0.1 * torch.randn(2, 21, 3)
    # FrankMocap: crop pixels u = 112 (1 + s (X + t)), image pixels = top-left + u / ratio.
    side = torch.maximum(crop_boxes[:, 2] - crop_boxes[:, 0], crop_boxes[:, 3] - crop_boxes[:, 1])
    ratio = 224.0 / side
    uv = 112.0 * (1 + cam_crop[:, None, :1] * (points[..., :2] + cam_crop[:, None, 1:]))
    expected = crop_boxes[:, None, :2] + uv / ratio[:, None, None]
    cam_image = fm.crop_cam_to_image_cam(cam_crop, crop_boxes, image_hw)
    got = fm.project_weak_image(points, cam_image, image_hw)
    _assert_close(got, expected, atol=1e-4, rtol=0)


def test_weak_camera_to_pinhole_translation_agrees_on_the_z0_plane():
    cam_image = torch.tensor([[0.35, 0.4, -0.2], [0.8, -0.1, 0.05]])
    points = torch.tensor([[0.0, 0.0, 0.0], [0.05, -0.03, 0.0], [-0.08, 0.02, 0.0]]).expand(2, 3, 3)
    focal = 1.7
    in_camera = points + fm.weak_cam_to_translation(cam_image, focal)[:, None]
    pinhole = focal * in_camera[..., :2] / in_camera[..., 2:]
    weak = cam_image[:, None, :1] * (points[..., :2] + cam_image[:, None, 1:])
    _assert_close(pinhole, weak)


def test_unmirror_left_hand_camera_and_pose():
    torch.manual_seed(1)
    # Row 0 is a left hand, row 1 a right hand (passes through untouched).
    cam_net = torch.tensor([[6.0, 0.07, -0.04], [4.0, -0.02, 0.05]])
    pose_net = torch.randn(2, 48)
    cam, pose = fm.unmirror_hand_params(cam_net, pose_net, torch.tensor([True, False]))
    assert torch.equal(cam[1], cam_net[1]) and torch.equal(pose[1], pose_net[1])
    # Camera: a point X of the left hand is seen at -X in the mirrored crop the network gets.
    x = 0.1 * torch.randn(30)
    u_in_mirrored = 112 * (1 + cam_net[0, 0] * (-x + cam_net[0, 1]))
    u_unmirrored = 112 * (1 + cam[0, 0] * (x + cam[0, 1]))
    _assert_close(u_unmirrored, 224 - u_in_mirrored, atol=1e-4, rtol=0)
    assert cam[0, 0] == cam_net[0, 0] and cam[0, 2] == cam_net[0, 2]
    # Pose: each rotation is conjugated by the mirror M = diag(-1, 1, 1).
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    rot_net = _rotation_matrices(pose_net[0].reshape(16, 3))
    _assert_close(_rotation_matrices(pose[0].reshape(16, 3)), mirror @ rot_net @ mirror, atol=1e-5, rtol=0)


def test_load_state_dict_errors_name_keys():
    encoder = fm.H3DWEncoder(torch.zeros(61))
    state = encoder.state_dict()
    # Documented mapping: a DDP "module." prefix and absent num_batches_tracked are accepted.
    ddp = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    fm.load_encoder_state_dict(encoder, ddp, "ckpt.pth")
    bad = dict(state)
    bad["regressor.1.weight"] = bad.pop("regressor.0.weight")
    with pytest.raises(UserError, match=r"regressor\.0\.weight.*regressor\.1\.weight"):
        fm.load_encoder_state_dict(encoder, bad, "ckpt.pth")
    bad = dict(state)
    bad["regressor.0.bias"] = torch.zeros(62)
    with pytest.raises(UserError, match=r"regressor\.0\.bias"):
        fm.load_encoder_state_dict(encoder, bad, "ckpt.pth")


def test_missing_checkpoint_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        fm.FrankMocapHand("cpu")
    message = str(err.value)
    assert "pose_shape_best.pth" in message and "dl.fbaipublicfiles.com" in message and "\n" not in message
    (tmp_path / "frankmocap").mkdir()
    (tmp_path / "frankmocap" / "pose_shape_best.pth").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match="mean_mano_params.pkl"):
        fm.FrankMocapHand("cpu")


def _python2_pickle(mean_pose: np.ndarray) -> bytes:
    """{'mean_pose': float64 array} as Python 2 / numpy 1 write it (byte strings, numpy.core)."""
    def string(b: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    raw = np.ascontiguousarray(mean_pose, dtype="<f8").tobytes()
    return (b"\x80\x02}" + string(b"mean_pose")
            + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
            + b"(K\x01K" + bytes([mean_pose.size]) + b"\x85cnumpy\ndtype\n" + string(b"f8") + b"K\x00K\x01\x87R"
            + b"(K\x03" + string(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + string(raw)
            + b"tbs.")


def test_mean_params_pickle_is_read_without_arbitrary_globals(tmp_path):
    path = tmp_path / "mean_mano_params.pkl"
    mean_pose = np.linspace(-1, 1, 48)
    for protocol in (2, 5):
        path.write_bytes(pickle.dumps({"mean_pose": mean_pose, "mean_betas": np.zeros(10)}, protocol=protocol))
        np.testing.assert_allclose(fm.load_mean_pose(path).numpy(), mean_pose, atol=1e-7)
    path.write_bytes(_python2_pickle(mean_pose))
    np.testing.assert_allclose(fm.load_mean_pose(path).numpy(), mean_pose, atol=1e-7)
    path.write_bytes(pickle.dumps({"mean_pose": mean_pose, "x": os.getcwd}))
    with pytest.raises(UserError, match="refusing"):
        fm.load_mean_pose(path)


def test_predict_loads_weights_and_unmirrors_left_hands(tmp_path, monkeypatch):
    """A left hand in an image and the same hand mirrored into a right hand must agree."""
    torch.manual_seed(0)
    weights = tmp_path / "frankmocap"
    weights.mkdir()
    mean_pose = 0.2 * np.sin(np.arange(48.0))
    (weights / "mean_mano_params.pkl").write_bytes(pickle.dumps({"mean_pose": mean_pose}, protocol=2))
    reference = fm.H3DWEncoder(fm.frankmocap_mean_params(torch.from_numpy(mean_pose)))
    torch.save(reference.state_dict(), weights / "pose_shape_best.pth")
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    model = fm.FrankMocapHand("cpu")

    # A mirror-symmetric frame: the left hand's crop is exactly the mirror of the right hand's.
    rng = np.random.default_rng(0)
    half = rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)
    image = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))
    box = (50, 40, 80, 60)  # integer box whose crop (41, 26, 89, 74) is inside: exact mirror symmetry
    box_mirrored = (160 - 80, 40, 160 - 50, 60)
    left, right = model.predict(image, [box, box_mirrored], [True, False])

    with torch.no_grad():
        raw = reference.eval()(fm.preprocess_hand_crop(image, box_mirrored, is_left=False))[0]
    cam_raw, pose_raw, shape_raw = fm.split_hand_params(raw)
    _assert_close(right["pose48"], pose_raw, atol=1e-4, rtol=1e-4)  # weights were loaded
    _assert_close(right["shape10"], shape_raw, atol=1e-4, rtol=1e-4)
    _assert_close(right["cam_weak_crop"], cam_raw, atol=1e-4, rtol=1e-4)

    assert left["is_left"] and not right["is_left"]
    assert left["crop_box_xyxy"].tolist() == [41, 26, 89, 74]
    _assert_close(left["shape10"], right["shape10"], atol=1e-4, rtol=1e-4)
    sign = torch.tensor([1.0, -1.0, -1.0]).repeat(16)
    _assert_close(left["pose48"], right["pose48"] * sign, atol=1e-4, rtol=1e-4)
    # Mirrored hand => normalized x flips: same scale and ty, opposite tx.
    _assert_close(left["cam_weak"], right["cam_weak"] * torch.tensor([1.0, -1.0, 1.0]),
                               atol=1e-4, rtol=1e-4)
    assert model.predict(image, [], []) == []
