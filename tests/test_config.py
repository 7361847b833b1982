"""A run's configuration (minise.config): the layers DEFAULTS, --quick / --preset, explicit options;
the checks; the plan of iterations and the learning-rate schedule it implies."""

from __future__ import annotations

import numpy as np
import pytest

import minise
from minise.config import (
    DEFAULTS,
    PRESETS,
    QUICK,
    check_config,
    make_schedule,
    plan,
    resolve_config,
)
from minise.errors import UserError


def _schedule(cfg: dict, per_epoch: int, total: int):
    optimizer = minise.optim.SGD([minise.Tensor(np.zeros(2), requires_grad=True)], lr=cfg["lr"])
    return make_schedule(cfg, optimizer, per_epoch, total)


def test_plan_and_presets() -> None:
    he = resolve_config({"preset": "he2016", "model": "se_resnet110"})
    assert (he["batch_size"], he["lr"], he["momentum"], he["weight_decay"]) == (128, 0.1, 0.9, 1e-4)
    assert he["schedule"] == "multistep" and he["milestone_iters"] == [32000, 48000]
    per_epoch, total, epochs = plan(he, 50000)
    assert (per_epoch, total, epochs) == (391, 64000, 164)
    schedule = _schedule(he, per_epoch, total)
    # He et al.'s warm-up: lr 0.01 for the first 400 iterations, then 0.1
    assert [schedule.lr_at(t)[0] for t in (0, 399)] == [pytest.approx(0.01)] * 2
    assert schedule.lr_at(400)[0] == 0.1 and he["warmup_iters"] == 400
    assert schedule.lr_at(31999)[0] == 0.1 and schedule.lr_at(32000)[0] == pytest.approx(0.01)
    assert schedule.lr_at(48000)[0] == pytest.approx(0.001)
    # --epochs after the preset: counted in epochs, milestones at half and three quarters
    short = resolve_config({"preset": "he2016", "epochs": 8})
    assert short["iterations"] is None and short["milestone_iters"] is None
    assert plan(short, 1000) == (8, 64, 8)
    assert plan(dict(short, drop_last=True), 1000) == (7, 56, 8)
    # --warmup-epochs after the preset replaces its warm-up counted in iterations
    assert resolve_config({"preset": "he2016", "warmup_epochs": 1.0})["warmup_iters"] is None
    assert resolve_config(he) == he  # a complete configuration comes back unchanged
    quick = resolve_config({"quick": True, "lr": 0.2})
    assert quick["lr"] == 0.2 and quick["limit_train"] == QUICK["limit_train"]


def test_layers_defaults_then_quick_or_preset_then_explicit() -> None:
    assert resolve_config({}) == DEFAULTS
    quick = resolve_config({"quick": True})
    assert all(quick[k] == v for k, v in QUICK.items())
    # both given: the preset lies over --quick where they overlap, the explicit options over both
    both = resolve_config({"quick": True, "preset": "he2016", "batch_size": 32})
    assert both["lr"] == PRESETS["he2016"]["lr"] and both["limit_train"] == QUICK["limit_train"]
    assert both["batch_size"] == 32
    # explicit milestones in epochs replace the preset's milestones in iterations
    stepped = resolve_config({"preset": "he2016", "milestones": [2, 3]})
    assert stepped["milestone_iters"] is None and stepped["iterations"] == 64000
    resolve_config({"preset": "he2016"})
    assert PRESETS["he2016"]["milestone_iters"] == [32000, 48000]  # resolving never changes the preset


@pytest.mark.parametrize("options, message", [
    ({"learning_rate": 0.1}, r"unknown configuration key\(s\) 'learning_rate'"),
    ({"preset": "he2017"}, r"unknown preset 'he2017': expected one of he2016"),
    ({"lr": -1}, r"--lr must be a finite number >= 0, got -1"),
    ({"lr": float("nan")}, r"--lr must be a finite number >= 0, got nan"),
    ({"epochs": 0}, r"--epochs must be positive, got 0"),
    ({"batch_size": 2.5}, r"--batch-size must be a whole number, got 2.5"),
    ({"seed": True}, r"--seed must be a whole number, got True"),
    ({"seed": -1}, r"--seed must lie in 0..2\*\*64-1, got -1"),
    ({"warmup_iters": -3}, r"--warmup-iters must be 0 or more, got -3"),
    ({"augment": "yes"}, r"augment must be true or false, got 'yes'"),
    ({"schedule": "linear"}, r"unknown schedule 'linear': expected one of cosine, multistep, constant"),
    ({"milestones": [10, -1]}, r"--milestones must be finite numbers > 0, got -1 in \[10, -1\]"),
    ({"milestone_iters": 5}, r"--milestone-iters must be a list of whole numbers >= 0, got 5"),
    ({"model": ""}, r"--model must be a network name"),
    ({"model_options": [1]}, r"model_options must be a mapping of keyword arguments"),
    ({"nesterov": True, "momentum": 0.0}, r"--nesterov needs --momentum > 0"),
])
def test_bad_values_are_one_line_user_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        resolve_config(options)
    assert "\n" not in str(info.value)


def test_an_incomplete_configuration_is_refused() -> None:
    cfg = dict(DEFAULTS)
    del cfg["gamma"]
    with pytest.raises(UserError, match="the configuration lacks gamma"):
        check_config(cfg)


def test_plan_counts_iterations_and_epochs() -> None:
    cfg = resolve_config({"batch_size": 10, "epochs": 3})
    assert plan(cfg, 95) == (10, 30, 3)                      # the last, partial batch counts
    assert plan(dict(cfg, drop_last=True), 95) == (9, 27, 3)
    assert plan(dict(cfg, iterations=25), 95) == (10, 25, 3)  # epochs rounded up to cover the iterations
    with pytest.raises(UserError, match="9 training images make no full batch of 10 with --drop-last"):
        plan(dict(cfg, drop_last=True), 9)


def test_schedules_of_each_kind() -> None:
    cosine = _schedule(resolve_config({"lr": 0.1, "warmup_epochs": 1.0}), 10, 100)
    assert [cosine.lr_at(t)[0] for t in (0, 9)] == [pytest.approx(0.01), pytest.approx(0.1)]
    assert cosine.lr_at(99)[0] < 1e-3
    # multistep without milestones: half and three quarters of the way; milestones in epochs
    halves = _schedule(resolve_config({"schedule": "multistep"}), 10, 100)
    assert [halves.lr_at(t)[0] for t in (49, 50, 74, 75)] == [0.1, *map(pytest.approx, (0.01, 0.01, 0.001))]
    epochs = _schedule(resolve_config({"schedule": "multistep", "milestones": [2.5]}), 10, 100)
    assert [epochs.lr_at(t)[0] for t in (24, 25)] == [0.1, pytest.approx(0.01)]
    constant = _schedule(resolve_config({"schedule": "constant", "lr": 0.05}), 10, 100)
    assert {constant.lr_at(t)[0] for t in (0, 50, 99)} == {0.05}
    with pytest.raises(UserError, match="--warmup-epochs 10.0 covers the whole run of 100 iterations"):
        _schedule(resolve_config({"warmup_epochs": 10.0}), 10, 100)
    with pytest.raises(UserError, match="--warmup-iters 100 covers the whole run of 100 iterations"):
        _schedule(resolve_config({"warmup_iters": 100}), 10, 100)
