"""Data: the built-in digits-grid dataset, the dataset factory with stable image ids, ReaL labels."""
from .dataset_factory import create_dataset, get_class_names, get_image_ids, get_num_classes, get_real_labels
from .digits_grid import DigitsGrid
from .real_labels import load_real_labels

__all__ = [
    'DigitsGrid', 'create_dataset', 'get_image_ids', 'get_real_labels', 'get_num_classes',
    'get_class_names', 'load_real_labels',
]
