"""The window geometry shared by conv2d, the pooling ops and the layers: one rule for settings."""

import numpy as np
import pytest

import minise.functional as F
from minise import Tensor, nn
from minise.functional.window import Window, output_size, pad, pair, unpad


@pytest.mark.parametrize("value,expected", [(3, (3, 3)), ((2, 1), (2, 1)), ([1, 4], (1, 4)),
                                            (np.int64(2), (2, 2)), ((np.int32(1), 5), (1, 5))])
def test_pair_accepts_ints(value, expected):
    got = pair(value, "stride", "op")
    assert got == expected and all(type(v) is int for v in got)


@pytest.mark.parametrize("value", [True, False, (1, True), 1.0, (1.0, 2), "3", (1, 2, 3), (1,), None])
def test_pair_refuses_the_rest(value):
    with pytest.raises(ValueError, match=r"^op: stride must be an int or a pair of ints, got "):
        pair(value, "stride", "op")


@pytest.mark.parametrize("make", [
    lambda v: F.conv2d(Tensor(np.zeros((1, 1, 4, 4))), Tensor(np.zeros((1, 1, 3, 3))), stride=v),
    lambda v: F.conv2d_reference(Tensor(np.zeros((1, 1, 4, 4))), Tensor(np.zeros((1, 1, 3, 3))), padding=v),
    lambda v: F.max_pool2d(Tensor(np.zeros((1, 1, 4, 4))), 2, stride=v),
    lambda v: F.avg_pool2d(Tensor(np.zeros((1, 1, 4, 4))), v),
    lambda v: nn.Conv2d(1, 1, 3, stride=v),
    lambda v: nn.MaxPool2d(v),
    lambda v: nn.AvgPool2d(2, padding=v),
], ids=["conv2d", "conv2d_reference", "max_pool2d", "avg_pool2d", "nn.Conv2d", "nn.MaxPool2d", "nn.AvgPool2d"])
def test_every_user_refuses_bools(make):
    """The same rule everywhere: a bool is not a size (it was accepted by the layers before)."""
    with pytest.raises(ValueError, match=r"must be an int or a pair of ints, got True"):
        make(True)


@pytest.mark.parametrize("size,k,s,p,d", [(32, 3, 1, 1, 1), (32, 3, 2, 1, 1), (7, 2, 3, 0, 1), (9, 3, 1, 2, 2),
                                          (5, 5, 1, 0, 1), (224, 7, 2, 3, 1), (6, 1, 2, 0, 1)])
def test_output_size_counts_the_windows(size, k, s, p, d):
    """The formula against counting the windows whose last tap lies inside the padded input."""
    count = sum(1 for i in range(size + 2 * p) if i * s + d * (k - 1) < size + 2 * p)
    assert output_size(size, k, s, p, d) == count


def test_layers_and_ops_agree_on_shapes():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 9, 7)).astype(np.float32))
    for layer in (nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
                  nn.MaxPool2d(3, 2, 1), nn.AvgPool2d((2, 3), (1, 2))):
        assert layer(x).shape == layer.output_shape(x.shape)


def test_pad_and_unpad():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    padded = pad(x, (1, 2), fill=-1.0, extra_rows=1)
    assert padded.shape == (1, 1, 5, 7)
    assert (padded[0, 0, 1:3, 2:5] == x[0, 0]).all() and (padded == -1).sum() == 35 - 6
    back = unpad(padded, (1, 2), 2, 3)
    np.testing.assert_array_equal(back, x)
    assert back.flags.c_contiguous


def test_offset_slices_every_window_at_once():
    w = Window((2, 2), (2, 1), (0, 0), (1, 2), 5, 6)
    x = np.arange(30.0).reshape(1, 1, 5, 6)
    for u in range(2):
        for v in range(2):
            got = x[w.offset(u, v)]
            assert got.shape == (1, 1, w.out_h, w.out_w)
            for i in range(w.out_h):
                for j in range(w.out_w):
                    rows, cols = w.rows_cols(i, j)
                    assert got[0, 0, i, j] == x[0, 0, rows, cols][u, v]


@pytest.mark.parametrize("kwargs,message", [
    (dict(kernel=(0, 1)), r"kernel_size must be >= 1, got \(0, 1\)"),
    (dict(stride=(1, 0)), r"stride must be >= 1, got \(1, 0\)"),
    (dict(padding=(-1, 0)), r"padding must be >= 0, got \(-1, 0\)"),
    (dict(dilation=(0, 1)), r"dilation must be >= 1, got \(0, 1\)"),
    (dict(kernel=(5, 5)), r"kernel 5x5 is larger than the padded input 4x4: output size would be 0x0"),
    (dict(dilation=(2, 2)), r"kernel 3x3 \(dilation 2x2\) is larger than the padded input 4x4"),
])
def test_check(kwargs, message):
    settings = dict(kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), h=4, w=4) | kwargs
    with pytest.raises(ValueError, match="^op: " + message):
        Window(**settings).check("op")
