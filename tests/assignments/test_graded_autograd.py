"""Graded tests of assignment "autograd": the backprop order, backpropagation, sum_to, and the
backward of Add, Mul, ReLU, sigmoid and the fully connected layer.

The graphs here are built from small Functions defined in this file, so the backprop tests depend
on the two backprop parts only; the op tests call one Function's backward directly on arrays.
PyTorch is the oracle throughout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minise.autograd as autograd
from minise import Tensor
from minise.autograd import Function
from minise.functional.activation import ReLU, Sigmoid
from minise.functional.arith import Add, Mul, sum_to
from minise.functional.linear import Linear

from ..conftest import on
from .checks import (
    assert_close,
    assert_equal,
    assert_order,
    function_grads,
    grade_rng,
    numeric_grads,
    oracle,
    torch_grads,
)

TOPO = "autograd/topological_order"
BACK = "autograd/backpropagate"


BACKPROP = (TOPO, BACK)


# ------------------------------------------------------------------ small Functions for the graphs
class Affine(Function):
    """y = c·x + d"""

    def __init__(self, c: float, d: float = 0.0) -> None:
        self.c, self.d = c, d

    def forward(self, x):
        return x * self.c + self.d

    def backward(self, gy):
        return gy * self.c


class Plus(Function):
    """y = a + b (+ c when given); the same array goes back to every input, as Add's does."""

    def forward(self, a, b, c=None):
        return a + b if c is None else a + b + c

    def backward(self, gy):
        return (gy, gy) if len(self.inputs) == 2 else (gy, gy, gy)


class Times(Function):
    """y = a · b"""

    def forward(self, a, b):
        self.save(a, b)
        return a * b

    def backward(self, gy):
        a, b = self.saved
        return gy * b, gy * a


class Fork(Function):
    """Two outputs: (2x, x²). Backward gets one gradient per output (zeros for an unused one)."""

    def forward(self, x):
        self.save(x)
        return x * 2, x * x

    def backward(self, g1, g2):
        (x,) = self.saved
        assert g1 is not None and g2 is not None, "backward of a two-output Function got None for an output"
        return g1 * 2 + g2 * 2 * x


def leaf(values, device="cpu", requires_grad=True):
    return Tensor(on(device, np.asarray(values, dtype=np.float64)), requires_grad=requires_grad)


# The long-and-short-path graph: a feeds y directly and through a chain of three Functions. A
# sweep that handles a's creator when y has passed on its share, but before the chain has, loses
# the chain's share. Which of the two paths comes first among y's inputs decides which wrong
# orders get caught, so both are tried.
def long_and_short(x: Tensor, short_first: bool):
    a = Affine(2.0)(x)
    b = Affine(-1.0, 1.0)(a)
    c = Affine(1.5)(b)
    d = Affine(3.0)(c)
    y = Plus()(a, d) if short_first else Plus()(d, a)
    return y, 2.0 + 2.0 * -1.0 * 1.5 * 3.0  # dy/dx


def _reachable(roots):
    seen, stack, out = set(), [r.creator for r in roots if r.creator is not None], []
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        out.append(fn)
        stack.extend(t.creator for t in fn.inputs if t is not None and t.creator is not None)
    return out


def check_order(order, roots):
    """Every reachable Function exactly once, each after every Function that consumes its outputs."""
    expected = _reachable(roots)
    label = {id(fn): i for i, fn in enumerate(expected)}
    edges = [[label[id(t.creator)], label[id(fn)]] for fn in expected for t in fn.inputs
             if t is not None and t.creator is not None]  # [producer, consumer]
    labels = [label.get(id(fn), -1) for fn in order] if isinstance(order, list) else None
    assert_order(labels, len(expected), edges, "the backprop order")
    assert isinstance(order, list), f"expected a list of Functions, got {type(order).__name__}"
    ids = [id(fn) for fn in order]
    assert len(ids) == len(set(ids)), "a Function appears more than once"
    assert set(ids) == {id(fn) for fn in expected}, (
        f"{len(order)} Functions returned, {len(expected)} reachable from the roots")
    position = {id(fn): i for i, fn in enumerate(order)}
    for fn in order:
        for t in fn.inputs:
            if t is not None and t.creator is not None:
                assert position[id(t.creator)] > position[id(fn)], (
                    f"{type(t.creator).__name__} comes before {type(fn).__name__}, which consumes its output")


# ------------------------------------------------------------------ autograd/topological_order
@pytest.mark.assignment(TOPO)
@pytest.mark.parametrize("short_first", [True, False])
def test_order_long_and_short_path(short_first):
    x = leaf([1.0, -2.0])
    y, _ = long_and_short(x, short_first)
    check_order(autograd._topological_order([y]), [y])


