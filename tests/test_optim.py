"""SGD against torch.optim.SGD step for step, and the learning-rate schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minise import Tensor
from minise.backend import to_numpy
from minise.optim import SGD, ConstantLR, CosineLR, MultiStepLR, no_decay_groups

from .conftest import on

SHAPES = [(4, 3), (5,), (2, 3, 3, 3)]


def _params(seed: int, device: str = "cpu", dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(step: int, dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _run_minise(settings: dict, steps: int, device: str = "cpu", lrs=None, groups=None) -> list[np.ndarray]:
    params = [Tensor(on(device, p), requires_grad=True) for p in _params(0)]
    opt = SGD(groups(params) if groups else params, **settings)
    for t in range(steps):
        for p, g in zip(params, _grads(t)):
            p.grad = Tensor(on(device, g))
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        opt.step()
    return [to_numpy(p.data) for p in params]


def _run_torch(settings: dict, steps: int, lrs=None, groups=None) -> list[np.ndarray]:
    params = [torch.tensor(p, requires_grad=True) for p in _params(0)]
    opt = torch.optim.SGD(groups(params) if groups else params, **settings)
    for t in range(steps):
        for p, g in zip(params, _grads(t)):
            p.grad = torch.tensor(g)
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        opt.step()
    return [p.detach().numpy() for p in params]


SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, weight_decay=1e-4),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
    dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_sgd_matches_torch(settings: dict, device: str) -> None:
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.2, 0.1]  # a changing learning rate, as a schedule sets it
    ours = _run_minise(settings, 7, device, lrs)
    theirs = _run_torch(settings, 7, lrs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    untouched = _params(0)
    assert not np.allclose(ours[0], untouched[0])  # it did move


def test_parameter_groups_match_torch() -> None:
    settings = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)

    def groups(params):
        return [{"params": params[:1], "weight_decay": 0.0, "lr": 0.5}, {"params": params[1:]}]

    for a, b in zip(_run_minise(settings, 4, groups=groups), _run_torch(settings, 4, groups=groups)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_float32_matches_torch_closely() -> None:
    settings = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    params = [Tensor(p.astype(np.float32), requires_grad=True) for p in _params(0)]
    tparams = [torch.tensor(p.astype(np.float32), requires_grad=True) for p in _params(0)]
    opt, topt = SGD(params, **settings), torch.optim.SGD(tparams, **settings)
    for t in range(5):
        for p, tp, g in zip(params, tparams, _grads(t, np.float32)):
            p.grad, tp.grad = Tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        assert p.data.dtype == np.float32  # never silently float64
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_gradients_are_never_modified_in_place() -> None:
    shared = np.ones((3, 3))
    a = Tensor(np.zeros((3, 3)), requires_grad=True)
    b = Tensor(np.zeros((3, 3)), requires_grad=True)
    a.grad = Tensor(shared)
    b.grad = Tensor(shared)  # the same array, as autograd may hand out
    opt = SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.5, nesterov=True)
    opt.step()
    opt.step()
    np.testing.assert_array_equal(shared, np.ones((3, 3)))
    np.testing.assert_array_equal(a.data, b.data)


def test_parameters_without_gradient_are_skipped_and_zero_grad() -> None:
    a = Tensor(np.ones(3), requires_grad=True)
    opt = SGD([a], lr=1.0, momentum=0.9)
    opt.step()
    np.testing.assert_array_equal(a.data, np.ones(3))
    a.grad = Tensor(np.ones(3))
    opt.zero_grad()
    assert a.grad is None


def test_state_dict_round_trip_continues_exactly(device: str) -> None:
    settings = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)

    def run(split: bool) -> list[np.ndarray]:
        params = [Tensor(on(device, p), requires_grad=True) for p in _params(0)]
        opt = SGD(params, **settings)
        for t in range(6):
            if split and t == 3:  # a fresh optimizer over copies of the parameters, restored from the state
                params = [Tensor(on(device, to_numpy(p.data).copy()), requires_grad=True) for p in params]
                state = opt.state_dict()
                opt = SGD(params, lr=123.0)
                opt.load_state_dict(state)
            for p, g in zip(params, _grads(t)):
                p.grad = Tensor(on(device, g))
            opt.step()
        return [to_numpy(p.data) for p in params]

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


def test_state_dict_for_other_parameters_is_refused() -> None:
    opt = SGD([Tensor(np.zeros((2, 2)), requires_grad=True)], lr=0.1, momentum=0.9)
    other = SGD([Tensor(np.zeros((3,)), requires_grad=True)], lr=0.1, momentum=0.9)
    other.param_groups[0]["params"][0].grad = Tensor(np.ones(3))
    other.step()
    with pytest.raises(ValueError, match=r"momentum buffer 0 has shape \(3,\), its parameter \(2, 2\)"):
        opt.load_state_dict(other.state_dict())


def test_bad_settings() -> None:
    p = [Tensor(np.zeros(2), requires_grad=True)]
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="unknown parameter-group settings: betas"):
        SGD([{"params": p, "betas": 1}], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": p}, {"params": p}], lr=0.1)


def test_no_decay_groups_split_by_dimension() -> None:
    named = [("conv.weight", Tensor(np.zeros((4, 3, 3, 3)))), ("bn.weight", Tensor(np.zeros(4))),
             ("bn.bias", Tensor(np.zeros(4))), ("fc.weight", Tensor(np.zeros((10, 4)))),
             ("fc.bias", Tensor(np.zeros(10)))]
    decay, no_decay = no_decay_groups(named, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [(4, 3, 3, 3), (10, 4)]
    assert [p.shape for p in no_decay["params"]] == [(4,), (4,), (10,)]


# ----------------------------------------------------------------------------- schedules
def _opt(lr: float = 0.1) -> SGD:
    return SGD([Tensor(np.zeros(2), requires_grad=True)], lr=lr)


def _trace(schedule, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.lr)
        schedule.step()
    return lrs


def test_multistep_he_recipe() -> None:
    s = MultiStepLR(_opt(0.1), [32000, 48000])
    assert s.lr_at(0) == [0.1] and s.lr_at(31999) == [0.1]
    assert s.lr_at(32000)[0] == pytest.approx(0.01, rel=1e-12)
    assert s.lr_at(47999)[0] == pytest.approx(0.01, rel=1e-12)
    assert s.lr_at(48000)[0] == pytest.approx(0.001, rel=1e-12)
    assert s.lr_at(63999)[0] == pytest.approx(0.001, rel=1e-12)


def test_multistep_matches_torch_stepped_per_iteration() -> None:
    ours = _trace(MultiStepLR(_opt(0.1), [3, 7], gamma=0.2), 10)
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3, 7], gamma=0.2)
    theirs = []
    for _ in range(10):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_multistep_constant_warmup() -> None:
    lrs = _trace(MultiStepLR(_opt(0.1), [6], warmup_iters=2, warmup_factor=0.1), 8)
    np.testing.assert_allclose(lrs, [0.01, 0.01, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-12)


def test_cosine_with_linear_warmup() -> None:
    total, warm = 20, 4
    lrs = _trace(CosineLR(_opt(0.2), total, warmup_iters=warm), total)
    np.testing.assert_allclose(lrs[:warm], [0.05, 0.1, 0.15, 0.2], rtol=1e-12)
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm))) for t in range(warm, total)]
    np.testing.assert_allclose(lrs[warm:], expected, rtol=1e-12)
    assert lrs[warm] == pytest.approx(0.2) and lrs[-1] < 0.01 and all(np.diff(lrs[warm:]) < 0)


def test_cosine_matches_torch_without_warmup() -> None:
    ours = _trace(CosineLR(_opt(0.1), 12), 12)
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12)
    theirs = []
    for _ in range(12):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_schedule_sets_every_group_and_resumes() -> None:
    p, q = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
    s = CosineLR(opt, 10, warmup_iters=2)
    for _ in range(5):
        s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * s.factor(5), 0.5 * s.factor(5)])
    state = s.state_dict()
    opt2 = SGD([{"params": [p]}, {"params": [q], "lr": 9.0}], lr=9.0)
    s2 = CosineLR(opt2, 10, warmup_iters=2)
    s2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    s.step()
    s2.step()
    assert s2.lr == s.lr
    with pytest.raises(ValueError, match="schedule state for CosineLR"):
        ConstantLR(opt2).load_state_dict(state)


@pytest.mark.parametrize("setting", [{"lr": math.nan}, {"lr": math.inf}, {"momentum": math.nan},
                                     {"weight_decay": math.nan}, {"weight_decay": math.inf}, {"dampening": math.nan},
                                     {"lr": "0.1"}, {"momentum": True}])
def test_a_setting_that_is_not_a_finite_number_is_refused(setting: dict) -> None:
    """Issue 30: a NaN or an infinity was accepted and made every weight NaN in one step."""
    p = [Tensor(np.zeros(2), requires_grad=True)]
    key = next(iter(setting))
    with pytest.raises(ValueError, match=f"SGD: {key} must be a finite number"):
        SGD(p, **{"lr": 0.1, **setting})
    with pytest.raises(ValueError, match=f"SGD: {key} must be a finite number"):  # in a parameter group too
        SGD([{"params": p, **setting}], lr=0.1)
