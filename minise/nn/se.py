"""The Squeeze-and-Excitation block, Section 3 and Fig. 1 of Hu, Shen and Sun (2018).

Given the output U = [u_1, …, u_C] of some transformation F_tr (u: (N, C, H, W) here),
the block recalibrates its channels in three steps::

    squeeze      Eq. 2   z_c = F_sq(u_c) = 1/(H·W) Σ_i Σ_j u_c(i, j)          z ∈ R^C
    excitation   Eq. 3   s = F_ex(z, W) = σ(W2 δ(W1 z))                        s ∈ (0, 1)^C
    scale        Eq. 4   x̃_c = F_scale(u_c, s_c) = s_c · u_c

with W1 ∈ R^{(C/r)×C} (``fc1``, the dimensionality-reduction layer), W2 ∈ R^{C×(C/r)} (``fc2``, the
dimensionality-increasing layer), δ the ReLU, σ the sigmoid and r the reduction ratio.

The options are the paper's ablations (journal version, Sec. 6): the squeeze operator (average
or max pooling), the gate σ (sigmoid, tanh or ReLU), FC biases (on in the released models and
timm, off in the ablation runs) and NoSqueeze (``spatial=True``: no pooling; W1 and W2 become
1×1 convolutions applied at every position, so s has the size of u).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import functional as F
from ..autograd import Tensor
from .layers import Conv2d, Linear
from .module import Module

__all__ = ["SqueezeExcitation", "SQUEEZES", "GATES", "keep_excitations", "excitations"]

SQUEEZES: dict[str, Callable[[Tensor], Tensor]] = {"avg": F.global_avg_pool2d, "max": F.global_max_pool2d}
GATES: dict[str, Callable[[Tensor], Tensor]] = {"sigmoid": F.sigmoid, "tanh": F.tanh, "relu": F.relu}


class SqueezeExcitation(Module):
    r"""The SE block (Fig. 1): x̃ = F_scale(u, F_ex(F_sq(u))).

    Squeeze (Eq. 2), excitation (Eq. 3) and scale (Eq. 4):

    .. math::

        z_c = \frac{1}{H W} \sum_{i=1}^{H} \sum_{j=1}^{W} u_c(i, j), \qquad
        s = \sigma\big(W_2\, \delta(W_1 z)\big), \qquad
        \tilde{x}_c = s_c \, u_c

    with :math:`W_1 \in \mathbb{R}^{\frac{C}{r} \times C}`, :math:`W_2 \in \mathbb{R}^{C \times \frac{C}{r}}`,
    δ the ReLU and σ the sigmoid.

    Args:
        channels: C, the number of channels of u.
        reduction: r; the hidden width is ⌊C/r⌋, at least 1.
        bias: biases in W1 and W2.
        squeeze: "avg" (Eq. 2) or "max" (global max pooling).
        gate: σ of Eq. 3: "sigmoid" (the paper's), "tanh" or "relu".
        spatial: the NoSqueeze ablation (W1, W2 as 1×1 convolutions on the whole map; no squeeze,
            so only ``squeeze="avg"`` is accepted with it). Its 1×1 convolutions start from the same
            scheme as the FCs of the standard block (PyTorch's default uniform init, fan-in C and C/r),
            so the ablation compares the operators only; the networks do not re-draw them.
        keep_excitation: keep the latest s (N, C) in ``self.excitation`` (a detached raw array),
            for the "role of excitation" analysis (Sec. 7.2). Off by default: then nothing is kept.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True, squeeze: str = "avg",
                 gate: str = "sigmoid", spatial: bool = False, keep_excitation: bool = False) -> None:
        super().__init__()
        if squeeze not in SQUEEZES:
            raise ValueError(f"squeeze must be one of {sorted(SQUEEZES)}, got {squeeze!r}")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
        if spatial and squeeze != "avg":
            raise ValueError(f"spatial=True (NoSqueeze) has no squeeze step, so squeeze={squeeze!r} would be "
                             "silently ignored; leave squeeze='avg' with spatial=True")
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be positive, got {channels} and {reduction}")
        self.channels, self.reduction = channels, reduction
        self.squeeze_type, self.gate_type, self.spatial = squeeze, gate, spatial
        self.hidden = max(1, channels // reduction)  # C/r
        if spatial:
            self.fc1 = Conv2d(channels, self.hidden, 1, bias=bias)  # W1, applied at every (i, j)
            self.fc2 = Conv2d(self.hidden, channels, 1, bias=bias)  # W2
        else:
            self.fc1 = Linear(channels, self.hidden, bias=bias)  # W1 ∈ R^{(C/r)×C}
            self.fc2 = Linear(self.hidden, channels, bias=bias)  # W2 ∈ R^{C×(C/r)}
        self._sigma = GATES[gate]
        self._squeeze = SQUEEZES[squeeze]
        self.keep_excitation = keep_excitation
        self.excitation: Any = None  # the latest s, only while keep_excitation is on

    def squeeze(self, u: Tensor) -> Tensor:
        """Eq. 2: z_c = 1/(H·W) Σ_i Σ_j u_c(i, j) (or max_{i,j} u_c(i, j)); (N, C, H, W) -> (N, C)."""
        return self._squeeze(u)

    def excite(self, z: Tensor) -> Tensor:
        """Eq. 3: s = σ(W2 δ(W1 z))."""
        # BEGIN SOLUTION se/excite
        return self._sigma(self.fc2(F.relu(self.fc1(z))))
        # END SOLUTION

    def forward(self, u: Tensor) -> Tensor:
        if u.ndim != 4 or u.shape[1] != self.channels:
            raise ValueError(f"SqueezeExcitation: expected u of shape (N, {self.channels}, H, W), got {u.shape}")
        if self.spatial:
            s = self.excite(u)  # NoSqueeze: s (N, C, H, W), one excitation per position
            x = u * s
        else:
            # BEGIN SOLUTION se/forward
            z = self.squeeze(u)  # squeeze,    Eq. 2
            s = self.excite(z)  # excitation, Eq. 3
            x = F.scale(u, s)  # scale,      Eq. 4
            # END SOLUTION
        self.excitation = s.data if self.keep_excitation else None
        return x

    def macs(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
        """The block's own operations, as the paper counts them: one add per element of u for the
        average squeeze and one multiply per element for the scale (W1 and W2 count as layers)."""
        n = math.prod(input_shape)
        return n + (n if self.squeeze_type == "avg" and not self.spatial else 0)

    def extra_repr(self) -> str:
        s = f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}"
        if self.squeeze_type != "avg":
            s += f", squeeze={self.squeeze_type!r}"
        if self.gate_type != "sigmoid":
            s += f", gate={self.gate_type!r}"
        if self.spatial:
            s += ", spatial=True"
        return s


def keep_excitations(model: Module, keep: bool = True) -> list[str]:
    """Switch ``keep_excitation`` on (or off) in every SE block of ``model``; returns the blocks' names."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, SqueezeExcitation):
            m.keep_excitation = keep
            if not keep:
                m.excitation = None
            names.append(name)
    return names


def excitations(model: Module) -> dict[str, Any]:
    """The latest excitations s (N, C) of every SE block that keeps them, by block name (raw arrays).

    For the "role of excitation" analysis (Sec. 7.2): ``keep_excitations(model)``, run a batch of
    one class under ``no_grad()``, then read e.g. ``excitations(model)["layer3.2.se"]``.
    """
    return {name: m.excitation for name, m in model.named_modules()
            if isinstance(m, SqueezeExcitation) and m.excitation is not None}
