"""Step 8: the SE-ResNet module (Fig. 3 of the paper) and what SE costs: summary() of ResNet-50 vs SE-ResNet-50.
=============================================================================================================

The lesson
----------
In an SE-ResNet module the SE block recalibrates the RESIDUAL branch, after its last batch norm
and before the addition with the identity; the ReLU comes after the addition, as in ResNet::

    x ──┬── 1×1 conv ─ BN ─ ReLU ─ 3×3 conv ─ BN ─ ReLU ─ 1×1 conv ─ BN ── SE ──(+)── ReLU ──
        └────────────────────── identity (or 1×1 projection + BN) ──────────┘

``minise.models.summary(model, (3, 224, 224))`` traces a network on an input shape and counts,
layer by layer, the parameters and the multiply-accumulates (MACs; the paper's "GFLOPs" are
MACs). The SE block adds little computation (a global pooling, two tiny FC layers and one
multiply per element) but its FC weights are C²/r-sized, so most extra parameters sit in the last
stage, where C = 2048. The paper's numbers, reproduced below::

    ResNet-50     25,557,032 parameters, 3.86 GMACs
    SE-ResNet-50  28,088,024 parameters, 3.87 GMACs   (+~10% parameters, +0.26% MACs)

(the paper's MACs put each downsampling stride on the bottleneck's first 1×1 convolution, as the
released Caffe models do: ``stride_in_1x1=True``; torchvision's placement on the 3×3 conv costs
4.09 G).

Run::

    python tutorials/08_se_resnet_summary.py [--out DIR] [--quick]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise.functional as F
from minise import Tensor, gradcheck_directional, models
from minise.models import BasicBlock, Bottleneck
from minise.nn import init

args = C.setup(__doc__)
init.manual_seed(0)
rng = np.random.default_rng(0)

# %%
C.section("1. One SE-ResNet module (a bottleneck of ResNet-50's first stage, r = 16)")
block = Bottleneck(64, 64, se_reduction=16).eval()
print(block)
x = Tensor(rng.standard_normal((2, 64, 8, 8)).astype(np.float32))
# the module's forward, written out step by step
identity = block.downsample(x)
out = F.relu(block.bn1(block.conv1(x)))
out = F.relu(block.bn2(block.conv2(out)))
out = block.bn3(block.conv3(out))  # u: the residual branch's output
out = block.se(out)  # SE on the residual branch, before the addition
by_hand = F.relu(out + identity).numpy()
C.claim(np.allclose(block(x).numpy(), by_hand, rtol=1e-5, atol=1e-6),
        "block(x) = ReLU(SE(BN(conv(...))) + identity): SE before the addition, ReLU after")
s_block = models.summary(block, (64, 56, 56))
se_row = next(r for r in s_block.rows if r.name == "se")
se_params = block.se.num_parameters()
print(f"this module at 56×56: {s_block.total_params:,} parameters ({se_params:,} in SE = "
      f"{100 * se_params / s_block.total_params:.1f}%), {s_block.total_macs / 1e6:.1f} M MACs "
      f"({(se_row.subtree_macs) / 1e6:.2f} M in SE = {100 * se_row.subtree_macs / s_block.total_macs:.2f}%)")

C.section("2. The whole module's backward: a directional finite-difference check (float64)")
small = BasicBlock(4, 8, stride=2, se_reduction=2).double()  # a downsampling block with a projection shortcut
xs = Tensor(rng.standard_normal((2, 4, 6, 6)), requires_grad=True)
params = list(small.parameters())
C.claim(gradcheck_directional(lambda a, *ps: small(a), [xs, *params]),
        f"SE-ResNet basic block (stride 2, projection, SE r = 2): gradient of x and all {len(params)} parameter "
        "tensors agrees with finite differences along a random direction")

# %%
C.section("3. summary(): ResNet-50 vs SE-ResNet-50 at 224×224 (stride on the first 1×1, as the paper)")
nets = {name: models.create(name, stride_in_1x1=True) for name in ("resnet50", "se_resnet50")}
sums = {name: models.summary(net, (3, 224, 224)) for name, net in nets.items()}
for name, s in sums.items():
    print(f"\n{name}:")
    print(s.table(depth=1))
    (args.out / f"summary_{name}.txt").write_text(s.table() + "\n")
print(f"\n(full layer-by-layer tables: {args.out}/summary_*.txt)")
base, se = sums["resnet50"], sums["se_resnet50"]
print(f"\n{'':14}{'parameters':>14}{'paper':>14}{'GMACs':>9}{'paper':>7}")
print(f"{'ResNet-50':14}{base.total_params:>14,}{25_557_032:>14,}{base.gmacs:>9.4f}{3.86:>7.2f}")
print(f"{'SE-ResNet-50':14}{se.total_params:>14,}{28_088_024:>14,}{se.gmacs:>9.4f}{3.87:>7.2f}")
C.claim(base.total_params == 25_557_032, "ResNet-50 has 25,557,032 parameters")
C.claim(se.total_params == 28_088_024, "SE-ResNet-50 has 28,088,024 parameters")
C.claim(round(base.gmacs, 2) == 3.86 and round(se.gmacs, 2) == 3.87, "3.86 → 3.87 GMACs, as in the paper")
conv_fc = se.macs_by_type()["Conv2d"] + se.macs_by_type()["Linear"]
C.claim(round(conv_fc / 1e9, 4) == 3.8605, f"SE-ResNet-50's conv + FC MACs are 3.8605 G ({conv_fc:,})")
extra_p = se.total_params / base.total_params - 1
extra_m = se.total_macs / base.total_macs - 1
print(f"SE adds {100 * extra_p:.1f}% parameters and {100 * extra_m:.2f}% MACs")
C.claim(0.09 < extra_p < 0.11 and extra_m < 0.005, "~+10% parameters, well under +0.5% MACs (paper: +0.26% FLOPs)")
torchvision_style = models.summary(models.create("resnet50"), (3, 224, 224))
print(f"stride on the 3×3 conv instead (torchvision, timm): {torchvision_style.gmacs:.4f} GMACs")
C.claim(round(torchvision_style.gmacs, 2) == 4.09, "with the stride on the 3×3 conv ResNet-50 costs 4.09 GMACs")

C.section("4. Where SE's parameters live")
stage_names = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]


def by_stage(s: models.Summary) -> dict[str, tuple[int, int]]:
    rows = {r.name: r for r in s.rows if r.depth == 1}
    return {n: (rows[n].subtree_params, rows[n].subtree_macs) for n in stage_names}


st_base, st_se = by_stage(base), by_stage(se)
added = {n: st_se[n][0] - st_base[n][0] for n in stage_names}
total_added = se.total_params - base.total_params
for n in stage_names:
    print(f"  {n:7s} +{added[n]:>10,} parameters ({100 * added[n] / total_added:5.1f}% of SE's)")
C.claim(added["layer4"] / total_added > 0.5, "most of SE's extra parameters are in the last stage (C = 2048)")
no_last = models.create("se_resnet50", se_stages=(2, 3, 4)).num_parameters()  # paper numbering: conv1 = 1
print(f"without SE in the last stage: {no_last:,} = +{100 * (no_last / base.total_params - 1):.1f}% over ResNet-50")
C.claim(0.03 < no_last / base.total_params - 1 < 0.05,
        "dropping the last stage's SE blocks cuts the extra from ~10% to ~4%")

if not args.quick:
    C.section("5. The other networks of the paper's table")
    # The paper does not say what its GFLOPs count beyond the convolutions and FC layers (residual
    # additions? batch norm?); those extras are ~0.01 G here, so we compare to within 0.02 G.
    # ResNeXt's own models put the stride on the 3×3 convolution, and so do we for it.
    table = {  # name: (params, SE params, GMACs, SE GMACs, stride_in_1x1), from PAPER.md
        "resnet101": (44_549_160, 49_326_872, 7.58, 7.60, True),
        "resnet152": (60_192_808, 66_821_848, 11.30, 11.32, True),
        "resnext50_32x4d": (25_028_904, 27_559_896, 4.24, 4.25, False),
    }
    for name, (p0, p1, g0, g1, in_1x1) in table.items():
        s0 = models.summary(models.create(name, stride_in_1x1=in_1x1), (3, 224, 224))
        s1 = models.summary(models.create("se_" + name, stride_in_1x1=in_1x1), (3, 224, 224))
        print(f"  {name:16s} {s0.total_params:>12,} → {s1.total_params:>12,} parameters;  "
              f"{s0.gmacs:6.3f} → {s1.gmacs:6.3f} GMACs   (paper {g0:.2f} → {g1:.2f})")
        C.claim(s0.total_params == p0 and s1.total_params == p1, f"{name}: {p0:,} → {p1:,} parameters, exactly")
        C.claim(abs(s0.gmacs - g0) < 0.02 and abs(s1.gmacs - g1) < 0.02,
                f"{name}: {g0:.2f} → {g1:.2f} GMACs, to within 0.02 G (the paper's counting rules are not stated)")

C.section("6. The CIFAR networks of steps 9 and 10")
for name in ("resnet20", "se_resnet20"):
    s = models.summary(models.create(name), (3, 32, 32))
    print(f"  {name:12s} {s.total_params:>9,} parameters, {s.total_macs / 1e6:6.2f} M MACs per 32×32 image")
    if name == "resnet20":
        C.claim(round(s.total_params / 1e6, 2) == 0.27, "ResNet-20 has 0.27 M parameters (He et al.)")

# %%
fig, axes = C.plt.subplots(1, 2, figsize=(12, 4.4))
xpos = np.arange(len(stage_names))
for ax, k, unit, scale in ((axes[0], 0, "parameters (millions)", 1e6), (axes[1], 1, "multiply-accumulates (G)", 1e9)):
    ax.bar(xpos - 0.2, [st_base[n][k] / scale for n in stage_names], 0.4, label="ResNet-50")
    ax.bar(xpos + 0.2, [st_se[n][k] / scale for n in stage_names], 0.4, label="SE-ResNet-50")
    ax.set_xticks(xpos)
    ax.set_xticklabels(stage_names)
    ax.set_xlabel("part of the network")
    ax.set_ylabel(unit)
    ax.legend()
axes[0].set_title(f"parameters: {base.total_params / 1e6:.2f} M → {se.total_params / 1e6:.2f} M "
                  f"(+{100 * extra_p:.1f}%)")
axes[1].set_title(f"MACs: {base.gmacs:.2f} G → {se.gmacs:.2f} G (+{100 * extra_m:.2f}%)")
fig.suptitle("Step 8: what SE costs in ResNet-50, stage by stage (224×224 input, stride in the first 1×1)")
C.save(fig, args.out, "cost_by_stage.png")

print("\nStep 8 done: SE sits on the residual branch; +10% parameters (mostly stage 4), +0.35% MACs.")
