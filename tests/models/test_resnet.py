"""The paper's ResNets against PyTorch, number for number, and their pinned parameter counts."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch

import minise
import minise.models as M
from minise import optim
from minise.interop.torch import to_torch_state_dict
from minise.models.resnet import BasicBlock, Bottleneck, PadShortcut
from minise.nn import BatchNorm2d, Conv2d, SqueezeExcitation, init

from . import torch_nets as T


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9, what: str = "") -> None:
    """max |a − e| ≤ rtol · max |e|: float64 agreement to ~9 digits, measured on the array's own scale."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-300)
    err = float(np.abs(actual - expected).max())
    assert err <= rtol * scale, f"{what}: max difference {err:.3g} > {rtol:.0e} × {scale:.3g}"


def randomize_bn(model: minise.nn.Module, rng: np.random.Generator) -> None:
    """Non-trivial γ, β and running statistics, so evaluation mode is tested with numbers that matter."""
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            c = m.num_features
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.uniform(-0.3, 0.3, c)
            m.running_mean[...] = rng.uniform(-0.2, 0.2, c)
            m.running_var[...] = rng.uniform(0.5, 2.0, c)


def twin(model: minise.nn.Module, torch_model: torch.nn.Module) -> torch.nn.Module:
    """The PyTorch network with minise's weights (strict: every name and shape must match), in float64."""
    torch_model.double()
    torch_model.load_state_dict(to_torch_state_dict(model), strict=True)
    return torch_model


def compare_forward_backward(model, torch_model, x: np.ndarray, train: bool, seed: int = 0) -> None:
    """Logits, every parameter's gradient, the input's gradient and the BN statistics must agree."""
    model.train(train)
    torch_model.train(train)
    rng = np.random.default_rng(seed)
    xm = minise.Tensor(x, requires_grad=True)
    y = model(xm)
    v = rng.standard_normal(y.shape)  # a random upstream gradient
    y.backward(v)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_model(xt)
    yt.backward(torch.tensor(v))
    assert_close(y.numpy(), T.to_numpy(yt), what="logits")
    assert_close(xm.grad.numpy(), T.to_numpy(xt.grad), what="input gradient")
    torch_params = dict(torch_model.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert sorted(names) == sorted(torch_params)
    for name, p in model.named_parameters():
        g = torch_params[name].grad
        assert p.grad is not None, name
        assert_close(p.grad.numpy(), T.to_numpy(g).reshape(p.shape), what=f"grad of {name}")
    torch_buffers = dict(torch_model.named_buffers())
    for name, b in model.named_buffers():
        assert_close(np.asarray(b, dtype=np.float64), T.to_numpy(torch_buffers[name]).astype(np.float64),
                     what=name)


# ---------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name, count", [
    ("resnet50", 25_557_032), ("se_resnet50", 28_088_024),
    ("resnet101", 44_549_160), ("se_resnet101", 49_326_872),
    ("resnet152", 60_192_808), ("se_resnet152", 66_821_848),
    ("resnext50_32x4d", 25_028_904), ("se_resnext50_32x4d", 27_559_896),
    ("resnet20", 269_722), ("se_resnet20", 272_095),
])
def test_pinned_parameter_counts(name: str, count: int) -> None:
    assert M.create(name).num_parameters() == count


def test_se_resnet50_without_fc_biases() -> None:
    model = M.create("se_resnet50", se_options=dict(bias=False))
    assert model.num_parameters() == 28_071_976


def test_cifar_resnet_depths_and_se_widths() -> None:
    # 6n + 2 layers: conv1 + 2 convs per block + fc
    for depth in (20, 32, 44, 56, 110):
        model = M.create(f"resnet{depth}")
        convs = [m for m in model.modules() if isinstance(m, Conv2d)]
        assert len(convs) + 1 == depth
    se = M.create("se_resnet20")
    hidden = {m.channels: m.hidden for m in se.modules() if isinstance(m, SqueezeExcitation)}
    assert hidden == {16: 1, 32: 2, 64: 4}  # ⌊C/16⌋ for the CIFAR widths


def test_option_b_adds_projections() -> None:
    a, b = M.create("resnet20"), M.create("resnet20", shortcut="B")
    # two projections: 16→32 and 32→64 (1×1 conv without bias + BN γ, β)
    assert b.num_parameters() - a.num_parameters() == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_create_and_names() -> None:
    names = M.names()
    for n in ("resnet20", "se_resnet20", "resnet110", "se_resnet50", "se_resnext50_32x4d", "se_inception_cifar",
              "inception_cifar", "preact_resnet164", "se_preact_resnet164", "resnet18", "se_resnet152"):
        assert n in names
    assert M.create("resnet20", num_classes=100).fc.out_features == 100
    assert M.create("se_resnet20", reduction=4).layer3[0].se.hidden == 16
    with pytest.raises(ValueError, match="unknown model"):
        M.create("resnet21")
    with pytest.raises(ValueError, match="no SE blocks"):
        M.create("resnet20", reduction=8)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        M.CifarResNet(depth=21)


