"""ResNet, SE-ResNet and SE-ResNeXt: the networks of Table 1 of the paper, and He et al.'s CIFAR ResNets.

The SE-ResNet module (Fig. 3 of the paper) puts the SE block on the residual branch, after its
last batch norm and before the addition with the identity; the ReLU follows the addition:

    x ──┬── conv ─ BN ─ ReLU ─ … ─ conv ─ BN ── SE ──(+)── ReLU ──
        └───────────── identity (or projection) ──────┘

The journal version's integration ablation (Sec. 6.5, Fig. 5) moves the SE block; every block
here takes ``se_position``:

- "standard": as above (SE-ResNet);
- "pre": SE on the block's input, before the residual branch (SE-PRE); the identity is not scaled;
- "post": SE after the addition and its ReLU (SE-POST);
- "identity": SE on the identity branch, in parallel with the residual branch (SE-Identity);
- "3x3": SE right after the bottleneck's 3×3 convolution, on its BN-ReLU output (SE_3×3).

Key names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``) and timm for the SE block (``layer1.0.se.fc1``), so their weights load directly
(see :mod:`minise.interop.torch`).
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor
from ..backend import get_array_module
from ..nn import (
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    Module,
    Sequential,
    SqueezeExcitation,
    init,
)

__all__ = [
    "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck", "PadShortcut",
    "ResNet", "CifarResNet", "PreActResNet", "SE_POSITIONS",
]

SE_POSITIONS = ("standard", "pre", "post", "identity", "3x3")


def _make_se(channels: int, reduction: int | None, se_options: dict[str, Any] | None) -> SqueezeExcitation | None:
    if reduction is None:
        return None
    return SqueezeExcitation(channels, reduction, **(se_options or {}))


def _check_position(position: str, allowed: tuple[str, ...], block: str) -> None:
    if position not in allowed:
        raise ValueError(f"{block}: se_position must be one of {allowed}, got {position!r}")


class PadShortcut(Module):
    """He et al.'s option A shortcut: a parameter-free identity for a block that changes shape.

    x is subsampled with the block's stride (x[:, :, ::s, ::s]) and the new channels are zeros,
    split evenly before and after the old ones (as the widely used CIFAR re-implementations do).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"PadShortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra == 0:
            return x
        xp = get_array_module(x.data)
        n, _, h, w = x.shape
        before, after = extra // 2, extra - extra // 2
        pads = [Tensor(xp.zeros((n, c, h, w), dtype=x.dtype)) for c in (before, after)]
        return F.concat([pads[0], x, pads[1]], axis=1)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"


def _shortcut(kind: str, in_channels: int, out_channels: int, stride: int) -> Module | None:
    """None (identity) when the shape stays; otherwise option A (zero padding) or B (1×1 conv + BN)."""
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        return PadShortcut(in_channels, out_channels, stride)
    if kind == "B":
        return Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), BatchNorm2d(out_channels))
    raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {kind!r}")


