"""Softmax cross-entropy for classification."""

from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["cross_entropy", "log_softmax"]


def log_softmax(x):
    """log p_k = x_k − log Σ_j e^(x_j), computed as x_k − m − log Σ_j e^(x_j − m) with m = max_j x_j (no overflow)."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropy(Function):
    """L = (1/N) Σ_n Σ_k −q_nk log p_nk,  p = softmax(x),  q = (1 − ε)·onehot(t) + ε/K  (ε = label smoothing)

    ∂L/∂x_nk = (p_nk − q_nk) / N
    """

    index_inputs = (1,)  # the target: class indices, never converted to floats

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.eps = label_smoothing

    def forward(self, x, target):
        xp = get_array_module(x, target)
        if x.ndim != 2:
            raise ValueError(f"cross_entropy: expected input of shape (N, K), got {tuple(x.shape)}")
        if target.ndim != 1 or target.shape[0] != x.shape[0]:
            raise ValueError(f"cross_entropy: expected target of shape ({x.shape[0]},), got {tuple(target.shape)}")
        if target.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {target.dtype}")
        n, k = x.shape
        # out-of-range indices would wrap silently on a GPU: check them (one small device-to-host sync)
        if bool(((target < 0) | (target >= k)).any()):
            raise ValueError(f"cross_entropy: target classes must lie in [0, {k - 1}]")
        logp = log_softmax(x)
        rows = xp.arange(n)
        nll = -logp[rows, target]
        if self.eps:
            nll = (1 - self.eps) * nll - (self.eps / k) * logp.sum(axis=1)
        self.save(logp, target)
        return nll.mean().astype(x.dtype)

    def backward(self, gy):
        logp, target = self.saved
        xp = get_array_module(logp)
        n, k = logp.shape
        g = xp.exp(logp)  # p
        g[xp.arange(n), target] -= 1 - self.eps
        if self.eps:
            g -= self.eps / k
        return g * (gy / n), None


def cross_entropy(input: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean softmax cross-entropy of logits (N, K) against integer targets (N,)."""
    return CrossEntropy(label_smoothing)(input, target)