def test_stride_in_1x1_moves_the_stride() -> None:
    a = Bottleneck(64, 32, stride=2)
    b = Bottleneck(64, 32, stride=2, stride_in_1x1=True)
    assert (a.conv1.stride, a.conv2.stride) == ((1, 1), (2, 2))
    assert (b.conv1.stride, b.conv2.stride) == ((2, 2), (1, 1))


def se_layers(model: minise.nn.Module) -> set[str]:
    return {name.split(".")[0] for name, m in model.named_modules() if isinstance(m, SqueezeExcitation)}


@pytest.mark.parametrize("name, stages, layers", [
    ("se_resnet50", (2,), {"layer1"}), ("se_resnet50", (4,), {"layer3"}), ("se_resnet50", (5,), {"layer4"}),
    ("se_resnet50", (2, 3, 4), {"layer1", "layer2", "layer3"}),
    ("se_resnet20", (2,), {"layer1"}), ("se_resnet20", (4,), {"layer3"}),
    ("se_preact_resnet164", (3,), {"layer2"}),
])
def test_se_stages_count_as_the_paper(name: str, stages: tuple[int, ...], layers: set[str]) -> None:
    """Issue 9 fix 4: conv1 is stage 1, so layer1 is stage 2 (Table 1 of the paper)."""
    assert se_layers(M.create(name, se_stages=stages)) == layers


@pytest.mark.parametrize("name, stages", [("se_resnet50", (1,)), ("se_resnet50", (6,)), ("se_resnet20", (5,)),
                                          ("se_resnet20", ())])
def test_se_stages_outside_the_network_are_an_error(name: str, stages: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="stage 1 is conv1"):
        M.create(name, se_stages=stages)


@pytest.mark.parametrize("stage, count, paper", [(2, 25_582_424, "25.6"), (3, 25_690_280, "25.7"),
                                                 (4, 26_349_992, "26.4")])
def test_se_resnet50_on_one_stage_has_the_papers_parameters(stage: int, count: int, paper: str) -> None:
    """The paper's stage ablation: SE on stage 2 / 3 / 4 only gives 25.6 / 25.7 / 26.4 M parameters.

    The paper's figures are the counts in millions rounded to two decimals (25.58, 25.69, 26.35),
    then to one, half up: 26.349992 M becomes 26.35, then 26.4.
    """
    n = M.create("se_resnet50", se_stages=(stage,)).num_parameters()
    assert n == count
    two = Decimal(n / 1e6).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert str(two.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)) == paper


def test_pad_shortcut_is_subsampling_plus_zero_channels() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5))
    y = PadShortcut(4, 8, 2)(minise.Tensor(x)).numpy()
    assert y.shape == (2, 8, 3, 3)
    np.testing.assert_array_equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 6:].any()


# ---------------------------------------------------------------------- against PyTorch
@pytest.mark.parametrize("train", [True, False])
def test_se_resnet20_matches_torch(train: bool) -> None:
    init.manual_seed(0)
    model = M.create("se_resnet20").double()
    randomize_bn(model, np.random.default_rng(1))
    torch_model = twin(model, T.CifarResNet(20, se_reduction=16))
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32))
    compare_forward_backward(model, torch_model, x, train)


def test_se_resnet50_matches_torch() -> None:
    init.manual_seed(0)
    model = M.create("se_resnet50").double()
    randomize_bn(model, np.random.default_rng(1))
    torch_model = twin(model, T.ResNet(T.Bottleneck, (3, 4, 6, 3), se_reduction=16))
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64))
    compare_forward_backward(model, torch_model, x, train=True)


def test_se_resnext50_matches_torch() -> None:
    init.manual_seed(0)
    model = M.create("se_resnext50_32x4d").double()
    randomize_bn(model, np.random.default_rng(1))
    torch_model = twin(model, T.ResNet(T.Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4, se_reduction=16))
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64))
    compare_forward_backward(model, torch_model, x, train=False)


