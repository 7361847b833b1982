import numpy as np
import pytest

from minise import Tensor
from minise.functional.shape import _is_basic, getitem

from ..conftest import on


@pytest.mark.parametrize("index", [
    (slice(None), slice(None), slice(None, None, 2), slice(None, None, 2)),  # the option-A shortcut
    (1, Ellipsis, slice(3, 0, -2)),
    (None, slice(1, 4), 0),
    np.int64(2),
])
def test_basic_index_gradient_is_the_gradient_put_back_in_place(device, index):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((3, 4, 5, 6))
    x = Tensor(on(device, x_np), requires_grad=True)
    y = getitem(x, index)
    g = rng.standard_normal(y.shape)
    y.backward(on(device, g))
    expected = np.zeros_like(x_np)
    np.add.at(expected, index, g)  # the definition: ∂L/∂y added at the index
    np.testing.assert_array_equal(x.grad.numpy(), expected)


@pytest.mark.parametrize("index", [np.array([0, 2, 0, 0]), (np.array([1, 1]), slice(None)),
                                   np.array([True, False, True])])
def test_advanced_index_gradient_adds_up_repeats(index):
    x = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    y = getitem(x, index)
    g = np.arange(1.0, y.size + 1).reshape(y.shape)
    y.backward(g)
    expected = np.zeros((3, 4))
    np.add.at(expected, index, g)
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    assert x.grad.numpy().sum() == g.sum()  # every repeat counted


def test_which_indices_are_basic():
    assert _is_basic((slice(None), 3, None, Ellipsis)) and _is_basic(np.int32(1)) and _is_basic(slice(2))
    assert not _is_basic(True) and not _is_basic((slice(None), False))  # NumPy reads a bool as a mask
    assert not _is_basic([0, 1]) and not _is_basic((np.array([0]), 1)) and not _is_basic(np.array(1))
