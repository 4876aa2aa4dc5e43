"""ROI align and NMS (hoirecon.backends.ops) against slow reference loops written from the
torchvision kernel definitions, and NMS on hand-made cases."""

import math

import numpy as np
import pytest
import torch

from hoirecon.backends.ops import batched_nms, box_iou_matrix, nms, roi_align


def _bilinear_ref(img, y, x):
    """torchvision's bilinear_interpolate for one channel plane img (H, W), in float64."""
    H, W = img.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return 0.0
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= H - 1:
        y_high = y_low = H - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_high = x_low = W - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * img[y_low, x_low] + hy * lx * img[y_low, x_high]
            + ly * hx * img[y_high, x_low] + ly * lx * img[y_high, x_high])


def _roi_align_ref(inp, rois, ph, pw, scale, sampling_ratio, aligned):
    """Per-ROI, per-bin, per-sample loop: the torchvision ROIAlign forward, float64."""
    inp = inp.double()
    K, C = rois.shape[0], inp.shape[1]
    out = torch.zeros(K, C, ph, pw, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    for k in range(K):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (float(v) for v in rois[k, 1:])
        sw, sh = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sw, y2 * scale - off - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for c in range(C):
            img = inp[b, c]
            for i in range(ph):
                for j in range(pw):
                    acc = 0.0
                    for iy in range(gh):
                        y = sh + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sw + j * bw + (ix + 0.5) * bw / gw
                            acc += float(_bilinear_ref(img, y, x))
                    out[k, c, i, j] = acc / count
    return out


def _rois():
    # inside, partly outside, far outside, degenerate, inverted, tiny, large, second image
    return torch.tensor([
        [0, 4.0, 3.0, 40.0, 30.0],
        [0, -20.0, -12.0, 18.0, 9.0],
        [0, 200.0, 150.0, 260.0, 190.0],
        [0, 10.0, 10.0, 10.0, 10.0],
        [0, 30.0, 20.0, 12.0, 5.0],
        [1, 7.3, 8.9, 8.1, 9.4],
        [1, 0.0, 0.0, 63.9, 47.9],
        [1, 50.5, 35.25, 70.0, 52.0],
    ])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("out_hw,scale", [((7, 7), 0.25), ((3, 5), 0.5)])
def test_roi_align_matches_reference(aligned, sampling_ratio, out_hw, scale):
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(2, 3, 12, 16, generator=g)
    rois = _rois()
    got = roi_align(inp, rois, out_hw, scale, sampling_ratio, aligned)
    ref = _roi_align_ref(inp, rois, out_hw[0], out_hw[1], scale, sampling_ratio, aligned)
    assert got.shape == (rois.shape[0], 3) + out_hw
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_roi_align_adaptive_grid_varies_per_roi_and_gradients_flow():
    # ROIs of very different sizes share one call: each must use its own ceil(size/out) grid.
    g = torch.Generator().manual_seed(1)
    inp = torch.randn(1, 2, 20, 24, generator=g, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 3.0, 2.0], [0, 0.0, 0.0, 95.0, 79.0],
                         [0, 5.0, 6.0, 60.0, 13.0]])
    got = roi_align(inp, rois, 4, 0.25, 0, False)
    ref = _roi_align_ref(inp.detach(), rois, 4, 4, 0.25, 0, False)
    torch.testing.assert_close(got.detach().double(), ref, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    assert inp.grad is not None and inp.grad.abs().sum() > 0


def test_roi_align_empty_and_bad_shapes():
    inp = torch.zeros(1, 4, 5, 5)
    assert roi_align(inp, torch.zeros(0, 5), 2).shape == (0, 4, 2, 2)
    with pytest.raises(ValueError):
        roi_align(inp, torch.zeros(3, 4), 2)


def _nms_ref(boxes, scores, thr, plus_one=False):
    """torchvision's CPU NMS loop (float64 here)."""
    b = (boxes.double() + (torch.tensor([0, 0, 1.0, 1.0], dtype=torch.float64) if plus_one else 0)).tolist()
    s = scores.tolist()
    order = sorted(range(len(s)), key=lambda i: -s[i])
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    sup = [False] * len(order)
    keep = []
    for a, i in enumerate(order):
        if sup[i]:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if sup[j]:
                continue
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = w * h
            union = area[i] + area[j] - inter
            if union > 0 and inter / union > thr:
                sup[j] = True
    return keep


def test_nms_hand_cases():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # 0: best
        [1.0, 1.0, 11.0, 11.0],   # 1: IoU 81/119 = 0.68 with 0 -> suppressed at 0.5
        [20.0, 20.0, 30.0, 30.0],  # 2: disjoint -> kept
        [0.0, 0.0, 10.0, 5.0],    # 3: IoU exactly 0.5 with 0 -> kept (strictly greater)
        [21.0, 20.0, 31.0, 30.0],  # 4: IoU 90/110 with 2 -> suppressed
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [4, 0, 3]
    # Box 2 is only suppressed via box 4 (kept first, higher score).
    assert nms(boxes, scores, 0.95).tolist() == [4, 0, 1, 2, 3]
    assert nms(boxes, scores, 0.5, max_keep=2).tolist() == [4, 0]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


def test_nms_legacy_plus_one_and_degenerate_boxes():
    # Two points 1 apart: zero area without +1 (IoU NaN -> never suppressed); with +1 they are
    # 1x1 boxes that touch but do not overlap; identical points overlap fully.
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [6.0, 5.0, 6.0, 5.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.5, legacy_plus_one=True).tolist() == [0, 2]
    iou = box_iou_matrix(boxes, boxes, legacy_plus_one=True)
    assert iou[0, 1] == 1.0 and iou[0, 2] == 0.0


def test_nms_ties_keep_index_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]


