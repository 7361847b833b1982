"""SE-Inception: the SE block applied to the output of a whole Inception module (Fig. 2 of the paper).

    X ── Inception module ── U ── SE (squeeze, excitation, scale) ── X̃

There is no residual path: the block's output is the recalibrated module output itself.

``InceptionCifar`` is the small Inception network that Zhang et al. ("Understanding deep learning
requires rethinking generalization", 2017) used on CIFAR-10: a 3×3 conv, then Inception modules
(a 1×1 and a 3×3 branch, concatenated) and downsample modules (a stride-2 3×3 conv beside a
stride-2 3×3 max pool, concatenated), global average pooling and one FC layer. With
``se_reduction`` every module gets an SE block on its output: each Inception module (as the paper
puts SE on every Inception module) and each downsample module (as the released SE-BN-Inception
model also does on its reduction modules).
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor
from ..nn import BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear, MaxPool2d, Module, Sequential, SqueezeExcitation, init

__all__ = ["ConvBN", "InceptionModule", "DownsampleModule", "InceptionCifar"]


class ConvBN(Module):
    """conv → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionModule(Module):
    """[1×1 conv branch, 3×3 conv branch] concatenated along channels, then (optionally) SE: Fig. 2."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.out_channels = ch1x1 + ch3x3
        self.branch1x1 = ConvBN(in_channels, ch1x1, 1)
        self.branch3x3 = ConvBN(in_channels, ch3x3, 3, padding=1)
        self.se = None
        if se_reduction is not None:
            self.se = SqueezeExcitation(self.out_channels, se_reduction, **(se_options or {}))

    def forward(self, x: Tensor) -> Tensor:
        u = F.concat([self.branch1x1(x), self.branch3x3(x)], axis=1)  # U, the Inception module's output
        return self.se(u) if self.se is not None else u


class DownsampleModule(Module):
    """[stride-2 3×3 conv, stride-2 3×3 max pool] concatenated: halves H and W, adds ``ch3x3`` channels.

    With ``se_reduction`` an SE block recalibrates the concatenated output, as on the reduction
    modules of the paper's released SE-BN-Inception.
    """

    def __init__(self, in_channels: int, ch3x3: int, se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.out_channels = in_channels + ch3x3
        self.branch3x3 = ConvBN(in_channels, ch3x3, 3, stride=2)
        self.pool = MaxPool2d(3, stride=2)
        self.se = None
        if se_reduction is not None:
            self.se = SqueezeExcitation(self.out_channels, se_reduction, **(se_options or {}))

    def forward(self, x: Tensor) -> Tensor:
        u = F.concat([self.branch3x3(x), self.pool(x)], axis=1)
        return self.se(u) if self.se is not None else u


class InceptionCifar(Module):
    """Small Inception for 32×32 images (Zhang et al., 2017), with SE-Inception modules when ``se_reduction`` is set.

    32×32: conv 96 → Inception(32, 32) → Inception(32, 48) → Downsample(80) → 15×15:
    Inception(112, 48) → Inception(96, 64) → Inception(80, 80) → Inception(48, 96) → Downsample(96)
    → 7×7: Inception(176, 160) → Inception(176, 160) → global average pool → fc.
    """

    def __init__(self, num_classes: int = 10, se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None) -> None:
        super().__init__()

        def inception(c_in: int, c1: int, c3: int) -> InceptionModule:
            return InceptionModule(c_in, c1, c3, se_reduction, se_options)

        def downsample(c_in: int, c3: int) -> DownsampleModule:
            return DownsampleModule(c_in, c3, se_reduction, se_options)

        self.stem = ConvBN(3, 96, 3, padding=1)
        self.stage1 = Sequential(inception(96, 32, 32), inception(64, 32, 48), downsample(80, 80))
        self.stage2 = Sequential(inception(160, 112, 48), inception(160, 96, 64), inception(160, 80, 80),
                                 inception(160, 48, 96), downsample(144, 96))
        self.stage3 = Sequential(inception(240, 176, 160), inception(336, 176, 160))
        self.avgpool = GlobalAvgPool2d()
        self.fc = Linear(336, num_classes)
        in_se = {id(c) for m in self.modules() if isinstance(m, SqueezeExcitation) for c in m.modules()}
        for m in self.modules():
            if isinstance(m, Conv2d) and id(m) not in in_se:  # He et al. (2015): N(0, 2/fan_out); SE keeps its own
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(self.avgpool(x))
