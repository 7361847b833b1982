"""Step 7: scale, the whole SE block, and its backward pass derived by hand.
=========================================================================

The lesson
----------
The last step of the SE block multiplies each channel by its gate::

    x̃_c = F_scale(u_c, s_c) = s_c · u_c                                     (Eq. 4)

so the whole block (Fig. 1 of the paper) is, for one image with u ∈ R^{C×H×W}::

    z = (1/HW) Σ_ij u(:, i, j)     squeeze        (Eq. 2)
    h = W1 z + b1                  reduce to C/r
    a = δ(h)                       ReLU
    g = W2 a + b2                  expand back to C
    s = σ(g)                       gate           (Eq. 3)
    x̃ = s ⊙ u                      scale          (Eq. 4)

Backward, given G = ∂L/∂x̃ (same shape as u), applying the chain rule line by line from the end::

    ∂L/∂s_c  = Σ_ij G_c(i, j) · u_c(i, j)
    ∂L/∂g    = ∂L/∂s ⊙ s ⊙ (1 − s)
    ∂L/∂W2   = ∂L/∂g aᵀ,    ∂L/∂b2 = ∂L/∂g,    ∂L/∂a = W2ᵀ ∂L/∂g
    ∂L/∂h    = ∂L/∂a ⊙ [h > 0]
    ∂L/∂W1   = ∂L/∂h zᵀ,    ∂L/∂b1 = ∂L/∂h,    ∂L/∂z = W1ᵀ ∂L/∂h
    ∂L/∂u_c(i, j) = s_c · G_c(i, j)  +  ∂L/∂z_c / (H·W)

u reaches x̃ along TWO paths, directly through the scale and through the squeeze-excitation
that computed s, so its gradient is the sum of two terms (as in step 1, section 5). For a batch,
the weight gradients are summed over the images.

We compute these by hand with NumPy, then compare with minise's autograd through
``nn.SqueezeExcitation`` and with central finite differences, in float64.

Run::

    python tutorials/07_se_block.py [--out DIR]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise
import minise.functional as F
import minise.nn as nn
from minise import Tensor, gradcheck
from minise.nn import init

args = C.setup(__doc__)
init.manual_seed(0)
rng = np.random.default_rng(0)

N, Cc, H, W, r = 2, 8, 5, 5, 4
se = nn.SqueezeExcitation(Cc, reduction=r).double()
# Move the weights away from the initial tiny values so every term matters (and no h sits at the ReLU kink)
for p in se.parameters():
    p.data[...] = rng.standard_normal(p.shape) * 0.7
u_np = rng.standard_normal((N, Cc, H, W))
G = rng.standard_normal((N, Cc, H, W))  # a random upstream gradient ∂L/∂x̃ (L = Σ G ⊙ x̃)

# %%
C.section("1. Forward three ways: module, functional ops, NumPy by hand")
u = Tensor(u_np, requires_grad=True)
x_mod = se(u)
z_f = F.global_avg_pool2d(u)
s_f = F.sigmoid(F.linear(F.relu(F.linear(z_f, se.fc1.weight, se.fc1.bias)), se.fc2.weight, se.fc2.bias))
x_fun = F.scale(u, s_f)
W1, b1, W2, b2 = (p.numpy() for p in (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias))
z = u_np.mean(axis=(2, 3))  # (N, C)            Eq. 2
h = z @ W1.T + b1  # (N, C/r)
a = np.maximum(h, 0)
g = a @ W2.T + b2  # (N, C)
s = 1 / (1 + np.exp(-g))  # Eq. 3
x_hand = s[:, :, None, None] * u_np  # Eq. 4
print(f"u {u_np.shape}, W1 {W1.shape}, W2 {W2.shape}, s {s.shape}; s[0] =", np.round(s[0], 3))
C.claim(np.allclose(x_mod.numpy(), x_hand, rtol=1e-12) and np.allclose(x_fun.numpy(), x_hand, rtol=1e-12),
        "nn.SqueezeExcitation == F.scale(u, σ(W2 δ(W1 z))) == NumPy by hand")
C.claim(np.abs(h).min() > 1e-3, "no hidden unit sits at the ReLU kink (finite differences would be unreliable there)")

# %%
C.section("2. Backward by hand")
dS = (G * u_np).sum(axis=(2, 3))  # ∂L/∂s       (N, C)
dg = dS * s * (1 - s)  # ∂L/∂g
dW2 = dg.T @ a  # (C, C/r), summed over the batch
db2 = dg.sum(axis=0)
da = dg @ W2  # ∂L/∂a (N, C/r)
dh = da * (h > 0)
dW1 = dh.T @ z  # (C/r, C)
db1 = dh.sum(axis=0)
dz = dh @ W1  # ∂L/∂z (N, C)
du_scale = s[:, :, None, None] * G  # path 1: directly through x̃ = s ⊙ u
du_squeeze = np.broadcast_to((dz / (H * W))[:, :, None, None], u_np.shape)  # path 2: through z, then s
du = du_scale + du_squeeze
hand = {"u": du, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
print("∂L/∂s[0] =", np.round(dS[0], 3))
print("∂L/∂z[0] =", np.round(dz[0], 3))

# %%
C.section("3. Backward by autograd")
se.zero_grad()
u.grad = None
x_mod.backward(G)
auto = {"u": u.grad.numpy(), "W1": se.fc1.weight.grad.numpy(), "b1": se.fc1.bias.grad.numpy(),
        "W2": se.fc2.weight.grad.numpy(), "b2": se.fc2.bias.grad.numpy()}
print("x̃.backward(G) filled u.grad", u.grad.shape, "and the .grad of fc1/fc2's weight and bias")

# %%
C.section("4. Backward by central finite differences (float64, every element)")
params = {"W1": se.fc1.weight, "b1": se.fc1.bias, "W2": se.fc2.weight, "b2": se.fc2.bias}
leaves = {"u": u, **params}


def loss() -> float:
    with minise.no_grad():
        return float((se(u).data * G).sum())


numeric = {}
eps = 1e-6
for name, t in leaves.items():
    gnum = np.zeros(t.shape)
    for idx in np.ndindex(*t.shape):
        old = t.data[idx]
        t.data[idx] = old + eps
        plus = loss()
        t.data[idx] = old - eps
        minus = loss()
        t.data[idx] = old
        gnum[idx] = (plus - minus) / (2 * eps)
    numeric[name] = gnum

errors = {}
print(f"{'':4} {'shape':>12} {'|hand − autograd|':>19} {'|hand − numeric|':>18} {'max |grad|':>11}")
for name in leaves:
    e_auto = float(np.abs(hand[name] - auto[name]).max())
    e_num = float(np.abs(hand[name] - numeric[name]).max())
    errors[name] = (e_auto, e_num)
    print(f"{name:4} {str(hand[name].shape):>12} {e_auto:>19.2e} {e_num:>18.2e} {np.abs(hand[name]).max():>11.3f}")
    C.claim(e_auto < 1e-12, f"∂L/∂{name}: hand-derived == autograd (to 1e-12)")
    C.claim(e_num < 1e-7, f"∂L/∂{name}: hand-derived == finite differences (to 1e-7)")
C.claim(gradcheck(lambda x, *ps: se(x), [u, *params.values()]), "minise.gradcheck agrees too (every element)")

C.section("5. The two paths into ∂L/∂u")
share = np.abs(du_squeeze).sum() / (np.abs(du_scale).sum() + np.abs(du_squeeze).sum())
print(f"|squeeze path| / (|scale path| + |squeeze path|) = {share:.3f} of the gradient's total magnitude")
C.claim(not np.allclose(du, du_scale, atol=1e-6), "dropping the squeeze path would give a WRONG ∂L/∂u")

# %%
fig, axes = C.plt.subplots(1, 2, figsize=(12, 4.3))
ax = axes[0]
idx = np.arange(Cc)
ax.bar(idx - 0.2, np.abs(du_scale[0]).mean(axis=(1, 2)), 0.4, label="scale path: s_c · G_c(i, j)")
ax.bar(idx + 0.2, np.abs(du_squeeze[0]).mean(axis=(1, 2)), 0.4, label="squeeze path: (∂L/∂z_c) / (H·W)")
ax.set_xlabel("channel c (image 0)")
ax.set_yscale("log")
ax.set_ylabel("mean |∂L/∂u_c(i, j)| over positions (log scale)")
ax.set_title("∂L/∂u is the sum of two paths")
ax.set_ylim(top=ax.get_ylim()[1] * 20)  # room for the legend
ax.legend(fontsize=8, loc="upper left")
ax = axes[1]
names = list(leaves)
ax.bar(np.arange(5) - 0.2, [max(errors[n][0], 1e-18) for n in names], 0.4, label="|hand − autograd|")
ax.bar(np.arange(5) + 0.2, [errors[n][1] for n in names], 0.4, label="|hand − finite differences|")
ax.set_yscale("log")
ax.set_xticks(range(5))
ax.set_xticklabels([f"∂L/∂{n}" for n in names])
ax.set_ylabel("max absolute difference (log scale)")
ax.set_title("Hand-derived backward vs autograd vs finite differences (float64)")
ax.set_ylim(top=ax.get_ylim()[1] * 1e3)
ax.legend(fontsize=8, loc="upper left", ncol=2)
fig.suptitle(f"Step 7: the SE block's backward, C = {Cc}, r = {r}, H = W = {H}, batch {N}")
C.save(fig, args.out, "se_backward.png")

print("\nStep 7 done: the SE block's backward is six chain-rule lines; u gets gradient along two paths.")
