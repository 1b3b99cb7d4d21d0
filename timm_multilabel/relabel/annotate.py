"""LabelMapAnnotator: any timm classifier run fully convolutionally (ReLabel, Fig. A1).

The classifier's head is applied at every position of the final feature map instead of once
after global pooling:

* CNNs (``forward_features`` gives ``[B, C, H, W]``, or ``[B, H, W, C]`` for ``output_fmt``
  NHWC models): every cell is handed to ``forward_head`` as a 1x1 feature map. Global
  average pooling of a 1x1 map is the identity, so for an average-pooled model with a linear
  classifier this is exactly the paper's "fully-connected layer as a 1x1 convolution", and
  the mean of the full map over cells equals the model's global logits. Whatever the head
  does after pooling (conv_head of MobileNetV3, the norm of ConvNeXt, ...) is applied per cell.
* ViT-style models (``forward_features`` gives tokens ``[B, N, D]`` after the final norm):
  the ``num_prefix_tokens`` class/register tokens are dropped and ``forward_head`` is applied
  to each patch token alone (handed over as a sequence made of that token only, so token,
  average, max or attention pooling all reduce to it), then reshaped to the patch grid.

Rows of the map are y (row 0 = top of the image), columns are x.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn
from timm.data import create_transform, resolve_data_config
from torch import Tensor

from ..checkpoint_files import is_state_dict, load_checkpoint_file, pick_state_dict
from ..errors import UserError

__all__ = ['LabelMapAnnotator', 'create_annotator', 'load_weights_file']


def _square(img_size: Union[int, Tuple[int, ...], None]) -> Optional[int]:
    if img_size is None:
        return None
    if isinstance(img_size, (tuple, list)):
        size = tuple(img_size)[-2:]
        if len(size) != 2 or size[0] != size[1]:
            raise UserError(f'LabelMapAnnotator: img_size must be square, got {img_size!r}')
        img_size = size[0]
    if int(img_size) <= 0:
        raise UserError(f'LabelMapAnnotator: img_size must be positive, got {img_size!r}')
    return int(img_size)


class LabelMapAnnotator(nn.Module):
    """Turn a timm classifier into a label-map annotator.

    Args:
        model: a timm classifier (``forward_features`` / ``forward_head``), weights loaded.
        topk: number of classes kept per cell (K).
        img_size: square input side S; default: the model's pretrained input size.
        eval_mode: put the model in eval mode (BatchNorm running stats, no dropout).

    ``annotator(images [B, 3, S, S])`` (normalized with ``annotator.transform``) returns
    ``scores [B, K, H, W]`` float32 logits, descending over K at every cell, and
    ``classes [B, K, H, W]`` int64 class ids. ``annotator.dense(images)`` gives all classes,
    ``[B, num_classes, H, W]``.
    """

    def __init__(
            self,
            model: nn.Module,
            topk: int = 5,
            img_size: Union[int, Tuple[int, ...], None] = None,
            eval_mode: bool = True,
    ):
        super().__init__()
        for attr in ('forward_features', 'forward_head'):
            if not callable(getattr(model, attr, None)):
                raise UserError(f'LabelMapAnnotator: {type(model).__name__} has no {attr}(); '
                                f'a timm classifier is needed')
        num_classes = int(getattr(model, 'num_classes', 0) or 0)
        if num_classes <= 0:
            raise UserError(f'LabelMapAnnotator: {type(model).__name__} has no classifier (num_classes=0)')
        if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= num_classes:
            raise UserError(f'LabelMapAnnotator: topk must be an int in [1, {num_classes}], got {topk!r}')
        self.model = model.eval() if eval_mode else model
        self.topk = topk
        self.num_classes = num_classes
        config = resolve_data_config({}, model=model)
        size = _square(img_size) or _square(config['input_size'])
        config['input_size'] = (3, size, size)
        config['crop_pct'] = 1.0
        config['crop_mode'] = 'squash'
        self.data_config: Dict = config
        self.img_size = size
        self._map_size: Optional[Tuple[int, int]] = None

    @property
    def transform(self) -> Callable:
        """PIL image -> normalized ``[3, S, S]`` tensor: the whole image resized to S x S (no crop),
        normalized with the model's pretrained mean/std (timm's ``resolve_data_config``)."""
        c = self.data_config
        return create_transform(
            input_size=c['input_size'], is_training=False, interpolation=c['interpolation'],
            mean=c['mean'], std=c['std'], crop_pct=1.0, crop_mode='squash')

    @property
    def map_size(self) -> Tuple[int, int]:
        """``(H, W)`` of the maps for the S x S input (one dry run on first access)."""
        if self._map_size is None:
            p = next(self.model.parameters(), None)
            x = torch.zeros(1, 3, self.img_size, self.img_size,
                            device=p.device if p is not None else 'cpu',
                            dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
            with torch.inference_mode():
                self._map_size = tuple(self.dense(x).shape[-2:])
        return self._map_size

    def dense(self, images: Tensor) -> Tensor:
        """Full label maps: ``images [B, 3, S, S]`` -> logits ``[B, num_classes, H, W]``."""
        return self._dense_nhwc(images).permute(0, 3, 1, 2)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``images [B, 3, S, S]`` -> ``(scores [B, K, H, W] float32, classes [B, K, H, W] int64)``,
        top-K per cell in descending order (computed on the images' device)."""
        scores, classes = self._dense_nhwc(images).float().topk(self.topk, dim=-1, largest=True, sorted=True)
        return scores.permute(0, 3, 1, 2).contiguous(), classes.permute(0, 3, 1, 2).contiguous()

    def _dense_nhwc(self, images: Tensor) -> Tensor:
        """``images [B, 3, S, S]`` -> logits ``[B, H, W, num_classes]`` (classes last: top-K
        over a contiguous dim, no transposed copy of the full map)."""
        if images.ndim != 4:
            raise UserError(f'LabelMapAnnotator: images must be [B, 3, S, S], got {tuple(images.shape)}')
        feats = self.model.forward_features(images)
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        if feats.ndim == 4:
            logits = self._cells_to_logits(feats)
        elif feats.ndim == 3:
            logits = self._tokens_to_logits(feats, images.shape[-2:])
        else:
            raise UserError(f'LabelMapAnnotator: {type(self.model).__name__}.forward_features returns '
                            f'{tuple(feats.shape)}, neither a feature map nor tokens; it cannot run fully '
                            f'convolutionally')
        self._map_size = tuple(logits.shape[1:3])
        return logits

    # -- heads ------------------------------------------------------------------------------

    def _head(self, x: Tensor, what: str) -> Tensor:
        name = type(self.model).__name__
        try:
            out = self.model.forward_head(x)
        except Exception as e:  # noqa: BLE001 -- a head that cannot take one position
            raise UserError(f'LabelMapAnnotator: the head of {name} cannot be applied to one {what} '
                            f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); '
                            f'this model cannot run fully convolutionally') from e
        if out.ndim != 2 or out.shape != (x.shape[0], self.num_classes):
            raise UserError(f'LabelMapAnnotator: the head of {name} applied to one {what} gives '
                            f'{tuple(out.shape)}, not [N, {self.num_classes}]; this model cannot run '
                            f'fully convolutionally')
        return out

    def _cells_to_logits(self, feats: Tensor) -> Tensor:
        nhwc = str(getattr(self.model, 'output_fmt', 'NCHW')) in ('NHWC', 'Format.NHWC')
        if nhwc:
            b, h, w, c = feats.shape
            cells = feats.reshape(b * h * w, 1, 1, c)
        else:
            b, c, h, w = feats.shape
            cells = feats.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
        return self._head(cells, 'feature-map cell').reshape(b, h, w, -1)

    def _tokens_to_logits(self, tokens: Tensor, input_hw) -> Tensor:
        npt = int(getattr(self.model, 'num_prefix_tokens', 0) or 0)
        b, n, d = tokens.shape
        patches = tokens[:, npt:]
        h, w = self._grid(n - npt, tuple(int(s) for s in input_hw))
        # each patch token alone, repeated in the prefix slots so that token, avg, max and
        # attention pooling all return it
        seq = patches.reshape(b * h * w, 1, d).expand(-1, npt + 1, -1)
        return self._head(seq, 'patch token').reshape(b, h, w, -1)

    def _grid(self, num_patches: int, input_hw: Tuple[int, int]) -> Tuple[int, int]:
        pe = getattr(self.model, 'patch_embed', None)
        if pe is not None and hasattr(pe, 'dynamic_feat_size'):
            try:
                h, w = pe.dynamic_feat_size(input_hw)
                if h * w == num_patches:
                    return int(h), int(w)
            except Exception:  # noqa: BLE001
                pass
        side = math.isqrt(num_patches)
        if side * side == num_patches and input_hw[0] == input_hw[1]:
            return side, side
        raise UserError(f'LabelMapAnnotator: cannot lay {num_patches} tokens of {type(self.model).__name__} '
                        f'out on a grid for input {input_hw}; this model cannot run fully convolutionally')


