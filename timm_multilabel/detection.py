"""timm models as detection backbones: torchvision (Faster R-CNN, RetinaNet, ...) and mmdetection.

torchvision::

    import torchvision
    from timm_multilabel.detection import timm_backbone

    backbone = timm_backbone('local-dir:./output/my-run', out_indices=(1, 2, 3, 4), trainable_layers=3)
    model = torchvision.models.detection.FasterRCNN(backbone, num_classes=91)

:func:`timm_backbone` takes any ``timm.create_model`` name: a registry name (``resnet50``,
``convnext_tiny.fb_in1k``), a model folder written by this package or timm (``local-dir:PATH``) or a
Hub id (``hf-hub:ORG/NAME``). It builds timm's ``features_only`` model (the classifier's weights load
into it, the head is dropped) and a torchvision ``FeaturePyramidNetwork`` with an extra max-pooled
level, so the default anchor generator (5 levels) and RoI pooler (levels ``'0'..'3'``) of torchvision's
detectors fit the default ``out_indices=(1, 2, 3, 4)`` (strides 4..32 on most CNNs).

mmdetection / mmpretrain: mmpretrain wraps timm as ``TIMMBackbone``; the same names work there, with
the FPN from mmdetection's config::

    backbone=dict(
        type='mmpretrain.TIMMBackbone',
        model_name='local-dir:/path/to/model_folder',   # or 'hf-hub:ORG/NAME', or a timm name
        features_only=True,
        pretrained=True,
        out_indices=(1, 2, 3, 4)),
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),

(``custom_imports = dict(imports=['mmpretrain.models'], allow_failed_imports=False)`` registers it;
``in_channels`` are the backbone's ``feature_info.channels()``.)
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .errors import UserError

__all__ = ['TimmBackbone', 'timm_backbone', 'stage_of_parameters']


def _resolve_module(body: nn.Module, name: str) -> Optional[str]:
    """The name, inside the features_only body, of a feature_info module name of the full model."""
    modules = dict(body.named_modules())
    for candidate in (name, name.replace('.', '_'), f'model.{name}'):
        if candidate in modules:
            return candidate
    return None


def stage_of_parameters(body: nn.Module) -> Dict[str, int]:
    """Map each parameter of a timm ``features_only`` model to its feature stage.

    Stage ``i`` holds the modules that run after the output of feature level ``i - 1`` up to and including
    level ``i``'s module (``body.feature_info.info[i]['module']``); stage 0 includes the stem (and e.g. a
    ViT's patch embedding / cls token). Parameters after the last level (a final norm) join the last stage.

    Returns:
        ``{parameter name: stage index}``, ``0 <= index < len(body.feature_info.info)``.
    """
    info = body.feature_info.info
    order = {name: i for i, (name, _) in enumerate(body.named_modules())}
    ends: List[int] = []  # pre-order position after each level's subtree
    for level in info:
        name = _resolve_module(body, level['module'])
        if name is None:
            raise UserError(f'cannot locate feature module {level["module"]!r} in {type(body).__name__}; '
                            f'use trainable_layers=None')
        prefix = name + '.'
        last = max(i for n, i in order.items() if n == name or n.startswith(prefix))
        ends.append(last + 1)
    stages = {}
    for pname, _ in body.named_parameters():
        owner = pname.rpartition('.')[0]
        pos = order.get(owner, 0)
        stage = next((i for i, end in enumerate(ends) if pos < end), len(info) - 1)
        stages[pname] = stage
    return stages


def _freeze_batch_norms(body: nn.Module, names: Sequence[str]) -> None:
    from timm.layers import freeze_batch_norm_2d
    for name in names:
        body.set_submodule(name, freeze_batch_norm_2d(body.get_submodule(name)))


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model plus an optional torchvision feature pyramid.

    ``forward(x: Tensor[B, 3, H, W]) -> OrderedDict[str, Tensor]``: with the FPN, keys ``'0'``..``'n-1'``
    (one per ``out_indices`` level, fine to coarse, each ``[B, out_channels, H / stride, W / stride]``)
    and ``'pool'`` (max-pooled last level); without, one entry ``'0'``: the last level's features.
    ``out_channels`` is what torchvision's detectors read.
    """

    def __init__(self, body: nn.Module, fpn: Optional[nn.Module], out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> 'OrderedDict[str, torch.Tensor]':
        features = self.body(x)
        if isinstance(features, dict):
            features = list(features.values())
        if self.fpn is None:
            return OrderedDict([('0', features[-1])])
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def timm_backbone(
        name_or_path: str,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        trainable_layers: Optional[int] = 3,
        pretrained: Optional[bool] = None,
        fpn: bool = True,
        out_channels: int = 256,
        frozen_bn: Optional[bool] = None,
        **model_kwargs: Any,
) -> TimmBackbone:
    """A torchvision-detection backbone from any timm model name, ``local-dir:`` folder or ``hf-hub:`` id.

    Args:
        name_or_path: ``timm.create_model`` name (``resnet50``, ``local-dir:PATH``, ``hf-hub:ORG/NAME``).
        out_indices: feature levels to return (indices into the full model's ``feature_info``;
            for most CNNs level ``i`` has stride ``2 ** (i + 1)``).
        trainable_layers: how many feature stages, counted from the last, are trained (torchvision's
            ``trainable_backbone_layers``): stage ``i`` is everything from the end of level ``i - 1`` up to
            level ``i`` (stage 0 includes the stem), see :func:`stage_of_parameters`. With a ResNet's 5
            levels (stem, layer1..layer4), 3 trains layer2..layer4 and freezes the stem and layer1; 0 freezes
            the whole backbone (the FPN still trains); None trains everything. Frozen stages get
            ``requires_grad=False`` and their batch norms become ``FrozenBatchNorm2d``.
        pretrained: load weights; default True for ``local-dir:`` / ``hf-hub:`` names (their weights are
            the point), False for registry names.
        fpn: add a torchvision ``FeaturePyramidNetwork`` (+ ``LastLevelMaxPool``); without it the backbone
            returns only the last level (``{'0': ...}``, ``out_channels`` its channels).
        out_channels: FPN channels.
        frozen_bn: turn every batch norm into ``FrozenBatchNorm2d`` (as torchvision does for trained
            backbones); default: when ``pretrained``.
        **model_kwargs: passed on to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).

    Returns:
        :class:`TimmBackbone` with ``.out_channels``.
    """
    import timm
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    source = name_or_path.partition(':')[0].lower() if ':' in name_or_path else ''
    if pretrained is None:
        pretrained = source in ('local-dir', 'hf-hub', 'hf_hub')
    if frozen_bn is None:
        frozen_bn = bool(pretrained)
    out_indices = tuple(int(i) for i in out_indices)
    try:
        body = timm.create_model(
            name_or_path, pretrained=pretrained, features_only=True, out_indices=out_indices, **model_kwargs)
    except (RuntimeError, ValueError, FileNotFoundError, IndexError, AssertionError) as e:
        raise UserError(f'backbone {name_or_path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}') \
            from None
    num_levels = len(body.feature_info.info)
    if trainable_layers is not None:
        if not 0 <= trainable_layers <= num_levels:
            raise UserError(f'trainable_layers must be in [0, {num_levels}] for {name_or_path} '
                            f'(it has {num_levels} feature stages), got {trainable_layers}')
        stages = stage_of_parameters(body)
        first_trainable = num_levels - trainable_layers
        for pname, param in body.named_parameters():
            if stages[pname] < first_trainable:
                param.requires_grad_(False)
    bn_types = (nn.BatchNorm2d, nn.SyncBatchNorm)
    bn_names = [n for n, m in body.named_modules() if isinstance(m, bn_types)]
    if not frozen_bn and trainable_layers is not None:
        # batch norms of frozen stages keep their statistics too
        frozen_params = {n.rpartition('.')[0] for n, p in body.named_parameters() if not p.requires_grad}
        bn_names = [n for n in bn_names if n in frozen_params]
    elif not frozen_bn:
        bn_names = []
    _freeze_batch_norms(body, bn_names)

    channels = body.feature_info.channels()
    if not fpn:
        return TimmBackbone(body, None, channels[-1])
    pyramid = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
    return TimmBackbone(body, pyramid, out_channels)