@pytest.mark.parametrize("plus_one", [False, True])
def test_nms_random_against_reference(plus_one):
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(300, 2, generator=g) * 100
    wh = torch.rand(300, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(300, generator=g)
    for thr in (0.3, 0.7):
        assert nms(boxes, scores, thr, legacy_plus_one=plus_one).tolist() == \
            _nms_ref(boxes, scores, thr, plus_one)


def test_batched_nms_by_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11], [1.0, 1, 11, 11], [0.0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([0, 0, 1, 1])
    # Class 0 keeps box 0 (box 1 suppressed); class 1 keeps box 2 (box 3 suppressed).
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2]
    # Per-class result equals running nms class by class and merging by score.
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(200, 2, generator=g) * 50
    b = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 20], 1)
    s = torch.rand(200, generator=g)
    c = torch.randint(0, 3, (200,), generator=g)
    expect = []
    for k in range(3):
        sel = (c == k).nonzero().squeeze(1)
        expect += sel[nms(b[sel], s[sel], 0.4)].tolist()
    expect.sort(key=lambda i: -float(s[i]))
    assert batched_nms(b, s, c, 0.4).tolist() == expect


def test_nms_many_boxes_spanning_blocks():
    # > 512 boxes exercises the block-wise scan; reference: full IoU matrix + greedy loop.
    g = torch.Generator().manual_seed(5)
    n = 1500
    xy = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 40], 1)
    scores = torch.rand(n, generator=g)
    order = torch.argsort(scores, descending=True).tolist()
    iou = box_iou_matrix(boxes, boxes, legacy_plus_one=True).numpy()
    removed = np.zeros(n, dtype=bool)
    expect = []
    for i in order:
        if removed[i]:
            continue
        expect.append(i)
        removed |= iou[i] > 0.5
    got = nms(boxes, scores, 0.5, legacy_plus_one=True)
    assert got.tolist() == expect
    assert len(expect) > 600  # the scan really crosses block boundaries with kept boxes
    assert nms(boxes, scores, 0.5, legacy_plus_one=True, max_keep=550).tolist() == expect[:550]
