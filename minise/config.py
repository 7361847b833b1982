"""The configuration of a training run: defaults, presets, checks, and what they imply.

A run's configuration is a flat dict with the keys of :data:`DEFAULTS`. :func:`resolve_config`
builds it in three layers, each over the one before:

1. :data:`DEFAULTS`: SE-ResNet-20 (r = 16) on CIFAR-10, 30 epochs of batch 128, a cosine schedule
   from lr 0.1;
2. ``quick=True`` (:data:`QUICK`: two epochs on a slice of the data, a minute on a laptop CPU) or
   ``preset="he2016"`` (:data:`PRESETS`), both given, the preset wins where they overlap;
3. the options given explicitly (``minise train --lr 0.05 ...``), which win over both.

The ``he2016`` preset is the recipe of He et al. (2016) that the SE paper's CIFAR baselines follow:
batch 128, 64k iterations, SGD with momentum 0.9 and weight decay 1e-4, lr 0.1 divided by 10 at 32k
and 48k iterations, and lr 0.01 for the first 400 iterations. An explicit ``epochs`` after it counts
the run in epochs again (milestones, unless given, at half and three quarters of the way); an explicit
``warmup_epochs`` replaces its warm-up counted in iterations.

:func:`check_config` turns every unusable value into a one-line :class:`~minise.errors.UserError`
naming the option; :func:`plan` gives a configuration's iterations per epoch, total iterations and
epochs for a data size; :func:`make_schedule` its learning-rate schedule. :mod:`minise.train` runs
the result; :mod:`minise.cli` and :mod:`minise.experiment` build configurations with these.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import UserError, one_line
from .optim import SGD, CosineLR, MultiStepLR, Schedule

__all__ = ["DEFAULTS", "PRESETS", "QUICK", "QUICK_SYNTHETIC", "RESUME_FREE", "resolve_config", "check_config",
           "plan", "make_schedule"]

DEFAULTS: dict[str, Any] = {
    "model": "se_resnet20",
    "dataset": "cifar10",
    "reduction": 16,
    "epochs": 30,
    "iterations": None,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "nesterov": False,
    "no_decay_bn_bias": False,
    "schedule": "cosine",
    "warmup_epochs": 0.0,
    "warmup_iters": None,  # when set, the warm-up length in iterations (wins over warmup_epochs)
    "milestones": None,
    "milestone_iters": None,
    "gamma": 0.1,
    "seed": 0,
    "limit_train": None,
    "limit_test": None,
    "drop_last": False,
    "augment": True,
    "eval_batch_size": 500,
    "preset": None,
    "quick": False,
    # keyword arguments for the model's class (se_position, se_stages, se_options, ...), used by
    # `minise experiment` for the paper's ablations; JSON-serialisable
    "model_options": None,
    # which data the run trains on: None = CIFAR (with --quick: the generated set when there is no
    # CIFAR at all); set to "cifar" or "synthetic" once the run has started, so a resume uses the same
    "data": None,
}

# He et al. (2016), the recipe the paper's CIFAR baselines follow: 64k iterations of batch 128,
# lr 0.1 divided by 10 at 32k and 48k iterations, momentum 0.9, weight decay 1e-4, and (for
# ResNet-110, and in He et al. 2016b for every CIFAR network) lr 0.01 for the first 400 iterations.
PRESETS: dict[str, dict[str, Any]] = {
    "he2016": {
        "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
        "schedule": "multistep", "iterations": 64000, "milestone_iters": [32000, 48000], "gamma": 0.1,
        "warmup_epochs": 0.0, "warmup_iters": 400,
    },
}

# --quick: a slice of CIFAR (or the generated set) small enough for a minute on a laptop CPU.
QUICK: dict[str, Any] = {
    "model": "se_resnet20", "epochs": 2, "batch_size": 64, "lr": 0.05, "schedule": "cosine",
    "limit_train": 1536, "limit_test": 500,
}
QUICK_SYNTHETIC = {"num_train": 1536, "num_test": 500}

# Options that may differ when a run is resumed (they do not change what is computed).
RESUME_FREE = {"device", "data_dir", "out", "stop_after", "resume"}

_COUNTS = ("epochs", "iterations", "batch_size", "limit_train", "limit_test", "eval_batch_size", "reduction")
_RATES = ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma")
_FLAGS = ("nesterov", "no_decay_bn_bias", "drop_last", "augment", "quick")
_CHOICES: dict[str, tuple[Any, ...]] = {
    "dataset": ("cifar10", "cifar100"), "schedule": ("cosine", "multistep", "constant"),
    "preset": (None, *PRESETS), "data": (None, "cifar", "synthetic"),
}


def resolve_config(options: dict[str, Any]) -> dict[str, Any]:
    """The full configuration of a run: DEFAULTS, then --quick or --preset, then ``options``, checked.

    ``options`` uses the keys of :data:`DEFAULTS`; an unknown key or a bad value raises
    :class:`UserError`. A complete configuration comes back unchanged.
    """
    explicit = dict(options)
    unknown = sorted(set(explicit) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown configuration key(s) {', '.join(map(repr, unknown))}: expected some of "
                        f"{', '.join(DEFAULTS)}")
    cfg = dict(DEFAULTS)
    if explicit.get("quick"):
        cfg.update(QUICK)
    preset = explicit.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {one_line(repr(preset), 40)}: expected one of {', '.join(PRESETS)}")
        cfg.update(PRESETS[preset])
    cfg.update(explicit)
    if "epochs" in explicit and "iterations" not in explicit:
        cfg["iterations"] = None  # --epochs after a preset that counts iterations
        if "milestones" not in explicit:
            cfg["milestone_iters"] = None
    if "milestones" in explicit and "milestone_iters" not in explicit:
        cfg["milestone_iters"] = None
    if "warmup_epochs" in explicit and "warmup_iters" not in explicit:
        cfg["warmup_iters"] = None  # --warmup-epochs after a preset that counts its warm-up in iterations
    check_config(cfg)
    return cfg


def check_config(cfg: dict[str, Any]) -> None:
    """Raise :class:`UserError` (one line, naming the option) unless every value of ``cfg`` is usable."""
    def flag(key: str) -> str:
        return "--" + key.replace("_", "-")

    def shown(value: Any) -> str:
        return one_line(repr(value), 60)

    missing = [k for k in DEFAULTS if k not in cfg]
    if missing:
        raise UserError(f"the configuration lacks {', '.join(missing)}")
    for key in _COUNTS + ("warmup_iters", "seed"):
        value = cfg[key]
        if value is None and key not in ("seed", "epochs", "batch_size", "eval_batch_size", "reduction"):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{flag(key)} must be a whole number, got {shown(value)}")
    for key in _COUNTS:
        if cfg[key] is not None and cfg[key] <= 0:
            raise UserError(f"{flag(key)} must be positive, got {cfg[key]}")
    if cfg["warmup_iters"] is not None and cfg["warmup_iters"] < 0:
        raise UserError(f"--warmup-iters must be 0 or more, got {cfg['warmup_iters']}")
    if not 0 <= cfg["seed"] < 2**64:
        raise UserError(f"--seed must lie in 0..2**64-1, got {cfg['seed']}")
    for key in _RATES:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserError(f"{flag(key)} must be a finite number >= 0, got {shown(value)}")
    for key in _FLAGS:
        if not isinstance(cfg[key], bool):
            raise UserError(f"{key} must be true or false, got {shown(cfg[key])}")
    for key, allowed in _CHOICES.items():
        if cfg[key] not in allowed or not (cfg[key] is None or isinstance(cfg[key], str)):
            raise UserError(f"unknown {key} {shown(cfg[key])}: expected one of "
                            f"{', '.join(str(a) for a in allowed if a is not None)}")
    if not isinstance(cfg["model"], str) or not cfg["model"]:
        raise UserError(f"--model must be a network name, got {shown(cfg['model'])}")
    for key, whole in (("milestones", False), ("milestone_iters", True)):
        value = cfg[key]
        if value is None:
            continue
        kind = "whole numbers >= 0" if whole else "finite numbers > 0"
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{flag(key)} must be a list of {kind}, got {shown(value)}")
        for m in value:
            ok = (not isinstance(m, bool) and isinstance(m, int) and m >= 0 if whole else
                  not isinstance(m, bool) and isinstance(m, (int, float)) and math.isfinite(m) and m > 0)
            if not ok:
                raise UserError(f"{flag(key)} must be {kind}, got {shown(m)} in {shown(value)}")
    options = cfg["model_options"]
    if options is not None and (not isinstance(options, dict) or not all(isinstance(k, str) for k in options)):
        raise UserError(f"model_options must be a mapping of keyword arguments, got {shown(options)}")
    if cfg["nesterov"] and cfg["momentum"] <= 0:
        raise UserError("--nesterov needs --momentum > 0")


def plan(cfg: dict[str, Any], num_train: int) -> tuple[int, int, int]:
    """(iterations per epoch, total iterations, epochs) for this configuration and data size."""
    per_epoch = num_train // cfg["batch_size"] if cfg["drop_last"] else math.ceil(num_train / cfg["batch_size"])
    if per_epoch == 0:
        raise UserError(f"{num_train} training images make no full batch of {cfg['batch_size']} with --drop-last")
    if cfg["iterations"] is not None:
        total = int(cfg["iterations"])
        return per_epoch, total, math.ceil(total / per_epoch)
    return per_epoch, per_epoch * int(cfg["epochs"]), int(cfg["epochs"])


def make_schedule(cfg: dict[str, Any], optimizer: SGD, per_epoch: int, total: int) -> Schedule:
    """The learning-rate schedule of ``cfg`` for ``optimizer`` over ``total`` iterations (see :func:`plan`)."""
    if cfg.get("warmup_iters") is not None:
        warmup, what = int(cfg["warmup_iters"]), f"--warmup-iters {cfg['warmup_iters']}"
    else:
        warmup, what = int(round(cfg["warmup_epochs"] * per_epoch)), f"--warmup-epochs {cfg['warmup_epochs']}"
    if warmup and warmup >= total:
        raise UserError(f"{what} covers the whole run of {total} iterations")
    if cfg["schedule"] == "cosine":
        return CosineLR(optimizer, total, warmup_iters=warmup)
    if cfg["schedule"] == "multistep":
        if cfg["milestone_iters"] is not None:
            milestones = [int(m) for m in cfg["milestone_iters"]]
        elif cfg["milestones"] is not None:
            milestones = [int(round(m * per_epoch)) for m in cfg["milestones"]]
        else:  # He et al.'s 32k and 48k of 64k: half and three quarters of the way
            milestones = [total // 2, (3 * total) // 4]
        return MultiStepLR(optimizer, milestones, gamma=cfg["gamma"], warmup_iters=warmup, warmup_factor=0.1)
    return MultiStepLR(optimizer, [], warmup_iters=warmup, warmup_factor=0.1)  # constant
