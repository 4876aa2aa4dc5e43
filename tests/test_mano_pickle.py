"""Tests for the restricted MANO unpickler and the MANO backend (with a fake MANO pickle).

The official MANO_RIGHT.pkl cannot be shipped; these tests pickle a MANO-shaped dict with
a stand-in ``chumpy.ch.Ch`` class (registered in ``sys.modules`` only while pickling) and
a real scipy sparse matrix, as the official file does.
"""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from hoirecon.errors import MissingWeightsError, UserError
from hoirecon.geometry.rotations import reflect_axis_angle
from hoirecon.hand import build_hand_model
from hoirecon.hand.mano_hand import MANO_TIP_VERTEX_IDS, MANOHand
from hoirecon.hand.mano_pickle import load_mano_pickle, restricted_loads
from hoirecon.hand.model import MANO_TO_MEDIAPIPE


def _fake_chumpy(monkeypatch):
    """Register modules ``chumpy`` and ``chumpy.ch`` with a minimal ``Ch`` (pickling only)."""
    chumpy = types.ModuleType("chumpy")
    ch_module = types.ModuleType("chumpy.ch")
    reordering = types.ModuleType("chumpy.reordering")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()  # chumpy's state holds such bookkeeping entries too
            self.dterms = ()

        def __getstate__(self):
            return dict(self.__dict__)

    class Select(Ch):
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    ch_module.Ch, reordering.Select, chumpy.ch = Ch, Select, ch_module
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_module)
    monkeypatch.setitem(sys.modules, "chumpy.reordering", reordering)
    return Ch, Select


