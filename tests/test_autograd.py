import numpy as np
import pytest

import minise
import minise.functional as F
from minise import Function, Tensor, no_grad

from .conftest import on


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


def test_an_unused_output_of_a_two_output_function_gets_zeros(no_cyclic_gc, device):
    class Split(Function):
        """(2x, x²); ∂L/∂x = 2 g1 + 2x g2"""

        def forward(self, x):
            self.save(x)
            return 2 * x, x * x

        def backward(self, g1, g2):
            (x,) = self.saved
            return 2 * g1 + 2 * x * g2

    x = Tensor(on(device, np.array([1.0, 2.0])), requires_grad=True)
    first, second = Split()(x)
    del second                      # dropped before backward: its gradient is zero (a stand-in on x's device)
    first.sum().backward()
    assert x.grad.device == device
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


# ------------------------------------------------------------------ integer and bool inputs (one rule for every op)
_X = np.array([[[[1, -2, 3], [4, 0, -1], [2, 2, -3]]], [[[0, 1, -1], [3, -2, 2], [1, 0, 4]]]])  # (2, 1, 3, 3)


def _floating_ops():
    w = np.full((2, 1, 2, 2), 0.9, np.float32)
    return {
        "conv2d": lambda x: F.conv2d(x, Tensor(w)),
        "conv2d_int_weight": lambda x: F.conv2d(x, Tensor(np.ones((2, 1, 2, 2), np.int64))),
        "conv2d_reference": lambda x: F.conv2d_reference(x, Tensor(w)),
        "max_pool2d": lambda x: F.max_pool2d(x, 2, 1),
        "avg_pool2d": lambda x: F.avg_pool2d(x, 2, 1, 1),
        "global_avg_pool2d": F.global_avg_pool2d,
        "global_max_pool2d": F.global_max_pool2d,
        "relu": F.relu,
        "sigmoid": F.sigmoid,
        "tanh": F.tanh,
        "scale": lambda x: F.scale(x, Tensor(np.array([[0.5], [2.5]], np.float32))),
        "linear": lambda x: F.linear(F.flatten(x), Tensor(np.full((3, 9), 0.7, np.float32))),
        "batch_norm": lambda x: F.batch_norm(x, None, None, training=True),
        "cross_entropy": lambda x: F.cross_entropy(F.flatten(x), Tensor(np.array([0, 8]))),
        "mean": lambda x: F.mean(x),
        "div": lambda x: x / 4,
        "pow": lambda x: x**3.0,  # a float power: floats, as in PyTorch
        "times_a_float": lambda x: x * 2.5,
        "plus_a_float_tensor": lambda x: x + Tensor(np.float32(0.25)),
    }


@pytest.mark.parametrize("op", sorted(_floating_ops()))
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_integer_and_bool_inputs_of_floating_ops_become_float32(op, dtype):
    f = _floating_ops()[op]
    x = _X.astype(dtype)
    got = f(Tensor(x))
    want = f(Tensor(x.astype(np.float32)))
    assert got.dtype == np.float32, f"{op} on {np.dtype(dtype)} gave {got.dtype}"
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_conv2d_of_an_integer_image_is_not_truncated():
    # issue 14: an integer input with float32 weights used to come back as integers (2 instead of 2.7)
    y = F.conv2d(Tensor(np.ones((1, 1, 1, 3), np.int64)), Tensor(np.full((1, 1, 1, 3), 0.9, np.float32)))
    assert y.dtype == np.float32
    assert y.item() == pytest.approx(2.7, rel=1e-6)


def test_integer_closed_ops_keep_integers_as_pytorch():
    a = Tensor(np.array([[1, 2], [3, 4]]))
    for y in (a + a, a - 1, a * 3, -a, a.sum(), a @ a, a**2, a.reshape(4), a[0], F.concat([a, a])):
        assert y.dtype == np.int64
    assert (Tensor(np.array([True])) + 1).dtype == np.int64  # an int with a bool tensor: int64
    assert (a * 2.5).numpy().tolist() == [[2.5, 5.0], [7.5, 10.0]]  # not truncated to 2, 4, ...
    assert (a + Tensor(np.ones(2, np.float32))).dtype == np.float32  # not NumPy's float64


