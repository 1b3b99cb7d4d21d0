"""Metrics against hand-computed cases, scikit-learn's AP, and an independent pure-Python
implementation on timm's bundled ImageNet ReaL labels."""
import math

import pytest
import torch
from sklearn.metrics import average_precision_score

from timm_multilabel.errors import UserError
from timm_multilabel.metrics import (
    METRIC_KEYS, compute_multilabel_metrics, label_coverage, mean_average_precision,
    real_accuracy, real_f1, real_labels_to_mask,
)


# Three images, four classes, plus one image with an empty ReaL list (skipped everywhere).
PROBS = torch.tensor([
    [0.60, 0.30, 0.05, 0.05],  # argmax 0; 1 > 0.25      -> pred {0, 1}
    [0.10, 0.20, 0.30, 0.40],  # argmax 3; 2 > 0.25      -> pred {2, 3}
    [0.25, 0.25, 0.26, 0.24],  # argmax 2; 0.25 not > .25 -> pred {2}
    [0.90, 0.05, 0.03, 0.02],  # empty ReaL list: skipped
])
REAL = [[0], [1, 2], [0, 1], []]
# Image 0: pred {0,1}, true {0}:   TP=1 FP=1 FN=0 -> F1 = 2/(2+1+0)   = 2/3; top-1 0 in {0}   -> correct
# Image 1: pred {2,3}, true {1,2}: TP=1 FP=1 FN=1 -> F1 = 2/(2+1+1)   = 1/2; top-1 3          -> wrong
# Image 2: pred {2},   true {0,1}: TP=0 FP=1 FN=2 -> F1 = 0;                top-1 2          -> wrong
# real_acc = 1/3 -> 33.33%; real_f1@0.25 = (2/3 + 1/2 + 0)/3 = 7/18 -> 38.89%; coverage = (2+2+1)/3 = 5/3
# At threshold 0.5 every set is just the argmax:
# Image 0: {0} vs {0}: F1 = 1; image 1: {3} vs {1,2}: 0; image 2: {2} vs {0,1}: 0 -> 1/3 -> 33.33%, coverage 1


def test_hand_computed_lists():
    assert real_accuracy(PROBS, REAL) == pytest.approx(100 / 3)
    assert real_f1(PROBS, REAL, 0.25) == pytest.approx(100 * 7 / 18)
    assert label_coverage(PROBS, REAL, 0.25) == pytest.approx(5 / 3)
    assert real_f1(PROBS, REAL, 0.5) == pytest.approx(100 / 3)
    assert label_coverage(PROBS, REAL, 0.5) == pytest.approx(1.0)


def test_bool_tensor_and_list_agree():
    mask, valid = real_labels_to_mask(REAL, 4)
    expected = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert valid.tolist() == [True, True, True, False]
    for thr in (0.1, 0.25, 0.5):
        assert real_f1(PROBS, mask, thr) == real_f1(PROBS, REAL, thr)
        assert label_coverage(PROBS, mask, thr) == label_coverage(PROBS, REAL, thr)
    assert real_accuracy(PROBS, mask) == real_accuracy(PROBS, REAL)
    assert real_accuracy(PROBS, mask.int()) == real_accuracy(PROBS, REAL)  # 0/1 tensors accepted
    assert mean_average_precision(PROBS, mask) == mean_average_precision(PROBS, REAL)


def test_empty_lists_are_skipped():
    # Changing only the prediction for the skipped image changes nothing.
    other = PROBS.clone()
    other[3] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert real_f1(other, REAL) == real_f1(PROBS, REAL)
    assert label_coverage(other, REAL) == label_coverage(PROBS, REAL)
    assert real_accuracy(other, REAL) == real_accuracy(PROBS, REAL)
    # ... and dropping the image gives the same numbers as keeping it.
    assert real_f1(PROBS[:3], REAL[:3]) == pytest.approx(real_f1(PROBS, REAL))
    # All empty: nothing to average.
    assert math.isnan(real_accuracy(PROBS, [[], [], [], []]))
    assert math.isnan(real_f1(PROBS, [[], [], [], []]))


