"""STCN backend: checkpoint layout, fixture outputs (fp64 tight, fp32 through `propagate`),
the tracker's procedure, and checkpoint errors.

Fixture: tests/fixtures/official/stcn/ (tests/fixtures/official/README.md).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hoirecon.backends.stcn import (
    STCN,
    MemoryBank,
    STCNTracker,
    STCNTrackerConfig,
    load_stcn_state_dict,
    memory_affinity,
    others_masks,
    pad_to_multiple,
    propagate,
    short_side_size,
    soft_aggregate,
    topk_softmax,
    unpad,
)
from hoirecon.errors import MissingWeightsError, UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"  # tests/fixtures/official/README.md
STCN_DIR = FIXTURES / "stcn"


def _load_detinit():
    spec = importlib.util.spec_from_file_location("stcn_fixture_detinit", FIXTURES / "detinit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



def _empty_stcn() -> STCN:
    """STCN with uninitialised CPU tensors (skips the slow random init of 54M parameters)."""
    with torch.device("meta"):
        net = STCN()
    return net.to_empty(device="cpu").eval()


@pytest.fixture(scope="module")
def io():
    return dict(np.load(STCN_DIR / "io.npz"))


@pytest.fixture(scope="module")
def filled_net():
    """STCN filled by the fixture's deterministic rule, float32, eval mode."""
    net = _empty_stcn()
    _load_detinit().fill_(net)
    return net