def test_gradients_flow_to_the_float_input_beside_an_integer_one():
    w = Tensor(np.full((1, 1, 1, 3), 0.5), requires_grad=True)  # float64
    y = F.conv2d(Tensor(np.array([[[[1, 2, 3]]]])), w)
    assert y.dtype == np.float64
    y.backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(w.grad.numpy(), [[[[1.0, 2.0, 3.0]]]])


def test_class_labels_stay_integers_and_float_labels_are_refused():
    logits = Tensor(np.zeros((2, 3), np.float32))
    assert F.cross_entropy(logits, Tensor(np.array([0, 2]))).item() == pytest.approx(np.log(3), rel=1e-6)
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, Tensor(np.array([0.0, 2.0], np.float32)))


@pytest.mark.parametrize("values", [np.array([None, 1.0]), np.array(["a", "b"]), ["a", "b"],
                                    np.array([1 + 2j]), np.array([b"x"])], ids=["object", "str", "list of str",
                                                                              "complex", "bytes"])
def test_a_tensor_of_non_numbers_is_refused_at_construction(values):
    with pytest.raises(TypeError, match=r"^Tensor: values of dtype .* are not numbers"):
        Tensor(values)


def test_dtypes_as_pytorch_gives_them():
    torch = pytest.importorskip("torch")
    cases = {  # name: (the operation, its arguments as NumPy arrays or Python numbers)
        "int64 * 2.5": (lambda a: a * 2.5, [np.array([1, 2])]),
        "uint8 * 3": (lambda a: a * 3, [np.array([1, 2], np.uint8)]),
        "bool + 1": (lambda a: a + 1, [np.array([True, False])]),
        "bool + 1.5": (lambda a: a + 1.5, [np.array([True, False])]),
        "int64 + float32": (lambda a, b: a + b, [np.array([1, 2]), np.array([0.5, 0.25], np.float32)]),
        "int32 * float64": (lambda a, b: a * b, [np.array([1, 2], np.int32), np.array([0.5, 0.25])]),
        "int64 / int64": (lambda a, b: a / b, [np.array([1, 2]), np.array([2, 4])]),
        "int64 ** 2": (lambda a: a**2, [np.array([1, 2])]),
        "int64 ** 0.5": (lambda a: a**0.5, [np.array([1, 4])]),
        "int64 @ int64": (lambda a, b: a @ b, [np.eye(2, dtype=np.int64), np.ones((2, 2), np.int64)]),
        "sigmoid(int64)": ("sigmoid", [np.array([0, 1])]),
        "tanh(bool)": ("tanh", [np.array([True, False])]),
    }
    for name, (op, args) in cases.items():
        if isinstance(op, str):
            ours = getattr(F, op)(*[Tensor(a) for a in args])
            theirs = getattr(torch, op)(*[torch.from_numpy(a) for a in args])
        else:
            ours = op(*[Tensor(a) for a in args])
            theirs = op(*[torch.from_numpy(a) for a in args])
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), name
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, err_msg=name)


def test_mean_over_no_elements_is_an_error() -> None:
    """Issue 30: it was NaN with only a RuntimeWarning."""
    with pytest.raises(ValueError, match=r"mean: over no elements \(axes \(0, 1\) of shape \(0, 3\)\)"):
        Tensor(np.zeros((0, 3), np.float32)).mean()
    with pytest.raises(ValueError, match="mean: over no elements"):
        F.mean(Tensor(np.zeros((2, 0), np.float32)), axis=1)
    assert F.mean(Tensor(np.zeros((0, 3), np.float32)), axis=1).shape == (0,)  # a mean of 3 values, 0 times
