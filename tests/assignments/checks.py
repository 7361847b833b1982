"""Helpers of the graded tests: run one Function's forward and backward on arrays, and check them.

A graded test should depend on its own part only. Going through ``Tensor.backward`` would also run
the student's backpropagation (assignment "autograd"), so these helpers call a Function's
``backward`` directly: ``function_grads`` records the Function once (so that it saves what it needs
and knows which inputs want gradients) and hands it the upstream gradient itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from minise import Tensor, no_grad
from minise.autograd import Function
from minise.backend import to_numpy

from ..conftest import on

# the solutions every backward pass through a graph needs
BACKPROP = ("autograd/topological_order", "autograd/backpropagate")


def function_forward(make: Callable[[], Function], arrays: Sequence[np.ndarray | None],
                     device: str = "cpu") -> np.ndarray:
    """The output of ``make()`` on ``arrays`` (moved to ``device``), as a NumPy array; no backward."""
    inputs = [None if a is None else Tensor(on(device, a)) for a in arrays]
    return to_numpy(make()(*inputs).data)


def function_grads(make: Callable[[], Function], arrays: Sequence[np.ndarray | None], gy: np.ndarray,
                   device: str = "cpu", wanted: Sequence[bool] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Forward ``make()`` on ``arrays`` (moved to ``device``), then its backward with upstream ``gy``.

    Returns the output and one gradient per input as NumPy arrays (None where backward gave None).
    ``wanted[i]`` False: input i does not require a gradient.
    """
    wanted = [True] * len(arrays) if wanted is None else list(wanted)
    inputs = [None if a is None else Tensor(on(device, a), requires_grad=w) for a, w in zip(arrays, wanted)]
    fn = make()
    y = fn(*inputs)
    grads = fn.backward(on(device, gy))
    if not isinstance(grads, tuple):
        grads = (grads,)
    assert len(grads) == len(arrays), f"backward returned {len(grads)} gradients for {len(arrays)} inputs"
    return to_numpy(y.data), [None if g is None else to_numpy(g) for g in grads]


def numeric_grads(make: Callable[[], Function], arrays: Sequence[np.ndarray], gy: np.ndarray,
                  eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences of L = Σ gy · f(arrays) with respect to every element of every input (float64)."""

    def loss() -> float:
        with no_grad():
            return float((to_numpy(make()(*[Tensor(a) for a in arrays]).data) * gy).sum())

    grads = []
    for a in arrays:
        g = np.empty(a.shape)
        for idx in np.ndindex(*a.shape):
            old = a[idx]
            a[idx] = old + eps
            plus = loss()
            a[idx] = old - eps
            minus = loss()
            a[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def torch_grads(fn: Callable[..., torch.Tensor], arrays: Sequence[np.ndarray | None],
                gy: np.ndarray) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The same as :func:`function_grads`, computed by PyTorch: (output, gradient of every input)."""
    ts = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def assert_close(mine: Any, expected: np.ndarray, what: str, tol: float = 1e-10) -> None:
    """Same shape, dtype and values (within ``tol``, relative and absolute)."""
    assert mine is not None, f"{what}: got None"
    mine = to_numpy(mine)
    assert mine.shape == expected.shape, f"{what}: shape {mine.shape}, expected {expected.shape}"
    assert mine.dtype == expected.dtype, f"{what}: dtype {mine.dtype}, expected {expected.dtype}"
    np.testing.assert_allclose(mine, expected, rtol=tol, atol=tol, err_msg=what)


def distinct(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values at least 0.01 apart and away from 0 (no ties, no kinks), float64."""
    values = (rng.permutation(int(np.prod(shape))).reshape(shape) + 0.5) * 0.01
    return values - float(np.round(values.mean(), 2))
