"""PyTorch state dicts in and out: torchvision's ResNet names, timm's SE names.

minise names its modules as torchvision does (``conv1``, ``bn1``, ``layer1.0.conv2``,
``layer1.0.downsample.0``, ``fc``, BN ``running_mean`` / ``running_var`` / ``num_batches_tracked``)
and its SE block as timm does (``layer1.0.se.fc1``, ``layer1.0.se.fc2``). The one difference in
content: minise keeps W1 and W2 as the paper's matrices, (C/r, C) and (C, C/r), while timm and
the released Caffe models store them as 1×1 convolutions, (C/r, C, 1, 1). These functions
convert between the two, so a torchvision ResNet-50 or timm SE-ResNet-50 checkpoint loads into
the minise model of the same name, with strict checking of every name and shape.

(timm rounds the SE hidden width C/r up to a multiple of 8; that differs from ⌊C/r⌋ only below
128 channels, i.e. in the first stage of timm's SE-ResNet-18/34, whose checkpoints therefore fail
the shape check.)

    import torch, minise.models, minise.interop.torch as mt
    model = minise.models.create("se_resnet50")
    mt.load_torch_state_dict(model, torch.load("seresnet50.pth"))
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy

from ..backend import to_numpy
from ..nn import Module, SqueezeExcitation
from ..nn.module import IncompatibleKeys

__all__ = ["to_torch_state_dict", "load_torch_state_dict", "se_matrix_keys"]


def se_matrix_keys(model: Module) -> set[str]:
    """Names of the SE weights that minise keeps as matrices and PyTorch as 1×1 convolutions."""
    keys = set()
    for name, m in model.named_modules():
        if isinstance(m, SqueezeExcitation) and not m.spatial:
            prefix = f"{name}." if name else ""
            keys.update({f"{prefix}fc1.weight", f"{prefix}fc2.weight"})
    return keys


def to_torch_state_dict(model: Module) -> OrderedDict[str, Any]:
    """The model's state dict as CPU ``torch.Tensor``s under torchvision/timm names (SE weights as 1×1 convs)."""
    import torch  # noqa: PLC0415 - torch is optional and imported only here

    matrices = se_matrix_keys(model)
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in model.state_dict().items():
        array = numpy.asarray(to_numpy(value), order="C")  # (not ascontiguousarray: it turns 0-d into 1-d)
        if key in matrices:
            array = array.reshape(*array.shape, 1, 1)
        out[key] = torch.from_numpy(array)
    return out


def _as_numpy(value: Any) -> numpy.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        return value.detach().cpu().numpy()
    return numpy.asarray(to_numpy(value))


def load_torch_state_dict(model: Module, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
    """Load a PyTorch state dict (torch tensors or arrays) into ``model``, in place.

    SE weights stored as (C', C, 1, 1) convolutions become (C', C) matrices; a ``module.`` prefix
    on every key (saved from ``DataParallel``) is dropped. Then :meth:`Module.load_state_dict`
    checks every name and shape before changing anything.
    """
    items = list(state_dict.items())
    if items and all(k.startswith("module.") for k, _ in items):
        items = [(k[len("module."):], v) for k, v in items]
    matrices = se_matrix_keys(model)
    converted = {}
    for key, value in items:
        array = _as_numpy(value)
        if key in matrices and array.ndim == 4 and array.shape[2:] == (1, 1):
            array = array.reshape(array.shape[:2])
        converted[key] = array
    return model.load_state_dict(converted, strict=strict)
