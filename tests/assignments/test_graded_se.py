"""Graded tests of assignment "se": the scale (Eq. 4) forward and backward, batch norm's backward,
the excitation (Eq. 3), the SE block's forward (Fig. 1) and the SE-ResNet modules (Fig. 3).

The op tests run one Function directly on arrays. The module tests put known-good stand-ins
around the part being graded: the SE block's forward is checked with a stand-in excitation and
scale, and the residual blocks with their convolutions, batch norms and SE block replaced by the
PyTorch modules of tests/models/torch_nets.py, so that what is graded is the wiring alone. One
test per module then checks everything together, forward and backward, against PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minise.functional
import minise.interop.torch as mt
from minise import Tensor, nn
from minise.functional.normalization import BatchNorm
from minise.functional.scale import Scale
from minise.models.resnet import BasicBlock, Bottleneck
from minise.nn import init

from ..conftest import on
from ..models import torch_nets as T
from .checks import (
    BACKPROP,
    assert_close,
    assert_equal,
    function_forward,
    function_grads,
    grade_rng,
    numeric_grads,
    oracle,
    torch_grads,
)

SCALE = ("se/scale_forward",)
SCALE_BACK = ("se/scale_backward", "se/scale_forward")
BN = "se/batchnorm_backward"
# what a backward pass through an SE block needs besides the SE parts
SE_BACKWARD_NEEDS = (*BACKPROP, "autograd/linear", "autograd/relu", "autograd/sigmoid")
SE_BLOCK = ("se/forward", "se/excite", "se/scale_forward", "se/scale_backward")


# ------------------------------------------------------------------ se/scale_forward, se/scale_backward
@pytest.mark.assignment(*SCALE)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scale_forward(device, dtype):
    rng = grade_rng(0)
    u, s = rng.standard_normal((2, 3, 4, 5)).astype(dtype), rng.uniform(0, 1, (2, 3)).astype(dtype)
    y = function_forward(Scale, [u, s], device)
    assert_close(y, oracle(lambda: u * s[:, :, None, None]), "x̃ = s_c · u_c", 1e-6)


@pytest.mark.assignment(*SCALE_BACK)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 8, 1, 7)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scale_backward(device, shape, dtype):
    rng = grade_rng(1)
    u, s = rng.standard_normal(shape).astype(dtype), rng.uniform(0, 1, shape[:2]).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    _, (gu, gs) = function_grads(Scale, [u, s], gy, device)
    _, (tu, ts) = torch_grads(lambda u, s: u * s[:, :, None, None], [u, s], gy)
    assert_close(gu, tu, "∂L/∂u", 1e-5)
    assert_close(gs, ts, "∂L/∂s", 1e-5)


@pytest.mark.assignment(*SCALE_BACK)
def test_scale_backward_by_finite_differences():
    rng = grade_rng(2)
    u, s, gy = rng.standard_normal((2, 3, 2, 3)), rng.uniform(0, 1, (2, 3)), rng.standard_normal((2, 3, 2, 3))
    _, grads = function_grads(Scale, [u, s], gy)
    for g, n, name in zip(grads, numeric_grads(Scale, [u, s], gy), ["u", "s"]):
        assert_close(g, n, f"∂L/∂{name} (finite differences)", rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ se/batchnorm_backward
def _bn_case(shape, dtype, seed):
    rng = grade_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    return x, w, b, rm, rv, gy


@pytest.mark.assignment(BN)
@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6, 6), (2, 2, 1, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_batchnorm_backward(device, shape, training, dtype, tol):
    x, w, b, rm, rv, gy = _bn_case(shape, dtype, 3)
    _, (gx, gw, gb) = function_grads(lambda: BatchNorm(on(device, rm), on(device, rv), training, 0.1, 1e-5),
                                     [x, w, b], gy, device)
    _, (tx, tw, tb) = torch_grads(
        lambda x, w, b: torch.nn.functional.batch_norm(x, torch.tensor(rm), torch.tensor(rv), w, b,
                                                       training=training, eps=1e-5), [x, w, b], gy)
    assert_close(gx, tx, "∂L/∂x", tol)
    assert_close(gw, tw, "∂L/∂γ", tol)
    assert_close(gb, tb, "∂L/∂β", tol)


@pytest.mark.assignment(BN)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_backward_without_affine(device, training):
    x, _, _, rm, rv, gy = _bn_case((4, 3, 2, 2), np.float64, 4)
    _, (gx, _, _) = function_grads(lambda: BatchNorm(on(device, rm), on(device, rv), training, 0.1, 1e-5),
                                   [x, None, None], gy, device)
    _, (tx, _, _) = torch_grads(
        lambda x, w, b: torch.nn.functional.batch_norm(x, torch.tensor(rm), torch.tensor(rv), training=training),
        [x, None, None], gy)
    assert_close(gx, tx, "∂L/∂x", 1e-10)


@pytest.mark.assignment(BN)
def test_batchnorm_backward_by_finite_differences():
    x, w, b, rm, rv, gy = _bn_case((3, 2, 2, 2), np.float64, 5)

    def make():
        return BatchNorm(rm.copy(), rv.copy(), True, 0.1, 1e-5)

    _, grads = function_grads(make, [x, w, b], gy)
    for g, n, name in zip(grads, numeric_grads(make, [x, w, b], gy), ["x", "γ", "β"]):
        assert_close(g, n, f"∂L/∂{name} (finite differences)", rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ se/excite
@pytest.mark.assignment("se/excite")
@pytest.mark.parametrize("gate", ["sigmoid", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_excitation(gate, bias):
    init.manual_seed(1)
    se = nn.SqueezeExcitation(8, reduction=2, bias=bias, gate=gate).double()
    z = grade_rng(6).standard_normal((3, 8)) * 2
    s = se.excite(Tensor(z))

    def in_torch():
        w1, w2 = torch.tensor(se.fc1.weight.numpy()), torch.tensor(se.fc2.weight.numpy())
        b1 = torch.tensor(se.fc1.bias.numpy()) if bias else None
        b2 = torch.tensor(se.fc2.bias.numpy()) if bias else None
        sigma = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}[gate]
        return sigma(torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(torch.tensor(z), w1, b1)),
                                                w2, b2)).numpy()  # s = σ(W2 δ(W1 z)), Eq. 3

    assert_close(s.data, oracle(in_torch), "s = σ(W2 δ(W1 z))", 1e-12)


# ------------------------------------------------------------------ se/forward
@pytest.mark.assignment("se/forward")
def test_se_forward_squeezes_excites_and_scales(monkeypatch):
    """Fig. 1: the excitation sees the squeezed z (Eq. 2) and the output is u scaled by s (Eq. 4).

    The excitation and the scale are stand-ins here, so this test grades the forward alone."""
    rng = grade_rng(7)
    u = rng.standard_normal((2, 6, 3, 5))
    mix = rng.standard_normal((6, 6))
    seen = []

    def excite(z):
        seen.append(z.numpy())
        return Tensor(1 / (1 + np.exp(-(z.numpy() @ mix))))

    def scale(u, s):
        return Tensor(u.numpy() * s.numpy()[:, :, None, None])

    se = nn.SqueezeExcitation(6, reduction=3).double()
    monkeypatch.setattr(se, "excite", excite)
    monkeypatch.setattr(minise.functional, "scale", scale)
    out = se(Tensor(u))
    z = oracle(lambda: u.mean(axis=(2, 3)))
    assert_equal(len(seen), oracle(lambda: 1), "how often the excitation runs")
    assert_close(seen[0], z, "the excitation's input z (Eq. 2)", 1e-12)
    expected = oracle(lambda: u * (1 / (1 + np.exp(-(z @ mix))))[:, :, None, None])
    assert_close(out.data, expected, "x̃ (Eq. 4)", 1e-12)


@pytest.mark.assignment(*SE_BLOCK, *SE_BACKWARD_NEEDS)
@pytest.mark.parametrize("reduction", [2, 16])
def test_se_block_forward_and_backward_against_torch(device, reduction):
    init.manual_seed(2)
    se = nn.SqueezeExcitation(16, reduction=reduction).double().to(device)
    rng = grade_rng(8)
    u_np, g_np = rng.standard_normal((2, 16, 3, 4)), rng.standard_normal((2, 16, 3, 4))

    def in_torch():
        ts = T.SEModule(16, reduction).double()
        ts.load_state_dict(mt.to_torch_state_dict(se))
        ut = torch.tensor(u_np, requires_grad=True)
        out_t = ts(ut)
        out_t.backward(torch.tensor(g_np))
        grads = {name: (getattr(ts, name).weight.grad.numpy().reshape(getattr(se, name).weight.shape),
                        getattr(ts, name).bias.grad.numpy()) for name in ("fc1", "fc2")}
        return out_t.detach().numpy(), ut.grad.numpy(), grads

    expected = oracle(in_torch)
    out_t, gu_t, grads_t = expected if expected is not None else (None, None, {})
    u = Tensor(on(device, u_np), requires_grad=True)
    out = se(u)
    out.backward(on(device, g_np))
    assert_close(out.data, out_t, "SE block output", 1e-12)
    assert_close(u.grad.data, gu_t, "∂L/∂u", 1e-12)
    for name in ("fc1", "fc2"):
        mine = getattr(se, name)
        gw, gb = grads_t.get(name, (None, None))
        assert_close(mine.weight.grad.data, gw, f"∂L/∂{name}.W", 1e-12)
        assert_close(mine.bias.grad.data, gb, f"∂L/∂{name}.b", 1e-12)


# ------------------------------------------------------------------ se/basic_block, se/bottleneck
class TorchPart(nn.Module):
    """A known-good stand-in: runs a PyTorch module's forward on the data (no gradient)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self._module = module

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return Tensor(self._module(torch.from_numpy(x.numpy())).numpy())


