"""Hugging Face model folders: ``model.safetensors`` + timm ``config.json`` + ``README.md`` model card.

A folder written by :func:`save_model_folder` is a plain timm model: ``timm.create_model('local-dir:PATH',
pretrained=True)`` and, once pushed, ``timm.create_model('hf-hub:ORG/NAME', pretrained=True)`` load it
without this package. ``config.json`` is written by timm's own ``save_config_for_hf``; the only addition
is a top-level ``timm_multilabel`` entry (method, data set, probability kind) that timm ignores.

Checkpoints of train.py and of timm's train.py (``{'arch', 'state_dict', 'state_dict_ema', 'args', ...}``)
become such folders through :func:`export_checkpoint`; they are read by
:func:`~timm_multilabel.checkpoint_files.load_checkpoint_file` (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import huggingface_hub
import safetensors.torch
import timm
import timm.data
import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants, errors
from huggingface_hub.utils import HFValidationError, validate_repo_id
from timm.models import clean_state_dict
from timm.models._hub import save_config_for_hf
from timm.utils.model import unwrap_model
from torch import nn

from .cards import render_card
from .checkpoint_files import checkpoint_args, is_state_dict, load_checkpoint_file, pick_state_dict
from .errors import UserError, hub_error_line
from .fileio import atomic_path
from .method import describe_method
from .metrics import METRIC_KEYS, METRIC_NAMES
from .version import __version__

__all__ = [
    'WEIGHTS_NAME', 'CONFIG_NAME', 'CARD_NAME', 'METRIC_KEYS', 'METRIC_NAMES',
    'save_model_folder', 'push_model_folder', 'load_checkpoint_dict', 'clean_state_dict',
    'model_from_checkpoint', 'export_checkpoint', 'checkpoint_label_names', 'card_metrics', 'method_from_args',
    'read_multilabel_config', 'hub_error_line',
]

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
CONFIG_KEY = 'timm_multilabel'  # our entry in config.json (timm ignores unknown top-level keys)
# files of a model folder that push_model_folder uploads (a train.py --output also holds checkpoints)
UPLOAD_PATTERNS = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, 'summary.json', 'summary.csv', 'args.yaml')

_DATA_CONFIG_KEYS = ('mean', 'std', 'input_size', 'interpolation', 'crop_pct', 'crop_mode')

_MILE_PAPER = {
    'title': 'Multi-label Iterated Learning for Image Classification with Label Ambiguity (CVPR 2022)',
    'url': 'https://arxiv.org/abs/2111.12172',
}
_RELABEL_PAPER = {
    'title': 'Re-labeling ImageNet: from Single to Multi-Labels, from Global to Localized Labels (CVPR 2021)',
    'url': 'https://arxiv.org/abs/2101.05022',
}
_MILE_BIB = """@inproceedings{rajeswar2022mile,
  title={Multi-label Iterated Learning for Image Classification with Label Ambiguity},
  author={Rajeswar, Sai and Rodr{\\'i}guez, Pau and Singhal, Soumye and V{\\'a}zquez, David and Courville, Aaron},
  booktitle={CVPR},
  year={2022}
}"""
_RELABEL_BIB = """@inproceedings{yun2021relabel,
  title={Re-labeling ImageNet: from Single to Multi-Labels, from Global to Localized Labels},
  author={Yun, Sangdoo and Oh, Seong Joon and Heo, Byeongho and Han, Dongyoon and Choe, Junsuk and Chun, Sanghyuk},
  booktitle={CVPR},
  year={2021}
}"""
_TIMM_BIB = """@misc{rw2019timm,
  author={Ross Wightman},
  title={PyTorch Image Models},
  year={2019},
  publisher={GitHub},
  howpublished={\\url{https://github.com/huggingface/pytorch-image-models}}
}"""

# method name -> (title, tags, paper, bibtex, description)
_METHODS: Dict[str, Tuple[str, List[str], Optional[dict], Optional[str], str]] = {
    'baseline': (
        'standard training on the given single labels', [], None, None,
        'Trained with the usual single-label objective (the baseline of the MILe and ReLabel papers).',
    ),
    'mile': (
        'MILe (multi-label iterated learning)', ['mile', 'multi-label-iterated-learning'], _MILE_PAPER, _MILE_BIB,
        'MILe trains with a sigmoid/BCE objective in generations: a teacher learns the given labels for `kt` '
        'updates, then hands its thresholded predictions (`sigmoid > rho`) to a student for `ks` updates; the '
        'student becomes the next teacher. The classifier therefore predicts every object it sees, not one '
        'label per image: read its outputs with a sigmoid.',
    ),
    'relabel': (
        'ReLabel + LabelPooling (localized multi-labels from label maps)', ['relabel', 'label-pooling'],
        _RELABEL_PAPER, _RELABEL_BIB,
        'ReLabel trains each random crop on its own soft target: the label map of the image (a machine '
        'annotator\'s dense top-k predictions) RoIAligned over the crop box, then softmaxed.',
    ),
}


# ---------------------------------------------------------------------------------------------------
# small helpers


def _as_number(key: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, '__float__'):
        raise UserError(f'metrics[{key!r}] must be a number or None, got {type(value).__name__}')
    value = float(value)
    if not math.isfinite(value):
        _logger.warning('metric %s is %s: left out of the model card', key, value)
        return None
    return value


def _jsonable(value: Any) -> Any:
    """Plain JSON/YAML types for the card's argument listing (anything else as its str)."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_TIMM_DS_PREFIXES = ('hfds/', 'hfids/', 'hf-hub:', 'hf_hub:')


def hub_dataset_id(name: Optional[str]) -> Optional[str]:
    """A Hugging Face dataset id for a train.py ``--dataset`` value, or None for a local folder.

    ``hfds/ORG/NAME`` -> ``ORG/NAME``; ``torch/cifar10`` / ``tfds/x`` -> ``cifar10`` / ``x``;
    ``digits-grid`` stays; an existing path, an empty name or anything not shaped like an id -> None.
    """
    if not name:
        return None
    name = str(name)
    for prefix in _TIMM_DS_PREFIXES:
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
            break
    else:
        head, sep, tail = name.partition('/')
        if sep and head.lower() in ('torch', 'tfds', 'wds'):
            name = tail
    if os.path.exists(name) or not re.fullmatch(r'[A-Za-z0-9][\w.-]*(/[\w.-]+)?', name):
        return None
    return name


# the names hub.py had before method.py and checkpoint_files.py held them
method_from_args = describe_method
load_checkpoint_dict = load_checkpoint_file


def _method_parts(method: Mapping[str, Any]) -> List[str]:
    name = str(method.get('name', '')).lower()
    parts = [p for p in name.split('+') if p]
    unknown = [p for p in parts if p not in _METHODS]
    if not parts or unknown:
        raise UserError(f"method name {method.get('name')!r}: expected one of {', '.join(_METHODS)} "
                        f"(or 'mile+relabel')")
    return parts


def _probs_kind(parts: Sequence[str], args: Optional[Mapping[str, Any]]) -> str:
    return 'sigmoid' if 'mile' in parts or (args or {}).get('bce_loss') else 'softmax'


# ---------------------------------------------------------------------------------------------------
# the model folder


def without_split_bn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """``state_dict`` less the auxiliary BatchNorm layers of timm's ``SplitBatchNorm2d`` (``--split-bn``):
    the keys ``<bn>.aux_bn.<i>.*`` of each BatchNorm ``<bn>`` of ``model`` (split or plain). What is
    left is the plain model's weights; each BatchNorm keeps the primary split's, the one
    ``SplitBatchNorm2d`` uses in eval mode."""
    batchnorms = {name for name, m in unwrap_model(model).named_modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    return {k: v for k, v in state_dict.items() if k.partition('.aux_bn.')[0] not in batchnorms}


def _check_inputs(
        model: nn.Module,
        num_classes: int,
        label_names: Optional[Sequence[str]],
        state_dict: Mapping[str, torch.Tensor],
) -> None:
    if not hasattr(model, 'pretrained_cfg'):
        raise UserError(f'{type(model).__name__} is not a timm model (make it with timm.create_model)')
    model_classes = getattr(model, 'num_classes', None)
    if model_classes is not None and int(num_classes) != int(model_classes):
        raise UserError(f'num_classes={num_classes} but the model has {model_classes} classes')
    if label_names is not None and len(label_names) != num_classes:
        raise UserError(f'label_names has {len(label_names)} names for {num_classes} classes')
    expected = {k: tuple(v.shape) for k, v in without_split_bn(model.state_dict(), model).items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise UserError(f'state_dict does not fit {type(model).__name__}: {len(missing)} missing keys '
                        f'{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}')
    wrong = [k for k in expected if expected[k] != got[k]]
    if wrong:
        raise UserError(f'state_dict does not fit the model: {wrong[0]} has shape {got[wrong[0]]}, '
                        f'the model {expected[wrong[0]]}')


def _card_metadata(
        *,
        title: str,
        license: str,
        parts: Sequence[str],
        dataset: str,
        method: Mapping[str, Any],
        metrics: Mapping[str, float],
        eval_split: Optional[str],
        base_model: Optional[str],
        extra_tags: Sequence[str],
):
    tags = ['image-classification', 'timm', 'multi-label', 'timm-multilabel']
    for part in parts:
        tags += _METHODS[part][1]
    tags += list(extra_tags)
    datasets = [d for d in (hub_dataset_id(dataset),) if d]
    if 'relabel' in parts:
        maps_id = hub_dataset_id(method.get('maps'))
        if maps_id and maps_id not in datasets:
            datasets.append(maps_id)
    eval_id = hub_dataset_id(dataset) or 'custom'
    eval_results = [
        EvalResult(
            task_type='image-classification', task_name='Image Classification',
            dataset_type=eval_id, dataset_name=str(dataset) or eval_id, dataset_split=eval_split,
            metric_type=key, metric_name=METRIC_NAMES.get(key, key), metric_value=value,
        )
        for key, value in metrics.items()
    ]
    return ModelCardData(
        library_name='timm',
        license=license,
        pipeline_tag='image-classification',
        tags=tags,
        datasets=datasets or None,
        base_model=base_model,
        model_name=title if eval_results else None,
        eval_results=eval_results or None,
    )


def _render_card(
        *,
        model: nn.Module,
        config: Dict[str, Any],
        state_dict: Mapping[str, torch.Tensor],
        model_name: str,
        title: str,
        load_name: str,
        license: str,
        parts: Sequence[str],
        dataset: str,
        method: Mapping[str, Any],
        metrics: Mapping[str, float],
        eval_split: Optional[str],
        args: Optional[Mapping[str, Any]],
        base_model: Optional[str],
        extra_tags: Sequence[str],
        probs_kind: str,
):
    card_data = _card_metadata(
        title=title, license=license, parts=parts, dataset=dataset, method=method, metrics=metrics,
        eval_split=eval_split, base_model=base_model, extra_tags=extra_tags)
    pcfg = config['pretrained_cfg']
    labels = config.get('label_names')
    label_preview = None
    if labels:
        names = list(labels.values()) if isinstance(labels, dict) else list(labels)
        label_preview = ', '.join(f'`{n}`' for n in names[:8]) + (', ...' if len(names) > 8 else '')
    settings = [(k, v) for k, v in method.items() if k != 'name']
    method_title = ' + '.join(_METHODS[p][0] for p in parts)
    papers = [_METHODS[p][2] for p in parts if _METHODS[p][2]]
    bibs = [_METHODS[p][3] for p in parts if _METHODS[p][3]] + [_TIMM_BIB]
    ds_id = hub_dataset_id(dataset)
    dataset_text = f'[`{ds_id}`](https://huggingface.co/datasets/{ds_id})' if ds_id and '/' in ds_id else f'`{dataset}`'
    if 'relabel' in parts and method.get('maps'):
        maps_id = hub_dataset_id(method['maps'])
        maps = f'[`{maps_id}`](https://huggingface.co/datasets/{maps_id})' if maps_id and '/' in maps_id \
            else f'`{method["maps"]}`'
        dataset_text += f', with the label maps {maps}'
    num_params = sum(t.numel() for t in state_dict.values() if t.is_floating_point())
    summary = (f'A `{config["architecture"]}` image classifier ({config["num_classes"]} classes) trained on '
               f'`{dataset}` with {method_title}, using timm-multilabel on top of timm.')
    args_yaml = yaml.safe_dump(_jsonable(args), sort_keys=True).strip() if args else None
    card = render_card(
        'model_card.md', card_data,
        title=title,
        summary=summary,
        architecture=config['architecture'],
        model_name_given=model_name,
        load_name=load_name,
        num_classes=config['num_classes'],
        num_params_m=num_params / 1e6,
        label_preview=label_preview,
        input_size=tuple(pcfg.get('input_size', ())),
        interpolation=pcfg.get('interpolation'),
        crop_pct=pcfg.get('crop_pct'),
        mean=tuple(round(float(m), 4) for m in pcfg.get('mean', ())),
        std=tuple(round(float(s), 4) for s in pcfg.get('std', ())),
        dataset_text=dataset_text,
        eval_dataset_text=f'`{dataset}`',
        method_title=method_title,
        method_settings=settings,
        method_description='\n\n'.join(_METHODS[p][4] for p in parts),
        papers=papers,
        probs_kind=probs_kind,
        metric_rows=[(METRIC_NAMES.get(k, k), f'{v:.4g}' if abs(v) < 1e4 else f'{v:.6g}') for k, v in metrics.items()],
        eval_split=eval_split,
        args_yaml=args_yaml,
        citations='\n\n'.join(bibs),
        versions={'timm_multilabel': __version__, 'timm': timm.__version__, 'torch': torch.__version__.split('+')[0]},
    )
    return card


def save_model_folder(
        model: nn.Module,
        output_dir: Union[str, os.PathLike],
        *,
        model_name: str,
        num_classes: int,
        label_names: Optional[Sequence[str]] = None,
        data_config: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        method: Optional[Mapping[str, Any]] = None,
        dataset: str = '',
        args: Optional[Union[Mapping[str, Any], argparse.Namespace]] = None,
        state_dict: Optional[Mapping[str, torch.Tensor]] = None,
        repo_id: Optional[str] = None,
        license: str = 'apache-2.0',
        eval_split: Optional[str] = None,
        extra_tags: Sequence[str] = (),
) -> Path:
    """Write a Hugging Face model folder that timm loads unchanged: weights, timm config, model card.

    Files (each written to a temporary file in ``output_dir``, then renamed; nothing is written when an
    argument is wrong): ``model.safetensors`` (``state_dict``, default the model's), ``config.json``
    (timm's ``save_config_for_hf`` format: architecture, num_classes, num_features, label_names,
    model_args, pretrained_cfg with mean/std/input_size/interpolation/crop_pct/classifier, plus our
    ``timm_multilabel`` entry) and ``README.md`` (card rendered from ``hub_cards/model_card.md``, with a
    ``model-index`` holding the given metrics).

    Args:
        model: the timm model (``timm.create_model``; DDP / compile wrappers are unwrapped).
        output_dir: folder to write (created; other files in it are left alone).
        model_name: the ``--model`` the run used (e.g. ``resnet50`` or ``hf-hub:timm/resnet50.a1_in1k``).
        num_classes: classifier outputs; must equal the model's.
        label_names: one name per class (e.g. WordNet ids), or None.
        data_config: evaluation preprocessing: ``mean``, ``std``, ``input_size``, ``interpolation``,
            ``crop_pct`` (missing keys come from the model's pretrained_cfg).
        metrics: ``top1``, ``real_acc``, ``real_f1@0.25``, ``real_f1@0.5``, ``label_coverage@0.25``, ``mAP``
            (percent; coverage in labels per image); None or non-finite values are left out.
        method: ``{'name': 'mile', 'kt':.., 'ks':.., 'rho':..}``, ``{'name': 'relabel', 'maps': ID_OR_PATH}``,
            ``{'name': 'mile+relabel', ...}`` or ``{'name': 'baseline'}`` (default).
        dataset: training data (``--dataset``: a Hub id, ``hfds/ORG/NAME``, ``digits-grid``, a folder name).
        args: the run's arguments, listed in the card.
        state_dict: weights to save (e.g. the EMA weights); default ``model.state_dict()``.
        repo_id: the Hub repo the folder is meant for (its name titles the card; usage snippets load it).
        license: the card's license id.
        eval_split: the split the metrics come from, recorded in model-index.
        extra_tags: more card tags.

    Returns:
        ``Path(output_dir)``.
    """
    model = unwrap_model(model)
    method = dict(method or {'name': 'baseline'})
    parts = _method_parts(method)
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    args = dict(args) if args is not None else None
    # the keys of timm's resolve_data_config that describe evaluation preprocessing; others are ignored
    data_config = {k: v for k, v in (data_config or {}).items() if k in _DATA_CONFIG_KEYS and v is not None}
    # --split-bn: the plain model's weights, which timm.create_model(architecture) loads strictly
    state_dict = without_split_bn(clean_state_dict(state_dict if state_dict is not None else model.state_dict()), model)
    _check_inputs(model, num_classes, label_names, state_dict)
    clean_metrics = {}
    for key, value in (metrics or {}).items():
        value = _as_number(key, value)
        if value is not None:
            clean_metrics[key] = value
    if repo_id is not None:
        _check_repo_id(repo_id)

    output_dir = Path(output_dir)
    # the three files appear together, after everything is made (timm validates the config first)
    with ExitStack() as stack:
        tmps = {name: stack.enter_context(atomic_path(output_dir / name))
                for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)}
        model_config: Dict[str, Any] = {'pretrained_cfg': {'license': license}}
        if label_names is not None:
            model_config['label_names'] = list(label_names)
        try:
            save_config_for_hf(model, str(tmps[CONFIG_NAME]), model_config=model_config, data_config=data_config)
        except (ValueError, AssertionError, TypeError) as e:
            raise UserError(f'cannot describe {type(model).__name__} in a timm config.json: {e}') from None
        config = json.loads(tmps[CONFIG_NAME].read_text(encoding='utf-8'))
        probs_kind = _probs_kind(parts, args)
        config[CONFIG_KEY] = _jsonable({
            'version': __version__, 'method': method, 'dataset': dataset, 'probs': probs_kind,
        })
        tmps[CONFIG_NAME].write_text(json.dumps(config, indent=2), encoding='utf-8')

        source_id = model.pretrained_cfg.get('hf_hub_id')
        # fine-tuned from timm's Hub weights (--pretrained): name them as the base model
        base_model = source_id if args and args.get('pretrained') and not args.get('pretrained_path') else None
        if model_name.startswith('hf-hub:') and args and args.get('pretrained'):
            base_model = model_name[len('hf-hub:'):].split('@')[0]
        title = repo_id.split('/')[-1] if repo_id else f'{config["architecture"]}.{"_".join(parts)}' \
            + (f'_{_safe_name(dataset)}' if dataset else '')
        load_name = f'hf-hub:{repo_id}' if repo_id else f'local-dir:{output_dir.resolve()}'
        card = _render_card(
            model=model, config=config, state_dict=state_dict, model_name=model_name, title=title,
            load_name=load_name, license=license, parts=parts, dataset=dataset, method=method,
            metrics=clean_metrics, eval_split=eval_split, args=args, base_model=base_model,
            extra_tags=extra_tags, probs_kind=probs_kind)
        tmps[CARD_NAME].write_text(str(card), encoding='utf-8')
        # safetensors wants CPU, contiguous tensors that share no memory (tied weights, views): copies
        # keep every key, which timm's strict local-dir:/hf-hub: loading needs
        tensors = {k: v.detach().to('cpu', memory_format=torch.contiguous_format, copy=True)
                   for k, v in state_dict.items()}
        safetensors.torch.save_file(tensors, str(tmps[WEIGHTS_NAME]), metadata={'format': 'pt'})
    return output_dir


def _safe_name(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '_', str(name)).strip('_').lower()


def card_metrics(card_or_path: Any) -> Dict[str, float]:
    """Metrics of a model card's ``model-index`` as ``{metric_type: value}`` (the keys of ``metrics``)."""
    card = card_or_path if isinstance(card_or_path, ModelCard) else ModelCard.load(card_or_path)
    return {r.metric_type: r.metric_value for r in (card.data.eval_results or [])}


def read_multilabel_config(model_name: str) -> Optional[Dict[str, Any]]:
    """Our ``timm_multilabel`` entry of a ``local-dir:`` / ``hf-hub:`` model's config.json, or None.

    For ``hf-hub:`` ids only an already-cached config is read (timm downloads it when creating the model).
    """
    source, _, ident = model_name.partition(':')
    path = None
    if source == 'local-dir':
        path = Path(ident) / CONFIG_NAME
    elif source in ('hf-hub', 'hf_hub'):
        try:
            repo, _, revision = ident.partition('@')
            found = huggingface_hub.try_to_load_from_cache(repo, CONFIG_NAME, revision=revision or None)
            path = Path(found) if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - a best-effort hint only
            path = None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding='utf-8')).get(CONFIG_KEY)
    except (OSError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------------
# push


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f'repo id {repo_id!r} is not a valid Hugging Face repo id ({str(e).splitlines()[0]})') from None


def hub_upload_folder(
        folder: Union[str, os.PathLike],
        repo_id: str,
        *,
        repo_type: str = 'model',
        private: bool = False,
        token: Optional[str] = None,
        allow_patterns: Optional[Sequence[str]] = None,
        commit_message: str = 'Upload with timm-multilabel',
) -> str:
    """``create_repo`` + ``upload_folder``; no token, offline mode or no network -> one-line UserError.

    Returns:
        the commit URL.
    """
    _check_repo_id(repo_id)
    where = f'the {"model" if repo_type == "model" else repo_type} folder {folder} is complete'
    if constants.HF_HUB_OFFLINE:
        raise UserError(f'cannot push to {repo_id}: HF_HUB_OFFLINE is set; {where}, push it later')
    token = token or huggingface_hub.get_token()
    if not token:
        raise UserError(f'cannot push to {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); '
                        f'{where}, push it later')
    api = huggingface_hub.HfApi(token=token, library_name='timm-multilabel', library_version=__version__)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=url.repo_id, folder_path=str(folder), repo_type=repo_type,
            allow_patterns=list(allow_patterns) if allow_patterns else None, commit_message=commit_message)
    except (OSError, errors.HTTPError, ValueError) as e:
        raise UserError(f'cannot push to {repo_id}: {hub_error_line(e)}; {where}, push it later') from None
    return getattr(info, 'commit_url', None) or str(info)


