"""The paper's networks by name: ``create("se_resnet50")``, ``names()``, and ``summary(model, shape)``.

CIFAR (32×32, 10 classes by default): resnet20/32/44/56/110 (He et al.'s 6n + 2 layers, option A
shortcuts), preact_resnet110/164 (pre-activation, the paper's CIFAR baselines), inception_cifar;
each with an ``se_`` twin. ImageNet (224×224, 1000 classes): resnet18/34/50/101/152,
resnext50_32x4d, and their ``se_`` twins (SE-ResNet-50, SE-ResNeXt-50 of Table 2).

Keyword arguments go to the model's class (e.g. ``shortcut="B"``, ``stride_in_1x1=True``,
``se_position="pre"``, ``se_stages=(4,)``, ``se_options=dict(bias=False, squeeze="max",
gate="tanh", spatial=True)``). ``se_stages`` numbers stages as the paper does: conv1 is stage 1,
``layer1`` is stage 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from ..nn import Module
from .inception import DownsampleModule, InceptionCifar, InceptionModule
from .resnet import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    PreActResNet,
    ResNet,
)
from .summary import LayerRow, Summary, summary

__all__ = [
    "create", "names", "summary", "Summary", "LayerRow",
    "ResNet", "CifarResNet", "PreActResNet", "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck",
    "PadShortcut", "InceptionCifar", "InceptionModule", "DownsampleModule",
]

_IMAGENET_DEPTHS: dict[int, tuple[type[Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# name (without "se_") -> (builder taking num_classes and se_reduction, default number of classes)
_BUILDERS: dict[str, tuple[Callable[..., Module], int]] = {}
for _depth in (20, 32, 44, 56, 110):
    _BUILDERS[f"resnet{_depth}"] = (partial(CifarResNet, _depth), 10)
_BUILDERS["preact_resnet110"] = (partial(PreActResNet, 110, bottleneck=False), 10)
_BUILDERS["preact_resnet164"] = (partial(PreActResNet, 164, bottleneck=True), 10)
_BUILDERS["inception_cifar"] = (InceptionCifar, 10)
for _depth, (_block, _layers) in _IMAGENET_DEPTHS.items():
    _BUILDERS[f"resnet{_depth}"] = (partial(ResNet, _block, _layers), 1000)
_BUILDERS["resnext50_32x4d"] = (partial(ResNet, Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4), 1000)


def _cifar_resnet_any_depth(base: str) -> tuple[Callable[..., Module], int] | None:
    """He et al.'s CIFAR ResNet of any depth 6n + 2 >= 8 (resnet8, resnet14, ...), beyond the listed ones."""
    match = re.fullmatch(r"resnet(\d+)", base)
    if match is None:
        return None
    depth = int(match.group(1))
    if depth < 8 or (depth - 2) % 6:
        return None
    return partial(CifarResNet, depth), 10


def names() -> list[str]:
    """Every name ``create`` knows, plain networks first, then their SE twins."""
    return list(_BUILDERS) + [f"se_{n}" for n in _BUILDERS]


def create(name: str, num_classes: int | None = None, reduction: int | None = None, **kwargs: Any) -> Module:
    """A freshly initialised network by name (see :func:`names`).

    ``num_classes`` defaults to 10 for the CIFAR networks and 1000 for the ImageNet ones;
    ``reduction`` is the SE ratio r (16 by default) and applies only to ``se_`` networks.
    """
    se = name.startswith("se_")
    base = name[3:] if se else name
    builder_entry = _BUILDERS.get(base) or _cifar_resnet_any_depth(base)
    if builder_entry is None:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(names())} "
                         "(or a CIFAR ResNet of any depth 6n + 2 >= 8, e.g. resnet8, se_resnet14)")
    if reduction is not None and not se:
        raise ValueError(f"reduction={reduction} given for {name!r}, which has no SE blocks "
                         f"(did you mean 'se_{name}'?)")
    builder, default_classes = builder_entry
    se_reduction = (16 if reduction is None else reduction) if se else None
    return builder(num_classes=default_classes if num_classes is None else num_classes,
                   se_reduction=se_reduction, **kwargs)
