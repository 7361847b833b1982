"""The paper's networks written in plain PyTorch, as the oracle for minise's.

Written from the papers (and torchvision's/timm's published layouts), not from minise's code:
module names are torchvision's (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, fc) and
timm's for the SE block (se.fc1 and se.fc2 as 1×1 convolutions with bias), so that
``load_state_dict(strict=True)`` with minise's exported weights also checks the names.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as TF

# One thread: the test machines have two cores shared with other work, where torch's thread pool
# spin-waits and a 0.5 s float64 ResNeXt step can take 10 s.
torch.set_num_threads(1)


class SEModule(tnn.Module):
    """timm's SEModule layout: x * gate(fc2(relu(fc1(pool(x)))))."""

    def __init__(self, channels, reduction=16, bias=True, squeeze="avg", gate="sigmoid", spatial=False):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = tnn.Conv2d(channels, hidden, 1, bias=bias)
        self.fc2 = tnn.Conv2d(hidden, channels, 1, bias=bias)
        self.squeeze, self.gate, self.spatial = squeeze, gate, spatial

    def forward(self, x):
        if self.spatial:
            z = x
        elif self.squeeze == "avg":
            z = x.mean((2, 3), keepdim=True)
        else:
            z = x.amax((2, 3), keepdim=True)
        s = self.fc2(torch.relu(self.fc1(z)))
        s = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[self.gate](s)
        return x * s


def _se(channels, reduction, se_options):
    return None if reduction is None else SEModule(channels, reduction, **(se_options or {}))


class PadA(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.cout - self.cin
        return TF.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


def _shortcut(kind, cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    if kind == "A":
        return PadA(cin, cout, stride)
    return tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))


class BasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, shortcut="B", se_reduction=None, se_options=None,
                 se_position="standard"):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.se = _se(cin if se_position == "pre" else planes, se_reduction, se_options)
        self.pos = se_position if self.se is not None else None
        self.downsample = _shortcut(shortcut, cin, planes, stride)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        branch_in = self.se(x) if self.pos == "pre" else x
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(branch_in)))))
        if self.pos == "standard":
            y = self.se(y)
        if self.pos == "identity":
            shortcut = self.se(shortcut)
        y = torch.relu(y + shortcut)
        return self.se(y) if self.pos == "post" else y


class Bottleneck(tnn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, groups=1, base_width=64, stride_in_1x1=False, shortcut="B",
                 se_reduction=None, se_options=None, se_position="standard"):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        cout = planes * 4
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = tnn.Conv2d(cin, width, 1, s1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, s2, 1, groups=groups, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(cout)
        channels = {"pre": cin, "3x3": width}.get(se_position, cout)
        self.se = _se(channels, se_reduction, se_options)
        self.pos = se_position if self.se is not None else None
        self.downsample = _shortcut(shortcut, cin, cout, stride)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        branch_in = self.se(x) if self.pos == "pre" else x
        y = torch.relu(self.bn1(self.conv1(branch_in)))
        y = torch.relu(self.bn2(self.conv2(y)))
        if self.pos == "3x3":
            y = self.se(y)
        y = self.bn3(self.conv3(y))
        if self.pos == "standard":
            y = self.se(y)
        if self.pos == "identity":
            shortcut = self.se(shortcut)
        y = torch.relu(y + shortcut)
        return self.se(y) if self.pos == "post" else y


class ResNet(tnn.Module):
    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64, stride_in_1x1=False,
                 se_reduction=None, se_options=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = []
            for b in range(n):
                stride = 2 if b == 0 and i > 1 else 1
                extra = dict(groups=groups, base_width=width_per_group, stride_in_1x1=stride_in_1x1) \
                    if block is Bottleneck else {}
                blocks.append(block(cin, planes, stride, se_reduction=se_reduction, se_options=se_options, **extra))
                cin = planes * block.expansion
            setattr(self, f"layer{i}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


class CifarResNet(tnn.Module):
    def __init__(self, depth=20, num_classes=10, shortcut="A", se_reduction=None, se_options=None,
                 se_position="standard"):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, planes, 2 if b == 0 and i > 1 else 1, shortcut, se_reduction,
                                         se_options, se_position))
                cin = planes
            setattr(self, f"layer{i}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
