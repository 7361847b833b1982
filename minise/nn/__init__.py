"""Modules: layers with named, trainable parameters, and the SE block of the paper.

    import minise.nn as nn
    se = nn.SqueezeExcitation(256, reduction=16)     # Fig. 1 of the paper
    y = se(u)                                          # u: (N, 256, H, W)
"""

from . import init
from .layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    Identity,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .module import IncompatibleKeys, Module, ModuleList, Parameter, Sequential, StateDictError
from .se import SqueezeExcitation, excitations, keep_excitations

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "StateDictError", "IncompatibleKeys", "init",
    "Conv2d", "Linear", "BatchNorm2d", "BatchNorm1d", "ReLU", "Sigmoid", "Tanh",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "Flatten", "Identity",
    "SqueezeExcitation", "keep_excitations", "excitations",
]
