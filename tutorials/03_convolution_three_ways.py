"""Step 3: one convolution computed three ways: loops, im2col by hand, and minise's F.conv2d.
==========================================================================================

The lesson
----------
A 2-D convolution (really a cross-correlation, as in every deep-learning library) of an input
x (N, C, H, W) with weights W (O, C, kh, kw), bias b, stride s and zero padding p::

    y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v W[o, c, u, v] · x_pad[n, c, i·s + u, j·s + v]
    H_out = ⌊(H + 2p − kh) / s⌋ + 1

1. Loops: one output number at a time, exactly the formula (``F.conv2d_reference``). Easy to
   read, and N·O·H_out·W_out little dot products of C·kh·kw numbers each: slow in Python.
2. im2col: copy every window the kernel sees into one column of a matrix X_col with C·kh·kw rows
   and N·H_out·W_out columns. Then the whole convolution is ONE matrix product::

       Y = W_mat · X_col,     W_mat = W reshaped to (O, C·kh·kw),

   which BLAS (CPU) or cuBLAS (GPU) runs at close to the machine's peak. The price is memory:
   X_col holds each input pixel up to kh·kw times. Below we build X_col by hand with kh·kw
   slice copies (one per kernel offset (u, v)).
3. ``F.conv2d``: the library's version of 2, which builds X_col through a strided view (no
   Python loop at all) and also has the backward: ∂L/∂W_mat = ∂L/∂Y · X_colᵀ and
   ∂L/∂X_col = W_matᵀ · ∂L/∂Y, followed by col2im (adding each column back onto its pixels).

All three must give the same numbers; their speeds differ by orders of magnitude (timed below,
on this machine, now).

Run::

    python tutorials/03_convolution_three_ways.py [--out DIR] [--quick]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise.functional as F
from minise import Tensor

args = C.setup(__doc__)
rng = np.random.default_rng(0)


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """X_col (C·kh·kw, N·H_out·W_out): row (c, u, v), column (n, i, j) holds x_pad[n, c, i·s + u, j·s + v]."""
    n, c, h, w = x.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            # for every output pixel (i, j) at once: the input value at offset (u, v) of its window
            window = x_pad[:, :, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride]
            cols[:, u, v] = window.transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
    return cols.reshape(c * kh * kw, n * ho * wo), ho, wo


def conv_im2col(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    o, c, kh, kw = w.shape
    cols, ho, wo = im2col(x, kh, kw, stride, padding)
    y = w.reshape(o, -1) @ cols + b[:, None]  # ONE matrix product: (O, C·kh·kw) @ (C·kh·kw, N·Ho·Wo)
    return y.reshape(o, x.shape[0], ho, wo).transpose(1, 0, 2, 3)


# %%
C.section("1. A tiny example: what the column matrix looks like")
x_small = np.arange(1 * 1 * 4 * 4, dtype=np.float64).reshape(1, 1, 4, 4)
cols_small, ho_s, wo_s = im2col(x_small, 3, 3, stride=1, padding=0)
print("input x (1 image, 1 channel, 4×4):\n", x_small[0, 0])
print(f"X_col ({cols_small.shape[0]} rows = C·kh·kw, {cols_small.shape[1]} columns = N·H_out·W_out):\n", cols_small)
C.claim(np.array_equal(cols_small[:, 0], x_small[0, 0, :3, :3].ravel()),
        "column 0 of X_col is the top-left 3×3 window, read row by row")

# %%
C.section("2. The three ways agree (float64)")
n, c, h, o, k, stride, pad = (2, 4, 8, 6, 3, 2, 1) if args.quick else (4, 8, 16, 16, 3, 2, 1)
x = rng.standard_normal((n, c, h, h))
w = rng.standard_normal((o, c, k, k))
b = rng.standard_normal(o)
y_loops = F.conv2d_reference(Tensor(x), Tensor(w), Tensor(b), stride=stride, padding=pad).numpy()
y_cols = conv_im2col(x, w, b, stride, pad)
y_lib = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride=stride, padding=pad).numpy()
print(f"x {x.shape}, W {w.shape}, stride {stride}, padding {pad} -> y {y_lib.shape}")
print(f"max |loops − im2col| = {abs(y_loops - y_cols).max():.2e},  "
      f"max |loops − F.conv2d| = {abs(y_loops - y_lib).max():.2e}")
C.claim(np.allclose(y_loops, y_cols, rtol=1e-12, atol=1e-12), "loops == im2col by hand (to 1e-12)")
C.claim(np.allclose(y_loops, y_lib, rtol=1e-12, atol=1e-12), "loops == F.conv2d (to 1e-12)")

# the backward passes too: same upstream gradient through the loop version and the im2col version
gy = rng.standard_normal(y_lib.shape)
grads = {}
for name, conv in (("loops", F.conv2d_reference), ("F.conv2d", F.conv2d)):
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
    conv(xt, wt, bt, stride=stride, padding=pad).backward(gy)
    grads[name] = (xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy())
for label, g_ref, g_lib in zip(("x", "W", "b"), grads["loops"], grads["F.conv2d"]):
    C.claim(np.allclose(g_ref, g_lib, rtol=1e-10, atol=1e-10), f"∂L/∂{label}: loops backward == F.conv2d backward")

# %%
C.section("3. The speeds (float32, timed now on this machine)")
if args.quick:
    n, c, h, o = 2, 8, 8, 8
else:
    n, c, h, o = 8, 16, 16, 32  # a CIFAR-ResNet-like layer, small batch
x32 = rng.standard_normal((n, c, h, h)).astype(np.float32)
w32 = (rng.standard_normal((o, c, 3, 3)) * 0.1).astype(np.float32)
b32 = np.zeros(o, dtype=np.float32)
X, Wt, Bt = Tensor(x32), Tensor(w32), Tensor(b32)
macs = n * o * h * h * c * 9
print(f"layer: x {x32.shape}, W {w32.shape}, 3×3, stride 1, padding 1: {macs / 1e6:.1f} M multiply-adds")
times = {
    "loops\n(conv2d_reference)": C.best_time(lambda: F.conv2d_reference(X, Wt, Bt, padding=1), repeat=1),
    "im2col by hand\n+ one matmul": C.best_time(lambda: conv_im2col(x32, w32, b32, 1, 1), repeat=5),
    "F.conv2d\n(strided im2col + matmul)": C.best_time(lambda: F.conv2d(X, Wt, Bt, padding=1), repeat=5),
}
for name, t in times.items():
    print(f"  {name.replace(chr(10), ' '):45s} {t * 1e3:9.2f} ms   {macs / t / 1e9:7.3f} G multiply-adds/s")
t_loop, t_lib = times["loops\n(conv2d_reference)"], times["F.conv2d\n(strided im2col + matmul)"]
print(f"F.conv2d is {t_loop / t_lib:.0f}× faster than the loops here.")
cols_bytes = c * 9 * n * h * h * 4
print(f"memory: X_col is {cols_bytes / 1e6:.2f} MB vs the input's {x32.nbytes / 1e6:.2f} MB (9× for a 3×3 kernel)")
C.claim(cols_bytes == 9 * x32.nbytes, "with stride 1 and 'same' padding, X_col holds each pixel kh·kw = 9 times")

fig, axes = C.plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
ax = axes[0]
names = list(times)
bars = ax.bar(range(3), [times[k] * 1e3 for k in names], color=["tab:red", "tab:orange", "tab:green"])
ax.set_yscale("log")
ax.set_xticks(range(3))
ax.set_xticklabels(names, fontsize=8)
ax.set_ylabel("forward time (ms, log scale)")
ax.set_title(f"the same convolution three ways\nx {tuple(x32.shape)}, W {tuple(w32.shape)}, float32", fontsize=10)
for bar, k in zip(bars, names):
    ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() * 1.1, f"{times[k] * 1e3:.2f} ms",
            ha="center", fontsize=8)
ax = axes[1]
cols_show, _, _ = im2col(rng.standard_normal((1, 2, 6, 6)), 3, 3, stride=1, padding=1)
im = ax.imshow(cols_show, aspect="auto", cmap="coolwarm", interpolation="nearest")
ax.set_xlabel("column = output pixel (i, j) of a 6×6 map (36 columns)")
ax.set_ylabel("row = (channel c, offset u, v): 2·3·3 = 18 rows")
ax.set_title("X_col of one 2-channel 6×6 input\n3×3 kernel, padding 1 (zeros from the padding)", fontsize=10)
fig.colorbar(im, ax=ax, label="input value (dimensionless)")
fig.suptitle("Step 3: loops vs im2col vs F.conv2d, timed now on this machine")
C.save(fig, args.out, "conv_three_ways.png")

print("\nStep 3 done: same numbers three ways; one big matrix product beats a million small ones.")
