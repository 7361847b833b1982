"""Batch normalization (Ioffe and Szegedy, 2015) over the batch (and spatial) axes of each channel."""

from __future__ import annotations

from typing import Any

from .. import speed
from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["batch_norm"]


def _channel_view(x: Any) -> Any:
    """(N, C) or (N, C, H, W) as (N, C, L): per-channel statistics are sums over axes 0 and 2."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _sum_of_squares(xc: Any) -> Any:
    """Σ_{n,l} xc[n, c, l]² per channel, without the temporary array xc · xc (one read of xc)."""
    xp = get_array_module(xc)
    return xp.einsum("ncl,ncl->nc", xc, xc).sum(axis=0)


class BatchNorm(Function):
    """Per channel c, over the m = N·H·W values of the batch:

        μ = (1/m) Σ x,   σ² = (1/m) Σ (x − μ)²,   x̂ = (x − μ) / √(σ² + ε),   y = γ x̂ + β

    Backward in training mode (μ and σ² depend on x), with g = γ ∂L/∂y:

        ∂L/∂x = (1/√(σ² + ε)) · (g − mean(g) − x̂ · mean(g x̂))
        ∂L/∂γ = Σ ∂L/∂y · x̂,     ∂L/∂β = Σ ∂L/∂y

    In evaluation mode μ and σ² are the running estimates (constants), so ∂L/∂x = g / √(σ² + ε).
    Training also updates the running estimates in place, as PyTorch does:
    running_mean ← (1 − momentum)·running_mean + momentum·μ, and the same for running_var with the
    unbiased variance σ²·m/(m − 1).

    On the CPU the work goes to ``minise.fast.batchnorm`` (the same numbers in fewer passes).
    """

    def __init__(self, running_mean: Any, running_var: Any, training: bool, momentum: float, eps: float) -> None:
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, weight, bias):
        xp = get_array_module(x, weight, bias, self.running_mean, self.running_var)
        c = x.shape[1]
        xv = _channel_view(x)
        if self.training and xv.shape[0] * xv.shape[2] < 2:
            raise ValueError(f"batch_norm: training needs more than one value per channel, got input {tuple(x.shape)}")
        self.has_bias = bias is not None
        self.fast = speed.fast_path("batchnorm", x, weight, bias)
        if self.fast is not None:
            return self.fast.forward(self, x, weight, bias)
        gamma = weight if weight is not None else xp.ones(c, dtype=x.dtype)
        x_hat, y = xp.empty(xv.shape, dtype=x.dtype), xp.empty(xv.shape, dtype=x.dtype)
        invstd = xp.empty(c, dtype=x.dtype)

        def part(s: slice) -> None:  # the channels are independent: a slice of them per thread
            beta = None if bias is None else bias[s]
            invstd[s] = self._normalize(xv[:, s], gamma[s], beta, x_hat[:, s], y[:, s], s)

        speed.in_parallel(part, speed.parts(xv, axis=1), limit_blas=False)
        self.save(x_hat, invstd, weight)
        return y.reshape(x.shape)

    def _normalize(self, xv: Any, gamma: Any, beta: Any, x_hat: Any, y: Any, s: slice) -> Any:
        """The forward for the channels ``s``: x̂ and y written into the given arrays; returns 1/√(σ² + ε)."""
        xp = get_array_module(xv)
        dtype = xv.dtype.type
        m = xv.shape[0] * xv.shape[2]
        if self.training:
            mean = xv.sum(axis=2).sum(axis=0) / dtype(m)
            xp.subtract(xv, mean[:, None], out=x_hat)  # x − μ (made x̂ in place below)
            var = _sum_of_squares(x_hat) / dtype(m)
            self.update_running_stats(mean, var, m, s)
        else:
            mean, var = self.running_mean[s].astype(xv.dtype), self.running_var[s].astype(xv.dtype)
            xp.subtract(xv, mean[:, None], out=x_hat)
        invstd = 1 / xp.sqrt(var + dtype(self.eps))
        x_hat *= invstd[:, None]
        xp.multiply(x_hat, gamma[:, None], out=y)
        if beta is not None:
            y += beta[:, None]
        return invstd

    def update_running_stats(self, mean: Any, var: Any, m: int, s: slice) -> None:
        """The running estimates of the channels ``s`` moved towards this batch's μ and unbiased σ²."""
        mom = self.momentum
        if self.running_mean is not None:
            self.running_mean[s] *= 1 - mom
            self.running_mean[s] += mom * mean.astype(self.running_mean.dtype, copy=False)
        if self.running_var is not None:
            self.running_var[s] *= 1 - mom
            self.running_var[s] += (mom * m / (m - 1)) * var.astype(self.running_var.dtype, copy=False)

    def backward(self, gy):
        if self.fast is not None:
            return self.fast.backward(self, gy)
        # BEGIN SOLUTION se/batchnorm_backward
        x_hat, invstd, weight = self.saved
        shape = gy.shape
        gyv = _channel_view(gy)
        m = gyv.shape[0] * gyv.shape[2]
        need_x, need_w, need_b = self.needs_input_grad
        sum_gy = gyv.sum(axis=2).sum(axis=0) if (need_b or (need_x and self.training)) else None
        sum_gy_xhat = (gyv * x_hat).sum(axis=2).sum(axis=0) if (need_w or (need_x and self.training)) else None
        gx = None
        if need_x:
            k = invstd if weight is None else weight * invstd  # γ / √(σ² + ε)
            if self.training:
                inv_m = gy.dtype.type(1.0 / m)
                gx = (gyv - (sum_gy * inv_m)[:, None] - x_hat * (sum_gy_xhat * inv_m)[:, None]) * k[:, None]
            else:
                gx = gyv * k[:, None]
            gx = gx.reshape(shape)
        gw = sum_gy_xhat if need_w else None
        gb = sum_gy if (need_b and self.has_bias) else None
        return gx, gw, gb
        # END SOLUTION


def batch_norm(input: Tensor, running_mean: Any, running_var: Any, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    r"""Batch-normalize (N, C) or (N, C, H, W) input per channel (see :class:`BatchNorm`).

    .. math::

        \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad y = \gamma \hat x + \beta, \qquad
        \frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma^2 + \epsilon}}
        \Big(g - \overline{g} - \hat x\, \overline{g \hat x}\Big), \quad g = \gamma \frac{\partial L}{\partial y}

    (bars: means over the m = N·H·W values of a channel; training mode).

    ``running_mean`` and ``running_var`` are raw arrays of shape (C,) (or None, then training mode
    must be on); they are updated in place when ``training`` is True.
    """
    x = input.data if isinstance(input, Tensor) else input
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm: expected 2-D (N, C) or 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    c = x.shape[1]
    for name, arr in (("running_mean", running_mean), ("running_var", running_var)):
        arr = arr.data if isinstance(arr, Tensor) else arr
        if arr is not None and tuple(arr.shape) != (c,):
            raise ValueError(f"batch_norm: {name} of shape ({c},) expected for {c} channels, got {tuple(arr.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm: {name} of shape ({c},) expected for {c} channels, got {tuple(t.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation mode (training=False) needs running_mean and running_var")
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    return BatchNorm(rm, rv, training, momentum, eps)(input, weight, bias)
