"""ReLabel: label maps written by a timm classifier run fully convolutionally, stored as a
Hugging Face dataset, read back by image id."""
from importlib import import_module
from typing import Any

# Public names imported on first use: importing one submodule (say ``relabel.boxed_dataset`` for
# train.py) does not pull in pyarrow, datasets and the annotator (~0.2 s a start-up).
_LAZY = {
    'LabelMapAnnotator': 'annotate', 'create_annotator': 'annotate', 'load_weights_file': 'annotate',
    'MAP_DTYPES': 'maps', 'class_id_dtype': 'maps', 'decode_scores': 'maps', 'encode_maps': 'maps',
    'LabelMapStore': 'store', 'load_label_maps': 'store',
    'push_maps': 'writer', 'read_map_info': 'writer', 'write_dataset_card': 'writer', 'write_shard': 'writer',
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f'{__name__}.{_LAZY[name]}'), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
