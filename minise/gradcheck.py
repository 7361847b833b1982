"""Check a hand-written backward against central finite differences.

For a function y = f(x_1, …, x_k) and a fixed random upstream gradient v (never all ones, which
would hide a transposed or permuted gradient), the scalar L = Σ v · y has

    ∂L/∂x[i] ≈ (L(x + ε e_i) − L(x − ε e_i)) / (2ε)          (error O(ε²))

Only float64 makes this trustworthy: with ε = 1e-6 the difference of two values of L loses about
6 of float64's 16 digits, leaving ~10; float32 would leave almost none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy

from .autograd import Tensor, no_grad
from .backend import get_array_module, to_numpy

__all__ = ["gradcheck", "gradcheck_directional", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic gradient and the finite-difference one disagree."""


def _prepare(fn: Callable[..., Tensor], inputs: Sequence[Tensor], seed: int) -> tuple[Any, Callable[[], float]]:
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"gradcheck: input {i} is a {type(t).__name__}, expected a Tensor")
        if t.requires_grad and t.dtype != numpy.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {t.dtype}; finite differences need float64")
    with no_grad():
        y = fn(*inputs)
    xp = get_array_module(y.data)
    rng = numpy.random.default_rng(seed)
    v = xp.asarray(rng.standard_normal(y.shape))

    def loss() -> float:
        with no_grad():
            return float((fn(*inputs).data * v).sum())

    return v, loss


def _analytic(fn: Callable[..., Tensor], inputs: Sequence[Tensor], v: Any) -> list[Any]:
    for t in inputs:
        t.grad = None
    y = fn(*inputs)
    y.backward(v)
    grads = []
    for t in inputs:
        if t.requires_grad:
            grads.append(t.grad.data if t.grad is not None else get_array_module(t.data).zeros_like(t.data))
        else:
            grads.append(None)
    return grads


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Tensor], eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, seed: int = 0) -> bool:
    """Compare every element of every input's gradient with central differences.

    ``fn(*inputs)`` must return a Tensor; inputs with ``requires_grad`` are checked (float64).
    Returns True, or raises :class:`GradcheckError` naming the input, the worst element's index and
    both values. Passes when |analytic − numeric| ≤ atol + rtol·|numeric| for every element.
    """
    v, loss = _prepare(fn, inputs, seed)
    analytic = _analytic(fn, inputs, v)
    for k, (t, ga) in enumerate(zip(inputs, analytic)):
        if ga is None:
            continue
        ga = to_numpy(ga)
        numeric = numpy.empty(t.shape)
        for idx in numpy.ndindex(*t.shape):
            old = float(t.data[idx])
            t.data[idx] = old + eps
            plus = loss()
            t.data[idx] = old - eps
            minus = loss()
            t.data[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        err = numpy.abs(ga - numeric) - (atol + rtol * numpy.abs(numeric))
        if (err > 0).any():
            worst = numpy.unravel_index(int(numpy.argmax(err)), err.shape)
            raise GradcheckError(
                f"gradcheck failed for input {k} (shape {t.shape}) at index {tuple(int(i) for i in worst)}: "
                f"analytic {ga[worst]:.10g}, numeric {numeric[worst]:.10g} "
                f"(difference {abs(ga[worst] - numeric[worst]):.3g}, allowed {atol + rtol * abs(numeric[worst]):.3g})"
            )
    return True


def gradcheck_directional(fn: Callable[..., Tensor], inputs: Sequence[Tensor], eps: float = 1e-6,
                          atol: float = 1e-6, rtol: float = 1e-5, seed: int = 0) -> bool:
    """One random direction d through all inputs at once: the cheap check for whole blocks and networks.

    Compares (L(x + εd) − L(x − εd)) / (2ε) with Σ_k ⟨∂L/∂x_k, d_k⟩. Every input and every parameter
    takes part, so a wrong gradient anywhere shows up (unless it is orthogonal to a random d, which
    happens with probability zero).
    """
    v, loss = _prepare(fn, inputs, seed)
    analytic = _analytic(fn, inputs, v)
    rng = numpy.random.default_rng(seed + 1)
    directions, predicted = [], 0.0
    for t, ga in zip(inputs, analytic):
        if ga is None:
            directions.append(None)
            continue
        d = get_array_module(t.data).asarray(rng.standard_normal(t.shape))
        directions.append(d)
        predicted += float((ga * d).sum())
    originals = [t.data.copy() for t in inputs]

    def shifted(sign: float) -> float:
        for t, d, x0 in zip(inputs, directions, originals):
            if d is not None:
                t.data[...] = x0 + sign * eps * d
        return loss()

    try:
        numeric = (shifted(+1.0) - shifted(-1.0)) / (2 * eps)
    finally:
        for t, x0 in zip(inputs, originals):
            t.data[...] = x0
    if abs(predicted - numeric) > atol + rtol * abs(numeric):
        raise GradcheckError(
            f"directional gradcheck failed: analytic {predicted:.12g}, numeric {numeric:.12g} "
            f"(difference {abs(predicted - numeric):.3g}, allowed {atol + rtol * abs(numeric):.3g})"
        )
    return True
