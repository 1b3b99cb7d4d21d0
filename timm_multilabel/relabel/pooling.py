"""LabelPooling: RoIAlign of a sparse top-K label map over a crop box, then softmax.

ReLabel (Yun et al., 2021, Sec. 3.2 and Algorithm A1) turns each random crop's box into a soft
target by RoIAlign-pooling the image's label map over the box. The official code densifies the
top-K map into a ``[B, C, H, W]`` tensor and calls ``torchvision.ops.roi_align``. RoIAlign with
bilinear sampling is a linear functional of the map that is separable in y and x, so the same
numbers are computed here from per-box sampling weights ``wy [N, oh, H]`` and ``wx [N, ow, W]``
and one ``scatter_add`` of the K scores per cell into the C classes, without densifying.

Coordinate conventions (matching the official code, minus its x/y swap):
    * a map cell ``(row y, col x)`` covers the normalized image region
      ``[x / W, (x + 1) / W] x [y / H, (y + 1) / H]``; row 0 is the top, column 0 the left;
    * a normalized box ``(x1, y1, x2, y2)`` becomes map coordinates
      ``(x1 * W - 0.5, y1 * H - 0.5, x2 * W - 0.5, y2 * H - 0.5)`` (half-pixel shift, so the
      whole-image box samples exactly the cell centres and pools to the global average);
    * ``aligned=False`` (default, as the official ``roi_align(..., aligned=False)`` call on
      boxes shifted by hand): the RoI's width and height are clamped to at least one map cell;
      ``aligned=True``: torchvision's aligned mode, same shift, no clamp;
    * ``sampling_ratio=-1`` (default, as the official code): torchvision's adaptive sampling,
      ``ceil(roi_size / bins)`` bilinear samples per bin and axis, reproduced exactly.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor

from timm_multilabel.errors import UserError

__all__ = ['label_pool', 'label_pool_logits', 'roi_align_weights', 'densify_label_map', 'map_rois']


def _pair(output_size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        size = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        size = tuple(output_size)
    else:
        raise UserError(f"label_pool: output_size must be an int or (oh, ow), got {output_size!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise UserError(f"label_pool: output_size must be positive ints, got {output_size!r}")
    return size  # type: ignore[return-value]


def _axis_weights(
        start: Tensor,
        end: Tensor,
        size: int,
        bins: int,
        sampling_ratio: int,
        aligned: bool,
) -> Tensor:
    """Bilinear RoIAlign weights along one axis, averaged over each bin's samples.

    Args:
        start, end: Tensor[N], RoI start/end in map coordinates (already shifted by -0.5).
        size: map length along this axis (H or W).
        bins: number of output bins along this axis (oh or ow).

    Returns:
        Tensor[N, bins, size]: weight of map row/column ``t`` in bin ``p``, including the
        ``1 / grid`` of the bin average (the full 2-D weight is the outer product of the two axes).
    """
    roi = end - start
    if not aligned:
        roi = roi.clamp(min=1.0)
    bin_size = roi / bins  # [N]
    if sampling_ratio > 0:
        grid = torch.full_like(roi, float(sampling_ratio))
        max_grid = sampling_ratio
    else:
        grid = torch.ceil(bin_size)
        # boxes are validated to lie in [0, 1], so roi <= size (+ rounding) and grid <= size + 1
        max_grid = size + 1
    grid_c = grid.clamp(min=1.0)[:, None, None]
    i = torch.arange(max_grid, device=start.device, dtype=start.dtype)
    p = torch.arange(bins, device=start.device, dtype=start.dtype)
    # same evaluation order as torchvision's kernel: start + p * bin + (i + .5) * bin / grid
    bin_size = bin_size[:, None, None]
    pos = (start[:, None, None] + p[None, :, None] * bin_size) + (i + 0.5) * bin_size / grid_c  # [N, P, G]
    # torchvision drops samples outside [-1, size], clamps the rest into [0, size - 1] and
    # interpolates between the two nearest cells: a hat function of the clamped position.
    # Unused samples (i >= grid, or outside) are moved to -2, where every cell's hat is 0.
    used = (i < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = torch.where(used, pos.clamp(0.0, size - 1), -2.0)
    t = torch.arange(size, device=start.device, dtype=start.dtype)
    hat = (1.0 - (pos[..., None] - t).abs()).clamp_(min=0.0)  # [N, P, G, size]
    return hat.sum(2) / grid_c


def roi_align_weights(
        boxes: Tensor,
        map_size: Tuple[int, int],
        output_size: Union[int, Tuple[int, int]] = 1,
        sampling_ratio: int = -1,
        aligned: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Separable RoIAlign weights of normalized boxes on an ``H x W`` map.

    ``roi_align(x, box)[c, i, j] == sum_{y, x} wy[i, y] * wx[j, x] * x[c, y, x]`` with the
    conventions of :func:`label_pool`.

    Args:
        boxes (Tensor[N, 4]): normalized ``(x1, y1, x2, y2)``, x horizontal.
        map_size: ``(H, W)`` of the map.

    Returns:
        (wy Tensor[N, oh, H], wx Tensor[N, ow, W]) in the boxes' float dtype (float32 at least).
    """
    oh, ow = _pair(output_size)
    h, w = map_size
    dtype = boxes.dtype if boxes.dtype == torch.float64 else torch.float32
    b = boxes.to(dtype)
    n = b.shape[0]
    if (h, oh) == (w, ow):  # square map and bins: both axes in one pass (fewer kernels on a GPU)
        xy = b * h - 0.5  # [N, 4] map coordinates (x1, y1, x2, y2)
        both = _axis_weights(xy[:, :2].T.reshape(-1), xy[:, 2:].T.reshape(-1), h, oh, sampling_ratio, aligned)
        return both[n:], both[:n]  # rows [x1 of every box, then y1 of every box]: (wy, wx)
    x1, y1, x2, y2 = (b[:, 0] * w - 0.5, b[:, 1] * h - 0.5, b[:, 2] * w - 0.5, b[:, 3] * h - 0.5)
    wy = _axis_weights(y1, y2, h, oh, sampling_ratio, aligned)
    wx = _axis_weights(x1, x2, w, ow, sampling_ratio, aligned)
    return wy, wx