def push_model_folder(
        folder: Union[str, os.PathLike],
        repo_id: str,
        private: bool = False,
        token: Optional[str] = None,
) -> str:
    """Upload a model folder (``model.safetensors``, ``config.json``, ``README.md`` and, when present,
    ``summary.json``/``summary.csv``/``args.yaml``; never checkpoints) to the Hub model repo ``repo_id``.

    Raises UserError (one line) for a folder without weights or config, a bad repo id, no token,
    offline mode or a network failure. Returns the commit URL.
    """
    folder = Path(folder)
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not (folder / n).is_file()]
    if missing:
        raise UserError(f'{folder} is not a model folder: missing {", ".join(missing)}')
    return hub_upload_folder(folder, repo_id, repo_type='model', private=private, token=token,
                             allow_patterns=UPLOAD_PATTERNS)


# ---------------------------------------------------------------------------------------------------
# checkpoints


def model_from_checkpoint(
        checkpoint_path: Union[str, os.PathLike],
        model_name: Optional[str] = None,
        num_classes: Optional[int] = None,
        use_ema: bool = False,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the timm model of a checkpoint and load its weights (strictly).

    Args:
        checkpoint_path: train.py / timm train.py checkpoint, or a bare state dict (``.pth``/``.safetensors``).
        model_name: timm architecture; default the checkpoint's ``arch`` (else ``args['model']``).
        num_classes: default ``args['num_classes']``, else read off the classifier weight.
        use_ema: load ``state_dict_ema`` instead of ``state_dict``.

    Returns:
        ``(model in eval mode, checkpoint dict)``; the dict's ``'args'`` is a plain dict.
    """
    path = Path(checkpoint_path)
    ckpt = load_checkpoint_file(path)
    state_dict = pick_state_dict(ckpt, path, use_ema)
    args = checkpoint_args(ckpt) if not is_state_dict(ckpt) else {}
    arch = model_name or ckpt.get('arch') or args.get('model')
    if not isinstance(arch, str) or not arch:
        raise UserError(f'checkpoint {path}: it does not name its architecture; pass --model NAME')
    kwargs: Dict[str, Any] = {}
    if isinstance(args.get('model_kwargs'), Mapping):
        kwargs.update(args['model_kwargs'])
    for src, dst in (('in_chans', 'in_chans'), ('gp', 'global_pool')):
        if args.get(src) is not None:
            kwargs[dst] = args[src]
    classes = num_classes if num_classes is not None else args.get('num_classes')
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=classes, **kwargs)
        if num_classes is None:
            classifier = model.pretrained_cfg.get('classifier')
            classifier = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
            weight = state_dict.get(f'{classifier}.weight') if classifier else None
            if weight is not None and weight.shape[0] != model.num_classes:
                model = timm.create_model(arch, pretrained=False, num_classes=weight.shape[0], **kwargs)
    except RuntimeError as e:
        raise UserError(f'checkpoint {path}: cannot create model {arch!r} ({str(e).splitlines()[0]})') from None
    try:
        model.load_state_dict(without_split_bn(state_dict, model), strict=True)  # a --split-bn run's checkpoint
    except RuntimeError as e:
        detail = ' '.join(str(e).split())[:300]
        raise UserError(f'checkpoint {path}: weights do not fit {arch!r}: {detail}') from None
    ckpt = dict(ckpt)
    ckpt['args'] = args
    return model.eval(), ckpt


def _metrics_from_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise UserError(f'--metrics {path}: cannot read JSON ({e})') from None
    if isinstance(data, dict) and isinstance(data.get('metrics'), dict):  # train.py's summary.json
        data = data['metrics']
    if not isinstance(data, dict):
        raise UserError(f'--metrics {path}: expected a JSON object of metrics')
    return {k: v for k, v in data.items() if k in METRIC_KEYS}


def _names_by_index(names: Any, num_classes: int) -> Optional[List[str]]:
    """``[name of class 0, ...]`` from a list or an ``{index: name}`` dict covering every class, else None."""
    if isinstance(names, Mapping):
        try:
            names = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            return None
        if sorted(names) != list(range(num_classes)):
            return None
        names = [names[i] for i in range(num_classes)]
    if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def checkpoint_label_names(
        checkpoint_path: Union[str, os.PathLike],
        model: nn.Module,
        args: Optional[Mapping[str, Any]] = None,
        stored: Any = None,
) -> Optional[List[str]]:
    """Class names for a checkpoint.

    1. ``config.json`` of the model folder train.py writes into its ``--output`` (beside the checkpoint)
       at the end of a run: its ``label_names`` when its architecture and class count are the model's;
    2. else ``stored``, the checkpoint's own ``label_names`` (train.py stores the training data's class
       names in every checkpoint; older runs and timm's train.py do not), when it names every class;
       before the ``--class-map`` file, which may have changed since the run read it;
    3. else the checkpoint's ``--class-map`` file (timm's format: one name per line, or a pickled dict),
       when it is still there and names every class;
    4. else None.
    """
    num_classes = int(model.num_classes)
    config_path = Path(checkpoint_path).parent / CONFIG_NAME
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding='utf-8'))
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict) and config.get('num_classes') == num_classes \
                and config.get('architecture') == model.pretrained_cfg.get('architecture'):
            names = _names_by_index(config.get('label_names'), num_classes)
            if names is not None:
                return names
    names = _names_by_index(stored, num_classes)
    if names is not None:
        return names
    class_map = (args or {}).get('class_map')
    if class_map:
        from timm.data.readers.class_map import load_class_map
        try:
            class_to_idx = load_class_map(class_map)
        except (OSError, AssertionError, ValueError, EOFError) as e:
            _logger.warning('--class-map %s of the checkpoint is unreadable here (%s): no label names', class_map, e)
            return None
        return _names_by_index({idx: str(name) for name, idx in class_to_idx.items()}, num_classes)
    return None


def export_checkpoint(
        checkpoint_path: Union[str, os.PathLike],
        out_dir: Union[str, os.PathLike],
        model_name: Optional[str] = None,
        num_classes: Optional[int] = None,
        *,
        use_ema: bool = False,
        label_names: Optional[Sequence[str]] = None,
        dataset: Optional[str] = None,
        metrics: Optional[Union[Mapping[str, Any], str, os.PathLike]] = None,
        method: Optional[Mapping[str, Any]] = None,
        repo_id: Optional[str] = None,
        license: str = 'apache-2.0',
) -> Path:
    """Make the model folder of :func:`save_model_folder` from a train.py or timm train.py checkpoint.

    Args:
        checkpoint_path: the checkpoint (``{'arch', 'state_dict', 'state_dict_ema'?, 'args', ...}``).
        out_dir: the model folder to write.
        model_name: architecture override (needed for a bare state dict).
        num_classes: override; default from the checkpoint's args or classifier weight.
        use_ema: export ``state_dict_ema``.
        label_names: one name per class; default :func:`checkpoint_label_names` (the run folder's
            ``config.json``, else the checkpoint's ``label_names``, else its ``--class-map``).
        dataset: training data; default the checkpoint's ``args['dataset']``.
        metrics: a dict, or a JSON file (train.py's ``summary.json`` or a flat dict); default the
            checkpoint's ``metric`` under its ``args['eval_metric']`` name.
        method: default read from the checkpoint's args (``mile*``, ``relabel_maps``).
        repo_id / license: as in :func:`save_model_folder`.
    """
    model, ckpt = model_from_checkpoint(checkpoint_path, model_name, num_classes, use_ema)
    args = ckpt['args']
    try:
        data_config = timm.data.resolve_data_config(args, model=model)
    except AssertionError:
        raise UserError(f'checkpoint {checkpoint_path}: its args hold an unusable input size / mean / std') from None
    if isinstance(metrics, (str, os.PathLike)):
        metrics = _metrics_from_file(metrics)
    elif metrics is None:
        metrics = {}
        name = args.get('eval_metric', 'top1')
        if name in METRIC_KEYS and isinstance(ckpt.get('metric'), (int, float)):
            metrics[name] = ckpt['metric']
    if dataset is None:
        dataset = args.get('dataset') or (Path(args['data_dir']).name if args.get('data_dir') else '')
    if label_names is None:
        label_names = checkpoint_label_names(checkpoint_path, model, args, ckpt.get('label_names'))
    return save_model_folder(
        model, out_dir,
        model_name=str(model_name or ckpt.get('arch') or args.get('model')),
        num_classes=model.num_classes,
        label_names=label_names,
        data_config={k: data_config[k] for k in _DATA_CONFIG_KEYS if k in data_config},
        metrics=metrics,
        method=method or describe_method(args),
        dataset=str(dataset),
        args=args or None,
        repo_id=repo_id,
        license=license,
        eval_split=args.get('val_split') or None,
    )