def _t(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(a).to(dtype)


def _rel_err(x: torch.Tensor, ref: np.ndarray) -> float:
    """max|x - ref| / max|ref| in float64."""
    ref64 = ref.astype(np.float64)
    return float(np.abs(x.detach().double().numpy() - ref64).max() / np.abs(ref64).max())


def _abs_err(x: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(x.detach().double().numpy() - ref.astype(np.float64)).max())


def _check_stats(x: torch.Tensor, io: dict, name: str, tol: float) -> None:
    """The full-tensor float64 sum/mean/std stored with `X__sub`, relative to max|X__sub|."""
    x64 = x.detach().double()
    scale = float(np.abs(io[f"{name}__sub"]).max())
    assert tuple(x.shape) == tuple(int(s) for s in io[f"{name}__shape"]), name
    assert abs(float(x64.mean()) - float(io[f"{name}__mean"])) <= tol * scale, name
    assert abs(float(x64.std()) - float(io[f"{name}__std"])) <= tol * scale, name
    assert abs(float(x64.sum()) - float(io[f"{name}__sum"])) <= tol * scale * x.numel(), name


# Sub-slices of io.npz (README table).
SUB = {
    "f16thin": lambda x: x[:, ::8],
    "f16": lambda x: x[:, ::16],
    "f8": lambda x: x[:, ::16, ::2, ::2],
    "f4": lambda x: x[:, ::16, ::4, ::4],
    "v16": lambda x: x[:, ::8],
    "affinity": lambda x: x[:, :, ::8],
    "readout": lambda x: x[:, ::8],
    "full_res": lambda x: x[:, :, ::4, ::4],
    "prob": lambda x: x[:, :, ::2, ::2],
}


def _check_encoders(io: dict, frame: str, k16, qv16, f16, f8, f4, tol: float) -> None:
    """Encoder outputs against the stored float32 run (README: 1e-4 x max|ref|)."""
    assert _rel_err(k16, io[f"k16_{frame}"]) <= tol
    assert _rel_err(SUB["f16thin"](qv16), io[f"f16thin_{frame}__sub"]) <= tol
    assert _rel_err(SUB["f8"](f8), io[f"f8_{frame}__sub"]) <= tol
    assert _rel_err(SUB["f4"](f4), io[f"f4_{frame}__sub"]) <= tol
    for name, x in (("f16thin", qv16), ("f8", f8), ("f4", f4)):
        _check_stats(x, io, f"{name}_{frame}", tol)
    if frame == "f0":
        assert _rel_err(SUB["f16"](f16), io["f16_f0__sub"]) <= tol
        _check_stats(f16, io, "f16_f0", tol)


# --------------------------------------------------------------------------------------
# Checkpoint layout
# --------------------------------------------------------------------------------------


def test_state_dict_matches_keys_json():
    keys = json.loads((STCN_DIR / "keys.json").read_text())
    with torch.device("meta"):
        state = STCN().state_dict()
    ours = [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in state.items()]
    assert len(ours) == len(keys) == 405
    assert ours == keys  # same names, shapes, dtypes and order: no renaming needed


def test_load_state_dict_strict_and_stage0_conv1():
    net = _empty_stcn()
    state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    state["decoder.pred.weight"].normal_()
    load_stcn_state_dict(net, state)
    assert torch.equal(net.decoder.pred.weight, state["decoder.pred.weight"])

    # A stage-0 (single-object) value encoder has 4 input channels: a zero 5th one is added.
    stage0 = dict(state)
    stage0["value_encoder.conv1.weight"] = state["value_encoder.conv1.weight"][:, :4].clone()
    load_stcn_state_dict(net, stage0)
    assert torch.equal(net.value_encoder.conv1.weight[:, :4], stage0["value_encoder.conv1.weight"])
    assert torch.all(net.value_encoder.conv1.weight[:, 4] == 0)

    broken = {("module." + k if k.startswith("decoder.") else k): v for k, v in state.items()}
    broken["value_encoder.extra"] = torch.zeros(1)
    broken["key_comp.bias"] = torch.zeros(3)
    with pytest.raises(UserError) as err:
        load_stcn_state_dict(net, broken, where="x.pth")
    msg = str(err.value)
    assert "\n" not in msg and "x.pth" in msg
    assert "missing 22: decoder.compress.downsample.weight" in msg
    assert "unexpected 23: module.decoder.compress.downsample.weight" in msg and "(+18 more)" in msg
    assert "wrong shape 1: key_comp.bias (3,) vs network (512,)" in msg
    with pytest.raises(UserError, match="not a state dict of the STCN network"):
        load_stcn_state_dict(net, {"network": state})


# --------------------------------------------------------------------------------------
# Fixture outputs
# --------------------------------------------------------------------------------------


def test_fixture_float64_matches_reference_chain(io, filled_net):
    """float64 port vs the float64 reference: limited by float32 storage, no pixel flips."""
    net = copy.deepcopy(filled_net).double()
    f64 = torch.float64
    with torch.no_grad():
        k16, qv16_0, f16, f8, f4 = net.encode_key(_t(io["in_frame0"], f64))
        _check_encoders(io, "f0", k16, qv16_0, f16, f8, f4, tol=1e-4)  # stored run is float32
        v16 = net.encode_value(_t(io["in_frame0"], f64), f16, _t(io["in_masks_vo"], f64))
        assert v16.shape == (2, 512, 1, 12, 20)
        assert _rel_err(SUB["v16"](v16), io["v16_f0__sub"]) <= 1e-4
        _check_stats(v16, io, "v16_f0", 1e-4)
        # The "others" channel the value encoder saw is the README's in_others_vo.
        assert torch.equal(others_masks(_t(io["in_masks_vo"], f64)), _t(io["in_others_vo"], f64))

        bank = MemoryBank(top_k=20)
        bank.add(k16, v16[:, :, 0], 0)
        assert bank.keys.shape == (1, 64, 240) and bank.values.shape == (2, 512, 240)
        qk16, qv16, _, qf8, qf4 = net.encode_key(_t(io["in_frame1"], f64))
        _check_encoders(io, "f1", qk16, qv16, None, qf8, qf4, tol=1e-4)

        raw = memory_affinity(bank.keys, qk16.flatten(2))
        assert _rel_err(SUB["affinity"](raw), io["f64ref__raw_affinity__sub"]) <= 1e-6
        affinity = topk_softmax(raw, 20)
        assert _abs_err(SUB["affinity"](affinity), io["f64ref__affinity_topk__sub"]) <= 1e-6
        assert torch.all((affinity > 0).sum(1) <= 20)
        readout = bank.read(qk16)
        assert torch.equal(readout, (bank.values @ affinity).view(2, 512, 12, 20))
        assert _rel_err(SUB["readout"](readout), io["f64ref__readout_mem__sub"]) <= 1e-6

        # One decoder pass (the costly part in float64): segment() with hooks on the decoder.
        captured: dict[str, torch.Tensor] = {}
        hooks = [
            net.decoder.register_forward_pre_hook(lambda m, i: captured.update(x16=i[0])),
            net.decoder.pred.register_forward_hook(lambda m, i, o: captured.update(lowres=o)),
            net.decoder.register_forward_hook(lambda m, i, o: captured.update(logits=o)),
        ]
        try:
            seg = net.segment(bank, qf8, qf4, qk16, qv16)
        finally:
            for h in hooks:
                h.remove()
        assert torch.equal(captured["x16"][:, :512], readout)  # readout first, then qv16
        assert torch.equal(captured["x16"][:, 512:], qv16.expand(2, -1, -1, -1))
        logits = captured["logits"]
        assert _rel_err(captured["lowres"], io["f64ref__dec_pred_lowres"]) <= 1e-6
        assert _rel_err(SUB["full_res"](logits), io["f64ref__dec_logits__sub"]) <= 1e-6
        _check_stats(logits, io, "f64ref__dec_logits", 1e-6)
        assert torch.equal(seg, torch.sigmoid(logits))
        assert _abs_err(SUB["full_res"](seg), io["f64ref__seg_sigmoid__sub"]) <= 1e-6
        prob = soft_aggregate(seg)
        assert prob.shape == (3, 1, 192, 320)
        assert _abs_err(SUB["prob"](prob), io["f64ref__prob_f1_withbg__sub"]) <= 1e-6
        _check_stats(prob, io, "f64ref__prob_f1_withbg", 1e-6)


def test_fixture_float32_through_propagate(io, filled_net):
    """The inference procedure on the 2-frame fixture clip vs the float32 reference
    (README tolerances), with intermediates captured by hooks."""
    net = filled_net
    seen: dict[str, list] = {k: [] for k in ("enc", "k16", "qv16", "value", "x16", "lowres", "logits")}
    hooks = [
        net.key_encoder.register_forward_hook(lambda m, i, o: seen["enc"].append(o)),
        net.key_proj.register_forward_hook(lambda m, i, o: seen["k16"].append(o)),
        net.key_comp.register_forward_hook(lambda m, i, o: seen["qv16"].append(o)),
        net.value_encoder.register_forward_hook(lambda m, i, o: seen["value"].append(o)),
        net.decoder.register_forward_pre_hook(lambda m, i: seen["x16"].append(i[0])),
        net.decoder.pred.register_forward_hook(lambda m, i, o: seen["lowres"].append(o)),
        net.decoder.register_forward_hook(lambda m, i, o: seen["logits"].append(o)),
    ]
    frames = [_t(io["in_frame0"]), _t(io["in_frame1"])]
    try:
        with torch.no_grad():
            steps = list(propagate(net, frames, _t(io["in_masks_binary"]), top_k=20, mem_every=5))
    finally:
        for h in hooks:
            h.remove()

    assert [(s.t, s.memory_frame) for s in steps] == [(0, True), (1, False)]
    # Frame 0: the annotated masks, soft-aggregated (the value encoder sees in_masks_vo).
    assert torch.equal(steps[0].prob, soft_aggregate(_t(io["in_masks_binary"])))
    assert _abs_err(steps[0].prob[1:], io["in_masks_vo"]) <= 1e-12
    assert len(seen["value"]) == 1 and len(seen["enc"]) == 2  # frame 1 is last: not encoded
    for t, frame in enumerate(("f0", "f1")):
        f16, f8, f4 = seen["enc"][t]
        _check_encoders(io, frame, seen["k16"][t], seen["qv16"][t], f16, f8, f4, tol=1e-4)
    assert _rel_err(SUB["v16"](seen["value"][0].unsqueeze(2)), io["v16_f0__sub"]) <= 1e-4

    raw = memory_affinity(seen["k16"][0].flatten(2), seen["k16"][1].flatten(2))
    assert _rel_err(SUB["affinity"](raw), io["raw_affinity__sub"]) <= 2e-5
    assert _abs_err(SUB["affinity"](topk_softmax(raw, 20)), io["affinity_topk__sub"]) <= 0.1
    readout = seen["x16"][0][:, :512]
    assert _rel_err(SUB["readout"](readout), io["readout_mem__sub"]) <= 2e-3
    assert _rel_err(seen["lowres"][0], io["dec_pred_lowres"]) <= 2e-3
    assert _rel_err(SUB["full_res"](seen["logits"][0]), io["dec_logits__sub"]) <= 2e-3

    prob = steps[1].prob
    ref = io["prob_f1_withbg__sub"]
    flips = (SUB["prob"](prob).argmax(0).numpy() != ref.argmax(0)).mean()
    assert flips <= 1e-3
    assert (np.abs(SUB["prob"](prob).numpy() - ref) > 0.5).mean() <= 1e-3


# --------------------------------------------------------------------------------------
# Procedure and tracker
# --------------------------------------------------------------------------------------


def test_pad_unpad_and_resize_size():
    x = torch.arange(2 * 3 * 37 * 50, dtype=torch.float32).view(2, 3, 37, 50)
    padded, pad = pad_to_multiple(x, 16)
    assert padded.shape == (2, 3, 48, 64) and pad == (7, 7, 5, 6)
    assert torch.equal(unpad(padded, pad), x)
    assert padded[..., :5, :].abs().sum() == 0 and padded[..., :, -7:].abs().sum() == 0
    assert pad_to_multiple(x[..., :32, :48], 16)[1] == (0, 0, 0, 0)
    assert short_side_size(1080, 1920, 480) == (480, 853)
    assert short_side_size(640, 360, 480) == (853, 480)


def test_soft_aggregate_and_topk_softmax():
    p = torch.tensor([[0.9, 0.0, 0.5], [0.05, 0.0, 0.5]])
    out = soft_aggregate(p)
    assert out.shape == (3, 3) and torch.allclose(out.sum(0), torch.ones(3))
    assert out[:, 0].argmax() == 1 and out[:, 1].argmax() == 0
    # Huge affinities must not overflow (upstream's un-shifted exp would give NaN).
    aff = torch.tensor([[[1e5, 0.0], [1e5 - 1, 5.0], [-3.0, 4.0]]])
    w = topk_softmax(aff, top_k=2)
    assert torch.isfinite(w).all() and torch.allclose(w.sum(1), torch.ones(1, 2))
    assert w[0, 2, 0] == 0 and w[0, 0, 1] == 0
    assert torch.allclose(w[0, :2, 0], torch.softmax(torch.tensor([1.0, 0.0]), 0))
    assert torch.allclose(topk_softmax(aff, top_k=20).sum(1), torch.ones(1, 2))  # k capped at N


class _CountingNet(STCN):
    """Records which frames' values go into memory."""

    def __init__(self):
        super().__init__()
        self.valued: list[torch.Tensor] = []

    def encode_value(self, frame, key_f16, masks):
        self.valued.append(frame)
        return super().encode_value(frame, key_f16, masks)


@pytest.fixture(scope="module")
def small_net():
    """A _CountingNet with cheap random weights (fan-in scaled normal, identity BN stats)."""
    with torch.device("meta"):
        net = _CountingNet()
    net.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point():
                t.zero_()
            elif name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "1.weight")) and t.dim() == 1:
                t.fill_(1.0)
            elif t.dim() <= 1:
                t.zero_()
            else:
                t.normal_(0.0, (1.0 / (t.numel() / t.shape[0])) ** 0.5, generator=gen)
    return net


