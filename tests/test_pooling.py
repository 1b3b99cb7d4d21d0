"""label_pool: orientation, hand-computed values, agreement with densify + torchvision roi_align."""
import math

import pytest
import torch
from torchvision.ops import roi_align

from timm_multilabel.errors import UserError
from timm_multilabel.relabel.pooling import densify_label_map, label_pool, label_pool_logits, map_rois


def _half_map(first: int, second: int, axis: str, size: int = 4, score: float = 5.0):
    """K=1 map whose left (axis='x') or top (axis='y') half is class ``first``, the rest ``second``."""
    classes = torch.full((1, 1, size, size), second, dtype=torch.long)
    if axis == 'x':
        classes[..., :, : size // 2] = first
    else:
        classes[..., : size // 2, :] = first
    return torch.full((1, 1, size, size), score), classes


def _softmax_one(score: float, num_classes: int, fill: float = 0.0) -> float:
    """Probability of the one class with logit ``score`` when the others have ``fill``."""
    return math.exp(score) / (math.exp(score) + (num_classes - 1) * math.exp(fill))


def _reference(scores, classes, boxes, num_classes, output_size=1, fill=0.0, sampling_ratio=-1, aligned=False):
    h, w = scores.shape[-2:]
    dense = densify_label_map(scores, classes, num_classes, fill)
    out = roi_align(dense, map_rois(boxes, (h, w), aligned), output_size, 1.0, sampling_ratio, aligned)
    return out[:, :, 0, 0] if output_size == 1 else out


def _random_maps(n, k, h, w, c, generator):
    scores = torch.randn(n, k, h, w, generator=generator) * 4
    # distinct classes per cell, like a real top-K
    classes = torch.argsort(torch.rand(n * h * w, c, generator=generator), dim=1)[:, :k]
    classes = classes.view(n, h, w, k).permute(0, 3, 1, 2).contiguous()
    return scores, classes


def _random_boxes(n, generator):
    a, b = torch.rand(n, 2, generator=generator), torch.rand(n, 2, generator=generator)
    boxes = torch.cat([torch.minimum(a, b), torch.maximum(a, b)], 1)
    boxes[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # full image
    if n > 1:
        boxes[1] = torch.tensor([0.40, 0.61, 0.41, 0.615])  # tiny
    if n > 2:
        boxes[2] = torch.tensor([0.0, 0.7, 0.3, 1.0])  # touching the bottom-left corner
    return boxes


@pytest.mark.parametrize('axis', ['x', 'y'])
def test_halves_pooled_over_matching_boxes(axis):
    scores, classes = _half_map(3, 7, axis)
    first_half = torch.tensor([[0.0, 0.0, 0.5, 1.0]] if axis == 'x' else [[0.0, 0.0, 1.0, 0.5]])
    second_half = torch.tensor([[0.5, 0.0, 1.0, 1.0]] if axis == 'x' else [[0.0, 0.5, 1.0, 1.0]])
    t1 = label_pool(scores, classes, first_half, num_classes=10)
    t2 = label_pool(scores, classes, second_half, num_classes=10)
    # each half box samples only cells of its own class: logit 5 for it, 0 (fill) for the 9 others
    assert t1.argmax(1).item() == 3 and t2.argmax(1).item() == 7
    assert t1[0, 3].item() == pytest.approx(_softmax_one(5.0, 10), abs=1e-6)
    assert t2[0, 7].item() == pytest.approx(_softmax_one(5.0, 10), abs=1e-6)
    # the transposed box straddles both halves equally: logit 2.5 for both classes
    straddle = first_half[:, [1, 0, 3, 2]]
    logits = label_pool_logits(scores, classes, straddle, num_classes=10)
    assert logits[0, 3].item() == pytest.approx(2.5, abs=1e-6)
    assert logits[0, 7].item() == pytest.approx(2.5, abs=1e-6)


def test_quadrants_multi_cell_orientation():
    c = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(3, 0).repeat_interleave(3, 1)  # 6x6 quadrants
    classes = c.view(1, 1, 6, 6)
    scores = torch.full((1, 1, 6, 6), 4.0)
    t = label_pool(scores, classes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), num_classes=4, output_size=2)
    assert t.shape == (1, 4, 2, 2)
    # bin (row i, col j) is dominated by the quadrant class 2 * i + j
    assert t.argmax(1)[0].tolist() == [[0, 1], [2, 3]]
    # non-square output: 1 row, 2 columns -> left half {0, 2}, right half {1, 3}
    t = label_pool_logits(scores, classes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 4, output_size=(1, 2))
    assert t.shape == (1, 4, 1, 2)
    torch.testing.assert_close(t[0, :, 0, 0], torch.tensor([2.0, 0.0, 2.0, 0.0]))
    torch.testing.assert_close(t[0, :, 0, 1], torch.tensor([0.0, 2.0, 0.0, 2.0]))


def test_softmax_with_fill_by_hand():
    scores = torch.full((1, 1, 1, 1), 2.0)
    classes = torch.zeros((1, 1, 1, 1), dtype=torch.long)
    box = torch.tensor([[0.2, 0.1, 0.9, 0.8]])
    for fill in (0.0, -1.0, 3.0):
        t = label_pool(scores, classes, box, num_classes=3, fill=fill)
        e = [math.exp(2.0), math.exp(fill), math.exp(fill)]
        expect = torch.tensor([[v / sum(e) for v in e]])
        torch.testing.assert_close(t, expect, atol=1e-6, rtol=1e-5)


def test_full_box_is_global_average():
    g = torch.Generator().manual_seed(1)
    scores, classes = _random_maps(3, 4, 7, 5, 12, g)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(3, 1)
    for fill in (0.0, -2.0):
        dense = torch.full((3, 12, 7, 5), fill).scatter_(1, classes, scores)  # built independently
        torch.testing.assert_close(label_pool_logits(scores, classes, full, 12, fill=fill),
                                   dense.mean((2, 3)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('output_size', [1, 2, (3, 2)])
@pytest.mark.parametrize('fill', [0.0, -1.5])
@pytest.mark.parametrize('sampling_ratio,aligned', [(-1, False), (-1, True), (2, False), (1, True)])
@pytest.mark.parametrize('map_hw', [(9, 13), (11, 11)])  # non-square catches an x/y swap; square takes the fused path
def test_matches_dense_roi_align(output_size, fill, sampling_ratio, aligned, map_hw):
    g = torch.Generator().manual_seed(0)
    scores, classes = _random_maps(16, 5, *map_hw, 50, g)
    boxes = _random_boxes(16, g)
    ref = _reference(scores, classes, boxes, 50, output_size, fill, sampling_ratio, aligned)
    logits = label_pool_logits(scores, classes, boxes, 50, output_size, fill, sampling_ratio, aligned)
    assert logits.shape == ref.shape
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    probs = label_pool(scores, classes, boxes, 50, output_size, fill, sampling_ratio, aligned)
    torch.testing.assert_close(probs, ref.softmax(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs.sum(1)))


def test_imagenet_shaped_maps_and_batch_of_one():
    g = torch.Generator().manual_seed(2)
    scores, classes = _random_maps(8, 5, 15, 15, 1000, g)
    boxes = _random_boxes(8, g)
    torch.testing.assert_close(label_pool(scores, classes, boxes, 1000),
                               _reference(scores, classes, boxes, 1000).softmax(1), atol=1e-6, rtol=1e-5)
    one = label_pool(scores[3:4], classes[3:4], boxes[3:4], 1000)
    assert one.shape == (1, 1000)
    torch.testing.assert_close(one, _reference(scores[3:4], classes[3:4], boxes[3:4], 1000).softmax(1),
                               atol=1e-6, rtol=1e-5)


def test_dtypes():
    g = torch.Generator().manual_seed(3)
    scores, classes = _random_maps(4, 3, 5, 5, 20, g)
    boxes = _random_boxes(4, g)
    ref = label_pool(scores.half().float(), classes, boxes, 20)
    out = label_pool(scores.half(), classes.to(torch.int16), boxes, 20)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    out64 = label_pool(scores.double(), classes, boxes.double(), 20)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), label_pool(scores, classes, boxes, 20), atol=1e-6, rtol=1e-5)


def test_validation_errors():
    scores = torch.zeros(2, 1, 3, 3)
    classes = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    with pytest.raises(UserError, match='scores'):
        label_pool(scores[0], classes, boxes, 5)
    with pytest.raises(UserError, match='classes'):
        label_pool(scores, classes.float(), boxes, 5)
    with pytest.raises(UserError, match='boxes'):
        label_pool(scores, classes, boxes[:1], 5)
    bad = classes.clone()
    bad[1, 0, 2, 2] = 5
    with pytest.raises(UserError, match=r'class ids span \[0, 5\]'):
        label_pool(scores, bad, boxes, 5)
    with pytest.raises(UserError, match='box 1'):
        label_pool(scores, classes, torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.6, 0.0, 0.4, 1.0]]), 5)
    with pytest.raises(UserError, match='output_size'):
        label_pool(scores, classes, boxes, 5, output_size=0)
    with pytest.raises(UserError) as e:
        label_pool(scores, classes, boxes, 0)
    assert '\n' not in str(e.value)


