"""Module bookkeeping: names, state dicts and their errors, modes, devices and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import minise
import minise.functional as F
from minise import nn

from ..conftest import on


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(np.ones(1, np.float32))

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x))) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = Block()
        self.layers = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 3)])
        self.pool = nn.GlobalAvgPool2d()

    def forward(self, x):
        z = self.pool(self.layers(self.stem(x)))
        return self.heads[0](z)


def test_names_follow_pytorch() -> None:
    net = Net()
    # a module's own parameters before its children's, as in PyTorch
    assert [n for n, _ in net.named_parameters()] == [
        "stem.scale", "stem.conv1.weight", "stem.bn1.weight", "stem.bn1.bias",
        "layers.0.weight", "layers.0.bias",
        "heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "stem.bn1.running_mean", "stem.bn1.running_var", "stem.bn1.num_batches_tracked",
    ]
    # per module: parameters, then buffers (PyTorch's state-dict order)
    assert list(net.state_dict())[:7] == [
        "stem.scale", "stem.conv1.weight", "stem.bn1.weight", "stem.bn1.bias",
        "stem.bn1.running_mean", "stem.bn1.running_var", "stem.bn1.num_batches_tracked",
    ]
    assert net.num_parameters() == 4 * 3 * 9 + 4 + 4 + 1 + 16 + 4 + 8 + 2 + 12 + 3
    assert [n for n, _ in net.named_modules()][:4] == ["", "stem", "stem.conv1", "stem.bn1"]


def test_a_shared_parameter_is_listed_once() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight
    assert len(list(net.parameters())) == 3
    assert len(net.state_dict()) == 3


def test_plain_list_of_modules_is_refused() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = [nn.Linear(2, 2)]

    with pytest.raises(TypeError, match="ModuleList"):
        Bad()


def test_parameter_is_a_tensor_that_requires_grad() -> None:
    p = nn.Parameter(np.zeros(3, np.float32))
    assert isinstance(p, minise.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter(")


def test_state_dict_round_trip_and_copies() -> None:
    a, b = Net(), Net()
    state = a.state_dict()
    a.stem.conv1.weight.data[...] = 7.0  # the state dict is a snapshot, not a view
    assert not np.any(state["stem.conv1.weight"] == 7.0)
    b.load_state_dict(state)
    for (name, x), (_, y) in zip(b.state_dict().items(), state.items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
        assert x.dtype == y.dtype


def test_load_state_dict_errors_name_everything_and_change_nothing() -> None:
    net = Net()
    before = net.state_dict()
    bad = net.state_dict()
    del bad["stem.bn1.running_var"]
    bad["stem.bn9.weight"] = np.zeros(4, np.float32)
    bad["heads.1.weight"] = np.zeros((4, 4), np.float32)
    bad["stem.conv1.weight"] = bad["stem.conv1.weight"] + 1  # a good entry, which must not be loaded either
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(bad)
    message = str(info.value)
    assert "stem.bn1.running_var" in message and "missing" in message
    assert "stem.bn9.weight" in message and "unexpected" in message
    assert "heads.1.weight" in message and "(3, 4)" in message and "(4, 4)" in message
    assert "nothing was loaded" in message
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_load_state_dict_not_strict() -> None:
    net = Net()
    partial = {"stem.scale": np.full(1, 3.0, np.float32), "extra": np.zeros(1)}
    missing, unexpected = net.load_state_dict(partial, strict=False)
    assert unexpected == ["extra"] and "stem.conv1.weight" in missing
    assert net.stem.scale.numpy()[0] == 3.0
    with pytest.raises(nn.StateDictError, match="wrong shape"):  # shapes are checked even when not strict
        net.load_state_dict({"stem.scale": np.zeros(2, np.float32)}, strict=False)


def test_load_state_dict_refuses_values_that_are_not_numbers() -> None:
    # issue 14: an object array of None values used to load as NaN
    net = Net()
    before = net.state_dict()
    bad = net.state_dict()
    bad["stem.scale"] = np.array([None], dtype=object)
    bad["stem.bn1.bias"] = np.array(["a"] * 4)
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(bad)
    message = str(info.value)
    assert "not numbers" in message and "stem.scale: dtype object" in message and "stem.bn1.bias: dtype <U1" in message
    assert "nothing was loaded" in message
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    with pytest.raises(nn.StateDictError, match="not numbers"):
        net.load_state_dict({"stem.scale": [None]}, strict=False)


def test_load_state_dict_converts_dtype_and_keeps_arrays() -> None:
    net = Net()
    weight = net.stem.conv1.weight
    array = weight.data
    state = {k: np.asarray(v, dtype=np.float64) if v.dtype.kind == "f" else v for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert net.stem.conv1.weight is weight and weight.data is array and weight.dtype == np.float32


def test_train_eval_recursive() -> None:
    net = Net()
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_batch_norm_counts_batches_in_training_only() -> None:
    net = Net()
    x = minise.Tensor(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
    net(x)
    net(x)
    assert int(net.stem.bn1.num_batches_tracked) == 2
    net.eval()
    net(x)
    assert int(net.stem.bn1.num_batches_tracked) == 2


def test_double_and_float() -> None:
    net = Net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.stem.bn1.running_mean.dtype == np.float64
    assert net.stem.bn1.num_batches_tracked.dtype == np.int64
    y = net(minise.Tensor(np.zeros((1, 3, 4, 4))))
    assert y.dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    with pytest.raises(TypeError):
        net.astype(np.int32)


def test_to_device_moves_parameters_buffers_and_grads(device: str) -> None:
    net = Net()
    x = minise.Tensor(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
    expected = net(x).numpy()
    net(x).sum().backward()
    ids = [id(p) for p in net.parameters()]
    net.to(device)
    assert [id(p) for p in net.parameters()] == ids  # the same Parameters, moved in place
    with_grad = [p for p in net.parameters() if p.grad is not None]  # heads.1 is not used in forward
    assert len(with_grad) == 8
    assert all(p.device == device for p in net.parameters()) and all(p.grad.device == device for p in with_grad)
    assert all(minise.backend.device_of(b) == device for b in net.buffers())
    net.eval()
    got = net(minise.Tensor(on(device, x.numpy())))
    assert got.device == device
    # eval mode uses the running statistics, which were updated twice; recompute on the CPU to compare
    net_cpu = Net()
    net_cpu.load_state_dict({k: minise.backend.to_numpy(v) for k, v in net.state_dict().items()})
    net_cpu.eval()
    np.testing.assert_allclose(got.numpy(), net_cpu(x).numpy(), rtol=1e-6)
    assert expected.shape == got.shape


def test_to_unknown_device_fails_before_moving() -> None:
    net = Net()
    with pytest.raises(ValueError, match="unknown device"):
        net.to("tpu")
    assert all(p.device == "cpu" for p in net.parameters())


def test_zero_grad_and_repr() -> None:
    net = Net()
    net(minise.Tensor(np.ones((2, 3, 4, 4), np.float32))).sum().backward()
    assert all(p.grad is not None for p in net.stem.conv1.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    text = repr(net)
    assert "(stem): Block(" in text and "Conv2d(3, 4, kernel_size=(3, 3)" in text and "(0): Linear" in text


def test_module_list_indexing() -> None:
    ml = nn.ModuleList([nn.ReLU(), nn.Sigmoid()])
    assert isinstance(ml[-1], nn.Sigmoid) and len(ml) == 2
    with pytest.raises(IndexError):
        ml[2]
    with pytest.raises(TypeError):
        ml.append(3)


# ------------------------------------------------------------------ forward hooks
def _image(seed: int = 0) -> minise.Tensor:
    return minise.Tensor(np.random.default_rng(seed).standard_normal((2, 3, 5, 5)).astype(np.float32))


def test_forward_hook_sees_every_call_nested_and_changes_nothing() -> None:
    net, x = Net(), _image()
    plain = net(x).numpy()
    calls, depth = [], [0]

    def trace(module, args, forward):
        calls.append((depth[0], type(module).__name__, tuple(args[0].shape)))
        depth[0] += 1
        try:
            return forward(*args)
        finally:
            depth[0] -= 1

    with net.forward_hook(trace) as same:
        assert same is net
        hooked = net(x).numpy()
    np.testing.assert_array_equal(hooked, plain)
    assert calls == [
        (0, "Net", (2, 3, 5, 5)), (1, "Block", (2, 3, 5, 5)), (2, "Conv2d", (2, 3, 5, 5)),
        (2, "BatchNorm2d", (2, 4, 5, 5)), (1, "Sequential", (2, 4, 5, 5)), (2, "Conv2d", (2, 4, 5, 5)),
        (2, "ReLU", (2, 4, 5, 5)), (1, "GlobalAvgPool2d", (2, 4, 5, 5)), (1, "Linear", (2, 4)),
    ]
    calls.clear()
    net(x)  # after the block: no hook any more
    assert calls == []


def test_forward_hook_can_replace_the_computation_and_hooks_nest() -> None:
    net, x = Net(), _image()
    order = []

    def outer(module, args, forward):
        order.append(("outer", type(module).__name__))
        return forward(*args)

    def skip_convs(module, args, forward):
        order.append(("inner", type(module).__name__))
        if isinstance(module, nn.Conv2d):  # hand on zeros of the right shape instead of convolving
            n, _, h, w = args[0].shape
            return minise.Tensor(np.zeros((n, module.weight.shape[0], h, w), np.float32))
        return forward(*args)

    with net.forward_hook(outer), net.stem.forward_hook(skip_convs):
        y = net(x).numpy()
    # stem's conv gives zeros, batch norm of zeros (training mode, bias 0) is zero, so the stem hands on zeros
    zeros = minise.Tensor(np.zeros((2, 4, 5, 5), np.float32))
    np.testing.assert_allclose(y, net.heads[0](net.pool(net.layers(zeros))).numpy(), rtol=1e-6)
    assert not np.allclose(y, net(x).numpy())
    assert order[:4] == [("outer", "Net"), ("outer", "Block"), ("inner", "Block"), ("outer", "Conv2d")]
    assert order[4] == ("inner", "Conv2d")
    assert ("inner", "Sequential") not in order  # the inner hook holds only below net.stem


def test_forward_hook_is_removed_after_an_exception_and_needs_a_callable() -> None:
    net, x = Net(), _image()

    def boom(module, args, forward):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), net.forward_hook(boom):
        net(x)
    assert all(not m._forward_hooks for m in net.modules())
    net(x)  # runs normally again
    with pytest.raises(TypeError, match="expected a callable hook"):
        with net.forward_hook("print"):
            pass


def test_parameters_without_recursion_are_the_modules_own() -> None:
    net = Net()
    assert [n for n, _ in net.stem.named_parameters(recurse=False)] == ["scale"]
    assert list(net.parameters(recurse=False)) == []
    assert len(list(net.stem.parameters())) == 4


def test_a_network_evaluated_without_no_grad_frees_its_activations_at_once() -> None:
    # Functions hold their outputs weakly: dropping the output frees the whole graph by reference
    # counting; with Tensor <-> Function cycles it stayed until the cyclic garbage collector ran
    import gc
    import tracemalloc

    import minise.models as M

    model = M.create("se_resnet20")
    x = minise.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    model(x)  # first call: anything cached once is made now
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = model(x)
        held = tracemalloc.get_traced_memory()[0] - base
        del y
        left = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        if was_enabled:
            gc.enable()
    assert held > 5e6, f"the graph of a forward pass should hold the activations (~15 MB), held {held / 1e6:.1f} MB"
    assert left < 0.02 * held, f"{left / 1e6:.2f} MB of {held / 1e6:.2f} MB still held after the output was dropped"