def test_threshold_is_strict_and_argmax_always_included():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    # Row 0: argmax is class 0 (first max); class 1 has prob == 0.5, not > 0.5 -> pred {0}.
    # Row 1: argmax 2 is included even though 0.5 is not > threshold 0.5; 0.3 not > 0.5 -> pred {2}.
    assert label_coverage(probs, [[0], [2]], threshold=0.5) == 1.0
    # Row 0 true {1}: pred {0} -> F1 0; row 1 true {2}: pred {2} -> F1 1 -> 50%.
    assert real_f1(probs, [[1], [2]], threshold=0.5) == pytest.approx(50.0)
    # Below the threshold nothing but the argmax: threshold 0.9 -> coverage 1, F1 as above.
    assert label_coverage(probs, [[0], [2]], threshold=0.9) == 1.0
    # Threshold 0.25: row 0 -> {0, 1}, row 1 -> {1, 2} -> coverage 2.
    # Row 0 true {1}: TP=1 FP=1 -> 2/3; row 1 true {2}: TP=1 FP=1 -> 2/3.
    assert label_coverage(probs, [[1], [2]], threshold=0.25) == 2.0
    assert real_f1(probs, [[1], [2]], threshold=0.25) == pytest.approx(100 * 2 / 3)


def test_real_accuracy_multi_label_hit():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 5.0], [0.0, 7.0, 1.0]])
    # Top-1: 0, 2, 1. Sets {1, 0}: hit; {1}: miss; {0, 2}: miss -> 33.33%
    assert real_accuracy(logits, [[1, 0], [1], [0, 2]]) == pytest.approx(100 / 3)
    assert real_accuracy(logits, [[0], [2], [1]]) == 100.0


def test_map_hand_computed():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.4], [0.7, 0.3], [0.6, 0.2]])
    targets = torch.tensor([[1, 0], [0, 0], [1, 1], [0, 0]], dtype=torch.bool)
    # Class 0: ranking 1(+) 2(-) 3(+) 4(-): AP = (1/1 + 2/3)/2 = 5/6
    # Class 1: ranking rows 1(0.4,-) 2(0.3,+) ...: AP = 1/2
    assert mean_average_precision(scores, targets) == pytest.approx(100 * (5 / 6 + 1 / 2) / 2)
    # Class with no positive is skipped: add an all-negative class.
    scores3 = torch.cat([scores, torch.rand(4, 1)], 1)
    targets3 = torch.cat([targets, torch.zeros(4, 1, dtype=torch.bool)], 1)
    assert mean_average_precision(scores3, targets3) == pytest.approx(100 * (5 / 6 + 1 / 2) / 2)
    # Ties: all scores equal -> one threshold, AP = precision at the end = #pos / N.
    tied = torch.ones(4, 1)
    assert mean_average_precision(tied, [[0], [], [0], []]) == pytest.approx(50.0)
    assert math.isnan(mean_average_precision(scores, torch.zeros(4, 2, dtype=torch.bool)))


@pytest.mark.parametrize('ties', [False, True])
def test_map_matches_sklearn(ties):
    g = torch.Generator().manual_seed(1 if ties else 0)
    n, c = 200, 12
    scores = torch.randn(n, c, generator=g)
    if ties:
        scores = (scores * 2).round() / 2  # few distinct values -> many ties
    targets = torch.rand(n, c, generator=g) < torch.linspace(0.02, 0.5, c)
    targets[:, 3] = False  # a class with no positive: skipped
    per_class = [average_precision_score(targets[:, k].numpy(), scores[:, k].numpy())
                 for k in range(c) if targets[:, k].any()]
    expected = 100 * sum(per_class) / len(per_class)
    assert mean_average_precision(scores, targets) == pytest.approx(expected, abs=1e-9)
    # Same result from label lists, and from a permutation of the images (deterministic ties).
    lists = [row.nonzero().squeeze(1).tolist() for row in targets]
    assert mean_average_precision(scores, lists) == pytest.approx(expected, abs=1e-9)
    perm = torch.randperm(n, generator=g)
    assert mean_average_precision(scores[perm], targets[perm]) == pytest.approx(expected, abs=1e-9)


