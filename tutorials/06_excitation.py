"""Step 6: the excitation. A bottleneck gate s = σ(W2 δ(W1 z)) and its reduction ratio r.
======================================================================================

The lesson
----------
From the channel descriptor z ∈ R^C (step 5), the SE block computes one weight per channel::

    s = F_ex(z, W) = σ(W2 δ(W1 z))                                        (Eq. 3)

    W1 ∈ R^{(C/r)×C}   the reduction layer: C numbers -> C/r      ("fc1" in minise)
    δ                  ReLU
    W2 ∈ R^{C×(C/r)}   the expansion layer: C/r numbers -> C      ("fc2")
    σ                  sigmoid: every s_c lies in (0, 1)

Two design choices of the paper are visible here:

- σ, not softmax: the s_c do not compete (they need not sum to 1), so several channels can be
  emphasised at once ("non-mutually-exclusive").
- The bottleneck C -> C/r -> C limits the cost: one SE block has 2·C²/r weights (plus C/r + C
  biases, kept by the released models), so for a whole network with N_s blocks of C_s channels
  in stage s the extra parameters are::

      (2/r) Σ_s N_s · C_s²    (+ Σ_s N_s · (C_s/r + C_s) with biases).

The paper's ablation on r (ImageNet, SE-ResNet-50, journal version) chose r = 16: nearly the
accuracy of r = 4 at a fraction of its extra parameters. Below we build SE-ResNet-50 for each r
with minise, count its parameters and print them next to the paper's table.

Run::

    python tutorials/06_excitation.py [--out DIR]
"""

from __future__ import annotations

import math

import _common as C
import numpy as np

import minise.nn as nn
from minise import Tensor, models
from minise.nn import init

args = C.setup(__doc__)
init.manual_seed(0)
rng = np.random.default_rng(0)

# %%
C.section("1. One excitation, Eq. 3, with C = 64 channels and r = 16")
se = nn.SqueezeExcitation(64, reduction=16)
print(se)
print("W1 = fc1.weight:", se.fc1.weight.shape, "(C/r × C);  W2 = fc2.weight:", se.fc2.weight.shape, "(C × C/r)")
C.claim(se.fc1.weight.shape == (4, 64) and se.fc2.weight.shape == (64, 4), "W1 ∈ R^{(C/r)×C}, W2 ∈ R^{C×(C/r)}")

z = Tensor(np.abs(rng.standard_normal((3, 64))).astype(np.float32))  # 3 images' descriptors (ReLU maps: z ≥ 0)
s = se.excite(z)
W1, b1, W2, b2 = (p.numpy() for p in (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias))
h = np.maximum(z.numpy() @ W1.T + b1, 0)  # δ(W1 z)
s_hand = 1 / (1 + np.exp(-(h @ W2.T + b2)))  # σ(W2 δ(W1 z))
C.claim(np.allclose(s.numpy(), s_hand, rtol=1e-5, atol=1e-6), "se.excite(z) = σ(W2 δ(W1 z)) computed by hand")
s_np = s.numpy()
C.claim(((s_np > 0) & (s_np < 1)).all(), "every s_c lies in (0, 1)")
print("Σ_c s_c per image:", np.round(s_np.sum(axis=1), 2), "(a softmax would give 1.0 each)")
C.claim(not np.allclose(s_np.sum(axis=1), 1.0), "the gates do not compete: Σ_c s_c ≠ 1 (sigmoid, not softmax)")