# -- factory ---------------------------------------------------------------------------------

def load_weights_file(path: str) -> Dict[str, Tensor]:
    """State dict from a ``.safetensors`` file or a ``.pt/.pth/.bin`` checkpoint, read by
    :func:`~timm_multilabel.checkpoint_files.load_checkpoint_file`; of a training checkpoint, its EMA
    weights when it has them, else ``state_dict``/``model``."""
    ckpt = load_checkpoint_file(path)
    has_ema = any(isinstance(ckpt.get(k), dict) and is_state_dict(ckpt[k]) for k in ('state_dict_ema', 'model_ema'))
    return pick_state_dict(ckpt, path, use_ema=has_ema and not is_state_dict(ckpt))


def _load_into(model: nn.Module, state: Dict[str, Tensor], path: str) -> None:
    own = model.state_dict()
    if set(state) == set(own):
        model.load_state_dict(state)
        return
    # a checkpoint of the same architecture from another code base (e.g. the efficientnet-lite0
    # package, lukemelas-style names): same tensors in the same order, different names
    if len(state) == len(own) and all(a.shape == b.shape for a, b in zip(state.values(), own.values())):
        model.load_state_dict(dict(zip(own.keys(), state.values())))
        return
    missing = sorted(set(own) - set(state))[:3]
    raise UserError(f'weights {path} do not fit {type(model).__name__}: {len(state)} tensors for '
                    f'{len(own)} parameters/buffers (e.g. missing {", ".join(missing)})')