def _forget_chumpy(monkeypatch):
    for name in ("chumpy", "chumpy.ch", "chumpy.reordering"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def _fake_mano_dict(Ch, rng: np.random.Generator) -> dict:
    """MANO-shaped data: a rough hand-sized point cloud with MANO's array layouts."""
    num_verts, num_joints = 778, 16
    v_template = rng.normal(size=(num_verts, 3)) * np.array([0.05, 0.01, 0.03])
    v_template[:, 0] -= 0.05
    weights = rng.random((num_verts, num_joints)) ** 8
    weights /= weights.sum(1, keepdims=True)
    # Joint regressor: each joint averages 10 vertices (sparse like the official one).
    regressor = np.zeros((num_joints, num_verts))
    for j in range(num_joints):
        regressor[j, rng.choice(num_verts, 10, replace=False)] = 0.1
    parents = np.array([2**32 - 1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int64)
    faces = np.stack([rng.choice(num_verts, 3, replace=False) for _ in range(1538)])
    return {
        "v_template": v_template,
        "shapedirs": Ch(rng.normal(size=(num_verts, 3, 10)) * 1e-3),
        "posedirs": rng.normal(size=(num_verts, 3, 135)) * 1e-4,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "kintree_table": np.stack([parents, np.arange(num_joints)]),
        "weights": weights,
        "f": faces.astype(np.uint32),
        "hands_components": Ch(np.eye(45)),
        "hands_mean": rng.normal(size=45) * 0.1,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


@pytest.fixture
def fake_mano(tmp_path, monkeypatch):
    """A fake MANO_RIGHT.pkl in a temporary weights folder; returns (path, plain arrays)."""
    Ch, _ = _fake_chumpy(monkeypatch)
    data = _fake_mano_dict(Ch, np.random.default_rng(0))
    path = tmp_path / "mano" / "MANO_RIGHT.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(data, protocol=2))
    plain = {k: (v.x if isinstance(v, Ch) else v) for k, v in data.items()}
    plain["J_regressor"] = data["J_regressor"].toarray()
    _forget_chumpy(monkeypatch)
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    return path, plain


# ---------------------------------------------------------------- unpickler


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_chumpy_and_sparse_become_arrays(monkeypatch, tmp_path, protocol):
    Ch, Select = _fake_chumpy(monkeypatch)
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(4, 6)) * (rng.random((4, 6)) < 0.4)
    payload = {
        "shapedirs": Ch(rng.normal(size=(5, 3, 2))),
        "nested": [Select(np.arange(3)), {"inner": Ch(np.ones(2))}],
        "J_regressor": scipy.sparse.csc_matrix(dense),
        "csr": scipy.sparse.csr_matrix(dense),
        "v_template": rng.normal(size=(5, 3)).astype(np.float32),
        "f": np.arange(12, dtype=np.uint32).reshape(4, 3),
        "bs_style": "lbs",
    }
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    _forget_chumpy(monkeypatch)

    loaded = load_mano_pickle(path)
    assert "chumpy" not in sys.modules  # nothing imported chumpy
    assert type(loaded["shapedirs"]) is np.ndarray
    np.testing.assert_array_equal(loaded["shapedirs"], payload["shapedirs"].x)
    np.testing.assert_array_equal(loaded["nested"][0], np.arange(3))
    np.testing.assert_array_equal(loaded["nested"][1]["inner"], np.ones(2))
    for key in ("J_regressor", "csr"):
        assert type(loaded[key]) is np.ndarray
        np.testing.assert_array_equal(loaded[key], dense)
    np.testing.assert_array_equal(loaded["v_template"], payload["v_template"])
    assert loaded["v_template"].dtype == np.float32 and loaded["f"].dtype == np.uint32
    assert loaded["bs_style"] == "lbs"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_refuses_code_execution(tmp_path, protocol):
    marker = tmp_path / "pwned"
    for payload in ({"v_template": _Evil(marker)}, {"x": _EvalEvil()}):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
        with pytest.raises(UserError, match="not allowed"):
            load_mano_pickle(path)
    assert not marker.exists()


def test_refuses_reconstructor_with_foreign_base(monkeypatch):
    import copyreg

    Ch, _ = _fake_chumpy(monkeypatch)

    class Sneaky:
        def __reduce__(self):
            return (copyreg._reconstructor, (Ch, set, None))

    data = pickle.dumps({"a": Sneaky()}, protocol=2)
    _forget_chumpy(monkeypatch)
    with pytest.raises(UserError, match="non-allowed"):
        restricted_loads(data)


def test_corrupt_or_missing_files_are_user_errors(tmp_path):
    good = pickle.dumps({"a": np.arange(3)}, protocol=2)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="cannot read MANO model .*truncated.pkl: "):
        load_mano_pickle(truncated)
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(UserError, match="expected a dict"):
        load_mano_pickle(not_dict)
    with pytest.raises(UserError, match="cannot read"):
        load_mano_pickle(tmp_path / "absent.pkl")


# ---------------------------------------------------------------- MANO backend


def test_missing_mano_file_names_file_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        build_hand_model("mano")
    message = str(info.value)
    assert "mano/MANO_RIGHT.pkl" in message and "mano.is.tue.mpg.de" in message
    assert "\n" not in message


def test_mano_backend_with_fake_model(fake_mano):
    _, data = fake_mano
    hand = build_hand_model("mano")
    assert isinstance(hand, MANOHand) and hand.num_verts == 778 and hand.num_faces == 1538
    assert hand.vert_uv.shape == (778, 2)

    # Zero pose, mean shape: the template with the regressed wrist joint at the origin.
    regressor = data["J_regressor"]
    template = data["v_template"]
    wrist = regressor[0] @ template
    out = hand(torch.zeros(2, 45), torch.zeros(2, 3))
    assert out.verts.shape == (2, 778, 3) and out.keypoints.shape == (2, 21, 3)
    np.testing.assert_allclose(out.verts[0].numpy(), template - wrist, atol=1e-6)
    tips = out.keypoints[0, [MANO_TO_MEDIAPIPE.index(16 + i) for i in range(5)]]
    expected_tips = (template - wrist)[list(MANO_TIP_VERTEX_IDS)]
    np.testing.assert_allclose(tips.numpy(), expected_tips, atol=1e-6)
    # The loader turned chumpy shapedirs and the sparse regressor into arrays that smplx uses.
    shape = torch.zeros(1, 10)
    shape[0, 3] = 2.0
    moved = hand(torch.zeros(1, 45), torch.zeros(1, 3), shape).verts[0].numpy()
    delta = 2.0 * data["shapedirs"][:, :, 3]
    expected = template + delta - regressor[0] @ (template + delta)
    np.testing.assert_allclose(moved, expected, atol=1e-6)

    # Posed: wrist at transl, gradients, left = mirror.
    torch.manual_seed(0)
    art = (0.3 * torch.randn(2, 45)).requires_grad_()
    rot = torch.randn(2, 3, requires_grad=True)
    betas = torch.randn(2, 10, requires_grad=True)
    transl = torch.randn(2, 3)
    out = hand(art, rot, betas, transl)
    assert torch.allclose(out.keypoints[:, 0], transl, atol=1e-6)
    (out.verts.square().sum() + out.keypoints.sum()).backward()
    for t in (art, rot, betas):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    art_mirrored = reflect_axis_angle(art.detach().reshape(2, 15, 3)).reshape(2, 45)
    left = hand(art_mirrored, reflect_axis_angle(rot.detach()), betas.detach(), side="left")
    right = hand(art.detach(), rot.detach(), betas.detach())
    assert torch.allclose(left.verts, right.verts * torch.tensor([-1.0, 1.0, 1.0]), atol=1e-6)
    assert torch.equal(left.faces, right.faces[:, [0, 2, 1]])
    assert hand.hands_mean.shape == (45,)


def test_mano_float64_follows_input(fake_mano):
    hand = build_hand_model("mano")
    out = hand(torch.zeros(1, 45, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    assert out.verts.dtype == torch.float64
    out32 = hand(torch.zeros(1, 45), torch.zeros(1, 3))
    assert out32.verts.dtype == torch.float32
    torch.testing.assert_close(out.verts.float(), out32.verts, atol=1e-6, rtol=0)


def test_non_mano_pickle_is_rejected(tmp_path):
    path = tmp_path / "not_mano.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((778, 3))}, protocol=2))
    with pytest.raises(UserError, match="not a MANO model"):
        MANOHand(path)