@pytest.mark.assignment(TOPO)
def test_order_shared_nodes_forks_and_absent_inputs():
    x, w = leaf([0.5, 1.5]), leaf([2.0, -1.0])
    p, q = Fork()(x)
    a = Times()(p, w)
    b = Affine(2.0)(q)
    c = Plus()(a, b, Affine(-1.0)(a))   # a consumed twice, once through another Function
    d = Times()(c, a)
    y = Plus()(d, Affine(0.5)(b))
    z = Affine(1.0, 0.0)(Plus()(y, q))  # q consumed late again
    check_order(autograd._topological_order([z]), [z])


@pytest.mark.assignment(TOPO)
def test_order_of_several_roots():
    x = leaf([1.0, 2.0])
    a = Affine(2.0)(x)
    y1 = Affine(3.0)(a)
    y2 = Times()(a, Affine(-1.0)(y1))
    check_order(autograd._topological_order([y1, y2]), [y1, y2])


@pytest.mark.assignment(TOPO)
def test_order_of_a_deep_chain_needs_no_recursion():
    """ResNet-110's graph is over a thousand Functions deep: deeper than Python's recursion limit."""
    x = leaf([1.0])
    y = x
    for _ in range(3000):
        y = Affine(1.0, 0.001)(y)
    order = autograd._topological_order([y])
    assert len(order) == 3000
    assert order[0] is y.creator, "the root's creator comes first"
    check_order(order, [y])


# ------------------------------------------------------------------ autograd/backpropagate
def upstream(rng: np.random.Generator, n: int) -> np.ndarray:
    """An upstream gradient drawn at grade time, its values away from 0 (so a lost share shows)."""
    return rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2.0, n)


def use_order(monkeypatch, *fns):
    """Replace the sweep order with the given (correct) one: these tests grade backpropagate alone."""
    monkeypatch.setattr(autograd, "_topological_order", lambda roots: list(fns))


@pytest.mark.assignment(BACK)
def test_backprop_sums_the_gradients_of_a_tensor_used_twice(monkeypatch):
    rng = grade_rng(20)
    x = leaf(rng.uniform(-3, 3, 3))
    a = Affine(2.0)(x)
    y = Times()(a, a)  # y = 4x², dy/dx = 8x
    use_order(monkeypatch, y.creator, a.creator)
    g = upstream(rng, 3)
    y.backward(g)
    assert_close(x.grad.numpy(), oracle(lambda: 8 * x.numpy() * g), "∂L/∂x", rtol=1e-7, atol=0)


@pytest.mark.assignment(BACK)
def test_backprop_leaf_used_by_two_functions_gets_both_shares(monkeypatch):
    rng = grade_rng(21)
    x = leaf(rng.uniform(-3, 3, 2))
    a, b = Affine(3.0)(x), Affine(-5.0)(x)
    y = Plus()(a, b)
    use_order(monkeypatch, y.creator, a.creator, b.creator)
    g = upstream(rng, 2)
    y.backward(g)
    assert_close(x.grad.numpy(), oracle(lambda: -2.0 * g), "∂L/∂x", rtol=1e-7, atol=0)


@pytest.mark.assignment(BACK)
def test_backprop_long_and_short_path(monkeypatch):
    rng = grade_rng(22)
    x = leaf(rng.uniform(-3, 3, 2))
    y, slope = long_and_short(x, short_first=False)
    chain = [y.creator]
    while chain[-1].inputs[0].creator is not None:
        chain.append(chain[-1].inputs[0].creator)  # d, c, b, a: consumers before producers
    use_order(monkeypatch, *chain)
    g = upstream(rng, 2)
    y.backward(g)
    assert_close(x.grad.numpy(), oracle(lambda: slope * g), "∂L/∂x", rtol=1e-7, atol=0)


@pytest.mark.assignment(BACK)
def test_backprop_unused_output_gets_zeros_and_absent_inputs_are_skipped(monkeypatch):
    rng = grade_rng(23)
    x, c = leaf(rng.uniform(-3, 3, 2)), leaf(rng.uniform(5, 25, 2), requires_grad=False)
    p, q = Fork()(x)
    y = Plus()(Affine(3.0)(p), c)  # q is never used; c needs no gradient
    use_order(monkeypatch, y.creator, y.creator.inputs[0].creator, p.creator)
    g = upstream(rng, 2)
    y.backward(g)
    assert_close(x.grad.numpy(), oracle(lambda: 6.0 * g), "∂L/∂x", rtol=1e-7, atol=0)
    assert_equal(c.grad is None, oracle(lambda: True), "a tensor that does not require grad has no gradient")


