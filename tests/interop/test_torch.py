"""PyTorch state dicts in and out: torchvision/timm names, SE weights as 1×1 convolutions, strict checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import minise
import minise.models as M
from minise.interop.torch import load_torch_state_dict, se_matrix_keys, to_torch_state_dict
from minise.nn import StateDictError

from ..models import torch_nets as T


def test_round_trip_is_exact() -> None:
    a, b = M.create("se_resnet20"), M.create("se_resnet20")
    load_torch_state_dict(b, to_torch_state_dict(a))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_se_weights_become_1x1_convolutions() -> None:
    model = M.create("se_resnet50")
    sd = to_torch_state_dict(model)
    assert sd["layer1.0.se.fc1.weight"].shape == (16, 256, 1, 1)
    assert sd["layer1.0.se.fc2.weight"].shape == (256, 16, 1, 1)
    assert sd["layer4.2.se.fc2.bias"].shape == (2048,)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["bn1.num_batches_tracked"].dtype == torch.int64 and sd["bn1.num_batches_tracked"].shape == ()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert len(se_matrix_keys(model)) == 2 * 16


def test_torchvision_and_timm_layout_loads_and_computes_the_same() -> None:
    """A state dict produced by a PyTorch SE-ResNet-50 with timm's names loads strictly and gives the same logits."""
    torch.manual_seed(0)
    tmodel = T.ResNet(T.Bottleneck, (3, 4, 6, 3), se_reduction=16).double().eval()
    with torch.no_grad():  # BN statistics that are not the defaults
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    model = M.create("se_resnet50").double().eval()
    result = load_torch_state_dict(model, tmodel.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64))
    with minise.no_grad():
        y = model(minise.Tensor(x)).numpy()
    with torch.no_grad():
        yt = tmodel(torch.tensor(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-9, atol=1e-12)


def test_plain_resnet_keys_are_torchvisions() -> None:
    tmodel = T.ResNet(T.Bottleneck, (3, 4, 6, 3))
    assert list(M.create("resnet50").state_dict()) == list(tmodel.state_dict())


def test_data_parallel_prefix_is_dropped() -> None:
    a, b = M.create("resnet20"), M.create("resnet20")
    sd = {"module." + k: v for k, v in to_torch_state_dict(a).items()}
    load_torch_state_dict(b, sd)
    np.testing.assert_array_equal(a.fc.weight.numpy(), b.fc.weight.numpy())


def test_a_checkpoint_of_another_model_is_refused_untouched() -> None:
    target = M.create("se_resnet20")
    before = target.state_dict()
    with pytest.raises(StateDictError) as info:
        load_torch_state_dict(target, to_torch_state_dict(M.create("resnet20", num_classes=100)))
    message = str(info.value)
    assert "fc.weight" in message and "(10, 64)" in message and "(100, 64)" in message
    assert "layer1.0.se.fc1.weight" in message  # missing
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_torch_is_imported_only_by_interop() -> None:
    code = (
        "import sys, minise, minise.nn, minise.models, minise.interop; "
        "import numpy as np; m = minise.models.create('se_resnet20'); "
        "m(minise.Tensor(np.zeros((1, 3, 32, 32), np.float32))); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- the real libraries, where installed
def _randomize_torch_bn(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)


def _same_function(minise_name: str, torch_model: torch.nn.Module) -> None:
    """The library's state dict loads strictly into minise's network of that name, which then computes the same."""
    torch_model = torch_model.double().eval()
    _randomize_torch_bn(torch_model)
    model = M.create(minise_name).double().eval()
    load_torch_state_dict(model, torch_model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64))
    with minise.no_grad():
        y = model(minise.Tensor(x)).numpy()
    with torch.no_grad():
        yt = torch_model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_torchvision_state_dicts_load(name: str) -> None:
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed here")
    torch.manual_seed(0)
    _same_function(name, getattr(torchvision.models, name)(weights=None))


@pytest.mark.parametrize("timm_name, name", [
    ("seresnet50", "se_resnet50"), ("seresnext50_32x4d", "se_resnext50_32x4d"),
])
def test_timm_state_dicts_load(timm_name: str, name: str) -> None:
    timm = pytest.importorskip("timm", reason="timm is not installed here")
    torch.manual_seed(0)
    _same_function(name, timm.create_model(timm_name, pretrained=False))
