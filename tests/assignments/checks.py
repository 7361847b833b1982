"""Helpers of the graded tests: run one Function's forward and backward on arrays, and check them.

Who decides. In a grading run (``minise assignments grade``) every graded test runs twice: once on
the instructor's reference package, once on the student's, each in the sandbox. Every check here
*observes* the value the test computed (``assert_close``, ``assert_equal``, ``assert_order``) and
reports it to the grader, which passes a student's test only if each observed value matches the
reference run's (``close``: within the reference run's tolerances; ``equal``; ``order``: a valid
order of the reference run's graph). In the student's run the oracle is not computed at all
(:func:`oracle` returns None there), so the student's process never holds the expected values:
forging a pass means computing the right numbers. Outside a grading run the checks simply assert.

A graded test should depend on its own part only. Going through ``Tensor.backward`` would also run
the student's backpropagation (assignment "autograd"), so these helpers call a Function's
``backward`` directly: ``function_grads`` records the Function once (so that it saves what it needs
and knows which inputs want gradients) and hands it the upstream gradient itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from minise import Tensor, no_grad
from minise.assignments.judge import mismatch
from minise.autograd import Function
from minise.backend import to_numpy

from ..conftest import on

# the solutions every backward pass through a graph needs
BACKPROP = ("autograd/topological_order", "autograd/backpropagate")

MODE = os.environ.get("MINISE_GRADE_MODE") or None
"""None outside a grading run; "reference" or "student" inside one (set by the grader)."""
STUDENT = MODE == "student"

SEED_ENV = "MINISE_GRADE_SEED"
"""The grading seed (set by the grader for the reference run and the student's run alike); unset outside."""


def grade_rng(salt: int) -> np.random.Generator:
    """The random inputs of one graded test: ``default_rng(salt)`` outside a grading run (the public
    numbers a student's self-check sees), ``default_rng([seed, salt])`` in a grading run with seed
    ``MINISE_GRADE_SEED``, so answers memorised from the public inputs do not pass."""
    seed = os.environ.get(SEED_ENV)
    return np.random.default_rng(salt if not seed else [int(seed), salt])


def oracle(compute: Callable[[], Any]) -> Any:
    """``compute()``: the expected value, from PyTorch or the maths; None in a student's grading run,
    where the grader holds the expected values (from the reference run) and the test only observes."""
    return None if STUDENT else compute()


def observe(kind: str, what: str, value: Any, **options: Any) -> None:
    """Report a value the test computed to the grader (a no-op outside a grading run)."""
    grader = sys.modules.get("_minise_grader")
    if MODE is not None and grader is not None:
        grader.observe(kind, what, value, **options)


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
                  eps: float = 1e-6) -> list[Any]:
    """Central differences of L = Σ gy · f(arrays) with respect to every element of every input (float64).
    An oracle: None for every input in a student's grading run."""
    if STUDENT:
        return [None] * len(arrays)

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
                gy: np.ndarray) -> tuple[Any, list[Any]]:
    """The same as :func:`function_grads`, computed by PyTorch: (output, gradient of every input).
    An oracle: all None in a student's grading run."""
    if STUDENT:
        return None, [None] * len(arrays)
    ts = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def assert_close(mine: Any, expected: Any, what: str, tol: float = 1e-10, *, rtol: float | None = None,
                 atol: float | None = None) -> None:
    """Same shape, dtype and values (within ``tol``, relative and absolute; or ``rtol``/``atol``).
    Observed: the grader compares ``mine`` with the reference run's value (None: the student's run,
    where only the grader knows the expected value)."""
    rtol = tol if rtol is None else rtol
    atol = tol if atol is None else atol
    mine = None if mine is None else to_numpy(mine)
    observe("close", what, mine, rtol=rtol, atol=atol)
    if expected is None and STUDENT:
        return
    assert mine is not None, f"{what}: got None"
    expected = np.asarray(expected)
    assert mine.shape == expected.shape, f"{what}: shape {mine.shape}, expected {expected.shape}"
    assert mine.dtype == expected.dtype, f"{what}: dtype {mine.dtype}, expected {expected.dtype}"
    if not np.allclose(mine, expected, rtol=rtol, atol=atol, equal_nan=True):  # as np.testing.assert_allclose
        raise AssertionError(f"{what}: {mismatch(mine, expected, rtol, atol, equal_nan=True)}")


def observe_close(mine: Any, what: str, rtol: float, atol: float) -> None:
    """Report ``mine`` for the grader to compare with the reference run's value (no check of its own)."""
    observe("close", what, None if mine is None else to_numpy(mine), rtol=rtol, atol=atol)


def assert_equal(mine: Any, expected: Any, what: str) -> None:
    """``mine == expected`` for plain values (numbers, strings, lists of them). Observed (see assert_close)."""
    observe("equal", what, mine)
    if expected is None and STUDENT:
        return
    assert mine == expected, f"{what}: got {mine!r}, expected {expected!r}"


def assert_order(labels: list[int] | None, nodes: int, edges: list[list[int]], what: str) -> None:
    """``labels`` (the nodes 0..nodes-1 of a graph, in the order returned) hold every node once, each
    producer after all its consumers (``edges``: [producer, consumer]). Observed: the grader checks
    the student's order against the reference run's graph."""
    observe("order", what, labels, nodes=nodes, edges=edges)
    if STUDENT:
        return
    assert labels is not None, f"{what}: not a list"
    assert sorted(labels) == list(range(nodes)), f"{what}: {len(labels)} nodes returned, {nodes} in the graph"
    position = {n: i for i, n in enumerate(labels)}
    for producer, consumer in edges:
        assert position[producer] > position[consumer], f"{what}: node {producer} comes before its consumer {consumer}"


def distinct(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values at least 0.01 apart and away from 0 (no ties, no kinks), float64."""
    values = (rng.permutation(int(np.prod(shape))).reshape(shape) + 0.5) * 0.01
    return values - float(np.round(values.mean(), 2))
