"""Step 4: pooling and fully connected layers, forward and backward.
=================================================================

The lesson
----------
Pooling slides a kh × kw window with stride s over each channel separately::

    max:      y[n, c, i, j] = max_{u,v}          x_pad[n, c, i·s + u, j·s + v]
    average:  y[n, c, i, j] = 1/(kh·kw) Σ_{u,v}  x_pad[n, c, i·s + u, j·s + v]

Backward of max pooling sends each window's whole gradient ∂L/∂y to the ONE element that won
the max (on a tie: the first maximum in row-major order, as PyTorch does); every other element
of the window gets 0. Average pooling shares ∂L/∂y equally, 1/(kh·kw) to each element. When
windows overlap (stride < kernel, e.g. ResNet's 3×3 stride-2 stem pool), a pixel that belongs
to several windows receives the SUM of their gradients.

Global average pooling takes the window to be the whole H × W map: one number per channel::

    z_c = 1/(H·W) Σ_i Σ_j u_c(i, j)      (the SE block's squeeze, Eq. 2; step 5 is about it)

A fully connected layer (``F.linear``) maps a vector to a vector, y = x Wᵀ + b; the SE block's
W1 and W2 (Eq. 3) are two of them. On a 1 × 1 map a fully connected layer IS a 1 × 1
convolution, which is how the released Caffe SE models implement W1 and W2.

Run::

    python tutorials/04_pooling_and_fc.py [--out DIR]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise.functional as F
from minise import Tensor, gradcheck

args = C.setup(__doc__)
rng = np.random.default_rng(0)


def pool_loops(x: np.ndarray, k: int, s: int, kind: str) -> np.ndarray:
    """Pooling written as loops over output pixels (no padding), to compare with the library."""
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    y = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = x[:, :, i * s:i * s + k, j * s:j * s + k]
            y[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return y


# %%
C.section("1. Max and average pooling, 2×2 stride 2, on a 4×4 map")
x4 = np.array([[1, 3, 2, 0], [4, 2, 1, 1], [0, 1, 5, 6], [2, 2, 7, 1]], dtype=np.float64).reshape(1, 1, 4, 4)
print("x =\n", x4[0, 0])
for kind, fn in (("max", F.max_pool2d), ("avg", F.avg_pool2d)):
    y = fn(Tensor(x4), 2, 2).numpy()
    print(f"{kind}_pool2d(x, 2, 2) =\n", y[0, 0])
    C.claim(np.array_equal(y, pool_loops(x4, 2, 2, kind)), f"{kind} pooling equals the loop version")

C.section("2. Backward of max pooling routes the gradient to the winner")
xt = Tensor(x4, requires_grad=True)
F.max_pool2d(xt, 2, 2).backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]))
print("upstream ∂L/∂y = [[10, 20], [30, 40]];  ∂L/∂x =\n", xt.grad.numpy()[0, 0])
expected = np.zeros((4, 4))
expected[1, 0], expected[0, 2], expected[3, 0], expected[3, 2] = 10, 20, 30, 40  # (3, 0): first of a 2-2 tie
C.claim(np.array_equal(xt.grad.numpy()[0, 0], expected), "each window's gradient lands on its maximum only")

tie = np.array([[5.0, 5.0], [1.0, 5.0]]).reshape(1, 1, 2, 2)
tt = Tensor(tie, requires_grad=True)
F.max_pool2d(tt, 2).backward(np.ones((1, 1, 1, 1)))
print("a window with a three-way tie [[5, 5], [1, 5]] -> ∂L/∂x =", tt.grad.numpy()[0, 0].tolist())
C.claim(tt.grad.numpy()[0, 0, 0, 0] == 1 and tt.grad.numpy().sum() == 1,
        "on a tie the whole gradient goes to the first maximum (row-major), as in PyTorch")

C.section("3. Overlapping windows (3×3, stride 2) add up")
x5 = rng.permutation(25).astype(np.float64).reshape(1, 1, 5, 5)
x5[0, 0, 2, 2] = 100.0  # the centre pixel is the max of all four overlapping windows
t5 = Tensor(x5, requires_grad=True)
y5 = F.max_pool2d(t5, 3, 2)
y5.backward(np.ones(y5.shape))
print("x (centre = 100) =\n", x5[0, 0].astype(int), "\n∂L/∂x with ∂L/∂y = 1 everywhere =\n", t5.grad.numpy()[0, 0])
C.claim(t5.grad.numpy()[0, 0, 2, 2] == 4.0, "the centre pixel wins 4 overlapping windows and collects 4 × 1")

C.section("4. Average pooling shares the gradient; padding zeros count in the divisor")
ta = Tensor(x4, requires_grad=True)
F.avg_pool2d(ta, 2, 2).backward(np.full((1, 1, 2, 2), 4.0))
C.claim(np.array_equal(ta.grad.numpy(), np.ones_like(x4)), "∂L/∂y = 4 is shared as 4/(2·2) = 1 to every pixel")
corner = F.avg_pool2d(Tensor(np.ones((1, 1, 4, 4))), 3, 1, padding=1).numpy()[0, 0, 0, 0]
print(f"avg_pool2d(ones, 3, stride 1, padding 1) at the corner = {corner:.4f} = 4/9 (5 of 9 values are padding zeros)")
C.claim(np.isclose(corner, 4 / 9), "zero padding is counted (count_include_pad, PyTorch's default)")

C.section("5. Global average pooling = average pooling over the whole map = mean over H, W")
u = rng.standard_normal((2, 3, 6, 6))
z = F.global_avg_pool2d(Tensor(u)).numpy()
C.claim(np.allclose(z, F.avg_pool2d(Tensor(u), 6).numpy().reshape(2, 3)),
        "global_avg_pool2d == avg_pool2d(kernel = 6×6)")
C.claim(np.allclose(z, u.mean(axis=(2, 3))), "z_c = 1/(H·W) Σ_i Σ_j u_c(i, j) (Eq. 2)")

C.section("6. Fully connected = matrix product = 1×1 convolution on a 1×1 map")
xv = rng.standard_normal((4, 16))  # 4 vectors of 16 features (e.g. 4 squeezed descriptors z)
W1 = rng.standard_normal((4, 16))  # 16 -> 4 channels: the reduction layer of an SE block with r = 4
b1 = rng.standard_normal(4)
y_fc = F.linear(Tensor(xv), Tensor(W1), Tensor(b1)).numpy()
C.claim(np.allclose(y_fc, xv @ W1.T + b1), "F.linear(x, W, b) = x Wᵀ + b")
y_1x1 = F.conv2d(Tensor(xv.reshape(4, 16, 1, 1)), Tensor(W1.reshape(4, 16, 1, 1)), Tensor(b1)).numpy()
C.claim(np.allclose(y_fc, y_1x1.reshape(4, 4)), "the same numbers from a 1×1 convolution on a 1×1 map (Caffe's SE FCs)")

C.section("7. Every backward here passes the finite-difference check")
xg = Tensor(rng.permutation(49).reshape(1, 1, 7, 7) / 7.0, requires_grad=True)  # distinct values: no ties
checks = {
    "max_pool2d 3×3 stride 2 (overlapping)": (lambda a: F.max_pool2d(a, 3, 2), [xg]),
    "max_pool2d 3×3 stride 2 padding 1": (lambda a: F.max_pool2d(a, 3, 2, padding=1), [xg]),
    "avg_pool2d 3×3 stride 2 padding 1": (lambda a: F.avg_pool2d(a, 3, 2, padding=1), [xg]),
    "global_avg_pool2d": (F.global_avg_pool2d, [xg]),
    "linear": (F.linear, [Tensor(xv, requires_grad=True), Tensor(W1, requires_grad=True),
                          Tensor(b1, requires_grad=True)]),
}
for name, (fn, inputs) in checks.items():
    C.claim(gradcheck(fn, inputs), f"gradcheck: {name}")

# %%
img = np.round(rng.uniform(0, 9, (1, 1, 8, 8)), 1)
ti = Tensor(img, requires_grad=True)
ym = F.max_pool2d(ti, 3, 2, padding=1)
ym.backward(np.ones(ym.shape))
g_max = ti.grad.numpy()[0, 0]
ti2 = Tensor(img, requires_grad=True)
ya = F.avg_pool2d(ti2, 3, 2, padding=1)
ya.backward(np.ones(ya.shape))
g_avg = ti2.grad.numpy()[0, 0]
fig, axes = C.plt.subplots(2, 3, figsize=(13, 8.4))
panels = [
    (img[0, 0], "input x (8×8)", "value (dimensionless)"),
    (ym.numpy()[0, 0], "y = max_pool2d(x, 3, stride 2, padding 1): 4×4", "value (dimensionless)"),
    (ya.numpy()[0, 0], "y = avg_pool2d(x, 3, stride 2, padding 1): 4×4", "value (dimensionless)"),
    (g_avg * 9, "how many 3×3 windows cover each pixel", "windows (count)"),
    (g_max, "max pool: ∂L/∂x for ∂L/∂y = 1 (routed to winners)", "gradient (per unit ∂L/∂y)"),
    (g_avg, "avg pool: ∂L/∂x for ∂L/∂y = 1 (count / 9)", "gradient (per unit ∂L/∂y)"),
]
for ax, (data, title, label) in zip(axes.ravel(), panels):
    im = ax.imshow(data, cmap="viridis")
    ax.set_xticks(range(data.shape[1]))
    ax.set_yticks(range(data.shape[0]))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column j (pixels)")
    ax.set_ylabel("row i (pixels)")
    fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    lo, hi = float(data.min()), float(data.max())
    for (r, c_), v in np.ndenumerate(data):
        ax.text(c_, r, f"{v:.2g}", ha="center", va="center", fontsize=7,
                color="k" if v > lo + 0.6 * (hi - lo) else "w")
fig.suptitle("Step 4: pooling forward, and where the gradient goes back (overlapping 3×3 windows, stride 2)")
C.save(fig, args.out, "pooling_forward_backward.png")

print("\nStep 4 done: max pooling routes, average pooling shares, overlapping windows add; FC = 1×1 conv.")
