"""Step 1: tensors and automatic differentiation, on the smallest graph that looks like an SE gate.
================================================================================================

The lesson
----------
A minise ``Tensor`` is an array (``.data``: NumPy here, CuPy on a GPU) that remembers which
``Function`` made it. Calling ``loss.backward()`` walks those Functions from the loss back to the
inputs, and each one applies the chain rule for its own piece::

    ∂L/∂input = ∂L/∂output · ∂output/∂input

We build one gate of the SE excitation (Eq. 3 of the paper, with a single output channel)::

    y = w · z + b            (a fully connected layer with one output)
    s = σ(y) = 1/(1 + e^−y)  (the sigmoid gate; s ∈ (0, 1))
    L = (s − t)²             (a squared error against a target t)

and derive its gradient by hand, going backwards::

    ∂L/∂s = 2 (s − t)
    ∂L/∂y = ∂L/∂s · s (1 − s)            (σ'(y) = σ(y)(1 − σ(y)))
    ∂L/∂w = ∂L/∂y · z,   ∂L/∂b = ∂L/∂y,   ∂L/∂z = ∂L/∂y · w

Then we let minise compute the same numbers and compare them. Finally: a tensor used twice
(as the input of a residual block is: once in the branch, once in the identity) receives the
SUM of the gradients from both uses, which is why backward adds, never overwrites.

Run::

    python tutorials/01_tensors_autograd.py [--out DIR]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise
import minise.functional as F
from minise import Tensor

args = C.setup(__doc__)

# %%
C.section("1. A tensor is an array plus a place in a graph")
z = Tensor(np.array([0.5, -1.0, 2.0, 0.25]), requires_grad=True)  # the channel descriptor z (4 channels)
w = Tensor(np.array([0.3, 0.8, -0.4, 1.0]), requires_grad=True)  # one row of W1
b = Tensor(np.array(0.1), requires_grad=True)
t = 0.9  # the target value of the gate

print("z =", z)
print("z.data is a", type(z.data).__name__, "of dtype", z.dtype, "on device", repr(z.device))
C.claim(z.is_leaf and z.grad is None, "a tensor we create is a leaf of the graph, with no gradient yet")

# %%
C.section("2. Forward: every operation records the Function that made its output")
y = (w * z).sum() + b
s = F.sigmoid(y)
L = (s - t) ** 2
print(f"y = w·z + b = {y.item():.6f}")
print(f"s = σ(y)     = {s.item():.6f}")
print(f"L = (s − t)² = {L.item():.6f}")


def show_graph(root: Tensor) -> list[str]:
    """Print the Functions between ``root`` and the leaves, loss first (the order backward visits them)."""
    names, seen, stack = [], set(), [(root.creator, 0)]
    while stack:
        fn, depth = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        names.append(type(fn).__name__)
        print("  " + "  " * depth + "<-", type(fn).__name__)
        for x in reversed(fn.inputs):
            if x is not None and x.creator is not None:
                stack.append((x.creator, depth + 1))
    return names


print("the graph, from L back to the leaves:")
graph = show_graph(L)
C.claim(graph == ["Pow", "Sub", "Sigmoid", "Add", "Sum", "Mul"], "L was made by Pow ← Sub ← Sigmoid ← Add ← Sum ← Mul")

# %%
C.section("3. Backward by hand (the chain rule, one factor per Function)")
z_, w_, b_ = z.numpy(), w.numpy(), float(b.item())
y_ = float(w_ @ z_ + b_)
s_ = 1.0 / (1.0 + np.exp(-y_))
dL_ds = 2.0 * (s_ - t)
dL_dy = dL_ds * s_ * (1.0 - s_)
hand = {"w": dL_dy * z_, "b": np.array(dL_dy), "z": dL_dy * w_}
print(f"∂L/∂s = 2(s − t)       = {dL_ds:.6f}")
print(f"∂L/∂y = ∂L/∂s · s(1−s) = {dL_dy:.6f}")
for name, g in hand.items():
    print(f"∂L/∂{name} (by hand)  = {np.array2string(np.atleast_1d(g), precision=6)}")

# %%
C.section("4. Backward by minise: L.backward() fills .grad of every leaf")
L.backward()
for name, tensor in (("w", w), ("b", b), ("z", z)):
    print(f"∂L/∂{name} (autograd) = {np.array2string(np.atleast_1d(tensor.grad.numpy()), precision=6)}")
    C.claim(np.allclose(tensor.grad.numpy(), hand[name], rtol=1e-12, atol=1e-15),
            f"autograd's ∂L/∂{name} equals the hand-derived one (to 1e-12)")

# %%
C.section("5. A tensor used twice gets the sum of both gradients")
# r = x·x + x  (think: branch(x) + identity(x));  dr/dx = 2x + 1, the 2x from the branch, the 1 from the identity
x = Tensor(np.array([1.5, -2.0, 0.5]), requires_grad=True)
r = (x * x + x).sum()
r.backward()
print("x =", x.numpy(), " d/dx Σ(x·x + x) =", x.grad.numpy(), " expected 2x + 1 =", 2 * x.numpy() + 1)
C.claim(np.allclose(x.grad.numpy(), 2 * x.numpy() + 1), "gradients of the two uses of x are added (2x + 1)")

# calling backward a second time on a new graph ADDS to .grad again: reset it between steps
r2 = (x * 3.0).sum()
r2.backward()
print("after another backward of Σ 3x without resetting: x.grad =", x.grad.numpy(), "(2x + 1 + 3)")
C.claim(np.allclose(x.grad.numpy(), 2 * x.numpy() + 4), ".grad accumulates across backward calls until reset")
x.zero_grad()
C.claim(x.grad is None, "zero_grad() clears it (an optimiser does this before every step)")

# %%
C.section("6. What the gradient means: the slope of L along w[0]")
# Move w[0] and watch L. The gradient ∂L/∂w[0] is the slope of this curve at the current w[0].
w0 = w_[0]
grid = np.linspace(w0 - 3, w0 + 3, 121)
losses = []
with minise.no_grad():  # no graph needed just to evaluate
    for v in grid:
        wv = w_.copy()
        wv[0] = v
        sv = F.sigmoid((Tensor(wv) * Tensor(z_)).sum() + b_)
        losses.append((sv.item() - t) ** 2)
losses = np.array(losses)
slope = float(w.grad.numpy()[0])
# the curve's own slope at w0 (central difference on the grid's neighbours) agrees with the gradient
i0 = int(np.argmin(np.abs(grid - w0)))
numeric_slope = (losses[i0 + 1] - losses[i0 - 1]) / (grid[i0 + 1] - grid[i0 - 1])
print(f"∂L/∂w[0] from autograd: {slope:.6f};  slope of the curve from its neighbours: {numeric_slope:.6f}")
C.claim(abs(numeric_slope - slope) < 1e-2 * max(1.0, abs(slope)), "the gradient is the slope of the loss curve")

fig, ax = C.plt.subplots(figsize=(6.4, 4.2))
ax.plot(grid, losses, label="L(w[0]) = (σ(w·z + b) − t)²")
ax.plot(grid, L.item() + slope * (grid - w0), "--", label=f"tangent, slope ∂L/∂w[0] = {slope:.3f} (autograd)")
ax.plot([w0], [L.item()], "o", color="k", label="current w[0]")
ax.set_ylim(-0.05, max(losses) * 1.1)
ax.set_xlabel("w[0] (weight, dimensionless)")
ax.set_ylabel("loss L (dimensionless)")
ax.set_title("Step 1: the gradient is the slope of the loss")
ax.legend(fontsize=8)
C.save(fig, args.out, "loss_slope.png")

print("\nStep 1 done: autograd = chain rule, one hand-written backward per Function.")
