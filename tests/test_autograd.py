import numpy as np
import pytest

import minise
from minise import Function, Tensor, no_grad


def test_a_small_graph_by_hand():
    # f(a, b) = (a·b + a)², so ∂f/∂a = 2(ab + a)(b + 1), ∂f/∂b = 2(ab + a)·a
    a = Tensor(np.array(3.0), requires_grad=True)
    b = Tensor(np.array(-2.0), requires_grad=True)
    f = (a * b + a) ** 2
    f.backward()
    assert f.item() == 9.0
    assert a.grad.item() == 2 * (-6 + 3) * (-2 + 1)
    assert b.grad.item() == 2 * (-6 + 3) * 3


def test_tensor_used_twice_sums_its_gradients():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3.0
    z = (y + y * y).sum()  # residual-style reuse of y
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * (1 + 2 * 3 * np.array([1.0, 2.0])))


def test_broadcasting_gradients_are_summed_back():
    x = Tensor(np.ones((2, 3, 4)), requires_grad=True)
    b = Tensor(np.ones((3, 1)), requires_grad=True)
    (x * b + b).sum().backward()
    assert b.grad.shape == (3, 1)
    np.testing.assert_allclose(b.grad.numpy(), np.full((3, 1), 2 * 4 + 2 * 4))


def test_deep_graph_needs_no_recursion():
    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(20000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**20000)


def test_graph_is_freed_after_backward():
    x = Tensor(np.array(2.0), requires_grad=True)
    y = x * x
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()
    z = x * x
    z.backward(retain_graph=True)
    z.backward()
    assert x.grad.item() == 4.0 + 4.0 + 4.0


def test_no_grad_records_nothing():
    x = Tensor(np.array(2.0), requires_grad=True)
    with no_grad():
        y = x * x
    assert not y.requires_grad and y.creator is None
    assert minise.is_grad_enabled()


def test_function_skips_unneeded_gradients():
    seen = []

    class Probe(Function):
        def forward(self, a, b):
            seen.append(self.needs_input_grad)
            return a + b

        def backward(self, gy):
            return gy, None

    Probe()(Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2))).sum().backward()
    assert seen == [(True, False)]


def test_mixing_float32_and_float64_is_an_error():
    with pytest.raises(TypeError, match="different floating dtypes"):
        Tensor(np.ones(2, np.float32)) + Tensor(np.ones(2, np.float64))


def test_python_numbers_keep_the_tensor_dtype():
    x = Tensor(np.ones(2, np.float32))
    assert (x * 2.5 + 1).dtype == np.float32
    assert (1 - x / 3).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.ones(1)).dtype == np.float64


def test_backward_needs_a_gradient_for_non_scalars():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="gradient shape"):
        (x * 2).backward(np.ones(2))


def test_getitem_and_reshape_gradients():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.reshape(3, 2)[np.array([0, 0, 2])]
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2, 2, 0], [0, 1, 1]])


def test_numpy_returns_a_copy():
    x = Tensor(np.zeros(2))
    x.numpy()[0] = 5
    assert x.data[0] == 0


# ------------------------------------------------------------------ memory: outputs held weakly
@pytest.fixture
def no_cyclic_gc():
    """Only reference counting may free memory inside the test (the cyclic collector is off)."""
    import gc

    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_a_forward_pass_without_backward_frees_its_memory(no_cyclic_gc):
    import weakref

    w = Tensor(np.ones((3, 3)), requires_grad=True)
    x = Tensor(np.ones((2, 3)))
    h = x @ w                       # an intermediate, saved by the next op
    y = (h * h).sum()
    refs = [weakref.ref(h), weakref.ref(h.creator), weakref.ref(y.creator), weakref.ref(h.data)]
    del h
    assert all(r() is not None for r in refs), "the graph stays alive while its output is held"
    del y                            # nobody holds the output any more: the whole graph goes, without the GC
    assert [r() is None for r in refs] == [True] * 4
    assert w.grad is None and w.creator is None


def test_a_deep_graph_is_freed_by_reference_counting(no_cyclic_gc):
    import weakref

    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    refs = []
    for i in range(20000):
        y = y * 1.0001
        if i % 1000 == 0:
            refs.append(weakref.ref(y))
    del y
    assert [r() for r in refs] == [None] * len(refs)


def test_backward_through_intermediates_nobody_holds(no_cyclic_gc):
    # each intermediate lives only as an input of the next Function; backward must keep every tensor
    # with a gradient on its way alive until its creator is reached (outputs are held weakly)
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    a = x * 2.0
    loss = ((a * a + a) * 3.0).sum() + (a * 0.5).sum()  # a is used three times, and then dropped
    del a
    loss.backward()
    xv = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), 3 * (2 * (2 * xv) + 1) * 2 + 0.5 * 2)


def test_an_unused_output_of_a_two_output_function_gets_zeros(no_cyclic_gc):
    class Split(Function):
        """(2x, x²); ∂L/∂x = 2 g1 + 2x g2"""

        def forward(self, x):
            self.save(x)
            return 2 * x, x * x

        def backward(self, g1, g2):
            (x,) = self.saved
            return 2 * g1 + 2 * x * g2

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    first, second = Split()(x)
    del second                      # dropped before backward: its gradient is zero
    first.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