def test_memory_schedule_every_5_frames_but_never_the_last(small_net):
    frames = [torch.full((1, 3, 32, 32), float(t)) for t in range(12)]
    masks = torch.zeros(2, 1, 32, 32)
    masks[0, :, :16], masks[1, :, 16:, :8] = 1, 1
    # (T, mem_every, frames flagged as memory frames, frames whose value is written)
    cases = ((12, 5, [0, 5, 10], [0, 5, 10]), (11, 5, [0, 5, 10], [0, 5]), (6, 2, [0, 2, 4], [0, 2, 4]))
    for T, mem_every, flagged, written in cases:
        small_net.valued.clear()
        with torch.no_grad():
            steps = list(propagate(small_net, iter(frames[:T]), masks, top_k=20, mem_every=mem_every))
        assert [s.t for s in steps] == list(range(T))
        assert [s.t for s in steps if s.memory_frame] == flagged
        assert [int(f.flatten()[0]) for f in small_net.valued] == written
        assert all(s.prob.shape == (3, 1, 32, 32) for s in steps)
        assert all(torch.allclose(s.prob.sum(0), torch.ones(1, 32, 32)) for s in steps)


def test_tracker_shapes_first_frame_and_reversed_clip(small_net):
    rng = np.random.default_rng(0)
    T, H, W = 7, 40, 56  # not multiples of 16: exercises padding
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    first = np.zeros((2, H, W), dtype=bool)
    first[0, 5:25, 10:30] = True  # hand
    first[1, 20:35, 30:50] = True  # object (overlap removed: a label map)
    first[1, 20:25, 10:30] = False
    tracker = STCNTracker("cpu", STCNTrackerConfig(short_side=None), network=small_net)
    out = tracker.track(frames, first)
    assert out.shape == (T, 2, H, W) and out.dtype == torch.bool
    assert torch.equal(out[0], torch.from_numpy(first))  # frame 0 reproduces the annotation
    assert not (out[:, 0] & out[:, 1]).any()  # argmax labels are disjoint

    # Reversed numpy view (negative strides) and torch input give the same as a copy.
    rev = tracker.track(frames[::-1], first)
    rev_copy = tracker.track(torch.from_numpy(frames[::-1].copy()), torch.from_numpy(first))
    assert torch.equal(rev, rev_copy)

    # eval_generic resizing (short side 32 here): masks go down (nearest) and back (bilinear).
    resized = STCNTracker("cpu", STCNTrackerConfig(short_side=32), network=small_net).track(frames, first)
    assert resized.shape == (T, 2, H, W)
    assert (resized[0] != torch.from_numpy(first)).float().mean() < 0.05