class BasicBlock(Module):
    """Two 3×3 convolutions (ResNet-18/34 and the CIFAR ResNets), with an optional SE block."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "B",
                 se_reduction: int | None = None, se_options: dict[str, Any] | None = None,
                 se_position: str = "standard") -> None:
        super().__init__()
        _check_position(se_position, ("standard", "pre", "post", "identity"), "BasicBlock")
        out_channels = planes
        self.conv1 = Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        se_channels = in_channels if se_position == "pre" else out_channels
        self.se = _make_se(se_channels, se_reduction, se_options)
        self.se_position = se_position if self.se is not None else None
        self.downsample = _shortcut(shortcut, in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION se/basic_block
        identity = x if self.downsample is None else self.downsample(x)
        u = self.se(x) if self.se_position == "pre" else x
        out = F.relu(self.bn1(self.conv1(u)))
        out = self.bn2(self.conv2(out))
        if self.se_position == "standard":
            out = self.se(out)
        elif self.se_position == "identity":
            identity = self.se(identity)
        out = F.relu(out + identity)
        if self.se_position == "post":
            out = self.se(out)
        return out
        # END SOLUTION


class Bottleneck(Module):
    """1×1 (reduce) → 3×3 (grouped for ResNeXt) → 1×1 (expand ×4), with an optional SE block.

    The stride of a downsampling block sits on the 3×3 convolution (torchvision, timm) or, with
    ``stride_in_1x1``, on the first 1×1 convolution (the paper's released Caffe models, whose
    FLOPs the paper reports).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64,
                 stride_in_1x1: bool = False, shortcut: str = "B", se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None, se_position: str = "standard") -> None:
        super().__init__()
        _check_position(se_position, SE_POSITIONS, "Bottleneck")
        width = int(planes * (base_width / 64.0)) * groups
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = Conv2d(width, width, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = BatchNorm2d(out_channels)
        se_channels = {"pre": in_channels, "3x3": width}.get(se_position, out_channels)
        self.se = _make_se(se_channels, se_reduction, se_options)
        self.se_position = se_position if self.se is not None else None
        self.downsample = _shortcut(shortcut, in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION se/bottleneck
        identity = x if self.downsample is None else self.downsample(x)
        u = self.se(x) if self.se_position == "pre" else x
        out = F.relu(self.bn1(self.conv1(u)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.se_position == "3x3":
            out = self.se(out)
        out = self.bn3(self.conv3(out))
        if self.se_position == "standard":
            out = self.se(out)
        elif self.se_position == "identity":
            identity = self.se(identity)
        out = F.relu(out + identity)
        if self.se_position == "post":
            out = self.se(out)
        return out
        # END SOLUTION


class PreActBasicBlock(Module):
    """He et al. (2016b) pre-activation: BN → ReLU → 3×3 conv → BN → ReLU → 3×3 conv (→ SE) (+ x).

    Where the shape changes, the shortcut is a 1×1 convolution of the pre-activated input.
    ``preactivate=False`` (the network's first unit): the input is already activated (the stem's
    BN → ReLU), so the block has no BN → ReLU of its own and both paths start from x.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None, se_position: str = "standard",
                 preactivate: bool = True) -> None:
        super().__init__()
        _check_position(se_position, ("standard",), type(self).__name__)
        out_channels = planes * self.expansion
        self.bn1 = BatchNorm2d(in_channels) if preactivate else None
        self.conv1 = Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False)
        self.se = _make_se(out_channels, se_reduction, se_options)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def residual(self, a: Tensor) -> Tensor:
        return self.conv2(F.relu(self.bn2(self.conv1(a))))

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x)) if self.bn1 is not None else x
        identity = x if self.downsample is None else self.downsample(a)
        out = self.residual(a)
        if self.se is not None:
            out = self.se(out)
        return out + identity


class PreActBottleneck(PreActBasicBlock):
    """Pre-activation bottleneck (ResNet-164): BN-ReLU-1×1, BN-ReLU-3×3, BN-ReLU-1×1 (×4) (→ SE) (+ x)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None, se_position: str = "standard",
                 preactivate: bool = True) -> None:
        Module.__init__(self)
        _check_position(se_position, ("standard",), type(self).__name__)
        out_channels = planes * self.expansion
        self.bn1 = BatchNorm2d(in_channels) if preactivate else None
        self.conv1 = Conv2d(in_channels, planes, 1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = BatchNorm2d(planes)
        self.conv3 = Conv2d(planes, out_channels, 1, bias=False)
        self.se = _make_se(out_channels, se_reduction, se_options)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def residual(self, a: Tensor) -> Tensor:
        out = self.conv1(a)
        out = self.conv2(F.relu(self.bn2(out)))
        return self.conv3(F.relu(self.bn3(out)))


def he_init_convs(model: Module) -> None:
    """He et al. (2015) normal initialisation, N(0, 2/fan_out), for every convolution outside the SE blocks.

    The SE blocks keep the default uniform init of their layers, whether W1 and W2 are FCs (the
    standard block) or 1×1 convolutions (NoSqueeze, ``spatial=True``): the ablation then compares
    the operators from the same starting scheme. BN starts at γ = 1, β = 0.
    """
    in_se = {id(c) for m in model.modules() if isinstance(m, SqueezeExcitation) for c in m.modules()}
    for m in model.modules():
        if isinstance(m, Conv2d) and id(m) not in in_se:
            init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                init.zeros_(m.bias)


def _stages_with_se(se_stages: tuple[int, ...] | None, count: int) -> tuple[int, ...]:
    """The ``layer`` indices (1..count) that get SE blocks, from stages in the paper's numbering.

    The paper (Table 1 and its stage ablation) counts conv1 as stage 1, so ``layer1`` is stage 2,
    ``layer2`` stage 3 and so on: SE on "stage 4" of SE-ResNet-50 is ``se_stages=(4,)`` = ``layer3``.
    """
    last = count + 1
    stages = tuple(range(2, last + 1)) if se_stages is None else tuple(se_stages)
    if not stages or any(s not in range(2, last + 1) for s in stages):
        raise ValueError(f"se_stages counts as the paper does: stage 1 is conv1 (no SE), layer1..layer{count} are "
                         f"stages 2..{last}; got {se_stages}")
    return tuple(s - 1 for s in stages)


class ResNet(Module):
    """ImageNet ResNet / SE-ResNet / (SE-)ResNeXt (Table 1 of the paper; torchvision's layout).

    stem: 7×7 conv (stride 2) → BN → ReLU → 3×3 max pool (stride 2); four stages (``layer1`` …
    ``layer4``, 64/128/256/512 planes, the last three starting with stride 2); global average
    pool; ``fc``. ``se_reduction`` (r) adds an SE block to every block of the stages in
    ``se_stages``, numbered as in the paper: conv1 is stage 1, ``layer1`` … ``layer4`` are stages
    2 … 5 (default: all; the paper's stage ablation puts SE on stage 2, 3 or 4 only).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 se_reduction: int | None = None, se_options: dict[str, Any] | None = None,
                 se_position: str = "standard", se_stages: tuple[int, ...] | None = None,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        se_on = _stages_with_se(se_stages, 4)
        in_channels = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = []
            for b in range(count):
                stride = 2 if (b == 0 and index > 1) else 1
                kwargs: dict[str, Any] = dict(
                    se_reduction=se_reduction if index in se_on else None, se_options=se_options,
                    se_position=se_position,
                )
                if block is Bottleneck:
                    kwargs.update(groups=groups, base_width=width_per_group, stride_in_1x1=stride_in_1x1)
                elif groups != 1 or width_per_group != 64:
                    raise ValueError("BasicBlock supports only groups=1 and width_per_group=64")
                blocks.append(block(in_channels, planes, stride, **kwargs))
                in_channels = planes * block.expansion
            setattr(self, f"layer{index}", Sequential(*blocks))
        self.avgpool = GlobalAvgPool2d()
        self.fc = Linear(in_channels, num_classes)
        he_init_convs(self)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x))


class CifarResNet(Module):
    """He et al.'s CIFAR ResNets (Sec. 4.2 of "Deep Residual Learning"): 6n + 2 layers on 32×32 images.

    3×3 conv (16) → BN → ReLU; three stages of n basic blocks with 16, 32, 64 channels at 32×32,
    16×16, 8×8; global average pool; ``fc``. Shortcuts: option A (zero padding, no parameters;
    ResNet-20 then has 0.27M parameters) by default, or B (1×1 projections). ``se_stages`` numbers
    the stages as the paper does: conv1 is stage 1, ``layer1`` … ``layer3`` are stages 2 … 4.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, shortcut: str = "A", se_reduction: int | None = None,
                 se_options: dict[str, Any] | None = None, se_position: str = "standard",
                 se_stages: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110, ...), got depth {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(16)
        se_on = _stages_with_se(se_stages, 3)
        in_channels = 16
        for index, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and index > 1) else 1
                blocks.append(BasicBlock(in_channels, planes, stride, shortcut=shortcut,
                                         se_reduction=se_reduction if index in se_on else None,
                                         se_options=se_options, se_position=se_position))
                in_channels = planes
            setattr(self, f"layer{index}", Sequential(*blocks))
        self.avgpool = GlobalAvgPool2d()
        self.fc = Linear(64, num_classes)
        he_init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x))


class PreActResNet(Module):
    """Pre-activation CIFAR ResNets (He et al., 2016b), the paper's CIFAR baselines.

    Basic blocks (6n + 2 layers, e.g. 110) or bottlenecks (9n + 2 layers, e.g. 164; 16/32/64 planes
    expanded ×4); after the last block a final BN → ReLU, then global average pool and ``fc``.
    As in He et al.'s appendix (and their released code), the first activation comes right after
    conv1, before the first unit splits into its two paths: conv1 → BN (``bn1``) → ReLU, and the
    first unit has no BN → ReLU of its own.
    """

    def __init__(self, depth: int = 164, num_classes: int = 10, bottleneck: bool = True,
                 se_reduction: int | None = None, se_options: dict[str, Any] | None = None,
                 se_position: str = "standard", se_stages: tuple[int, ...] | None = None) -> None:
        super().__init__()
        per = 9 if bottleneck else 6
        if depth < per + 2 or (depth - 2) % per:
            raise ValueError(f"a pre-activation ResNet with {'bottleneck' if bottleneck else 'basic'} blocks has "
                             f"{per}n + 2 layers, got depth {depth}")
        n = (depth - 2) // per
        block = PreActBottleneck if bottleneck else PreActBasicBlock
        self.depth = depth
        self.conv1 = Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(16)
        se_on = _stages_with_se(se_stages, 3)
        in_channels = 16
        for index, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and index > 1) else 1
                blocks.append(block(in_channels, planes, stride, se_reduction=se_reduction if index in se_on else None,
                                    se_options=se_options, se_position=se_position,
                                    preactivate=not (index == 1 and b == 0)))
                in_channels = planes * block.expansion
            setattr(self, f"layer{index}", Sequential(*blocks))
        self.bn = BatchNorm2d(in_channels)
        self.avgpool = GlobalAvgPool2d()
        self.fc = Linear(in_channels, num_classes)
        he_init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # the first activation, before the first unit's two paths
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(F.relu(self.bn(x))))