C.section("2. Parameters of one SE block")
for c in (64, 256, 2048):
    for r in (4, 16):
        blk = nn.SqueezeExcitation(c, reduction=r)
        formula = 2 * c * (c // r) + c // r + c
        print(f"C = {c:5d}, r = {r:2d}: hidden C/r = {c // r:4d}, parameters {blk.num_parameters():>9,} "
              f"= 2·C·(C/r) + C/r + C = {formula:,}")
        C.claim(blk.num_parameters() == formula, f"SE block C={c}, r={r}: 2·C²/r weights + C/r + C biases")

# %%
C.section("3. The reduction ratio r in SE-ResNet-50: minise vs the paper's table")
# the paper's table on r (ImageNet top-1 error %, parameters in millions), journal version, Sec. 6.1
paper = {2: (22.29, 45.7), 4: (22.25, 35.7), 8: (22.26, 30.7), 16: (22.28, 28.1), 32: (22.72, 26.9)}
base = models.create("resnet50").num_parameters()
stages = {"N_s": (3, 4, 6, 3), "C_s": (256, 512, 1024, 2048)}  # blocks and output channels per stage
counts = {}
print(f"ResNet-50 (no SE): {base:,} parameters")
print(f"{'r':>3} {'minise':>12} {'(M)':>7} {'paper (M)':>10} {'formula: extra':>16} {'top-1 err (paper)':>18}")
for r, (err, paper_m) in paper.items():
    n_params = models.create("se_resnet50", reduction=r).num_parameters()
    counts[r] = n_params
    extra = sum(n * (2 * c * (c // r) + c // r + c) for n, c in zip(stages["N_s"], stages["C_s"]))
    print(f"{r:>3} {n_params:>12,} {n_params / 1e6:>7.2f} {paper_m:>10.1f} {extra:>16,} {err:>18.2f}")
    C.claim(n_params - base == extra, f"r = {r}: SE-ResNet-50 − ResNet-50 = Σ_s N_s (2·C_s²/r + C_s/r + C_s)")
    # the paper's column agrees with ours rounded UP to 0.1 M (rounding to nearest would differ for r = 4, 8, 32)
    C.claim(math.ceil(n_params / 1e5) / 10 == paper_m and abs(n_params / 1e6 - paper_m) < 0.1,
            f"r = {r}: {n_params / 1e6:.3f} M, rounded up to 0.1 M, is the paper's {paper_m} M")
C.claim(counts[16] == 28_088_024, "r = 16 gives SE-ResNet-50's 28,088,024 parameters")
no_bias = models.create("se_resnet50", se_options={"bias": False}).num_parameters()
print(f"r = 16 without FC biases (as in the journal's ablation runs): {no_bias:,}")
C.claim(no_bias == 28_071_976, "without biases: 28,071,976 (PAPER.md)")

# %%
rs = list(paper)
fig, ax1 = C.plt.subplots(figsize=(7.5, 4.6))
ax1.plot(rs, [counts[r] / 1e6 for r in rs], "o-", label="parameters, minise (SE-ResNet-50)")
ax1.plot(rs, [paper[r][1] for r in rs], "x", ms=10, color="k", label="parameters, paper's table")
ax1.axhline(base / 1e6, color="gray", ls=":", label=f"ResNet-50 without SE ({base / 1e6:.2f} M)")
ax1.set_xscale("log", base=2)
ax1.set_xticks(rs)
ax1.set_xticklabels([str(r) for r in rs])
ax1.set_xlabel("reduction ratio r (hidden width C/r)")
ax1.set_ylabel("parameters (millions)")
ax2 = ax1.twinx()
ax2.plot(rs, [paper[r][0] for r in rs], "s--", color="tab:red", label="top-1 error, paper (ImageNet)")
ax2.set_ylabel("ImageNet top-1 error (%), from the paper", color="tab:red")
h1, l1 = ax1.get_legend_handles_labels()
h2, l2 = ax2.get_legend_handles_labels()
ax1.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center")
ax1.set_title("Step 6: the reduction ratio r trades parameters for (little) accuracy")
C.save(fig, args.out, "reduction_ratio.png")

# the gate itself: distribution of s at initialisation, sigmoid vs what a softmax would do
z_many = Tensor(np.abs(rng.standard_normal((256, 64))).astype(np.float32))
s_many = se.excite(z_many).numpy()
soft = s_many / s_many.sum(axis=1, keepdims=True)  # the same numbers renormalised to sum to 1
fig, ax = C.plt.subplots(figsize=(7, 4.2))
ax.hist(s_many.ravel(), bins=50, alpha=0.8, label="s = σ(W2 δ(W1 z)) (freshly initialised, r = 16)")
ax.hist(soft.ravel(), bins=50, alpha=0.8, label="the same s renormalised to Σ_c s_c = 1 (softmax-like)")
ax.set_xlabel("excitation s_c (dimensionless gate value)")
ax.set_ylabel("count (256 images × 64 channels)")
ax.set_title("Step 6: independent sigmoid gates vs competing weights")
ax.legend(fontsize=8)
C.save(fig, args.out, "gate_values.png")

print("\nStep 6 done: Eq. 3 is two small FC layers; r = 16 adds ~10% parameters to ResNet-50.")
