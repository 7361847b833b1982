"""The SE block: Eqs. 2-4 by hand, PyTorch, finite differences, the ablation options, kept excitations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minise
from minise import backend, nn
from minise.nn import init

from ..conftest import on
from ..models import torch_nets as T


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_equations_by_hand() -> None:
    """x̃_c = s_c · u_c with s = σ(W2 δ(W1 z)) and z_c the mean of u_c, written out in NumPy."""
    init.manual_seed(0)
    se = nn.SqueezeExcitation(8, reduction=4).double()
    u = np.random.default_rng(1).standard_normal((2, 8, 3, 5))
    z = u.mean(axis=(2, 3))  # Eq. 2
    w1, b1 = se.fc1.weight.numpy(), se.fc1.bias.numpy()
    w2, b2 = se.fc2.weight.numpy(), se.fc2.bias.numpy()
    assert w1.shape == (2, 8) and w2.shape == (8, 2)  # W1: C/r × C, W2: C × C/r
    s = sigmoid(np.maximum(z @ w1.T + b1, 0) @ w2.T + b2)  # Eq. 3
    expected = u * s[:, :, None, None]  # Eq. 4
    np.testing.assert_allclose(se(minise.Tensor(u)).numpy(), expected, rtol=1e-13)


@pytest.mark.parametrize("channels, reduction, hidden", [(16, 16, 1), (32, 16, 2), (64, 16, 4), (8, 16, 1),
                                                         (2048, 16, 128), (100, 3, 33)])
def test_hidden_width(channels: int, reduction: int, hidden: int) -> None:
    se = nn.SqueezeExcitation(channels, reduction)
    assert se.hidden == hidden and se.fc1.weight.shape == (hidden, channels)


def test_parameters_with_and_without_bias() -> None:
    c, r = 256, 16
    assert nn.SqueezeExcitation(c, r).num_parameters() == 2 * c * (c // r) + c // r + c
    assert nn.SqueezeExcitation(c, r, bias=False).num_parameters() == 2 * c * (c // r)


OPTIONS = [
    {},
    dict(squeeze="max"),
    dict(gate="tanh"),
    dict(gate="relu"),
    dict(bias=False),
    dict(spatial=True),
    dict(spatial=True, gate="tanh", bias=False),
]
IDS = ["standard", "max", "tanh", "relu", "no_bias", "nosqueeze", "nosqueeze_tanh_nobias"]


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_against_torch(device: str, options: dict) -> None:
    init.manual_seed(0)
    se = nn.SqueezeExcitation(12, reduction=4, **options).double()
    tse = T.SEModule(12, 4, **options).double()
    state = {k: torch.from_numpy(v.reshape(tse.state_dict()[k].shape)) for k, v in se.state_dict().items()}
    tse.load_state_dict(state, strict=True)
    se.to(device)
    u = np.random.default_rng(1).standard_normal((3, 12, 4, 5))
    v = np.random.default_rng(2).standard_normal(u.shape)
    um = minise.Tensor(on(device, u), requires_grad=True)
    y = se(um)
    y.backward(on(device, v))
    ut = torch.tensor(u, requires_grad=True)
    yt = tse(ut)
    yt.backward(torch.tensor(v))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(um.grad.numpy(), ut.grad.numpy(), rtol=1e-10, atol=1e-13)
    tparams = dict(tse.named_parameters())
    for name, p in se.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy().reshape(p.shape), rtol=1e-10,
                                   atol=1e-13, err_msg=name)


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_gradcheck_whole_block(options: dict) -> None:
    init.manual_seed(0)
    se = nn.SqueezeExcitation(6, reduction=2, **options).double()
    u = minise.Tensor(np.random.default_rng(1).standard_normal((2, 6, 3, 4)), requires_grad=True)
    assert minise.gradcheck_directional(lambda u, *p: se(u), [u, *se.parameters()])


def test_gradcheck_every_element() -> None:
    init.manual_seed(0)
    se = nn.SqueezeExcitation(4, reduction=2).double()
    u = minise.Tensor(np.random.default_rng(1).standard_normal((2, 4, 3, 3)), requires_grad=True)
    assert minise.gradcheck(lambda u, *p: se(u), [u, *se.parameters()])


def test_keep_excitation() -> None:
    init.manual_seed(0)
    se = nn.SqueezeExcitation(8, reduction=2)
    u = minise.Tensor(np.random.default_rng(1).standard_normal((5, 8, 4, 4)).astype(np.float32))
    off = se(u).numpy()
    assert se.excitation is None  # nothing kept unless asked
    se.keep_excitation = True
    on_ = se(u).numpy()
    np.testing.assert_array_equal(on_, off)  # keeping s changes no result
    s = backend.to_numpy(se.excitation)
    assert s.shape == (5, 8) and s.dtype == np.float32 and ((s > 0) & (s < 1)).all()
    np.testing.assert_allclose(on_, u.numpy() * s[:, :, None, None], rtol=1e-6)
    se.keep_excitation = False
    se(u)
    assert se.excitation is None


def test_keep_excitation_through_a_network() -> None:
    import minise.models as M

    model = M.create("se_resnet20").eval()
    x = minise.Tensor(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    with minise.no_grad():
        plain = model(x).numpy()
    assert nn.excitations(model) == {}
    names = nn.keep_excitations(model)
    assert names[0] == "layer1.0.se" and len(names) == 9
    with minise.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), plain)
    kept = nn.excitations(model)
    assert list(kept) == names
    assert [backend.to_numpy(s).shape for s in kept.values()] == [(3, 16)] * 3 + [(3, 32)] * 3 + [(3, 64)] * 3
    nn.keep_excitations(model, False)
    assert nn.excitations(model) == {}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="squeeze"):
        nn.SqueezeExcitation(8, squeeze="median")
    with pytest.raises(ValueError, match="gate"):
        nn.SqueezeExcitation(8, gate="softmax")
    se = nn.SqueezeExcitation(8)
    with pytest.raises(ValueError, match=r"\(N, 8, H, W\)"):
        se(minise.Tensor(np.zeros((1, 4, 2, 2), np.float32)))
    assert "hidden=1" in repr(se) and "fc1" in repr(se)


def test_nosqueeze_refuses_a_max_squeeze() -> None:
    """Issue 9 fix 7: NoSqueeze has no squeeze step, so squeeze="max" would silently be ignored."""
    with pytest.raises(ValueError, match="NoSqueeze"):
        nn.SqueezeExcitation(8, 2, spatial=True, squeeze="max")
    nn.SqueezeExcitation(8, 2, spatial=True)  # the average (the default) is accepted: it is not used
