"""Stochastic gradient descent and the learning-rate schedules of the paper's CIFAR recipe.

SGD, as torch.optim.SGD computes it (so the two agree step for step), for a parameter θ with
gradient g, learning rate η, momentum μ, dampening τ and weight decay λ:

    g ← g + λ θ                              (weight decay, an L2 penalty λ/2 ‖θ‖²)
    b ← g                      at the first step, else   b ← μ b + (1 − τ) g
    g ← g + μ b  (Nesterov)    or   g ← b    (classic momentum)
    θ ← θ − η g

Gradient arrays may be shared between tensors, so they are never modified in place; the
parameters' arrays and the momentum buffers (which the optimizer owns) are.

Schedules set every group's learning rate η = η₀ · f(t) for iteration t = 0, 1, 2, ...
(one call of ``step()`` after each optimizer step): multi-step (f = γ^k after the k-th
milestone; He et al.: ÷10 at 32k and 48k of 64k iterations) and cosine with a linear warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .autograd import Tensor, no_grad
from .backend import device_of, to_device, to_numpy

__all__ = ["SGD", "no_decay_groups", "Schedule", "MultiStepLR", "CosineLR", "ConstantLR"]

_GROUP_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")


class SGD:
    """SGD with momentum, Nesterov momentum and weight decay (torch.optim.SGD's update rule).

    ``params``: an iterable of Tensors, or of dicts ``{"params": [...], "weight_decay": 0.0, ...}``
    (parameter groups; a key left out takes the value given here), e.g. from :func:`no_decay_groups`.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov}
        params = list(params)
        if not params:
            raise ValueError("SGD got no parameters")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for g in groups:
            unknown = set(g) - {"params", *_GROUP_KEYS}
            if unknown:
                raise ValueError(f"unknown parameter-group settings: {', '.join(sorted(unknown))}")
            group = {**defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"SGD optimises Tensors, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one group")
                seen.add(id(p))
            _check_hyper(group)
            self.param_groups.append(group)
        self.state: dict[int, Any] = {}  # id(parameter) -> momentum buffer (an array on its device)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (the next backward starts from zero)."""
        for p in self._params():
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        with no_grad():
            for group in self.param_groups:
                lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
                wd, nesterov = group["weight_decay"], group["nesterov"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.data
                    if wd != 0:
                        g = g + wd * p.data  # a new array: the gradient itself may be shared
                    if mu != 0:
                        buf = self.state.get(id(p))
                        if buf is None:
                            buf = g.copy()
                            self.state[id(p)] = buf
                        else:
                            buf *= mu
                            buf += (1 - tau) * g
                        g = g + mu * buf if nesterov else buf
                    p.data -= lr * g

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters per group and momentum buffers (NumPy copies), keyed by parameter index."""
        groups = []
        buffers: dict[int, np.ndarray] = {}
        index = 0
        for g in self.param_groups:
            ids = list(range(index, index + len(g["params"])))
            for i, p in zip(ids, g["params"]):
                if id(p) in self.state:
                    buffers[i] = np.array(to_numpy(self.state[id(p)]), copy=True)  # cpu-only
            index += len(ids)
            groups.append({**{k: g[k] for k in _GROUP_KEYS}, "params": ids})
        return {"param_groups": groups, "momentum_buffers": buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output into an optimizer over the same parameters."""
        groups = state["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            mine = [len(g["params"]) for g in self.param_groups]
            theirs = [len(g["params"]) for g in groups]
            raise ValueError(f"optimizer state for groups of {theirs} parameters, this optimizer has {mine}")
        params = self._params()
        buffers = {int(k): v for k, v in state["momentum_buffers"].items()}
        for i, buf in buffers.items():
            if not 0 <= i < len(params) or tuple(buf.shape) != params[i].shape:
                shape = params[i].shape if 0 <= i < len(params) else "none"
                raise ValueError(f"momentum buffer {i} has shape {tuple(buf.shape)}, its parameter {shape}")
        for mine, saved in zip(self.param_groups, groups):
            for k in _GROUP_KEYS:
                mine[k] = saved[k]
            _check_hyper(mine)
        self.state = {}
        for i, buf in buffers.items():
            p = params[i]
            self.state[id(p)] = to_device(np.array(buf, dtype=p.dtype, copy=True), device_of(p.data))  # cpu-only


def _check_hyper(group: dict[str, Any]) -> None:
    """Each hyper-parameter a finite number in its range (a NaN or an infinity poisons every weight in one step)."""
    for key in ("lr", "momentum", "dampening", "weight_decay"):
        v = group[key]
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"SGD: {key} must be a finite number, got {v!r}")
    if group["lr"] < 0:
        raise ValueError(f"learning rate must be >= 0, got {group['lr']}")
    if group["momentum"] < 0 or group["weight_decay"] < 0:
        raise ValueError("momentum and weight_decay must be >= 0")
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")


def no_decay_groups(named_parameters: Iterable[tuple[str, Tensor]], weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: weights with ``weight_decay``, and BN scales/shifts and biases without.

    A parameter with fewer than two dimensions (BN γ and β, every bias) goes to the group without decay.
    """
    decay, no_decay = [], []
    for _, p in named_parameters:
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


# ---------------------------------------------------------------------- learning-rate schedules
class Schedule:
    """Sets every group's lr to base_lr · factor(t) for iteration t; call ``step()`` after each update."""

    def __init__(self, optimizer: SGD) -> None:
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.iteration = 0
        self._apply()

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def lr_at(self, t: int) -> list[float]:
        """The learning rate of each group at iteration ``t``."""
        f = self.factor(t)
        return [base * f for base in self.base_lrs]

    def _apply(self) -> None:
        for g, lr in zip(self.optimizer.param_groups, self.lr_at(self.iteration)):
            g["lr"] = lr

    def step(self) -> None:
        self.iteration += 1
        self._apply()

    @property
    def lr(self) -> float:
        """The current learning rate of the first group."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "iteration": self.iteration, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["kind"] != type(self).__name__:
            raise ValueError(f"schedule state for {state['kind']}, this schedule is {type(self).__name__}")
        self.iteration = int(state["iteration"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


class ConstantLR(Schedule):
    """f(t) = 1."""

    def factor(self, t: int) -> float:
        return 1.0


class MultiStepLR(Schedule):
    """f(t) = γ^k, k = the number of milestones ≤ t (iterations). He et al.: milestones 32k, 48k, γ = 0.1.

    ``warmup_iters``/``warmup_factor``: a constant f = warmup_factor before that iteration (the
    pre-activation ResNet-110 recipe trains at 0.01 for the first 400 iterations).
    """

    def __init__(self, optimizer: SGD, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_iters: int = 0, warmup_factor: float = 0.1) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        self.warmup_iters, self.warmup_factor = int(warmup_iters), warmup_factor
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        if t < self.warmup_iters:
            return self.warmup_factor
        k = sum(1 for m in self.milestones if m <= t)
        return self.gamma ** k


class CosineLR(Schedule):
    """Linear warm-up, then cosine decay to ``min_factor`` at ``total_iters``:

        f(t) = (t + 1) / W                                            for t < W
        f(t) = m + (1 − m) · ½ (1 + cos(π (t − W) / (T − W)))         for W ≤ t < T,  m = min_factor
    """

    def __init__(self, optimizer: SGD, total_iters: int, warmup_iters: int = 0, min_factor: float = 0.0) -> None:
        if total_iters < 1 or not 0 <= warmup_iters < total_iters:
            raise ValueError(f"need 0 <= warmup_iters < total_iters, got {warmup_iters} and {total_iters}")
        self.total_iters, self.warmup_iters, self.min_factor = int(total_iters), int(warmup_iters), min_factor
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        w, total = self.warmup_iters, self.total_iters
        if t < w:
            return (t + 1) / w
        progress = min(t - w, total - w) / (total - w)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