def test_map_chunked_matches_unchunked(monkeypatch):
    import timm_multilabel.metrics as m
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(50, 9, generator=g)
    targets = torch.rand(50, 9, generator=g) < 0.3
    full = m.mean_average_precision(scores, targets)
    monkeypatch.setattr(m, '_AP_CHUNK_ELEMS', 100)  # 2 classes per chunk
    assert m.mean_average_precision(scores, targets) == pytest.approx(full, abs=1e-12)


def test_compute_multilabel_metrics():
    logits = PROBS.log()  # softmax(log p) = p, since rows of PROBS sum to 1
    labels = torch.tensor([0, 1, -1, 0])  # top-1 preds 0, 3, 2, 0: row 2 ignored -> 2 of 3 correct
    out = compute_multilabel_metrics(logits, labels, REAL, probs_kind='softmax')
    assert tuple(out) == METRIC_KEYS
    assert set(out) == {'top1', 'real_acc', 'real_f1@0.25', 'real_f1@0.5', 'label_coverage@0.25', 'mAP'}
    assert out['top1'] == pytest.approx(200 / 3)
    assert out['real_acc'] == pytest.approx(100 / 3)
    assert out['real_f1@0.25'] == pytest.approx(100 * 7 / 18)
    assert out['real_f1@0.5'] == pytest.approx(100 / 3)
    assert out['label_coverage@0.25'] == pytest.approx(5 / 3)
    # mAP over the three labelled images only.
    assert out['mAP'] == pytest.approx(mean_average_precision(PROBS[:3], REAL[:3]))

    no_real = compute_multilabel_metrics(logits, labels)
    assert no_real['top1'] == pytest.approx(200 / 3)
    assert all(no_real[k] is None for k in METRIC_KEYS if k != 'top1')


def test_compute_multilabel_metrics_sigmoid():
    logits = torch.tensor([[2.0, 0.0, -3.0], [-2.0, -1.0, -1.5]])
    # sigmoid: row 0 [0.881, 0.5, 0.047] -> @0.25 {0, 1}; row 1 [0.119, 0.269, 0.182] -> argmax 1, 0.269>0.25 -> {1}
    # true {0}: TP1 FP1 -> 2/3; true {1, 2}: TP1 FN1 -> 2/3. Coverage (2+1)/2 = 1.5
    out = compute_multilabel_metrics(logits, torch.tensor([0, 2]), [[0], [1, 2]], probs_kind='sigmoid')
    assert out['top1'] == pytest.approx(50.0)
    assert out['real_acc'] == pytest.approx(100.0)
    assert out['real_f1@0.25'] == pytest.approx(100 * 2 / 3)
    assert out['label_coverage@0.25'] == pytest.approx(1.5)
    # @0.5: row 0 {0} (0.5 not > 0.5) -> F1 1; row 1 {1} vs {1,2} -> 2/3
    assert out['real_f1@0.5'] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # softmax: row 0 [0.876, 0.118, 0.006] -> {0}, F1 1; row 1 [0.186, 0.507, 0.307] -> {1, 2}, F1 1
    soft = compute_multilabel_metrics(logits, torch.tensor([0, 2]), [[0], [1, 2]], probs_kind='softmax')
    assert soft['real_f1@0.25'] == pytest.approx(100.0)
    assert soft['label_coverage@0.25'] == pytest.approx(1.5)


