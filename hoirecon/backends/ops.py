"""Detection ops in pure torch with torchvision's semantics: ROI align and NMS.

torchvision cannot be installed here, so the detectors (100DOH, PointRend) use these instead.
They follow ``torchvision.ops.roi_align`` / ``nms`` / ``batched_nms`` exactly (up to float
summation order), including the legacy ``aligned=False`` ROI align that Detectron-era models
(faster-rcnn.pytorch, maskrcnn-benchmark) were trained with.

Box convention: ``(x1, y1, x2, y2)`` in pixels, continuous coordinates, width ``x2 - x1``.
Legacy Caffe-era code measures widths as ``x2 - x1 + 1``; ``nms(..., legacy_plus_one=True)``
reproduces that IoU (same as adding 1 to x2, y2 before calling torchvision's ``nms``).
"""

from __future__ import annotations

import numpy as np
import torch

# Upper bound on the number of elements of the (rois, C, ph, W) intermediate of one ROI chunk.
_ROI_CHUNK_ELEMENTS = 1 << 25


def _axis_sample_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor,
                         pooled: int, size: int, max_grid: int) -> torch.Tensor:
    """Per-ROI weights of one image axis: output bin -> feature-map row (or column).

    ``start, bin_size``: (K,) ROI start and bin size in feature-map units; ``grid``: (K,) int64
    samples per bin along this axis (may be <= 0: then the ROI gets no samples).
    Returns ``A``: (K, pooled, size) with ``A[k, p, h]`` = sum over the bin's samples of the
    bilinear weight of row ``h``, divided by the number of samples along this axis. Because
    bilinear interpolation (and torchvision's out-of-range test) factorises over y and x, the
    pooled value is ``A_y @ feat @ A_x^T``, the same sum as torchvision's per-sample loop.
    """
    K = start.shape[0]
    dtype = start.dtype
    p = torch.arange(pooled, device=start.device, dtype=dtype).view(1, pooled, 1)
    i = torch.arange(max_grid, device=start.device).view(1, 1, max_grid)
    grid_f = grid.clamp(min=1).to(dtype).view(K, 1, 1)
    # Same expression order as torchvision: start + p * bin + (i + .5) * bin / grid.
    coord = (start.view(K, 1, 1) + p * bin_size.view(K, 1, 1)
             + (i.to(dtype) + 0.5) * bin_size.view(K, 1, 1) / grid_f)
    valid = (coord >= -1.0) & (coord <= size) & (i < grid.view(K, 1, 1))
    coord = coord.clamp(min=0)
    low = coord.floor().to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(dtype))
    w_high = frac * valid
    w_low = (1.0 - frac) * valid
    A = torch.zeros(K, pooled, size, dtype=dtype, device=start.device)
    A.scatter_add_(2, low.expand(K, pooled, max_grid), w_low.expand(K, pooled, max_grid))
    A.scatter_add_(2, high.expand(K, pooled, max_grid), w_high.expand(K, pooled, max_grid))
    return A / grid_f


