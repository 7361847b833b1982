"""Step 2: checking a hand-written backward against finite differences.
====================================================================

The lesson
----------
Every op in minise has a backward written by hand, and a hand-written derivative can be wrong.
The referee is the definition of the derivative. For a scalar L(x), the central difference::

    ∂L/∂x[i] ≈ (L(x + ε e_i) − L(x − ε e_i)) / (2ε)

has a truncation error of order ε² (the forward difference (L(x + ε) − L(x))/ε only ε), but it
subtracts two nearly equal numbers, losing digits to rounding: about ``u·|L|/ε``, where u is the
machine precision (float32: u ≈ 6e-8, float64: u ≈ 1.1e-16). The total error is smallest near
ε ≈ u^(1/3): about 1e-6 in float32 at best (and only with the best ε for this particular
function: too coarse to tell a right gradient from a slightly wrong one), about 1e-12 in
float64. That is why every gradient check runs in float64.

An op has an output y, not a scalar. The check builds the scalar L = Σ v · y with a random v
(the "upstream gradient"). A v of all ones would hide bugs that permute or transpose the
gradient, because then every element of the upstream gradient looks the same. Section 5 shows
one such bug slipping past v = 1 and caught by a random v.

``minise.gradcheck(fn, inputs)`` does all this for every element of every input;
``minise.gradcheck_directional`` perturbs everything along one random direction (cheap enough
for a whole network). When a check fails it names the input, the worst element, both values.

Run::

    python tutorials/02_gradient_checking.py [--out DIR]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise
import minise.functional as F
from minise import Function, GradcheckError, Tensor, gradcheck, gradcheck_directional

args = C.setup(__doc__)
rng = np.random.default_rng(0)

# %%
C.section("1. Central differences: the error against ε, in float32 and float64")
# d/dx σ(x) = σ(x)(1 − σ(x)); compare the central difference with it for many ε.
x0 = 0.7
exact = (1 / (1 + np.exp(-x0))) * (1 - 1 / (1 + np.exp(-x0)))
epsilons = np.logspace(-12, -0.5, 60)
errors = {}
for dtype in (np.float32, np.float64):
    err = []
    for eps in epsilons:
        plus = F.sigmoid(Tensor(np.array([x0 + eps], dtype=dtype))).data[0]
        minus = F.sigmoid(Tensor(np.array([x0 - eps], dtype=dtype))).data[0]
        # the step actually taken is what the dtype can represent
        step = np.array(x0 + eps, dtype=dtype) - np.array(x0 - eps, dtype=dtype)
        numeric = (float(plus) - float(minus)) / float(step) if step != 0 else 0.0
        err.append(abs(numeric - exact) + 1e-18)
    errors[np.dtype(dtype).name] = np.array(err)
for name, err in errors.items():
    i = int(np.argmin(err))
    print(f"{name}: best error {err[i]:.2e} at ε = {epsilons[i]:.1e}")
best32, best64 = errors["float32"].min(), errors["float64"].min()
C.claim(best32 > 1e-8, f"float32 finite differences stay above 1e-8 error, whatever ε (best {best32:.1e})")
C.claim(best64 < 1e-10, f"float64 finite differences reach below 1e-10 (best {best64:.1e})")

fig, ax = C.plt.subplots(figsize=(6.4, 4.4))
for name, err in errors.items():
    ax.loglog(epsilons, err, ".-", label=name)
ax.loglog(epsilons, epsilons**2 / 6 * 0.1, ":", color="gray", label="∝ ε² (truncation)")
ax.axvline(1e-6, color="k", lw=0.8, ls="--")
ax.text(1.3e-6, 1e-15, "ε = 1e-6\n(gradcheck)", fontsize=8)
ax.set_ylim(1e-16, 1.0)
ax.set_xlabel("step ε (dimensionless)")
ax.set_ylabel("|central difference − σ'(x)| (absolute error)")
ax.set_title("Step 2: finite-difference error of dσ/dx at x = 0.7")
ax.legend(loc="lower left")
C.save(fig, args.out, "fd_error_vs_eps.png")


# %%
def numeric_grad(fn, x: np.ndarray, v: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∂(Σ v·fn(x))/∂x by central differences, one element at a time (what gradcheck does)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp_, xm_ = x.copy(), x.copy()
        xp_[idx] += eps
        xm_[idx] -= eps
        with minise.no_grad():
            g[idx] = ((fn(Tensor(xp_)).data * v).sum() - (fn(Tensor(xm_)).data * v).sum()) / (2 * eps)
    return g


def analytic_grad(fn, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    xt = Tensor(x, requires_grad=True)
    fn(xt).backward(v)
    return xt.grad.numpy()


C.section("2. gradcheck on a correct op: conv2d with stride 2 and padding 1")
xc = Tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
wc = Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
bc = Tensor(rng.standard_normal(4), requires_grad=True)
ok = gradcheck(lambda a, k, c: F.conv2d(a, k, c, stride=2, padding=1), [xc, wc, bc])
C.claim(ok, "conv2d's backward agrees with central differences for x, W and b (every element)")

C.section("3. gradcheck refuses float32")
try:
    gradcheck(F.sigmoid, [Tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)])
    refused = False
except TypeError as exc:
    print("TypeError:", exc)
    refused = True
C.claim(refused, "a float32 input is refused, not checked with a meaningless tolerance")


# %%
C.section("4. What a failing check looks like")


class BuggySigmoid(Function):
    """σ with a classic slip: backward returns ∂L/∂s · s, forgetting the factor (1 − s)."""

    def forward(self, x):
        s = 1 / (1 + np.exp(-x))
        self.save(s)
        return s

    def backward(self, gs):
        (s,) = self.saved
        return gs * s  # should be gs * s * (1 - s)


xb = rng.standard_normal((3, 4))
try:
    gradcheck(lambda a: BuggySigmoid()(a), [Tensor(xb, requires_grad=True)])
    caught = None
except GradcheckError as exc:
    caught = str(exc)
    print("GradcheckError:", caught)
C.claim(caught is not None and "input 0" in caught,
        "the buggy backward is caught; the message names the input and the element")
v = rng.standard_normal(xb.shape)
g_num = numeric_grad(lambda a: F.sigmoid(a), xb, v)
g_good = analytic_grad(F.sigmoid, xb, v)
g_bad = analytic_grad(lambda a: BuggySigmoid()(a), xb, v)
ratio = g_num / g_bad
s_b = 1 / (1 + np.exp(-xb))
print("How to read it: numeric / analytic, element by element =\n", np.round(ratio, 4))
print("... which is exactly 1 − σ(x), the missing factor:\n", np.round(1 - s_b, 4))
C.claim(np.allclose(ratio, 1 - s_b, rtol=1e-6), "numeric/analytic = 1 − σ(x): the ratio points at the missing factor")
C.claim(np.allclose(g_num, g_good, rtol=1e-6, atol=1e-9), "the library's sigmoid matches the numeric gradient")

fig, axes = C.plt.subplots(1, 2, figsize=(9, 4))
for ax, g, title in ((axes[0], g_good, "F.sigmoid (correct)"), (axes[1], g_bad, "BuggySigmoid (forgets 1 − s)")):
    lim = max(abs(g_num).max(), abs(g).max()) * 1.1
    ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8, label="analytic = numeric")
    ax.scatter(g_num.ravel(), g.ravel(), s=25)
    ax.set_xlabel("numeric ∂L/∂x (central differences)")
    ax.set_ylabel("analytic ∂L/∂x (backward)")
    ax.set_title(title)
    ax.legend(fontsize=8)
fig.suptitle("Step 2: every element of the gradient, backward vs finite differences")
C.save(fig, args.out, "buggy_vs_correct.png")


# %%
C.section("5. Why the upstream gradient v must be random, not all ones")


class BuggyFlip(Function):
    """y = x reversed along the last axis; the buggy backward forgets to reverse the gradient back."""

    def forward(self, x):
        return x[..., ::-1].copy()

    def backward(self, gy):
        return gy  # should be gy[..., ::-1]


xf = rng.standard_normal((2, 5))
ones = np.ones(xf.shape)
passes_with_ones = np.allclose(analytic_grad(lambda a: BuggyFlip()(a), xf, ones),
                               numeric_grad(lambda a: BuggyFlip()(a), xf, ones))
print("check with v = 1:      ", "passes (the bug is invisible)" if passes_with_ones else "fails")
try:
    gradcheck(lambda a: BuggyFlip()(a), [Tensor(xf, requires_grad=True)])
    caught_random = False
except GradcheckError as exc:
    print("check with a random v:  fails:", exc)
    caught_random = True
C.claim(passes_with_ones and caught_random, "an all-ones v hides a permuted gradient; a random v exposes it")

# %%
C.section("6. Kinks: ReLU at exactly 0")
# The central difference straddles the kink: (max(ε,0) − max(−ε,0)) / 2ε = 1/2, while backward says 0.
xk = np.array([[-1.3, 0.0, 0.8]])
try:
    gradcheck(F.relu, [Tensor(xk, requires_grad=True)])
    kink_fails = False
except GradcheckError as exc:
    print("at x = 0:", exc)
    kink_fails = True
away = np.array([[-1.3, 0.4, 0.8]])
C.claim(kink_fails and gradcheck(F.relu, [Tensor(away, requires_grad=True)]),
        "a check AT the kink reports a false alarm; draw test inputs away from 0")

# %%
C.section("7. A whole small network at once: gradcheck_directional")
# conv → ReLU → global average pool (the squeeze) → linear. Perturb every input and parameter
# along one random direction d and compare (L(θ + εd) − L(θ − εd))/2ε with Σ ⟨∂L/∂θ, d⟩.
params = [Tensor(rng.standard_normal(s) * 0.5, requires_grad=True) for s in ((6, 3, 3, 3), (6,), (4, 6), (4,))]
xn = Tensor(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)


def net(x, k, kb, w, wb):
    return F.linear(F.global_avg_pool2d(F.relu(F.conv2d(x, k, kb, padding=1))), w, wb)


C.claim(gradcheck_directional(net, [xn, *params]), "the network's gradient agrees along a random direction")

print("\nStep 2 done: trust a backward only after float64 central differences with a random v agree.")
