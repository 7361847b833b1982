"""Weight initialisation, drawn on the host from one seedable NumPy generator.

Random numbers always come from NumPy (also for parameters on the GPU, which then receive a copy),
so ``manual_seed(0)`` gives the same network on every device.

For a weight of shape (out, in, kh, kw) (or (out, in) for a linear layer):
fan_in = in·kh·kw and fan_out = out·kh·kw.

- PyTorch's default for Conv2d and Linear, ``kaiming_uniform_(w, a=√5)``: w ~ U(−b, b) with
  b = gain·√(3 / fan_in), gain = √(2 / (1 + a²)), which comes to b = 1/√fan_in; the bias is
  U(−1/√fan_in, 1/√fan_in).
- He et al. (2015) for ReLU networks, ``kaiming_normal_(w, mode="fan_out")``:
  w ~ N(0, 2 / fan_out), the ResNets' convolutions.
"""

from __future__ import annotations

import math

import numpy

from .. import backend
from ..autograd import Tensor

__all__ = [
    "manual_seed", "generator", "calculate_fans", "calculate_gain",
    "uniform_", "normal_", "constant_", "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_",
    "default_conv_linear_init_",
]

_generator = numpy.random.default_rng()


def manual_seed(seed: int) -> None:
    """Make every initialisation that follows reproducible."""
    global _generator
    _generator = numpy.random.default_rng(seed)


def generator() -> numpy.random.Generator:
    """The NumPy generator that initialisation draws from."""
    return _generator


def calculate_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: (out, in) or (out, in, kh, kw)."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, a: float = 0.0) -> float:
    """The factor that keeps activations' variance through a layer: √2 for ReLU, √(2/(1+a²)) for leaky ReLU."""
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a * a))
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def _fill(tensor: Tensor, host_values: numpy.ndarray) -> Tensor:
    """Replace the tensor's values by ``host_values`` in its dtype, on its device."""
    values = host_values.astype(tensor.dtype, copy=False)
    tensor.data = backend.to_device(values, backend.device_of(tensor.data))
    return tensor


def uniform_(tensor: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    return _fill(tensor, _generator.uniform(low, high, size=tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    return _fill(tensor, _generator.normal(mean, std, size=tensor.shape))


def constant_(tensor: Tensor, value: float) -> Tensor:
    return _fill(tensor, numpy.full(tensor.shape, value))


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """w ~ U(−b, b), b = gain·√(3 / fan)."""
    fan = _fan(tensor.shape, mode)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """w ~ N(0, std²), std = gain / √fan (He et al., 2015)."""
    fan = _fan(tensor.shape, mode)
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def _fan(shape: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = calculate_fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def default_conv_linear_init_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's default for Conv2d and Linear: w ~ U(±1/√fan_in) (kaiming_uniform_, a=√5), b ~ U(±1/√fan_in)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = calculate_fans(weight.shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)