def _validate(scores: Tensor, classes: Tensor, boxes: Tensor, num_classes: int, check_values: bool = True) -> None:
    if not isinstance(scores, Tensor) or scores.ndim != 4 or not scores.is_floating_point():
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise UserError(f"label_pool: scores must be a float Tensor[N, K, H, W], got {got}")
    if not isinstance(classes, Tensor) or classes.shape != scores.shape \
            or classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        got = (tuple(classes.shape), str(classes.dtype)) if isinstance(classes, Tensor) else type(classes).__name__
        raise UserError(f"label_pool: classes must be an integer Tensor shaped like scores "
                        f"{tuple(scores.shape)}, got {got}")
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape != (scores.shape[0], 4) \
            or not boxes.is_floating_point():
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise UserError(f"label_pool: boxes must be a float Tensor[{scores.shape[0]}, 4] "
                        f"(x1, y1, x2, y2), got {got}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        raise UserError(f"label_pool: num_classes must be a positive int, got {num_classes!r}")
    if not check_values or scores.shape[0] == 0 or scores.numel() == 0:
        return
    # every value check in one host round trip (a single sync when the tensors are on a GPU)
    eps = 1e-4
    lo, hi = torch.aminmax(classes)
    in_range = ((boxes >= -eps) & (boxes <= 1 + eps)).all(1)  # NaN fails both comparisons
    bad = ~in_range | (boxes[:, 2:] < boxes[:, :2]).any(1)
    finite = torch.isfinite(scores).all()
    lo, hi, any_bad, finite = torch.stack([lo.float(), hi.float(), bad.any().float(), finite.float()]).tolist()
    if not finite:
        k = int((~torch.isfinite(scores.reshape(scores.shape[0], -1))).any(1).nonzero()[0, 0])
        raise UserError(f"label_pool: label map {k} has NaN or inf scores")
    if lo < 0 or hi >= num_classes:
        raise UserError(f"label_pool: label-map class ids span [{int(lo)}, {int(hi)}], outside "
                        f"[0, {num_classes - 1}] (num_classes={num_classes})")
    if any_bad:
        k = int(bad.nonzero()[0, 0])
        raise UserError(f"label_pool: box {k} = {[round(float(v), 4) for v in boxes[k]]} is not a normalized "
                        f"(x1, y1, x2, y2) with 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1")


def label_pool_logits(
        scores: Tensor,
        classes: Tensor,
        boxes: Tensor,
        num_classes: int,
        output_size: Union[int, Tuple[int, int]] = 1,
        fill: float = 0.0,
        sampling_ratio: int = -1,
        aligned: bool = False,
        check_values: bool = True,
) -> Tensor:
    """RoIAlign of sparse top-K label maps over boxes, before the softmax.

    Same arguments as :func:`label_pool`. Returns Tensor[N, C] for ``output_size=1``, else
    Tensor[N, C, oh, ow]: exactly ``roi_align(densify_label_map(scores, classes, C, fill), rois,
    output_size, spatial_scale=1, sampling_ratio, aligned)`` with the conventions of the module
    docstring, up to float rounding.
    """
    _validate(scores, classes, boxes, num_classes, check_values)
    if not isinstance(fill, (int, float)) or isinstance(fill, bool) or fill != fill or abs(fill) == float('inf'):
        raise UserError(f"label_pool: fill must be a finite number, got {fill!r}")
    oh, ow = _pair(output_size)
    n, k, h, w = scores.shape
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    wy, wx = roi_align_weights(boxes.to(dtype), (h, w), (oh, ow), sampling_ratio, aligned)
    vals = scores.to(dtype)
    if fill != 0.0:
        vals = vals - fill
    index = classes.long().reshape(n, 1, k * h * w)
    if oh == 1 and ow == 1:
        cell_w = wy[:, 0, :, None] * wx[:, 0, None, :]  # [N, H, W]
        src = (vals * cell_w[:, None]).reshape(n, k * h * w)
        out = torch.zeros(n, num_classes, device=scores.device, dtype=dtype)
        out.scatter_add_(1, index[:, 0], src)
        if fill != 0.0:
            out += fill * cell_w.sum((1, 2))[:, None]
        return out
    # [N, oh, ow, H, W] -> [N, P, H*W] with P = oh * ow output cells
    cell_w = (wy[:, :, None, :, None] * wx[:, None, :, None, :]).reshape(n, oh * ow, h * w)
    src = (vals.reshape(n, 1, k, h * w) * cell_w[:, :, None, :]).reshape(n, oh * ow, k * h * w)
    out = torch.zeros(n, oh * ow, num_classes, device=scores.device, dtype=dtype)
    out.scatter_add_(2, index.expand(n, oh * ow, k * h * w), src)
    if fill != 0.0:
        out += fill * cell_w.sum(2)[:, :, None]
    return out.reshape(n, oh, ow, num_classes).permute(0, 3, 1, 2).contiguous()


def label_pool(
        scores: Tensor,
        classes: Tensor,
        boxes: Tensor,
        num_classes: int,
        output_size: Union[int, Tuple[int, int]] = 1,
        fill: float = 0.0,
        sampling_ratio: int = -1,
        aligned: bool = False,
        check_values: bool = True,
) -> Tensor:
    """LabelPooling (ReLabel, Algorithm A1): soft targets of crops from sparse top-K label maps.

    Equals ``softmax(roi_align(dense_map, rois), dim=1)`` where ``dense_map[n, c, y, x]`` is the
    score of class ``c`` if ``c`` is among the cell's top-K classes, else ``fill``, computed
    without building the ``[N, C, H, W]`` dense map (see the module docstring for conventions).

    Args:
        scores (Tensor[N, K, H, W]): annotator logits of each cell's top-K classes; row 0 is the
            top of the image, column 0 the left. Any float dtype; pooled in float32 (float64 kept).
        classes (Tensor[N, K, H, W]): integer class ids of those scores, distinct within a cell,
            in ``[0, num_classes)``.
        boxes (Tensor[N, 4]): crop boxes as normalized ``(x1, y1, x2, y2)`` of the whole image,
            x horizontal, ``0 <= x1 <= x2 <= 1`` and ``0 <= y1 <= y2 <= 1``.
        num_classes (int): number of classes C.
        output_size (int or Tuple[int, int]): ``(oh, ow)`` output bins; 1 gives one target per
            crop, more give dense targets (token-labeling-style heads), row 0 at the crop's top.
        fill (float): logit of the classes missing from a cell's top-K (0.0, as the official code).
        sampling_ratio (int): bilinear samples per bin and axis; ``<= 0`` is torchvision's
            adaptive ``ceil(roi_size / bins)`` (the official setting).
        aligned (bool): False (official): RoI size clamped to >= 1 map cell; True: no clamp.
        check_values (bool): refuse, in one line, NaN / inf scores, class ids outside ``[0, C)``
            and boxes outside the image. Costs one device-to-host sync when the tensors are on a
            GPU, which stalls an asynchronous training step (about +5% on a ResNet-50 step on an
            H100); pass False there for maps already checked (``load_label_maps`` and train.py
            check them up front).
            Shapes and dtypes are always checked.

    Returns:
        Tensor[N, C] of probabilities summing to 1 for ``output_size=1``, else Tensor[N, C, oh, ow]
        (softmax over C in each bin), float32 (float64 for float64 scores).
    """
    logits = label_pool_logits(scores, classes, boxes, num_classes, output_size, fill, sampling_ratio, aligned,
                               check_values)
    return torch.softmax(logits, dim=1)


def densify_label_map(scores: Tensor, classes: Tensor, num_classes: int, fill: float = 0.0) -> Tensor:
    """Dense ``Tensor[N, C, H, W]`` of a sparse top-K map (classes outside the top-K get ``fill``).

    The reference the official code pools from; :func:`label_pool` never builds it.
    """
    n, k, h, w = scores.shape
    dense = torch.full((n, num_classes, h, w), float(fill), dtype=scores.dtype, device=scores.device)
    return dense.scatter_(1, classes.long(), scores)


def map_rois(boxes: Tensor, map_size: Tuple[int, int], aligned: bool = False) -> Tensor:
    """torchvision ``rois`` Tensor[N, 5] ``(batch_idx, x1, y1, x2, y2)`` in map coordinates for
    ``roi_align(dense, rois, output_size, spatial_scale=1.0, sampling_ratio, aligned)`` that
    reproduces :func:`label_pool` on the dense map (the reference used in tests and benchmarks)."""
    h, w = map_size
    scale = boxes.new_tensor([w, h, w, h])
    coords = boxes * scale if aligned else boxes * scale - 0.5
    idx = torch.arange(boxes.shape[0], dtype=boxes.dtype, device=boxes.device)[:, None]
    return torch.cat([idx, coords], dim=1)