def _match_classifier(model: nn.Module, state: Dict[str, Tensor]) -> None:
    """Resize the classifier to the class count of ``state`` (a 10-class digits model loaded into
    a timm architecture created with its default 1000 classes)."""
    classifier = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier')
    if not classifier or not hasattr(model, 'reset_classifier'):
        return
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    weight = state.get(f'{names[0]}.weight')
    if weight is not None and weight.ndim >= 1 and weight.shape[0] != getattr(model, 'num_classes', None):
        model.reset_classifier(int(weight.shape[0]))


def create_annotator(
        model_name: str,
        pretrained: bool = False,
        pretrained_path: Optional[str] = None,
        topk: int = 5,
        img_size: Optional[int] = None,
        **model_kwargs,
) -> LabelMapAnnotator:
    """Build a ``LabelMapAnnotator`` from a timm model name.

    ``pretrained`` loads timm's weights (from the Hub / cache); ``pretrained_path`` loads a local
    safetensors or torch checkpoint, matched by name or, for a same-architecture checkpoint with
    other names, tensor by tensor in order. ``img_size`` resizes models with a fixed input size
    (ViT position embeddings) through timm's ``set_input_size``.
    """
    hub_or_folder = model_name.startswith(('hf-hub:', 'hf_hub:', 'local-dir:'))
    if not hub_or_folder and not timm.is_model(model_name):
        raise UserError(f'unknown timm model {model_name!r}')
    if model_name.startswith('local-dir:') and not os.path.isdir(model_name[len('local-dir:'):]):
        raise UserError(f'model folder {model_name[len("local-dir:"):]} not found')
    if pretrained and pretrained_path:
        raise UserError('give either --pretrained or --pretrained-path, not both')
    state = load_weights_file(pretrained_path) if pretrained_path else None
    try:
        model = timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
    except Exception as e:  # noqa: BLE001
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f'cannot create timm model {model_name!r}: {first}') from e
    if state is not None:
        _match_classifier(model, state)
        _load_into(model, state, pretrained_path)
    size = _square(img_size)
    if size is not None and hasattr(model, 'set_input_size'):
        cfg_size = _square(getattr(model, 'pretrained_cfg', {}).get('input_size'))
        if cfg_size != size:
            try:
                model.set_input_size(img_size=size)
            except TypeError:
                pass
    return LabelMapAnnotator(model, topk=topk, img_size=size)
