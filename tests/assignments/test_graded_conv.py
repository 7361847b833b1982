"""Graded tests of assignment "conv": conv2d forward and backward by im2col/col2im, and the backward
of max and average pooling.

Every Function is run directly on arrays (forward, then its backward with a random upstream
gradient) and compared with PyTorch. The shapes are the awkward ones on purpose: overlapping
windows (stride < kernel, where col2im and pooling must add with `+=`), padding (which the input
gradient must crop away again), groups, dilation, odd sizes and non-square kernels. Kernels are
never 1×1 without padding: that case takes a separate matrix-product path that is not part of
the assignment.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minise.functional.conv as conv_module
from minise.functional.conv import Conv2d
from minise.functional.pooling import AvgPool2d, MaxPool2d

from .checks import (
    assert_close,
    distinct,
    function_forward,
    function_grads,
    grade_rng,
    numeric_grads,
    oracle,
    torch_grads,
)

FORWARD = "conv/forward"
BACKWARD = "conv/backward"

# (input shape, weight shape, stride, padding, dilation, groups)
CONVS = {
    "3x3": ((2, 3, 7, 7), (4, 3, 3, 3), 1, 1, 1, 1),
    "3x3-s2": ((2, 3, 8, 7), (4, 3, 3, 3), 2, 1, 1, 1),            # overlapping windows, odd width
    "groups2": ((1, 4, 6, 6), (6, 2, 3, 3), 1, 1, 1, 2),
    "groups3-s2": ((2, 6, 7, 7), (6, 2, 3, 3), 2, 1, 1, 3),         # groups and col2im together
    "depthwise-s2": ((2, 4, 9, 8), (4, 1, 3, 3), 2, 1, 1, 4),
    "nonsquare-dilated": ((2, 2, 7, 9), (3, 2, 3, 2), (2, 1), (1, 0), (1, 2), 1),
    "tiles": ((2, 3, 6, 6), (2, 3, 2, 2), 2, 0, 1, 1),             # stride = kernel: no overlap
    "one-window": ((1, 1, 5, 5), (1, 1, 5, 5), 1, 0, 1, 1),
    "1x1-padded": ((2, 2, 4, 4), (3, 2, 1, 1), 1, 1, 1, 1),
    "pad-beyond-kernel": ((2, 2, 5, 5), (2, 2, 2, 2), 1, 2, 1, 1),  # padding > kernel − 1
}


def _conv_arrays(case, seed, bias=True):
    x_shape, w_shape, *_ = CONVS[case]
    rng = grade_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    return x, w, b


def _settings(case):
    _, _, stride, padding, dilation, groups = CONVS[case]
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _out_shape(case, x, w):
    with torch.no_grad():
        return tuple(_torch_conv(case)(torch.tensor(x), torch.tensor(w), None).shape)


def _torch_conv(case):
    s = _settings(case)
    return lambda x, w, b: TF.conv2d(x, w, b, s["stride"], s["padding"], s["dilation"], s["groups"])


def _torch_forward(case, *arrays):
    """The expected conv2d output (an oracle: see checks.oracle)."""
    def compute():
        with torch.no_grad():
            return _torch_conv(case)(*(torch.tensor(a) for a in arrays)).numpy()
    return oracle(compute)


# ------------------------------------------------------------------ conv/forward
@pytest.mark.assignment(FORWARD)
@pytest.mark.parametrize("case", list(CONVS))
def test_conv_forward(device, case):
    x, w, b = _conv_arrays(case, 0)
    expected = _torch_forward(case, x, w, b)
    y = function_forward(lambda: Conv2d(**_settings(case)), [x, w, b], device)
    assert_close(y, expected, f"conv2d {case}", 1e-10)


@pytest.mark.assignment(FORWARD)
def test_conv_forward_float32_stays_float32(device):
    x, w, b = (a.astype(np.float32) for a in _conv_arrays("3x3-s2", 1))
    expected = _torch_forward("3x3-s2", x, w, b)
    y = function_forward(lambda: Conv2d(**_settings("3x3-s2")), [x, w, b], device)
    assert_close(y, expected, "conv2d float32", 1e-4)


@pytest.mark.assignment(FORWARD)
def test_conv_forward_in_many_blocks(monkeypatch):
    """On the CPU the columns are built a few samples at a time; here one sample per block."""
    monkeypatch.setattr(conv_module, "CPU_BLOCK_BYTES", 1)
    x, w, b = _conv_arrays("groups3-s2", 2)
    x = np.concatenate([x, x[::-1] * 0.5, x + 1])  # 6 samples
    expected = _torch_forward("groups3-s2", x, w, b)
    y = function_forward(lambda: Conv2d(**_settings("groups3-s2")), [x, w, b])
    assert_close(y, expected, "conv2d in blocks of one sample", 1e-10)


# ------------------------------------------------------------------ conv/backward
@pytest.mark.assignment(BACKWARD, FORWARD)
@pytest.mark.parametrize("case", list(CONVS))
def test_conv_backward(device, case):
    x, w, b = _conv_arrays(case, 3)
    gy = grade_rng(4).standard_normal(_out_shape(case, x, w))
    _, (gx, gw, gb) = function_grads(lambda: Conv2d(**_settings(case)), [x, w, b], gy, device)
    _, (tx, tw, tb) = torch_grads(_torch_conv(case), [x, w, b], gy)
    assert_close(gx, tx, f"∂L/∂x, {case}", 1e-9)
    assert_close(gw, tw, f"∂L/∂W, {case}", 1e-9)
    assert_close(gb, tb, f"∂L/∂b, {case}", 1e-9)


@pytest.mark.assignment(BACKWARD, FORWARD)
@pytest.mark.parametrize("case", ["3x3-s2", "groups3-s2"])
def test_conv_backward_in_many_blocks(monkeypatch, case):
    monkeypatch.setattr(conv_module, "CPU_BLOCK_BYTES", 1)
    x, w, b = _conv_arrays(case, 5)
    x = np.concatenate([x, -x, 2 * x])
    gy = grade_rng(6).standard_normal(_out_shape(case, x, w))
    _, (gx, gw, _) = function_grads(lambda: Conv2d(**_settings(case)), [x, w, b], gy)
    _, (tx, tw, _) = torch_grads(_torch_conv(case), [x, w, b], gy)
    assert_close(gx, tx, "∂L/∂x in blocks of one sample", 1e-9)
    assert_close(gw, tw, "∂L/∂W in blocks of one sample", 1e-9)


@pytest.mark.assignment(BACKWARD, FORWARD)
def test_conv_backward_only_weight_wanted(device):
    """The first layer's input needs no gradient: backward is asked for ∂L/∂W alone."""
    x, w, _ = _conv_arrays("3x3-s2", 7, bias=False)
    gy = grade_rng(8).standard_normal((2, 4, 4, 4))
    _, (gx, gw) = function_grads(lambda: Conv2d(**_settings("3x3-s2")), [x, w], gy, device, wanted=[False, True])
    _, (_, tw, _) = torch_grads(_torch_conv("3x3-s2"), [x, w, None], gy)
    assert_close(gw, tw, "∂L/∂W", 1e-9)