@pytest.mark.parametrize('call, match', [
    (lambda: real_accuracy(PROBS, REAL[:3]), '3 entries but logits has 4 rows'),
    (lambda: real_f1(PROBS, [[0], [4], [], []]), r'real_labels\[1\] has class id 4 outside \[0, 4\)'),
    (lambda: real_f1(PROBS, [[0], [-1], [], []]), r'real_labels\[1\] has class id -1'),
    (lambda: real_f1(PROBS, [[0], [1.5], [], []]), 'integer class ids'),
    (lambda: real_f1(PROBS, [[0], 3, [], []]), r'real_labels\[1\] must be a list'),
    (lambda: real_f1(PROBS, torch.zeros(4, 5, dtype=torch.bool)), r'shape \[N, 4\]'),
    (lambda: real_f1(PROBS, torch.full((4, 4), 2)), 'bool or 0/1'),
    (lambda: real_f1(PROBS * 3, REAL), r'probs must lie in \[0, 1\]'),
    (lambda: real_f1(PROBS, REAL, threshold=1.5), 'threshold'),
    (lambda: real_accuracy(PROBS[0], REAL), '2-D'),
    (lambda: real_accuracy(torch.full((4, 4), float('nan')), REAL), 'NaN'),
    (lambda: mean_average_precision(PROBS, REAL[:2]), '2 entries but scores has 4 rows'),
    (lambda: compute_multilabel_metrics(PROBS, torch.tensor([0, 1, 2])), r'labels must have shape \[4\]'),
    (lambda: compute_multilabel_metrics(PROBS, torch.tensor([0, 1, 2, 4])), r'\[0, 4\) or -1'),
    (lambda: compute_multilabel_metrics(PROBS, None, REAL, probs_kind='relu'), 'probs_kind'),
])
def test_bad_input(call, match):
    with pytest.raises(UserError, match=match) as info:
        call()
    assert '\n' not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Independent reference on timm's bundled ImageNet ReaL labels.

def _reference(probs_rows, real, threshold):
    """Straightforward per-image loops over Python sets."""
    acc, f1s, sizes = [], [], []
    for row, labels in zip(probs_rows, real):
        if not labels:
            continue
        truth = set(labels)
        top = row.index(max(row))  # first maximum
        acc.append(top in truth)
        pred = {top} | {k for k, p in enumerate(row) if p > threshold}
        tp, fp, fn = len(pred & truth), len(pred - truth), len(truth - pred)
        f1s.append(2 * tp / (2 * tp + fp + fn))
        sizes.append(len(pred))
    return 100 * sum(acc) / len(acc), 100 * sum(f1s) / len(f1s), sum(sizes) / len(sizes)


@pytest.fixture(scope='module')
def bundled_real():
    from timm_multilabel.data.real_labels import load_real_labels
    return load_real_labels()


@pytest.mark.parametrize('probs_kind', ['softmax', 'sigmoid'])
def test_agrees_with_reference_on_imagenet_real(bundled_real, probs_kind):
    n, c = 2000, 1000
    real = bundled_real[:n]
    assert sum(1 for r in real if not r) > 0  # the subset exercises skipping
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, generator=g) * 2
    if probs_kind == 'sigmoid':
        logits -= 7.0  # a BCE model: most classes well below 0.25
    # Plant correct answers: boost one ReaL label in about half of the labelled images,
    # and a second ReaL label (to hit the multi-label path) in some.
    for i in range(0, n, 2):
        if real[i]:
            logits[i, real[i][0]] += 9.0
            if len(real[i]) > 1:
                logits[i, real[i][1]] += 8.0
    probs = logits.softmax(1) if probs_kind == 'softmax' else logits.sigmoid()
    rows = probs.tolist()
    out = compute_multilabel_metrics(logits, None, real, probs_kind=probs_kind)
    for thr, f1_key in ((0.25, 'real_f1@0.25'), (0.5, 'real_f1@0.5')):
        ref_acc, ref_f1, ref_cov = _reference(rows, real, thr)
        assert real_f1(probs, real, thr) == pytest.approx(ref_f1, abs=1e-9)
        assert out[f1_key] == pytest.approx(ref_f1, abs=1e-9)
        assert label_coverage(probs, real, thr) == pytest.approx(ref_cov, abs=1e-12)
        if thr == 0.25:
            assert out['label_coverage@0.25'] == pytest.approx(ref_cov, abs=1e-12)
    assert real_accuracy(logits, real) == pytest.approx(ref_acc, abs=1e-9)
    assert out['real_acc'] == pytest.approx(ref_acc, abs=1e-9)
    assert 40 < ref_acc < 60  # planting worked; random would be ~0.1%
    if probs_kind == 'sigmoid':
        assert ref_cov > 1.05  # several labels predicted per image
