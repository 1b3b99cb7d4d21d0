"""train.py's ``--relabel-maps``: box-aware crops, map lookup and LabelPooling in the collate."""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from torch.utils.data import Dataset

from ..data import get_image_ids
from ..registry import create_target_transform
from ..relabel.boxed_dataset import BoxedDataset
from ..relabel.transforms import create_box_transform

# --relabel-mode -> (global_pool, hard): the paper's Table 2 variants.
RELABEL_MODES = {
    'local': (False, False),        # ReLabel: localized multi-labels (RoIAlign over the crop)
    'local-hard': (False, True),    # localized single labels (argmax of the pooled crop)
    'global': (True, False),        # global multi-labels (map averaged over the whole image)
    'global-hard': (True, True),    # global single labels (argmax of the global average)
}


def build_relabel_training(
        args: Any,
        dataset_train: Dataset,
        transform_kwargs: Dict[str, Any],
        num_classes: int,
) -> Tuple[Dataset, Callable]:
    """Wrap the training set so each sample carries its crop box and image id, and build the
    collate that pools each crop's soft target [C] from the label maps.

    Refuses, in one line and before any training (and before train.py writes to --output): a
    ``--relabel-maps`` path that does not exist, maps that cannot be read, card fields of the wrong
    type, and -- checking every map of every shard, cached while the shards are unchanged
    (``verify_label_maps``) -- NaN / inf scores, class ids outside the model's classes, rows that
    are not K*H*W maps, duplicate image ids; then maps that miss training images.
    """
    # imported here: the map store needs pyarrow and datasets, which a run without maps never loads
    from ..relabel.collate import check_maps_cover
    from ..relabel.store import load_label_maps

    store = load_label_maps(args.relabel_maps, num_classes=num_classes, arg_name='--relabel-maps')
    image_ids = get_image_ids(dataset_train)
    check_maps_cover(store, image_ids, num_classes)
    dataset_train.transform = None
    boxed = BoxedDataset(dataset_train, create_box_transform(**transform_kwargs), image_ids=image_ids)
    global_pool, hard = RELABEL_MODES[args.relabel_mode]
    collate = create_target_transform('label_pooling', store=store, num_classes=num_classes, fill=args.relabel_fill,
                                      global_pool=global_pool, hard=hard)
    return boxed, collate
