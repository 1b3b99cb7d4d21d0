"""Data: the built-in digits-grid dataset, the dataset factory with stable image ids, ReaL labels."""
from .digits_grid import DigitsGrid
from .dataset_factory import create_dataset, get_class_names, get_image_ids, get_num_classes, get_real_labels

__all__ = [
    'DigitsGrid', 'create_dataset', 'get_image_ids', 'get_real_labels', 'get_num_classes',
    'get_class_names', 'load_real_labels',
]


def __getattr__(name: str):
    # real_labels is written separately; import it on first use so this package works without it
    if name == 'load_real_labels':
        from .real_labels import load_real_labels
        return load_real_labels
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
