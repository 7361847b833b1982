"""The layers of an SE network as Modules: each holds its weights and calls one op of ``minise.functional``.

Every layer also states, without computing anything, the shape of its output
(``output_shape``) and the multiply-accumulates it spends (``macs``); ``minise.models.summary``
reads them to count the cost of a whole network.

Initialisation follows PyTorch's defaults (see :mod:`minise.nn.init`): convolution and linear
weights w ~ U(±1/√fan_in) (kaiming_uniform_ with a = √5), biases U(±1/√fan_in); batch norm γ = 1,
β = 0, running mean 0, running variance 1. Parameters are float32, created on the default device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..functional.window import IntPair, output_size, pair
from . import init
from .module import Module, Parameter

__all__ = [
    "Conv2d", "Linear", "BatchNorm2d", "BatchNorm1d", "ReLU", "Sigmoid", "Tanh",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "Flatten", "Identity",
]

Shape = tuple[int, ...]


def _empty_parameter(*shape: int) -> Parameter:
    """A float32 Parameter of ``shape`` on the default device (values to be set by an init function)."""
    return Parameter(numpy.zeros(shape, dtype=numpy.float32), device=backend.get_default_device())


def _count(value: Any, name: str, layer: str) -> int:
    """``value`` if it is a positive int, else a one-line ValueError (at construction, not at the first forward)."""
    if not isinstance(value, (int, numpy.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def _at_least(values: tuple[int, int], low: int, name: str, layer: str) -> tuple[int, int]:
    if min(values) < low:
        raise ValueError(f"{layer}: {name} must be at least {low}, got {values}")
    return values


class Conv2d(Module):
    """y = W ∗ x + b for NCHW input: weight (out_channels, in_channels/groups, kh, kw), bias (out_channels,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        in_channels, out_channels = _count(in_channels, "in_channels", "Conv2d"), _count(out_channels, "out_channels",
                                                                                          "Conv2d")
        groups = _count(groups, "groups", "Conv2d")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must both be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _at_least(pair(kernel_size, "kernel_size", "Conv2d"), 1, "kernel_size", "Conv2d")
        self.stride = _at_least(pair(stride, "stride", "Conv2d"), 1, "stride", "Conv2d")
        self.padding = _at_least(pair(padding, "padding", "Conv2d"), 0, "padding", "Conv2d")
        self.dilation = _at_least(pair(dilation, "dilation", "Conv2d"), 1, "dilation", "Conv2d")
        self.groups = groups
        self.weight = _empty_parameter(out_channels, in_channels // groups, *self.kernel_size)
        self.bias = _empty_parameter(out_channels) if bias else None
        init.default_conv_linear_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def output_shape(self, input_shape: Shape) -> Shape:
        n, c, h, w = input_shape
        if c != self.in_channels:
            raise ValueError(f"Conv2d: expected {self.in_channels} input channels, got shape {tuple(input_shape)}")
        ho = output_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0])
        wo = output_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1])
        return (n, self.out_channels, ho, wo)

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """N·H_out·W_out·O · (C/G)·kh·kw: one multiply-add per weight per output pixel (bias not counted)."""
        n, o, ho, wo = output_shape
        return n * ho * wo * o * (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Linear(Module):
    """y = x Wᵀ + b: weight (out_features, in_features), bias (out_features,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        in_features, out_features = _count(in_features, "in_features", "Linear"), _count(out_features, "out_features",
                                                                                          "Linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty_parameter(out_features, in_features)
        self.bias = _empty_parameter(out_features) if bias else None
        init.default_conv_linear_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"Linear: expected input (N, {self.in_features}), got shape {tuple(input_shape)}")
        return (input_shape[0], self.out_features)

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        return input_shape[0] * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _BatchNorm(Module):
    """y = γ (x − μ) / √(σ² + ε) + β per channel; μ, σ² from the batch in training, running estimates in eval.

    ``momentum`` weighs the newest batch in the running estimates; ``momentum=None`` keeps a
    cumulative average instead (factor 1/t for batch t), as PyTorch.
    """

    ndim = 4

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True) -> None:
        super().__init__()
        layer = type(self).__name__
        num_features = _count(num_features, "num_features", layer)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"{layer}: eps must be a finite number > 0, got {eps!r}")
        if momentum is not None and (not isinstance(momentum, (int, float)) or isinstance(momentum, bool)
                                     or not 0 <= momentum <= 1):
            raise ValueError(f"{layer}: momentum must be in [0, 1] or None, got {momentum!r}")
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        device = backend.get_default_device()
        self.weight = init.ones_(_empty_parameter(num_features)) if affine else None
        self.bias = init.zeros_(_empty_parameter(num_features)) if affine else None
        self.register_buffer("running_mean", backend.to_device(numpy.zeros(num_features, numpy.float32), device))
        self.register_buffer("running_var", backend.to_device(numpy.ones(num_features, numpy.float32), device))
        self.register_buffer("num_batches_tracked", backend.to_device(numpy.zeros((), numpy.int64), device))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != self.ndim:
            expected = "(N, C, H, W)" if self.ndim == 4 else "(N, C)"
            raise ValueError(f"{type(self).__name__}: expected {self.ndim}-D input {expected}, got shape {x.shape}")
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked += 1
            if momentum is None:
                momentum = 1.0 / int(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training, momentum=momentum if momentum is not None else 0.0,
                            eps=self.eps)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def reset_running_stats(self) -> None:
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W): statistics over N, H and W for each channel."""

    ndim = 4


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C): statistics over N for each feature."""

    ndim = 2


class _Elementwise(Module):
    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)


class ReLU(_Elementwise):
    """δ(x) = max(x, 0), the paper's δ."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(_Elementwise):
    """σ(x) = 1 / (1 + e^(−x)), the paper's σ (the excitation's gate)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(_Elementwise):
    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Identity(_Elementwise):
    """y = x (a placeholder where a variant has no layer)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class _Pool2d(Module):
    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name)

    def output_shape(self, input_shape: Shape) -> Shape:
        n, c, h, w = input_shape
        return (n, c, output_size(h, self.kernel_size[0], self.stride[0], self.padding[0]),
                output_size(w, self.kernel_size[1], self.stride[1], self.padding[1]))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """y = max over each kh×kw window (comparisons only: no multiply-adds counted)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """y = mean over each kh×kw window (zero padding counted)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """One add per window element per output: N·C·H_out·W_out·kh·kw."""
        return math.prod(output_shape) * self.kernel_size[0] * self.kernel_size[1]


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): z_c = (1/HW) Σ_i Σ_j u_c(i, j), the squeeze of Eq. 2."""

    def forward(self, x: Tensor) -> Tensor:
        return F.global_avg_pool2d(x)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape[:2])

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """One add per input element: N·C·H·W."""
        return math.prod(input_shape)


class GlobalMaxPool2d(Module):
    """(N, C, H, W) -> (N, C): z_c = max_{i,j} u_c(i, j) (the max-squeeze ablation)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.global_max_pool2d(x)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape[:2])


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1·d2·...)."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_dim)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape[:self.start_dim]) + (math.prod(input_shape[self.start_dim:]),)