def test_se_resnet18_stride_in_1x1_and_no_bias_match_torch() -> None:
    init.manual_seed(0)
    model = M.create("se_resnet18", se_options=dict(bias=False)).double()
    torch_model = twin(model, T.ResNet(T.BasicBlock, (2, 2, 2, 2), se_reduction=16, se_options=dict(bias=False)))
    x = np.random.default_rng(2).standard_normal((2, 3, 48, 48))
    compare_forward_backward(model, torch_model, x, train=True)


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity", "3x3"])
def test_bottleneck_integration_variants_match_torch(position: str) -> None:
    init.manual_seed(0)
    opts = dict(se_reduction=4, se_position=position, stride_in_1x1=True)
    block = Bottleneck(16, 8, stride=2, **opts).double()
    randomize_bn(block, np.random.default_rng(1))
    torch_block = twin(block, T.Bottleneck(16, 8, stride=2, **opts))
    x = np.random.default_rng(2).standard_normal((3, 16, 7, 7))
    compare_forward_backward(block, torch_block, x, train=True)


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity"])
@pytest.mark.parametrize("se_options", [{}, dict(squeeze="max", gate="tanh", bias=False), dict(spatial=True)])
def test_basic_block_variants_match_torch(position: str, se_options: dict) -> None:
    init.manual_seed(0)
    opts = dict(shortcut="A", se_reduction=4, se_position=position, se_options=se_options)
    block = BasicBlock(8, 16, stride=2, **opts).double()
    torch_block = twin(block, T.BasicBlock(8, 16, stride=2, **opts))
    x = np.random.default_rng(2).standard_normal((3, 8, 6, 6))
    compare_forward_backward(block, torch_block, x, train=True)


def test_basic_block_refuses_se_3x3() -> None:
    with pytest.raises(ValueError, match="se_position"):
        BasicBlock(8, 8, se_reduction=4, se_position="3x3")


def test_sgd_steps_leave_the_same_weights() -> None:
    init.manual_seed(0)
    model = M.create("se_resnet20").double()
    torch_model = twin(model, T.CifarResNet(20, se_reduction=16))
    model.train()
    torch_model.train()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = rng.standard_normal((4, 3, 16, 16))
        target = rng.integers(0, 10, 4)
        opt.zero_grad()
        minise.functional.cross_entropy(model(minise.Tensor(x)), minise.Tensor(target)).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(torch_model(torch.tensor(x)), torch.tensor(target)).backward()
        topt.step()
    torch_state = torch_model.state_dict()
    changed = 0
    for name, value in model.state_dict().items():
        expected = T.to_numpy(torch_state[name]).reshape(value.shape)
        assert_close(np.asarray(value, dtype=np.float64), expected.astype(np.float64), what=name)
        changed += name.endswith("weight")
    assert changed > 0


# ---------------------------------------------------------------------- finite differences
def test_gradcheck_se_bottleneck() -> None:
    init.manual_seed(0)
    block = Bottleneck(16, 4, stride=2, se_reduction=4, shortcut="B").double()
    randomize_bn(block, np.random.default_rng(1))
    block.train()
    x = minise.Tensor(np.random.default_rng(2).standard_normal((2, 16, 5, 5)), requires_grad=True)
    params = list(block.parameters())
    assert minise.gradcheck_directional(lambda x, *p: block(x), [x, *params])


def test_gradcheck_se_basic_block_option_a() -> None:
    init.manual_seed(0)
    block = BasicBlock(4, 8, stride=2, shortcut="A", se_reduction=2).double()
    block.train()
    x = minise.Tensor(np.random.default_rng(2).standard_normal((2, 4, 6, 6)), requires_grad=True)
    assert minise.gradcheck_directional(lambda x, *p: block(x), [x, *block.parameters()])


def test_gradcheck_catches_a_broken_block() -> None:
    """The directional check can fail: detach the SE's excitation and it must."""
    init.manual_seed(0)
    block = BasicBlock(4, 4, se_reduction=2).double()
    block.train()
    se = block.se
    honest_excite = se.excite
    se.excite = lambda z: minise.Tensor(honest_excite(z).data)  # s no longer passes gradients back
    x = minise.Tensor(np.random.default_rng(2).standard_normal((2, 4, 5, 5)), requires_grad=True)
    with pytest.raises(minise.GradcheckError):
        minise.gradcheck_directional(lambda x, *p: block(x), [x, *block.parameters()])