@pytest.mark.assignment(BACKWARD, FORWARD)
def test_conv_backward_by_finite_differences():
    case = "nonsquare-dilated"
    x, w, b = _conv_arrays(case, 9)
    x = x[:1]
    gy = grade_rng(10).standard_normal(_out_shape(case, x, w))

    def make():
        return Conv2d(**_settings(case))

    _, grads = function_grads(make, [x, w, b], gy)
    for g, n, name in zip(grads, numeric_grads(make, [x, w, b], gy), ["x", "W", "b"]):
        assert_close(g, n, f"∂L/∂{name} (finite differences)", rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ pooling backward
# (input shape, kernel, stride, padding)
POOLS = {
    "k2-s2": ((2, 3, 6, 6), 2, 2, 0),                  # windows tile the input: no overlap
    "k3-s2-p1": ((2, 2, 7, 7), 3, 2, 1),               # ImageNet ResNet's max pool: overlapping
    "k3-s1": ((1, 1, 5, 6), 3, 1, 0),                  # every pixel in up to 9 windows
    "k3x2-s2x1-p1x0": ((2, 2, 7, 5), (3, 2), (2, 1), (1, 0)),  # non-square kernel, stride, padding
    "k2-s3": ((2, 3, 5, 5), 2, 3, 0),                  # stride > kernel: some pixels in no window
    "k2x3-s1": ((1, 2, 4, 5), (2, 3), 1, 0),
}


def _pool_case(case, seed):
    shape, k, s, p = POOLS[case]
    x = distinct(shape, grade_rng(seed))
    return x, k, s, p


@pytest.mark.assignment("conv/max_pool_backward")
@pytest.mark.parametrize("case", list(POOLS))
def test_max_pool_backward(device, case):
    x, k, s, p = _pool_case(case, 11)
    with torch.no_grad():
        out_shape = TF.max_pool2d(torch.tensor(x), k, s, p).shape
    gy = grade_rng(12).integers(-8, 9, tuple(out_shape)).astype(np.float64)
    _, (gx,) = function_grads(lambda: MaxPool2d(k, s, p), [x], gy, device)
    _, (tx,) = torch_grads(lambda x: TF.max_pool2d(x, k, s, p), [x], gy)
    assert_close(gx, tx, f"max_pool2d ∂L/∂x, {case}", 1e-12)


@pytest.mark.assignment("conv/max_pool_backward")
def test_max_pool_backward_float32(device):
    x, k, s, p = _pool_case("k3-s2-p1", 13)
    x = x.astype(np.float32)
    gy = grade_rng(14).standard_normal((2, 2, 4, 4)).astype(np.float32)
    _, (gx,) = function_grads(lambda: MaxPool2d(k, s, p), [x], gy, device)
    _, (tx,) = torch_grads(lambda x: TF.max_pool2d(x, k, s, p), [x], gy)
    assert_close(gx, tx, "max_pool2d ∂L/∂x float32", 1e-6)


@pytest.mark.assignment("conv/avg_pool_backward")
@pytest.mark.parametrize("case", list(POOLS))
def test_avg_pool_backward(device, case):
    x, k, s, p = _pool_case(case, 15)
    with torch.no_grad():
        out_shape = TF.avg_pool2d(torch.tensor(x), k, s, p).shape
    gy = grade_rng(16).standard_normal(tuple(out_shape))
    _, (gx,) = function_grads(lambda: AvgPool2d(k, s, p), [x], gy, device)
    _, (tx,) = torch_grads(lambda x: TF.avg_pool2d(x, k, s, p), [x], gy)  # count_include_pad=True
    assert_close(gx, tx, f"avg_pool2d ∂L/∂x, {case}", 1e-12)


@pytest.mark.assignment("conv/avg_pool_backward")
def test_avg_pool_backward_float32(device):
    x, k, s, p = _pool_case("k3x2-s2x1-p1x0", 17)
    x = x.astype(np.float32)
    with torch.no_grad():
        out_shape = TF.avg_pool2d(torch.tensor(x), k, s, p).shape
    gy = grade_rng(18).standard_normal(tuple(out_shape)).astype(np.float32)
    _, (gx,) = function_grads(lambda: AvgPool2d(k, s, p), [x], gy, device)
    _, (tx,) = torch_grads(lambda x: TF.avg_pool2d(x, k, s, p), [x], gy)
    assert_close(gx, tx, "avg_pool2d ∂L/∂x float32", 1e-6)