def test_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'pooling.py'
    spec = importlib.util.spec_from_file_location('bench_pooling', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / 'b.json'
    assert bench.main(['--crops', '8', '--num-classes', '50', '--repeats', '3', '--skip-train-step',
                       '--json', str(out)]) == 0
    row = json.loads(out.read_text())['speedup_vs_official']
    assert row['crops'] == 8 and row['max_abs_diff'] < 1e-6 and row['speedup'] > 0


def test_check_values_false_skips_only_the_value_checks():
    g = torch.Generator().manual_seed(4)
    scores, classes = _random_maps(4, 3, 5, 5, 20, g)
    boxes = _random_boxes(4, g)
    torch.testing.assert_close(label_pool(scores, classes, boxes, 20, check_values=False),
                               label_pool(scores, classes, boxes, 20), atol=0, rtol=0)
    outside = boxes.clone()
    outside[1, 2] = 1.2
    with pytest.raises(UserError, match=r'box 1 = .* is not a normalized'):
        label_pool(scores, classes, outside, 20)
    assert label_pool(scores, classes, outside, 20, check_values=False).shape == (4, 20)
    with pytest.raises(UserError, match='classes must be an integer Tensor'):  # shapes/dtypes still checked
        label_pool(scores, classes.float(), boxes, 20, check_values=False)


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_non_finite_scores_and_fill_are_refused(value):
    g = torch.Generator().manual_seed(5)
    scores, classes = _random_maps(3, 2, 4, 4, 10, g)
    boxes = _random_boxes(3, g)
    bad = scores.clone()
    bad[2, 1, 3, 0] = value
    with pytest.raises(UserError, match=r'^label_pool: label map 2 has NaN or inf scores$'):
        label_pool(bad, classes, boxes, 10)
    with pytest.raises(UserError, match=r'^label_pool: fill must be a finite number'):
        label_pool(scores, classes, boxes, 10, fill=value)
