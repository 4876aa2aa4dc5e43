"""PointRend X101-FPN (Box2Mask) backend: fixture match, subdivision, pasting, checkpoint loading."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hoirecon.backends import pointrend as pr
from hoirecon.backends.detectron2_pickle import load_detectron2_pickle
from hoirecon.errors import MissingWeightsError, UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"  # tests/fixtures/official/README.md
FIX = FIXTURES / "pointrend"
LEVELS = ("p2", "p3", "p4", "p5", "p6")

# A tiny network of the same structure, for tests that need no fixture.
TINY = pr.PointRendConfig(num_classes=3, stage_blocks=(1, 1, 1, 1), num_groups=2,
                          width_per_group=4, res2_out_channels=16, fpn_channels=16,
                          box_fc_dim=32, mask_fc_dim=32, point_fc_dim=16,
                          subdivision_steps=2, subdivision_num_points=40, min_size_test=64)


def _rel(ours: torch.Tensor, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the fixture's magnitudes reach 1e9)."""
    a = ours.detach().cpu().numpy()
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


def _tiny_model(seed: int = 0) -> pr.PointRendRCNN:
    torch.manual_seed(seed)
    model = pr.PointRendRCNN(TINY).eval()
    with torch.no_grad():
        for t in model.state_dict().values():  # FrozenBN buffers too, so they are not trivial
            t.copy_(torch.randn_like(t) * 0.3 + (1.0 if t.dim() == 1 else 0.0))
            if t.dim() == 1:
                t.abs_()
    return model


# ---------------------------------------------------------------------------------------
# Fixture: the released architecture, filled with detinit.fill_
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_run():
    spec = importlib.util.spec_from_file_location("detinit", FIXTURES / "detinit.py")
    detinit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detinit)
    io = dict(np.load(FIX / "io.npz"))
    keys = json.loads((FIX / "keys.json").read_text())

    model = pr.PointRendRCNN().eval()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in pr.map_checkpoint_keys(model.state_dict()).items()]
    detinit.fill_(model)
    out = {"keys": ours, "ref_keys": keys}
    with torch.no_grad():
        rgb01 = detinit.det_input(1, 3, 320, 480, seed=0)
        x = model.normalize_and_pad((255 * rgb01).flip(1))  # RGB -> BGR, no resize
        trunk = model.backbone.bottom_up(x)
        feats = model.backbone.from_trunk(trunk)
        boxes = torch.from_numpy(io["given_boxes"])
        cls, deltas = model.box_outputs(feats, boxes)
        pred_class = cls[:, :80].argmax(1)
        coarse = model.coarse_mask_logits(feats, boxes)
        res, steps = model.subdivision_start()
        points = pr.regular_grid_points(boxes.shape[0], res, "cpu")
        point_logits = model.point_logits(feats, boxes, points, coarse)
        out.update(x=x, trunk=trunk, feats=feats, rpn=model.rpn_outputs(feats),
                   pooled=model.box_pooled(feats, boxes),
                   box_fc=model.roi_heads.box_head(model.box_pooled(feats, boxes)),
                   cls=cls, deltas=deltas, pred_class=pred_class, coarse=coarse, res=res,
                   steps=steps, points=points,
                   fine=pr.sample_roi_points(feats["p2"], 4, boxes, points),
                   point_logits=point_logits, model=model)
    return out, io


def test_state_dict_matches_keys_json(fixture_run):
    out, _ = fixture_run
    assert len(out["keys"]) == len(out["ref_keys"]) == 566
    assert out["keys"] == out["ref_keys"]  # names, shapes, dtypes, in order


