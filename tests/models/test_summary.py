"""summary(): shapes, parameters and multiply-accumulates, pinned to the paper's figures."""

from __future__ import annotations

import numpy as np
import pytest

import minise
import minise.models as M
from minise.nn import BatchNorm2d, Conv2d, Linear, Sequential, SqueezeExcitation


def test_resnet50_gflops_as_in_the_paper() -> None:
    # the paper's "GFLOPs" are multiply-adds at 224×224 with the stride in the first 1×1 conv (Caffe)
    plain = M.summary(M.create("resnet50", stride_in_1x1=True), (3, 224, 224))
    se = M.summary(M.create("se_resnet50", stride_in_1x1=True), (3, 224, 224))
    assert round(plain.gmacs, 2) == 3.86
    assert round(se.gmacs, 2) == 3.87
    by_type = se.macs_by_type()
    assert round((by_type["Conv2d"] + by_type["Linear"]) / 1e9, 4) == 3.8605  # conv and FC alone
    # the SE's own work: squeeze (one add) and scale (one multiply) per element of every block output
    elements = 3 * 256 * 56 * 56 + 4 * 512 * 28 * 28 + 6 * 1024 * 14 * 14 + 3 * 2048 * 7 * 7
    assert by_type["SqueezeExcitation"] == 2 * elements
    assert plain.total_params == 25_557_032 and se.total_params == 28_088_024


def test_stride_on_the_3x3_costs_more() -> None:
    assert round(M.summary(M.create("resnet50"), (3, 224, 224)).gmacs, 2) == 4.09


def test_nosqueeze_gflops_as_in_the_paper() -> None:
    # journal, Table 9: NoSqueeze (1×1 convs on the full map instead of FCs on z) costs 4.27 GFLOPs
    model = M.create("se_resnet50", stride_in_1x1=True, se_options=dict(spatial=True))
    assert round(M.summary(model, (3, 224, 224)).gmacs, 2) == 4.27


def test_rows_shapes_and_per_layer_counts() -> None:
    s = M.summary(M.create("se_resnet20"), (3, 32, 32))
    rows = {r.name: r for r in s.rows}
    assert rows["conv1"].output_shape == (1, 16, 32, 32)
    assert rows["conv1"].macs == 32 * 32 * 16 * 3 * 3 * 3 and rows["conv1"].params == 16 * 3 * 3 * 3
    assert rows["layer2.0.conv1"].output_shape == (1, 32, 16, 16)
    assert rows["layer3.2.se"].output_shape == (1, 64, 8, 8)
    assert rows["layer3.2.se.fc1"].output_shape == (1, 4) and rows["layer3.2.se.fc1"].params == 64 * 4 + 4
    assert rows["layer3.2.se"].macs == 2 * 64 * 8 * 8
    assert rows["fc"].output_shape == (1, 10)
    assert s.output_shape == (1, 10) and s.total_params == 272_095
    # own counts add up to the totals; subtree counts of the root are the totals too
    assert sum(r.params for r in s.rows) == s.total_params
    assert s.rows[0].subtree_macs == s.total_macs and s.rows[0].subtree_params == s.total_params


def test_shapes_agree_with_a_real_forward_pass() -> None:
    model = M.create("se_resnet20", shortcut="B")
    recorded = {}
    for name, m in model.named_modules():
        if isinstance(m, (Conv2d, BatchNorm2d, Linear, SqueezeExcitation, Sequential)):
            forward = m.forward

            def spy(x, _forward=forward, _name=name):
                y = _forward(x)
                recorded[_name] = y.shape
                return y
            m.forward = spy
    model.eval()
    with minise.no_grad():
        model(minise.Tensor(np.zeros((2, 3, 20, 20), np.float32)))
    for name, m in model.named_modules():
        if name in recorded:
            del m.forward
    s = M.summary(model, (2, 3, 20, 20))
    traced = {r.name: r.output_shape for r in s.rows}
    assert recorded and all(traced[name] == shape for name, shape in recorded.items())


def test_batch_dimension_scales_macs() -> None:
    one = M.summary(M.create("resnet20"), (3, 32, 32))
    four = M.summary(M.create("resnet20"), (4, 3, 32, 32))
    assert four.total_macs == 4 * one.total_macs


def test_summary_leaves_modes_and_statistics_alone() -> None:
    model = M.create("se_resnet20")
    model.train()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    M.summary(model, (3, 32, 32))
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks for m in model.modules())  # the tracing hook is gone
    x = minise.Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert np.abs(model.conv1(x).numpy()).max() > 0  # convolved again, not zeros handed on


def test_table_text() -> None:
    s = M.summary(M.create("se_resnet20"), (3, 32, 32))
    text = str(s)
    assert "layer3.2.se.fc2" in text and "272,095" in text and "SqueezeExcitation" in text
    folded = s.table(depth=2)
    assert "layer1.0 " in folded and "layer1.0.conv1" not in folded
    # the folded rows still add up to the total
    lines = [line for line in folded.splitlines() if line[:1].isalpha() or line.startswith("  layer")]
    macs = [int(line.split()[-1].replace(",", "")) for line in lines if line.split()[-1].replace(",", "").isdigit()]
    assert sum(macs) == s.total_macs


@pytest.mark.parametrize("name", ["se_inception_cifar", "se_preact_resnet164"])
def test_cifar_networks_summarise(name: str) -> None:
    model = M.create(name)
    s = M.summary(model, (3, 32, 32))
    assert s.output_shape == (1, 10) and s.total_params == model.num_parameters()
    assert s.macs_by_type()["SqueezeExcitation"] > 0