@pytest.mark.assignment(BACK)
def test_backprop_adds_to_existing_leaf_gradients(monkeypatch):
    rng = grade_rng(24)
    x = leaf(rng.uniform(-3, 3, 2))
    gs = [upstream(rng, 2) for _ in range(2)]
    for g in gs:
        y = Affine(3.0)(x)
        use_order(monkeypatch, y.creator)
        y.backward(g)
    assert_close(x.grad.numpy(), oracle(lambda: 3.0 * gs[0] + 3.0 * gs[1]), "∂L/∂x", rtol=1e-7, atol=0)


@pytest.mark.assignment(BACK)
def test_backprop_keeps_retained_grads_and_frees_saved_arrays(monkeypatch):
    rng = grade_rng(25)
    x = leaf(rng.uniform(-3, 3, 2))
    a = Affine(2.0)(x)
    a.retain_grad()
    y = Times()(a, x)  # y = 2x², dy/da = x, dy/dx = 4x
    use_order(monkeypatch, y.creator, a.creator)
    g = upstream(rng, 2)
    y.backward(g)
    assert_close(a.grad.numpy(), oracle(lambda: x.numpy() * g), "∂L/∂a (retained)", rtol=1e-7, atol=0)
    assert_close(x.grad.numpy(), oracle(lambda: 4.0 * x.numpy() * g), "∂L/∂x", rtol=1e-7, atol=0)
    assert_equal(y.creator is None or y.creator.saved == (), oracle(lambda: True),
                 "backward drops the saved arrays it no longer needs")


@pytest.mark.assignment(BACK)
def test_backprop_does_not_modify_the_upstream_gradient(monkeypatch):
    rng = grade_rng(26)
    x = leaf(rng.uniform(-3, 3, 2))
    a = Affine(1.0)(x)
    y = Plus()(a, a)  # Plus hands the same array to both inputs
    use_order(monkeypatch, y.creator, a.creator)
    g = upstream(rng, 2)
    original = g.copy()
    y.backward(g)
    assert_close(g, oracle(lambda: original), "the upstream gradient, unchanged", 0.0)
    assert_close(x.grad.numpy(), oracle(lambda: 2.0 * original), "∂L/∂x", rtol=1e-7, atol=0)


@pytest.mark.assignment(*BACKPROP)
def test_backprop_through_a_tangled_graph_against_torch(device):
    rng = grade_rng(0)
    x_np, w_np = rng.standard_normal(3), rng.standard_normal(3)
    x, w = leaf(x_np, device), leaf(w_np, device)
    p, q = Fork()(x)
    a = Times()(p, w)
    b = Affine(2.0)(q)
    c = Plus()(a, b, Affine(-1.0)(a))
    d = Times()(c, a)
    y = Affine(1.0)(Plus()(Plus()(d, Affine(0.5)(b)), q))
    g = rng.standard_normal(3)
    y.backward(on(device, g))

    def in_torch():
        xt, wt = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
        pt, qt = 2 * xt, xt * xt
        at = pt * wt
        bt = 2 * qt
        ct = at + bt - at
        yt = ct * at + 0.5 * bt + qt
        yt.backward(torch.tensor(g))
        return xt.grad.numpy(), wt.grad.numpy()

    tx, tw = oracle(in_torch) or (None, None)
    assert_close(x.grad.numpy(), tx, "∂L/∂x", 1e-12)
    assert_close(w.grad.numpy(), tw, "∂L/∂w", 1e-12)


# ------------------------------------------------------------------ autograd/sum_to
SUM_TO = [
    ((2, 3, 4, 5), (3, 1, 1)),      # a per-channel bias
    ((2, 3, 4, 5), (1, 3, 1, 1)),   # the same, kept 4-D
    ((2, 3, 4, 5), (5,)),           # leading axes only
    ((2, 3, 4, 5), ()),             # a scalar
    ((4, 3), (4, 1)),
    ((4, 3), (1, 3)),
    ((2, 5, 3), (5, 1)),            # leading and kept axes together
    ((3, 1, 4), (1, 1, 1)),         # an axis that is 1 on both sides
    ((2, 1, 3), (2, 1, 3)),         # nothing to do
]


@pytest.mark.assignment("autograd/sum_to")
@pytest.mark.parametrize("g_shape,shape", SUM_TO, ids=[f"{a}->{b}" for a, b in SUM_TO])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_to(device, g_shape, shape, dtype):
    g = grade_rng(1).standard_normal(g_shape).astype(dtype)
    expected = oracle(lambda: (torch.tensor(g).sum_to_size(shape).numpy().reshape(shape) if shape
                               else np.asarray(g.sum())).astype(dtype))
    out = sum_to(on(device, g), shape)
    assert_close(out, expected, f"sum_to({g_shape} -> {shape})", tol=1e-5)


# ------------------------------------------------------------------ autograd/add, autograd/mul
BROADCAST = [((2, 3), (2, 3)), ((2, 3, 4, 4), (3, 1, 1)), ((4, 1), (1, 5)), ((), (2, 3)), ((3, 1, 2), (4, 2))]
BROADCAST_IDS = [f"{a}+{b}" for a, b in BROADCAST]