def test_backbone_matches_fixture(fixture_run):
    out, io = fixture_run
    assert _rel(out["x"][:, :, ::8, ::8], io["norm_image_sub"]) < 1e-6
    assert list(out["x"].shape) == io["norm_image_shape"].tolist()
    for k in ("res2", "res3", "res4", "res5"):
        t = out["trunk"][k]
        assert _rel(t.mean((0, 2, 3)), io[f"bottomup_{k}_chan_mean"]) < 3e-5, k
        stats = torch.stack([t.mean(), t.std(), t.min(), t.max(), t.abs().mean()])
        np.testing.assert_allclose(stats.numpy(), io[f"bottomup_{k}_stats"], rtol=3e-5,
                                   atol=3e-5 * float(np.abs(io[f"bottomup_{k}_stats"]).max()))
    subs = {"p2": (slice(None), slice(None, None, 8), slice(None, None, 2), slice(None, None, 2)),
            "p3": (slice(None), slice(None, None, 8)), "p4": (slice(None), slice(None, None, 4)),
            "p5": (...,), "p6": (...,)}
    for level in LEVELS:
        f = out["feats"][level]
        assert list(f.shape) == io[f"{level}_shape"].tolist()
        assert _rel(f[subs[level]], io[f"{level}_sub"]) < 3e-5, level
        assert _rel(f.mean((0, 2, 3)), io[f"{level}_chan_mean"]) < 3e-5, level
        assert _rel(f.std((0, 2, 3)), io[f"{level}_chan_std"]) < 3e-5, level


def test_rpn_head_and_anchors_match_fixture(fixture_run):
    out, io = fixture_run
    logits, deltas = out["rpn"]
    for i, level in enumerate(LEVELS):
        s = (..., slice(None, None, 2), slice(None, None, 2)) if level == "p2" else (...,)
        assert _rel(logits[i][s], io[f"rpn_{level}_objectness"]) < 3e-3, level
        assert _rel(deltas[i][s], io[f"rpn_{level}_deltas"]) < 3e-3, level
    anchors = pr.cell_anchors(pr.PointRendConfig().anchor_sizes,
                              pr.PointRendConfig().anchor_aspect_ratios)
    assert _rel(anchors, io["rpn_cell_anchors"]) < 1e-6


def test_box2mask_heads_match_fixture(fixture_run):
    out, io = fixture_run
    assert _rel(out["pooled"][:, ::16], io["given_box_pooled_sub"]) < 3e-5
    assert _rel(out["box_fc"], io["given_box_fc"]) < 3e-3
    assert _rel(out["cls"], io["given_cls_logits"]) < 3e-3
    assert _rel(out["deltas"], io["given_box_deltas"]) < 3e-3
    assert out["pred_class"].tolist() == io["given_pred_class"].tolist()
    assert _rel(out["coarse"], io["given_coarse_mask_logits"]) < 3e-3
    assert (out["res"], out["steps"]) == (int(io["given_point_grid_res"]), 3)
    assert _rel(out["points"], io["given_point_coords"]) < 1e-6
    assert _rel(out["fine"][:, ::16], io["given_point_fine_sub"]) < 3e-5
    picked = pr.class_logits(out["point_logits"], out["pred_class"])[:, 0]
    assert _rel(picked, io["given_point_logits_predclass"]) < 3e-3


def test_masks_for_boxes_on_filled_model(fixture_run):
    """The whole Box2Mask path (resize, pad_box, clip, classes, subdivision, paste) runs on
    the released architecture; masks stay inside their padded boxes."""
    out, _ = fixture_run
    cfg = pr.PointRendConfig(min_size_test=64)  # 40x60 -> 64x96: exercises the PIL resize
    seg = pr.PointRendBox2Mask("cpu", cfg=cfg, model=out["model"])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 30, 25], [20, 10, 58, 39], [70, 0, 80, 10]], np.float32)
    masks = seg.masks_for_boxes(image, boxes, is_object=[True, False, True])
    assert masks.shape == (3, 40, 60) and masks.dtype == torch.bool
    assert not masks[2].any()  # box entirely outside the image
    padded = pr.pad_boxes(torch.from_numpy(boxes), 0.1)
    ys, xs = torch.meshgrid(torch.arange(40) + 0.5, torch.arange(60) + 0.5, indexing="ij")
    for i in range(2):
        x0, y0, x1, y1 = padded[i].tolist()
        outside = (xs < x0 - 1) | (xs > x1 + 1) | (ys < y0 - 1) | (ys > y1 + 1)
        assert not masks[i][outside].any()


