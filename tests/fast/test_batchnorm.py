"""minise.fast.batchnorm against the textbook batch norm (speed.use_fast(False)): the same numbers
up to rounding, in every mode and for every combination of wanted gradients."""

import numpy as np
import pytest

import minise.fast.batchnorm as fast_bn
import minise.functional as F
from minise import Tensor, no_grad, speed
from minise.testing import simulated_gpu

SHAPES = [(7, 3), (4, 3, 5, 6), (3, 5, 1, 1), (2, 1, 7, 9), (16, 8, 4, 4)]
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def _run(shape, dtype, training, wanted=(True, True, True), affine=True, seed=0):
    """y, the gradients (None where not wanted), the running estimates after, and the op."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = Tensor((rng.standard_normal(shape) * 3 + 2).astype(dtype), requires_grad=wanted[0])
    w = Tensor(rng.uniform(0.5, 1.5, c).astype(dtype), requires_grad=wanted[1]) if affine else None
    b = Tensor(rng.standard_normal(c).astype(dtype), requires_grad=wanted[2]) if affine else None
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3)
    op = y.creator
    if y.requires_grad:
        y.backward(g)
    grads = [None if t is None or t.grad is None else t.grad.numpy() for t in (x, w, b)]
    return [y.numpy(), *grads, rm, rv], op


def _close(fast, slow, dtype, what):
    names = ["y", "dL/dx", "dL/dw", "dL/db", "running mean", "running var"]
    for name, a, b in zip(names, fast, slow):
        if b is None:
            assert a is None, f"{what}: {name} should be None"
            continue
        assert a.dtype == b.dtype == dtype, f"{what}: {name} dtype"
        tol = TOL[dtype]
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()), err_msg=f"{what}: {name}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cut", ["whole", "parts"])
def test_same_numbers_as_the_textbook(monkeypatch, shape, training, dtype, cut):
    if cut == "parts":  # the channels over three threads, and ∂L/∂x one sample per block
        monkeypatch.setattr(speed, "NUM_THREADS", 3)
        monkeypatch.setattr(fast_bn, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(speed, "default_block_bytes", lambda: 1)
    fast, op = _run(shape, dtype, training)
    assert op.fast is fast_bn  # the fast path did run
    with speed.use_fast(False):
        slow, op = _run(shape, dtype, training)
    assert op.fast is None
    _close(fast, slow, dtype, f"{shape} training={training}")


@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True),
                                    (True, True, False), (False, True, True), (True, False, True)])
@pytest.mark.parametrize("training", [True, False])
def test_every_combination_of_wanted_gradients(wanted, training):
    fast, _ = _run((4, 3, 5, 6), np.float64, training, wanted)
    with speed.use_fast(False):
        slow, _ = _run((4, 3, 5, 6), np.float64, training, wanted)
    _close(fast, slow, np.float64, f"wanted={wanted}")


@pytest.mark.parametrize("training", [True, False])
def test_without_weight_and_bias(training):
    fast, _ = _run((4, 3, 5, 6), np.float64, training, (True, False, False), affine=False)
    with speed.use_fast(False):
        slow, _ = _run((4, 3, 5, 6), np.float64, training, (True, False, False), affine=False)
    _close(fast, slow, np.float64, "affine=False")


def test_evaluation_without_a_graph_leaves_the_input_and_the_estimates_alone():
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((5, 4, 3, 3)) * 2 + 1
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    rm0, rv0 = rm.copy(), rv.copy()
    w, b = Tensor(rng.uniform(0.5, 1.5, 4)), Tensor(rng.standard_normal(4))
    x = Tensor(x_np.copy())
    with no_grad():
        y = F.batch_norm(x, rm, rv, w, b, training=False).numpy()
    with speed.use_fast(False), no_grad():
        expected = F.batch_norm(Tensor(x_np), rm, rv, w, b, training=False).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(x.numpy(), x_np)  # y is made in place of x − μ, never of x
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


def test_upstream_gradient_that_is_a_broadcast_view():
    """∂L/∂y may arrive as a read-only broadcast view (global average pooling's backward)."""
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal((6, 3, 4, 4))
    g = np.broadcast_to(rng.standard_normal((6, 3, 1, 1)), x_np.shape)
    out = []
    for fast in (True, False):
        x = Tensor(x_np, requires_grad=True)
        w = Tensor(np.linspace(0.5, 1.5, 3), requires_grad=True)
        with speed.use_fast(fast):
            F.batch_norm(x, np.zeros(3), np.ones(3), w, training=True).backward(g)
        out.append((x.grad.numpy(), w.grad.numpy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_through_a_small_network():
    """relu(bn(conv(x))) twice, training: every gradient the same with and without the fast path."""
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((8, 3, 6, 6))
    ws = [rng.standard_normal((4, 3, 3, 3)) * 0.3, rng.standard_normal((4, 4, 3, 3)) * 0.3]
    g = rng.standard_normal((8, 4, 6, 6))

    def run():
        x = Tensor(x_np, requires_grad=True)
        params = [Tensor(w, requires_grad=True) for w in ws]
        gammas = [Tensor(np.linspace(0.5, 1.5, 4), requires_grad=True) for _ in ws]
        h = x
        for w, gamma in zip(params, gammas):
            h = F.relu(F.batch_norm(F.conv2d(h, w, padding=1), np.zeros(4), np.ones(4), gamma, training=True))
        h.backward(g)
        return [h.numpy(), x.grad.numpy()] + [t.grad.numpy() for t in params + gammas]

    fast = run()
    with speed.use_fast(False):
        slow = run()
    for k, (a, b) in enumerate(zip(fast, slow)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max(), err_msg=f"output {k}")


def test_supports_only_cpu_floating_arrays():
    x = np.zeros((2, 3))
    assert fast_bn.supports(x, None, None) and fast_bn.supports(x.astype(np.float32), np.ones(3, np.float32), None)
    assert not fast_bn.supports(np.zeros((0, 3)), None, None)
    assert not fast_bn.supports(np.zeros((2, 3), np.float16), None, None)
    with simulated_gpu() as gpu:
        assert not fast_bn.supports(gpu.asarray(x), None, None)