def roi_align(input: torch.Tensor, rois: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> torch.Tensor:
    """ROI align with the semantics of ``torchvision.ops.roi_align`` (its CPU/CUDA kernels).

    Args:
        input: (N, C, H, W) feature map.
        rois: (K, 5) rows ``[batch_idx, x1, y1, x2, y2]`` in image coordinates.
        output_size: ``(ph, pw)`` or an int for both.
        spatial_scale: image -> feature-map scale (e.g. 1/16).
        sampling_ratio: samples per bin along each axis; ``<= 0`` means adaptive,
            ``ceil(roi_h / ph)`` x ``ceil(roi_w / pw)`` per ROI (computed in feature units).
        aligned: ``True`` shifts the box by -0.5 pixel (pixel centres at integer + 0.5);
            ``False`` is the legacy behaviour: no shift, and the ROI width/height are clamped
            to at least 1 feature pixel (so degenerate or inverted boxes pool a 1x1 cell).
            With ``aligned=True`` nothing is clamped; a box of size <= 0 with an adaptive
            ratio gets no samples and pools to 0.

    Returns:
        (K, C, ph, pw): for each bin, the mean of ``grid_h * grid_w`` bilinear samples at
        ``y = y1' + ph_i * bin_h + (iy + 0.5) * bin_h / grid_h`` (same for x), where
        ``y1' = y1 * spatial_scale - 0.5 * aligned``. A sample with ``y < -1``, ``y > H``,
        ``x < -1`` or ``x > W`` contributes 0; otherwise coordinates below 0 are clamped to 0
        and those at or beyond the last row/column read that row/column only.

    Differentiable with respect to ``input``. Unlike torchvision, gradients would also flow
    into ``rois`` through the bilinear weights; detach the boxes if that is unwanted.
    ``rois`` must be finite.
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    ph, pw = int(output_size[0]), int(output_size[1])
    if input.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align expects input (N,C,H,W) and rois (K,5); got "
                         f"{tuple(input.shape)} and {tuple(rois.shape)}")
    N, C, H, W = input.shape
    K = rois.shape[0]
    out = input.new_zeros(K, C, ph, pw)
    if K == 0:
        return out
    rois = rois.to(input.dtype)
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / ph
    bin_w = roi_w / pw
    if sampling_ratio > 0:
        grid_h = torch.full((K,), sampling_ratio, dtype=torch.int64, device=input.device)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(roi_h / ph).to(torch.int64)
        grid_w = torch.ceil(roi_w / pw).to(torch.int64)
    max_grid_h = max(int(grid_h.max()), 1)
    max_grid_w = max(int(grid_w.max()), 1)
    A_y = _axis_sample_weights(y1, bin_h, grid_h, ph, H, max_grid_h)  # (K, ph, H)
    A_x = _axis_sample_weights(x1, bin_w, grid_w, pw, W, max_grid_w)  # (K, pw, W)

    batch_idx = rois[:, 0].to(torch.int64)
    chunk = max(1, _ROI_CHUNK_ELEMENTS // max(1, C * ph * W))
    for n in torch.unique(batch_idx).tolist():
        sel = (batch_idx == n).nonzero().squeeze(1)
        feat = input[n].permute(1, 0, 2).reshape(H, C * W)  # rows of the map, all channels
        for s in range(0, sel.numel(), chunk):
            idx = sel[s:s + chunk]
            k = idx.numel()
            # One GEMM over all ROIs of the chunk for y, then a batched one per ROI for x.
            rows = (A_y[idx].reshape(k * ph, H) @ feat).view(k, ph * C, W)  # (k, ph*C, W)
            pooled = torch.bmm(rows, A_x[idx].transpose(1, 2))  # (k, ph*C, pw)
            out[idx] = pooled.view(k, ph, C, pw).permute(0, 2, 1, 3)
    return out


def box_iou_matrix(boxes_a: torch.Tensor, boxes_b: torch.Tensor,
                   legacy_plus_one: bool = False) -> torch.Tensor:
    """IoU of every pair, computed like torchvision's NMS kernel.

    ``boxes_a``: (N, 4), ``boxes_b``: (M, 4) ``x1,y1,x2,y2``. Returns (N, M).
    ``legacy_plus_one`` measures widths as ``x2 - x1 + 1`` (Caffe-era convention).
    Degenerate pairs (union 0) give NaN, which never exceeds a threshold, as in torchvision.
    """
    if legacy_plus_one:
        # Add first, then subtract: bit-identical to torchvision on ``boxes + [0, 0, 1, 1]``.
        plus = boxes_a.new_tensor([0.0, 0.0, 1.0, 1.0])
        boxes_a, boxes_b = boxes_a + plus, boxes_b + plus
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    xx1 = torch.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    yy1 = torch.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    xx2 = torch.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    yy2 = torch.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _nms_core(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
              groups: torch.Tensor | None, legacy_plus_one: bool, max_keep: int) -> torch.Tensor:
    """Greedy NMS in score order, processed in blocks of boxes.

    For each block only the boxes not yet suppressed get an IoU row (against the boxes from
    the block on); the greedy scan over those rows runs on the host. Work is
    O(alive rows x N) instead of the full N x N matrix, and stops at ``max_keep``.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms expects boxes (N,4) and scores (N,); got {tuple(boxes.shape)} "
                         f"and {tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    max_keep = max_keep if max_keep > 0 else n
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    g = groups[order] if groups is not None else None
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    block = 512
    for s in range(0, n, block):
        alive = np.nonzero(~removed[s:s + block])[0] + s
        if alive.size == 0:
            continue
        rows = torch.as_tensor(alive, device=boxes.device)
        over = box_iou_matrix(b[rows], b[s:], legacy_plus_one) > iou_threshold  # (alive, n - s)
        if g is not None:
            over &= g[rows, None] == g[None, s:]
        over_np = over.cpu().numpy()
        for r, i in enumerate(alive.tolist()):
            if removed[i]:
                continue
            keep.append(i)
            if len(keep) == max_keep:
                return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]
            # IoU is symmetric, so earlier (already decided) boxes are unaffected.
            removed[s:] |= over_np[r]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *,
        legacy_plus_one: bool = False, max_keep: int = -1) -> torch.Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        scores: (N,).
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box is
            ``> iou_threshold`` (strictly greater).
        legacy_plus_one: widths/heights (and intersections) are ``x2 - x1 + 1``; the result
            equals ``torchvision.ops.nms(boxes + [0, 0, 1, 1], ...)``.
        max_keep: stop after this many kept boxes (``<= 0``: no limit). Same prefix as the
            full result, just cheaper (RPN post-NMS top-N).

    Returns:
        (M,) int64 indices into ``boxes`` of the kept boxes, by decreasing score; ties are
        visited in index order (stable sort).
    """
    return _nms_core(boxes, scores, iou_threshold, None, legacy_plus_one, max_keep)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float, *, legacy_plus_one: bool = False) -> torch.Tensor:
    """NMS applied independently per category, as ``torchvision.ops.batched_nms``.

    ``boxes``: (N, 4), ``scores``: (N,), ``idxs``: (N,) int category of each box. Boxes of
    different categories never suppress each other. Returns (M,) int64 indices of the kept
    boxes sorted by decreasing score (over all categories).
    """
    return _nms_core(boxes, scores, iou_threshold, idxs, legacy_plus_one, -1)