# ---------------------------------------------------------------------------------------
# No fixture needed
# ---------------------------------------------------------------------------------------


def test_subdivision_recomputes_most_uncertain_cells():
    """One subdivision step = bilinear x2 of the previous logits, then the point head at
    the centres of the K cells with the smallest |logit| of each ROI's class."""
    model = _tiny_model()
    fewer = pr.PointRendRCNN(pr.PointRendConfig(**{**TINY.__dict__, "subdivision_steps": 1}))
    fewer.load_state_dict(model.state_dict())
    fewer.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 96))
        boxes = torch.tensor([[4.0, 6.0, 50.0, 40.0], [30.0, 2.0, 90.0, 60.0]])
        classes = torch.tensor([2, 0])
        assert model.subdivision_start() == (7, 2) and fewer.subdivision_start() == (7, 1)
        prev = fewer.mask_logits(feats, boxes, classes)  # (2, 3, 14, 14)
        final = model.mask_logits(feats, boxes, classes)  # (2, 3, 28, 28)
        coarse = model.coarse_mask_logits(feats, boxes)
        up = F.interpolate(prev, scale_factor=2, mode="bilinear", align_corners=False)
        expected = up.clone()
        for r in range(2):
            order = torch.argsort(up[r, classes[r]].abs().flatten(), stable=True)
            cells = order[:TINY.subdivision_num_points]
            rows, cols = cells // 28, cells % 28
            centres = torch.stack([(cols + 0.5) / 28, (rows + 0.5) / 28], dim=-1)[None]
            logits = model.point_logits(feats, boxes[r:r + 1], centres, coarse[r:r + 1])
            expected[r][:, rows, cols] = logits[0]
    assert final.shape == (2, 3, 28, 28)
    # Float noise only (batching/coordinate rounding); a wrong cell or x/y swap is O(max).
    torch.testing.assert_close(final, expected, rtol=0, atol=1e-5 * float(final.abs().max()))


def test_point_sampling_matches_roi_grid():
    """Sampling a feature map at box-relative grid centres = bilinear lookup at the
    image-space bin centres (pixel centres at integer + 0.5)."""
    feat = torch.arange(2 * 10 * 12, dtype=torch.float32).view(1, 2, 10, 12)
    box = torch.tensor([[8.0, 4.0, 24.0, 20.0]])  # stride 2 -> feature cells 4..12, 2..10
    pts = pr.regular_grid_points(1, 4, "cpu")
    got = pr.sample_roi_points(feat, 2, box, pts)  # (1, 2, 16)
    xs = (8 + (torch.arange(4) + 0.5) * 4) / 2 - 0.5  # feature-pixel coordinates
    ys = (4 + (torch.arange(4) + 0.5) * 4) / 2 - 0.5
    # feat[c, y, x] = c*120 + 12 y + x is linear, so bilinear sampling is exact.
    ref = (torch.arange(2)[:, None, None] * 120 + 12 * ys[None, :, None] + xs[None, None, :])
    torch.testing.assert_close(got.view(2, 4, 4), ref.float())


def test_paste_masks_fills_exactly_the_box():
    masks = torch.ones(2, 28, 28)
    boxes = torch.tensor([[10.0, 5.0, 20.0, 15.0], [-3.0, 30.0, 6.0, 45.0]])
    pasted = pr.paste_masks(masks, boxes, 40, 50)
    ref = torch.zeros(2, 40, 50, dtype=torch.bool)
    ref[0, 5:15, 10:20] = True
    ref[1, 30:40, 0:6] = True
    assert torch.equal(pasted, ref)


