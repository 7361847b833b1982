"""Layers against torch.nn with the same weights (float64), on the CPU and the (simulated) GPU; initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import minise
from minise import backend, nn
from minise.nn import init

from ..conftest import on

torch.set_num_threads(1)


def _copy_weights(layer: nn.Module, torch_layer: torch.nn.Module) -> None:
    torch_layer.double()
    state = {k: torch.from_numpy(np.array(backend.to_numpy(v))) for k, v in layer.state_dict().items()}
    torch_layer.load_state_dict(state, strict=True)


def check_against_torch(layer: nn.Module, torch_layer: torch.nn.Module, x: np.ndarray, device: str,
                        train: bool = True) -> None:
    """Forward, input gradient, parameter gradients and buffers agree with PyTorch to ~1e-10."""
    layer.double()
    _copy_weights(layer, torch_layer)
    layer.to(device).train(train)
    torch_layer.train(train)
    xm = minise.Tensor(on(device, x), requires_grad=True)
    y = layer(xm)
    v = np.random.default_rng(7).standard_normal(y.shape)
    y.backward(on(device, v))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_layer(xt)
    yt.backward(torch.tensor(v))
    assert y.device == device
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    torch_params = dict(torch_layer.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), torch_params[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    torch_buffers = dict(torch_layer.named_buffers())
    for name, b in layer.named_buffers():
        np.testing.assert_allclose(backend.to_numpy(b), torch_buffers[name].numpy(), rtol=1e-10, err_msg=name)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("args, kwargs, shape", [
    ((3, 4, 3), dict(padding=1), (2, 3, 6, 6)),
    ((4, 6, 3), dict(stride=2, groups=2, bias=False), (2, 4, 7, 7)),
    ((2, 5, (1, 3)), dict(padding=(0, 1), dilation=(1, 2)), (1, 2, 5, 6)),
])
def test_conv2d(device: str, args, kwargs, shape) -> None:
    check_against_torch(nn.Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs), RNG.standard_normal(shape),
                        device)


def test_linear(device: str) -> None:
    check_against_torch(nn.Linear(5, 3), torch.nn.Linear(5, 3), RNG.standard_normal((4, 5)), device)
    check_against_torch(nn.Linear(5, 3, bias=False), torch.nn.Linear(5, 3, bias=False),
                        RNG.standard_normal((4, 5)), device)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm2d(device: str, train: bool) -> None:
    bn, tbn = nn.BatchNorm2d(3, momentum=0.3), torch.nn.BatchNorm2d(3, momentum=0.3)
    bn.weight.data[...] = [0.5, 1.0, 2.0]
    bn.bias.data[...] = [0.1, -0.2, 0.3]
    bn.running_mean[...] = [0.2, -0.1, 0.0]
    bn.running_var[...] = [1.5, 0.7, 1.1]
    check_against_torch(bn, tbn, RNG.standard_normal((4, 3, 3, 5)), device, train)
    assert int(bn.num_batches_tracked) == (1 if train else 0)


def test_batchnorm1d_and_cumulative_momentum(device: str) -> None:
    check_against_torch(nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4), RNG.standard_normal((6, 4)), device)
    bn, tbn = nn.BatchNorm1d(4, momentum=None), torch.nn.BatchNorm1d(4, momentum=None)
    check_against_torch(bn, tbn, RNG.standard_normal((6, 4)), device)
    # a second batch: cumulative average with factor 1/2
    x = RNG.standard_normal((5, 4))
    bn(minise.Tensor(on(device, x)))
    tbn(torch.tensor(x))
    np.testing.assert_allclose(backend.to_numpy(bn.running_var), tbn.running_var.numpy(), rtol=1e-12)


def test_batchnorm_without_affine(device: str) -> None:
    check_against_torch(nn.BatchNorm2d(2, affine=False), torch.nn.BatchNorm2d(2, affine=False),
                        RNG.standard_normal((3, 2, 2, 2)), device)


def test_batchnorm_wrong_rank() -> None:
    with pytest.raises(ValueError, match="4-D"):
        nn.BatchNorm2d(3)(minise.Tensor(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="2-D"):
        nn.BatchNorm1d(3)(minise.Tensor(np.zeros((2, 3, 1, 1), np.float32)))


@pytest.mark.parametrize("make, make_torch", [
    (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    (lambda: nn.Identity(), lambda: torch.nn.Identity()),
    (lambda: nn.MaxPool2d(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1)),
    (lambda: nn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2)),
    (lambda: nn.AvgPool2d(3, 2, 1), lambda: torch.nn.AvgPool2d(3, 2, 1)),
    (lambda: nn.GlobalAvgPool2d(), lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())),
    (lambda: nn.GlobalMaxPool2d(), lambda: torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())),
    (lambda: nn.Flatten(), lambda: torch.nn.Flatten()),
], ids=["relu", "sigmoid", "tanh", "identity", "maxpool", "avgpool", "avgpool_overlap", "gap", "gmp", "flatten"])
def test_parameter_free_layers(device: str, make, make_torch) -> None:
    x = RNG.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 50.0 - 2.9  # distinct values, none at 0
    check_against_torch(make(), make_torch(), x, device)


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 9, 8)),
    (nn.Conv2d(4, 8, (3, 1), stride=(2, 1), padding=(0, 2), dilation=2, groups=4), (1, 4, 11, 6)),
    (nn.MaxPool2d(3, 2, 1), (1, 2, 7, 6)),
    (nn.AvgPool2d(2), (1, 2, 7, 6)),
    (nn.Linear(5, 2), (3, 5)),
    (nn.Flatten(), (2, 3, 4, 5)),
    (nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
])
def test_output_shape_is_what_forward_gives(layer: nn.Module, shape) -> None:
    layer.eval()
    y = layer(minise.Tensor(RNG.standard_normal(shape).astype(np.float32)))
    assert layer.output_shape(shape) == y.shape


def test_conv_macs() -> None:
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4)
    out = conv.output_shape((2, 8, 10, 10))
    assert out == (2, 16, 5, 5)
    assert conv.macs((2, 8, 10, 10), out) == 2 * 5 * 5 * 16 * (8 // 4) * 3 * 3


def test_conv_checks_groups() -> None:
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(6, 4, 3, groups=4)


# ---------------------------------------------------------------------- initialisation
def test_default_init_is_pytorchs() -> None:
    init.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)
    bound = 1 / math.sqrt(64 * 9)
    w, b = conv.weight.numpy(), conv.bias.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(−b, b) has variance b²/3; 73,728 draws pin it to about 1 %
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.02
    assert abs(np.abs(w).max() / bound - 1) < 1e-3
    lin = nn.Linear(100, 10)
    assert np.abs(lin.weight.numpy()).max() <= 0.1 and np.abs(lin.bias.numpy()).max() <= 0.1
    bn = nn.BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight.numpy(), 1)
    np.testing.assert_array_equal(bn.bias.numpy(), 0)
    np.testing.assert_array_equal(bn.running_var, 1)


def test_kaiming_normal_fan_out() -> None:
    init.manual_seed(0)
    w = nn.Parameter(np.zeros((256, 64, 3, 3), np.float32))
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    std = math.sqrt(2 / (256 * 9))
    assert abs(w.numpy().std() / std - 1) < 0.01 and abs(w.numpy().mean()) < 0.01 * std
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(w, mode="fan_sideways")


def test_manual_seed_reproduces_and_devices_agree(simulated_gpu) -> None:
    init.manual_seed(3)
    a = nn.Conv2d(3, 4, 3).weight.numpy()
    init.manual_seed(3)
    minise.set_default_device("cuda")
    try:
        layer = nn.Conv2d(3, 4, 3)
    finally:
        minise.set_default_device("cpu")
    assert layer.weight.device == "cuda" and minise.backend.device_of(layer.weight.data) == "cuda"
    np.testing.assert_array_equal(layer.weight.numpy(), a)
    init.manual_seed(4)
    assert not np.array_equal(nn.Conv2d(3, 4, 3).weight.numpy(), a)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(0, 3, 3), r"Conv2d: in_channels must be a positive int, got 0"),
    (lambda: nn.Conv2d(3, 0, 3), r"Conv2d: out_channels must be a positive int, got 0"),
    (lambda: nn.Conv2d(3, 3, 3, groups=0), r"Conv2d: groups must be a positive int, got 0"),
    (lambda: nn.Conv2d(3, 3, 0), r"Conv2d: kernel_size must be at least 1, got \(0, 0\)"),
    (lambda: nn.Conv2d(3, 3, 3, stride=0), r"Conv2d: stride must be at least 1, got \(0, 0\)"),
    (lambda: nn.Conv2d(3, 3, 3, padding=-1), r"Conv2d: padding must be at least 0, got \(-1, -1\)"),
    (lambda: nn.Conv2d(3, 3, 3, dilation=(1, 0)), r"Conv2d: dilation must be at least 1, got \(1, 0\)"),
    (lambda: nn.Conv2d(3.0, 3, 3), r"Conv2d: in_channels must be a positive int, got 3.0"),
    (lambda: nn.Linear(0, 3), r"Linear: in_features must be a positive int, got 0"),
    (lambda: nn.BatchNorm2d(0), r"BatchNorm2d: num_features must be a positive int, got 0"),
    (lambda: nn.BatchNorm1d(True), r"BatchNorm1d: num_features must be a positive int, got True"),
    (lambda: nn.BatchNorm2d(3, eps=0.0), r"BatchNorm2d: eps must be a finite number > 0, got 0.0"),
    (lambda: nn.BatchNorm2d(3, momentum=float("nan")), r"BatchNorm2d: momentum must be in \[0, 1\] or None"),
])
def test_impossible_layers_are_refused_at_construction(make, message: str) -> None:
    """Issue 30: these were accepted (or a ZeroDivisionError) and failed only at the first forward."""
    with pytest.raises(ValueError, match=message):
        make()
