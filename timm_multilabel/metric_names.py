"""The metrics train.py logs: their keys, names and titles (no torch import, for the curves process)."""

# Keys of compute_multilabel_metrics, in the order train.py logs them.
METRIC_KEYS = ('top1', 'real_acc', 'real_f1@0.25', 'real_f1@0.5', 'label_coverage@0.25', 'mAP')
# Their names in model cards and `timm-multilabel eval`.
METRIC_NAMES = {
    'top1': 'Top-1 accuracy',
    'real_acc': 'ReaL accuracy',
    'real_f1@0.25': 'ReaL F1 @ 0.25',
    'real_f1@0.5': 'ReaL F1 @ 0.5',
    'label_coverage@0.25': 'Label coverage @ 0.25',
    'mAP': 'mAP',
}
# Their titles, with units, in train.py's results table and training curves.
METRIC_TITLES = {
    'top1': 'top-1 (%)', 'real_acc': 'ReaL acc (%)', 'real_f1@0.25': 'ReaL-F1@0.25 (%)',
    'real_f1@0.5': 'ReaL-F1@0.5 (%)', 'label_coverage@0.25': 'coverage@0.25', 'mAP': 'mAP (%)',
}