def test_tracker_rejects_bad_input(small_net):
    tracker = STCNTracker("cpu", network=small_net)
    frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="uint8"):
        tracker.track(frames.astype(np.float32), np.zeros((2, 32, 32), bool))
    with pytest.raises(UserError, match=r"\(K, 32, 32\)"):
        tracker.track(frames, np.zeros((2, 16, 32), bool))
    with pytest.raises(UserError, match="bool"):
        tracker.track(frames, np.zeros((2, 32, 32), np.uint8))


# --------------------------------------------------------------------------------------
# Checkpoint errors
# --------------------------------------------------------------------------------------


def test_missing_checkpoint_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        STCNTracker("cpu")
    msg = str(err.value)
    assert "\n" not in msg and "stcn/stcn.pth" in msg and "stcn" in msg
    assert "1mRrE0uCI2ktdWlUgapJI_KmgeIiF2eOm" in msg


def test_unreadable_or_foreign_checkpoint_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    (tmp_path / "stcn").mkdir()
    path = tmp_path / "stcn" / "stcn.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read STCN checkpoint") as err:
        STCNTracker("cpu")
    assert "\n" not in str(err.value)
    torch.save({"key_proj.key_proj.weight": torch.zeros(64, 1024, 3, 3)}, path)
    with pytest.raises(UserError, match=r"does not match the STCN network: missing 404") as err:
        STCNTracker("cpu")
    assert "\n" not in str(err.value)