# ---------------------------------------------------------------------- other networks run
@pytest.mark.parametrize("make", [
    lambda: M.create("se_inception_cifar"),
    lambda: M.PreActResNet(depth=20, bottleneck=True, se_reduction=16),  # ResNet-164's blocks, 2 per stage
    lambda: M.PreActResNet(depth=14, bottleneck=False, se_reduction=16),  # ResNet-110's blocks, 2 per stage
], ids=["se_inception_cifar", "se_preact_bottleneck", "se_preact_basic"])
def test_cifar_networks_train_step(make) -> None:
    model = make()
    x = minise.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    out = model(x)
    assert out.shape == (2, 10) and out.dtype == np.float32
    minise.functional.cross_entropy(out, minise.Tensor(np.array([1, 7]))).backward()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize("name", ["preact_resnet110", "se_preact_resnet164"])
def test_preact_first_activation_comes_before_the_first_split(name: str) -> None:
    """Issue 9 fix 2: He et al. (2016b, appendix) apply BN → ReLU right after conv1, before the first
    unit splits into its two paths, so the first unit's shortcut carries the activated map."""
    init.manual_seed(0)
    model = M.create(name).double()
    randomize_bn(model, np.random.default_rng(3))
    model.eval()
    first = model.layer1[0]
    x = minise.Tensor(np.random.default_rng(4).standard_normal((2, 3, 8, 8)))
    a = np.maximum(model.bn1(model.conv1(x)).numpy(), 0)  # the stem: conv1 → BN → ReLU
    assert first.bn1 is None  # the first unit has no BN → ReLU of its own
    shortcut = a if first.downsample is None else first.downsample(minise.Tensor(a)).numpy()
    residual = first.residual(minise.Tensor(a))
    if first.se is not None:
        residual = first.se(residual)
    np.testing.assert_allclose(first(minise.Tensor(a)).numpy(), residual.numpy() + shortcut, rtol=1e-12)
    # and the whole network is that stem followed by the units
    h = model.layer3(model.layer2(model.layer1(minise.Tensor(a))))
    expected = model.fc(model.avgpool(minise.functional.relu(model.bn(h)))).numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-12)


def test_other_preact_units_activate_their_own_input() -> None:
    model = M.create("preact_resnet110")
    units = [u for layer in (model.layer1, model.layer2, model.layer3) for u in layer]
    assert units[0].bn1 is None and all(u.bn1 is not None for u in units[1:])


@pytest.mark.parametrize("name", ["se_resnet20", "se_resnet50", "se_inception_cifar"])
def test_nosqueeze_starts_from_the_same_init_as_the_standard_block(name: str) -> None:
    """Issue 9 fix 1: NoSqueeze's 1×1 convs are drawn as the standard block's FCs (same scheme, same seed:
    the same numbers), not re-drawn with He init, so the ablation compares the operators only."""
    init.manual_seed(7)
    standard = M.create(name)
    init.manual_seed(7)
    nosqueeze = M.create(name, se_options=dict(spatial=True))
    spatial = dict(nosqueeze.named_parameters())
    se_names = [n for n, _ in standard.named_parameters() if ".se." in n]
    assert se_names
    for n, p in standard.named_parameters():
        np.testing.assert_array_equal(spatial[n].numpy().reshape(p.shape), p.numpy(), err_msg=n)


def test_se_inception_has_se_on_every_module() -> None:
    """Issue 9 fix 6: SE on every Inception module and, as the released SE-BN-Inception, on the
    downsampling (reduction) modules too."""
    model = M.create("se_inception_cifar")
    modules = [m for m in model.modules() if isinstance(m, (M.InceptionModule, M.DownsampleModule))]
    assert len(modules) == 10
    assert all(isinstance(m.se, SqueezeExcitation) and m.se.channels == m.out_channels for m in modules)
    assert all(m.se is None for m in M.create("inception_cifar").modules()
               if isinstance(m, (M.InceptionModule, M.DownsampleModule)))
    # two downsample modules of 160 and 240 channels, r = 16: W1, W2 and their biases
    extra = sum(2 * c * (c // 16) + c // 16 + c for c in (160, 240))
    inception_se = sum(m.se.num_parameters() for m in modules if isinstance(m, M.InceptionModule))
    assert M.create("se_inception_cifar").num_parameters() == (M.create("inception_cifar").num_parameters()
                                                             + inception_se + extra)


def test_preact_resnet164_parameters() -> None:
    # He et al. (2016b) report 1.7M parameters for pre-activation ResNet-164 on CIFAR-10
    assert M.create("preact_resnet164").num_parameters() == 1_703_258


def test_model_runs_on_the_simulated_gpu(simulated_gpu) -> None:
    model = M.create("se_resnet20").to("cuda")
    x = minise.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)).to("cuda")
    y = model(x)
    assert y.device == "cuda"
    minise.functional.cross_entropy(y, minise.Tensor(np.array([1, 2])).to("cuda")).backward()
    assert all(p.grad.device == "cuda" for p in model.parameters())
