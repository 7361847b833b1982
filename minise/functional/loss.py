"""Softmax cross-entropy for classification."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["cross_entropy", "log_softmax", "checked_targets"]

_vouched = threading.local()  # .classes: the range a caller has checked its targets against (per thread)


@contextmanager
def checked_targets(num_classes: int) -> Iterator[None]:
    """Within the block (on this thread) the caller vouches that every target it passes to
    ``cross_entropy`` lies in [0, num_classes): it checked the labels once, on the host, before
    they went to the device. The op then leaves out its own range check, which reads the device
    (a GPU sync) on every call; with fewer logits than ``num_classes`` it still checks.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"checked_targets: num_classes must be a positive int, got {num_classes!r}")
    before = getattr(_vouched, "classes", None)
    _vouched.classes = num_classes
    try:
        yield
    finally:
        _vouched.classes = before


def _targets_vouched_for(k: int) -> bool:
    """Whether a caller has checked the targets against at most ``k`` classes (see ``checked_targets``)."""
    classes = getattr(_vouched, "classes", None)
    return classes is not None and classes <= k


def log_softmax(x):
    """log p_k = x_k − log Σ_j e^(x_j), computed as x_k − m − log Σ_j e^(x_j − m) with m = max_j x_j (no overflow)."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropy(Function):
    """L = (1/N) Σ_n Σ_k −q_nk log p_nk,  p = softmax(x),  q = (1 − ε)·onehot(t) + ε/K  (ε = label smoothing)

    ∂L/∂x_nk = (p_nk − q_nk) / N

    Targets outside [0, K) are an error (checked here, unless the caller vouches for them: ``checked_targets``).
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
        if n == 0 or k == 0:  # (1/N) Σ over no rows, or a softmax over no classes, is not a number
            raise ValueError(f"cross_entropy: needs at least one row and one class, got input of shape {(n, k)}")
        # out-of-range indices would wrap silently on a GPU: check them (one small device-to-host
        # sync), unless the caller checked them already on the host (``checked_targets``)
        if not _targets_vouched_for(k) and bool(((target < 0) | (target >= k)).any()):
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
