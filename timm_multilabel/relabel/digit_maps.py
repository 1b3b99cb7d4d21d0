"""Label-map dataset folders of the digit sets: oracle maps, and maps of a trained digit annotator.

``write_oracle_maps`` writes the oracle maps of :func:`timm_multilabel.data.digits_maps.oracle_maps`;
``write_machine_maps`` runs a classifier saved as a timm model folder (e.g. by
:func:`timm_multilabel.training.digit_annotator.train_digit_classifier`) fully convolutionally
(``LabelMapAnnotator``) over whole canvases resized so that one feature-map cell spans one canvas cell
(a 4x4-cell canvas at 4 x 32 = 128 px through a stride-32 network gives a 4x4 map), as
``timm-multilabel annotate --model local-dir:DIR --pretrained --img-size 128`` does on an exported
image folder. Both folders are read by ``load_label_maps`` and ``datasets.load_dataset``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
from PIL import Image

from ..data.digits_maps import DEFAULT_ORACLE_LOGIT, oracle_maps
from ..errors import UserError
from .annotate import LabelMapAnnotator
from .maps import MAP_DTYPES
from .writer import write_maps_folder

__all__ = ['write_oracle_maps', 'load_digit_classifier', 'write_machine_maps']


def write_oracle_maps(
        dataset: Any,
        output_dir: Union[str, os.PathLike],
        map_size: Optional[int] = None,
        topk: int = 5,
        logit: float = DEFAULT_ORACLE_LOGIT,
        fill: float = 0.0,
        dtype: str = 'float32',
        shard_size: int = 10000,
        overwrite: bool = False,
        batch_size: int = 4096,
) -> Path:
    """Write oracle label maps (see ``oracle_maps``) of every sample of ``dataset`` as a label-map
    dataset folder keyed by ``dataset.image_ids``, readable by ``load_label_maps`` and
    ``datasets.load_dataset(folder, split='train')``; returns the folder.

    Train on them with ``--relabel-fill`` equal to ``fill``.
    """
    if dtype not in MAP_DTYPES:
        raise UserError(f'oracle maps: unknown dtype {dtype!r}; choose one of {", ".join(MAP_DTYPES)}')
    # validate the arguments before anything is written
    oracle_maps(dataset, [0], map_size, topk, logit, fill)
    n = len(dataset)
    batches = (oracle_maps(dataset, range(a, min(n, a + batch_size)), map_size, topk, logit, fill)
               for a in range(0, n, batch_size))
    size = int(map_size or dataset.grid)
    info = {
        'annotator': 'oracle (known digit cells)',
        'weights': f'none: logit {logit:g} for the cell digit, {fill:g} for other classes and empty cells',
        'input_size': int(getattr(dataset, 'image_size', 0) or size),
        'map_size': (size, size), 'topk': topk, 'dtype': dtype, 'num_classes': int(dataset.num_classes),
        'class_names': list(getattr(dataset, 'class_names', None) or []) or None,
        'source': f'timm_multilabel.relabel.digit_maps.write_oracle_maps ({dataset!r})',
        'pretty_name': f'Oracle label maps of {type(dataset).__name__}',
    }
    return write_maps_folder(output_dir, list(dataset.image_ids), batches, info, shard_size, overwrite)


def load_digit_classifier(model_dir: Union[str, os.PathLike]) -> torch.nn.Module:
    """The classifier saved by ``train_digit_classifier``, in eval mode (``local-dir:`` timm load)."""
    path = Path(model_dir)
    if not (path / 'config.json').is_file():
        raise UserError(f'{path}: no timm model folder (config.json missing)')
    return timm.create_model(f'local-dir:{path.resolve()}', pretrained=True).eval()


def write_machine_maps(
        dataset: Any,
        model_dir: Union[str, os.PathLike],
        output_dir: Union[str, os.PathLike],
        img_size: Optional[int] = None,
        topk: int = 5,
        dtype: str = 'float16',
        batch_size: int = 256,
        shard_size: int = 10000,
        overwrite: bool = False,
) -> Path:
    """Annotate every image of ``dataset`` with the classifier in ``model_dir`` run fully
    convolutionally (``LabelMapAnnotator``) and write the label-map folder; returns it.

    ``img_size`` (default ``grid * the classifier's input size``) is the side the whole canvas is
    resized to, so that each map cell of a stride-``img_size``-per-cell network covers one canvas cell.
    This is what ``timm-multilabel annotate --model local-dir:DIR --pretrained --img-size S`` does on
    an exported image folder, without writing the images.
    """
    if dtype not in MAP_DTYPES:
        raise UserError(f'machine maps: unknown dtype {dtype!r}; choose one of {", ".join(MAP_DTYPES)}')
    model = load_digit_classifier(model_dir)
    window = int(model.pretrained_cfg['input_size'][-1])
    size = int(img_size or int(dataset.grid) * window)
    annotator = LabelMapAnnotator(model, topk=topk, img_size=size)
    transform = annotator.transform
    n = len(dataset)

    def batches():
        with torch.inference_mode():
            for a in range(0, n, batch_size):
                x = torch.stack([transform(Image.fromarray(dataset.image_array(i)))
                                 for i in range(a, min(n, a + batch_size))])
                yield annotator(x)

    c = annotator.data_config
    info = {
        'annotator': f'local-dir:{Path(model_dir).resolve()}',
        'weights': str(Path(model_dir) / 'model.safetensors'),
        'input_size': size, 'map_size': annotator.map_size, 'topk': topk, 'dtype': dtype,
        'num_classes': annotator.num_classes, 'class_names': list(getattr(dataset, 'class_names', []) or []) or None,
        'mean': list(c['mean']), 'std': list(c['std']), 'interpolation': c['interpolation'],
        'source': 'timm_multilabel.relabel.digit_maps.write_machine_maps',
        'pretty_name': f'Machine label maps of {type(dataset).__name__}',
    }
    return write_maps_folder(output_dir, list(dataset.image_ids), batches(), info, shard_size, overwrite)