def _randomise(torch_block: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, batch norm's γ and β included, so no stand-in is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in torch_block.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (0.5 if p.ndim == 1 else 0.0))


def _run(torch_block: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch_block(torch.from_numpy(x)).numpy()


def _stand_in(block: nn.Module, torch_block: torch.nn.Module, names: list[str]) -> None:
    for name in names:
        mine, theirs = getattr(block, name), getattr(torch_block, name)
        assert (mine is None) == (theirs is None), f"{name}: present in one block only"
        if mine is not None:
            setattr(block, name, TorchPart(theirs))


BASIC = [  # (in_channels, planes, stride, shortcut, se_position)
    (4, 4, 1, "B", "standard"), (4, 8, 2, "B", "standard"), (4, 8, 2, "A", "standard"),
    (4, 4, 1, "B", "pre"), (4, 8, 2, "B", "pre"), (4, 8, 2, "B", "post"), (4, 8, 2, "B", "identity"),
    (4, 8, 2, "B", None),
]
BOTTLENECK = [  # (in_channels, planes, stride, groups, se_position)
    (16, 4, 1, 1, "standard"), (8, 4, 2, 1, "standard"), (8, 4, 2, 2, "3x3"), (8, 4, 2, 1, "pre"),
    (8, 4, 2, 1, "post"), (8, 4, 2, 1, "identity"), (8, 4, 2, 1, None),
]


def _ids(cases):
    return ["-".join(str(v) for v in c) for c in cases]


@pytest.mark.assignment("se/basic_block")
@pytest.mark.parametrize("case", BASIC, ids=_ids(BASIC))
def test_basic_block_wiring(case):
    """Fig. 3: conv-BN-ReLU-conv-BN, the SE block where se_position says, + identity, ReLU."""
    cin, planes, stride, shortcut, position = case
    reduction = None if position is None else 2
    position = position or "standard"
    torch_block = T.BasicBlock(cin, planes, stride, shortcut, reduction, se_position=position).double()
    _randomise(torch_block, 9)
    block = BasicBlock(cin, planes, stride, shortcut, se_reduction=reduction, se_position=position)
    _stand_in(block, torch_block, ["conv1", "bn1", "conv2", "bn2", "se", "downsample"])
    x = grade_rng(10).standard_normal((2, cin, 6, 6))
    expected = oracle(lambda: _run(torch_block, x))
    torch_block = None  # a student's run keeps only the stand-in parts, never the whole reference block
    assert_close(block(Tensor(x)).data, expected, f"BasicBlock output ({position})", 1e-12)


@pytest.mark.assignment("se/bottleneck")
@pytest.mark.parametrize("case", BOTTLENECK, ids=_ids(BOTTLENECK))
def test_bottleneck_wiring(case):
    """1×1, 3×3 (grouped), 1×1 ×4 with BN and ReLU, the SE block where se_position says, + identity, ReLU."""
    cin, planes, stride, groups, position = case
    reduction = None if position is None else 2
    position = position or "standard"
    torch_block = T.Bottleneck(cin, planes, stride, groups=groups, se_reduction=reduction,
                               se_position=position).double()
    _randomise(torch_block, 11)
    block = Bottleneck(cin, planes, stride, groups=groups, se_reduction=reduction, se_position=position)
    _stand_in(block, torch_block, ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "se", "downsample"])
    x = grade_rng(12).standard_normal((2, cin, 6, 6))
    expected = oracle(lambda: _run(torch_block, x))
    torch_block = None  # a student's run keeps only the stand-in parts, never the whole reference block
    assert_close(block(Tensor(x)).data, expected, f"Bottleneck output ({position})", 1e-12)


BLOCK_NEEDS = (*SE_BLOCK, "se/batchnorm_backward", "conv/forward", "conv/backward", *SE_BACKWARD_NEEDS,
               "autograd/add", "autograd/sum_to")


@pytest.mark.assignment("se/basic_block", *BLOCK_NEEDS)
def test_se_basic_block_forward_and_backward_against_torch():
    init.manual_seed(3)
    block = BasicBlock(4, 8, 2, "B", se_reduction=2).double()
    torch_block = T.BasicBlock(4, 8, 2, "B", 2).double()
    _randomise(torch_block, 13)
    mt.load_torch_state_dict(block, torch_block.state_dict())
    rng = grade_rng(14)
    x_np, g_np = rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((2, 8, 4, 4))

    def in_torch():
        xt = torch.tensor(x_np, requires_grad=True)
        out_t = torch_block(xt)
        out_t.backward(torch.tensor(g_np))
        return out_t.detach().numpy(), xt.grad.numpy(), {n: p.grad.numpy() for n, p in torch_block.named_parameters()}

    expected = oracle(in_torch)
    torch_block = None  # a student's run never holds the reference block
    out_t, gx_t, grads_t = expected if expected is not None else (None, None, {})
    x = Tensor(x_np, requires_grad=True)
    out = block(x)
    out.backward(g_np)
    assert_close(out.data, out_t, "SE-ResNet module output", 1e-10)
    assert_close(x.grad.data, gx_t, "∂L/∂x", 1e-10)
    for name, p in block.named_parameters():
        g = grads_t.get(name)
        assert_close(p.grad.data, None if g is None else g.reshape(p.shape), f"∂L/∂{name}", 1e-10)