def test_resize_shape_and_pad_box():
    assert pr.resize_shortest_edge_shape(320, 480, 800, 1333) == (800, 1200)
    assert pr.resize_shortest_edge_shape(1080, 1920, 800, 1333) == (750, 1333)
    padded = pr.pad_boxes(torch.tensor([[10.0, 20.0, 110.0, 70.0]]), 0.1)
    torch.testing.assert_close(padded, torch.tensor([[0.0, 15.0, 120.0, 75.0]]))
    model = pr.PointRendRCNN(TINY)
    x = model.normalize_and_pad(torch.zeros(1, 3, 40, 70))
    assert x.shape == (1, 3, 64, 96) and (x[..., 40:, :] == 0).all()


# ---------------------------------------------------------------------------------------
# Checkpoint
# ---------------------------------------------------------------------------------------


def _zoo_layout(model: pr.PointRendRCNN) -> dict[str, np.ndarray]:
    """The state dict as the zoo .pkl is expected to hold it (old coarse-head FC names,
    cell anchors, pixel mean/std)."""
    out = {}
    for k, v in model.state_dict().items():
        out[k.replace("coarse_head.fc", "coarse_head.coarse_mask_fc")] = v.numpy().copy()
    out["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    out["proposal_generator.anchor_generator.cell_anchors.0"] = np.zeros((3, 4), np.float32)
    return out


def test_missing_checkpoint_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        pr.PointRendBox2Mask("cpu")
    msg = str(err.value)
    assert "model_final_ba17b9.pkl" in msg and "\n" not in msg and "pointrend" in msg


def test_zoo_pickle_loads_strictly(tmp_path, monkeypatch):
    src = _tiny_model(seed=3)
    (tmp_path / "pointrend").mkdir()
    with open(tmp_path / "pointrend" / "model_final_ba17b9.pkl", "wb") as f:
        pickle.dump({"model": _zoo_layout(src), "__author__": "FAIR"}, f, protocol=2)
    monkeypatch.setenv("HOIRECON_WEIGHTS", str(tmp_path))
    seg = pr.PointRendBox2Mask("cpu", cfg=TINY)
    for k, v in src.state_dict().items():
        assert torch.equal(seg.model.state_dict()[k], v), k
    masks = seg.masks_for_boxes(np.zeros((30, 40, 3), np.uint8), [[2, 2, 20, 20]])
    assert masks.shape == (1, 30, 40)


def test_mismatched_checkpoint_names_keys(tmp_path):
    state = _zoo_layout(_tiny_model())
    del state["roi_heads.box_predictor.cls_score.bias"]
    state["roi_heads.extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(UserError, match=r"x.pkl does not match PointRend X101-FPN: "
                                        r"missing 1: roi_heads.box_predictor.cls_score.bias"
                                        r"; unexpected 1: roi_heads.extra.weight$"):
        pr.load_state_strict(pr.PointRendRCNN(TINY), state, "x.pkl")
    state = _zoo_layout(_tiny_model())
    state["roi_heads.box_predictor.cls_score.bias"] = np.zeros(5, np.float32)
    with pytest.raises(UserError, match=r"wrong shape 1: roi_heads.box_predictor.cls_score.bias \(5,\) vs network"):
        pr.load_state_strict(pr.PointRendRCNN(TINY), state, "x.pkl")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": _Evil(marker)}, "__author__": "x"}))
    with pytest.raises(UserError, match="refusing to load .*system"):
        load_detectron2_pickle(path)
    assert not marker.exists()
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError):
        load_detectron2_pickle(path)


def test_numpy1_pickle_paths_are_understood(tmp_path):
    """Zoo files were written by numpy 1 (``numpy.core.multiarray``); numpy 2 renamed it."""
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float64)}
    blob = pickle.dumps({"model": arrays, "__author__": "FAIR"}, protocol=2)
    assert b"numpy._core.multiarray\n" in blob
    path = tmp_path / "old.pkl"
    path.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    loaded = load_detectron2_pickle(path)
    assert set(loaded) == {"a", "b"}
    np.testing.assert_array_equal(loaded["a"], arrays["a"])
    assert loaded["b"].dtype == np.float64