def _pair(shapes, dtype, seed):
    rng = grade_rng(seed)
    a, b = (np.asarray(rng.standard_normal(s)).astype(dtype) for s in shapes)
    gy = np.asarray(rng.standard_normal(np.broadcast_shapes(*shapes))).astype(dtype)
    return a, b, gy


@pytest.mark.assignment("autograd/add", "autograd/sum_to")
@pytest.mark.parametrize("shapes", BROADCAST, ids=BROADCAST_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_add_backward(device, shapes, dtype):
    a, b, gy = _pair(shapes, dtype, 2)
    _, (ga, gb) = function_grads(Add, [a, b], gy, device)
    _, (ta, tb) = torch_grads(lambda a, b: a + b, [a, b], gy)
    assert_close(ga, ta, "∂L/∂a", 1e-5)
    assert_close(gb, tb, "∂L/∂b", 1e-5)


@pytest.mark.assignment("autograd/mul", "autograd/sum_to")
@pytest.mark.parametrize("shapes", BROADCAST, ids=BROADCAST_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mul_backward(device, shapes, dtype):
    a, b, gy = _pair(shapes, dtype, 3)
    _, (ga, gb) = function_grads(Mul, [a, b], gy, device)
    _, (ta, tb) = torch_grads(lambda a, b: a * b, [a, b], gy)
    assert_close(ga, ta, "∂L/∂a", 1e-5)
    assert_close(gb, tb, "∂L/∂b", 1e-5)


@pytest.mark.assignment("autograd/mul", "autograd/sum_to")
def test_mul_backward_by_finite_differences():
    a, b, gy = _pair(((3, 1, 2), (4, 2)), np.float64, 4)
    _, grads = function_grads(Mul, [a, b], gy)
    for g, n, name in zip(grads, numeric_grads(Mul, [a, b], gy), "ab"):
        assert_close(g, n, f"∂L/∂{name} (finite differences)", rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ autograd/relu, autograd/sigmoid
@pytest.mark.assignment("autograd/relu")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_backward(device, dtype):
    rng = grade_rng(5)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    x[0, 0, :3] = 0.0  # the gradient at exactly 0 is 0 (as PyTorch)
    gy = rng.standard_normal(x.shape).astype(dtype)
    _, (gx,) = function_grads(ReLU, [x], gy, device)
    _, (tx,) = torch_grads(torch.relu, [x], gy)
    assert_close(gx, tx, "∂L/∂x")


@pytest.mark.assignment("autograd/sigmoid")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_backward(device, dtype):
    rng = grade_rng(6)
    x = np.concatenate([rng.uniform(-6, 6, 40), [-60.0, -30.0, 0.0, 30.0, 60.0]]).astype(dtype).reshape(5, 9)
    gy = rng.standard_normal(x.shape).astype(dtype)
    _, (gx,) = function_grads(Sigmoid, [x], gy, device)
    _, (tx,) = torch_grads(torch.sigmoid, [x], gy)
    assert_close(gx, tx, "∂L/∂x", 1e-6)


@pytest.mark.assignment("autograd/sigmoid")
def test_sigmoid_backward_by_finite_differences():
    rng = grade_rng(7)
    x, gy = rng.uniform(-4, 4, (3, 4)), rng.standard_normal((3, 4))
    _, (gx,) = function_grads(Sigmoid, [x], gy)
    assert_close(gx, numeric_grads(Sigmoid, [x], gy)[0], "∂L/∂x (finite differences)", rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ autograd/linear
@pytest.mark.assignment("autograd/linear")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_backward(device, bias, dtype):
    rng = grade_rng(8)
    x, w = rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((4, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if bias else None
    gy = rng.standard_normal((5, 4)).astype(dtype)
    _, grads = function_grads(Linear, [x, w, b], gy, device)
    _, expected = torch_grads(lambda x, w, b: torch.nn.functional.linear(x, w, b), [x, w, b], gy)
    for g, e, name, a in zip(grads, expected, ["∂L/∂x", "∂L/∂W", "∂L/∂b"], [x, w, b]):
        if a is not None:
            assert_close(g, e, name, 1e-5)


@pytest.mark.assignment("autograd/linear")
def test_linear_backward_by_finite_differences():
    rng = grade_rng(9)
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal((3, 3)), rng.standard_normal(3)]
    gy = rng.standard_normal((2, 3))
    _, grads = function_grads(Linear, arrays, gy)
    for g, n, name in zip(grads, numeric_grads(Linear, arrays, gy), ["x", "W", "b"]):
        assert_close(g, n, f"∂L/∂{name} (finite differences)", rtol=1e-6, atol=1e-8)
