"""What compiled kernels would buy minise on the CPU: the option that issue 10 leaves to its owner, measured.

    pip install numba                  # not a dependency of minise: this script only sizes the option
    python benchmarks/compiled.py
    python benchmarks/compiled.py --only conv --repeat 30

minise's core is NumPy only. After five rounds on issue 10, the NumPy + OpenBLAS training step sat at
0.5-0.6x PyTorch CPU's speed, short of the 0.7x target, and the rounds named two ways on: compiled kernels
beside the textbook ops (Numba or C), or targets set for a NumPy implementation. This script measures
the first with Numba, on the two places where a step's time goes, and then on whole steps:

1. **Batch norm (training) + the ReLU after it**, forward and backward: minise's two ops, as a training
   step runs them (its CPU fast paths, autograd included), against one fused Numba loop per direction
   (per channel: the statistics, then y = max((x - mu) * gamma/sigma + beta, 0); backward reads dL/dy, y
   and x and writes dL/dx). Each round uses the next of ``--sets`` input sets, so both read arrays
   that are not already in the cache, as in a step.
2. **A 3x3 conv's forward** (stride 1, padding 1, ResNet-20's three stages): minise's fast path
   (columns + OpenBLAS) against a direct Numba convolution (channels last; for 4 output pixels at
   a time, every output channel summed over the window, the innermost loop over output channels for
   the compiler to vectorise), and PyTorch's (oneDNN) when torch is installed. The Numba kernel is
   timed alone, on an input already padded and channels last: its best case (minise would have to
   move its NCHW tensors in and out of that layout too).
3. **Whole training steps** (``--model``, default SE-ResNet-20, batch 128) with minise's batch norm
   fast path swapped for the Numba pair (batch norm alone: the network still calls minise's ReLU
   after it), alternated in one process with unswapped steps; the median of the pairs' ratios.
   Numba runs its kernels on its ``workqueue`` threads: with OpenMP's (Numba's default where
   libgomp is found) the steps ran slower, not faster, as OpenMP's threads spin after each kernel
   on the cores that minise's next op needs.

Every Numba result is checked against minise's before anything is timed: the ops in float32 (relative
error at most 1e-4), the whole step's gradients in float64 (at most 1e-9). Each op row alternates the
contenders in one process and keeps the best of ``--repeat`` rounds. Numba compiles on first use (a
few seconds; not timed). Figures and what they mean for the decision: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minise.functional as F
from minise import Tensor, nn, no_grad, speed

BN_SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8)]  # ResNet-20's stages at batch 128
CONV_SHAPES = [(128, 16, 32), (128, 32, 16), (128, 64, 8)]  # batch, channels in = out, size
EPS = 1e-5
TOLERANCE = 1e-4


def compile_kernels(numba) -> dict[str, Callable]:
    """The Numba kernels, compiled on first call (parallel over channels, or over output rows)."""
    njit, prange = numba.njit, numba.prange

    @njit(parallel=True, fastmath=True)
    def bn_forward(x, gamma, beta, eps, relu, y, mean, var, invstd):
        """x, y (N, C, L); per channel: mu, sigma^2 (two reads of x), then y = x*k + b (k = gamma/sigma,
        b = beta - mu*k), and with ``relu`` y = max(x*k + b, 0) in the same loop."""
        n, c, length = x.shape
        m = n * length
        for ch in prange(c):
            total = 0.0
            for i in range(n):
                for j in range(length):
                    total += x[i, ch, j]
            mu = total / m
            squares = 0.0
            for i in range(n):
                for j in range(length):
                    d = x[i, ch, j] - mu
                    squares += d * d
            inv = 1.0 / np.sqrt(squares / m + eps)
            k = gamma[ch] * inv
            b = beta[ch] - mu * k
            for i in range(n):
                for j in range(length):
                    v = x[i, ch, j] * k + b
                    y[i, ch, j] = v if (v > 0 or not relu) else 0.0
            mean[ch] = mu
            var[ch] = squares / m
            invstd[ch] = inv

    @njit(parallel=True, fastmath=True)
    def bn_backward(gy, y, x, gamma, mean, invstd, relu, gx, ggamma, gbeta):
        """dL/dx = k*g + c1*(x - mu) + c0 with k = gamma/sigma, c1 = -k * Sum(g*(x - mu)) / (sigma^2 m),
        c0 = -k * Sum(g) / m; g = dL/dy, or with ``relu`` dL/dy * [y > 0] (y: the ReLU's output)."""
        n, c, length = x.shape
        m = n * length
        for ch in prange(c):
            mu, inv = mean[ch], invstd[ch]
            sum_g = 0.0
            sum_gx = 0.0
            for i in range(n):
                for j in range(length):
                    if not relu or y[i, ch, j] > 0:
                        g = gy[i, ch, j]
                        sum_g += g
                        sum_gx += g * (x[i, ch, j] - mu)
            k = gamma[ch] * inv
            c1 = -k * inv * inv * sum_gx / m
            c0 = -k * sum_g / m
            for i in range(n):
                for j in range(length):
                    g = gy[i, ch, j] if (not relu or y[i, ch, j] > 0) else 0.0
                    gx[i, ch, j] = k * g + c1 * (x[i, ch, j] - mu) + c0
            ggamma[ch] = sum_gx * inv
            gbeta[ch] = sum_g

    @njit(parallel=True, fastmath=True)
    def conv3x3_forward(xp, w, y):
        """xp (N, H+2, W+2, C) padded, channels last; w (3, 3*C, O) rows (v, c); y (N, H, W, O)."""
        n, h, wd, o = y.shape
        c = xp.shape[3]
        depth = 3 * c
        for row in prange(n * h):
            i, r = row // h, row % h
            acc = np.empty((4, o), np.float32)  # one output row's 4 pixels at a time, made once per row
            for j0 in range(0, wd, 4):  # 4 output pixels share each weight read
                acc[:] = 0
                for u in range(3):
                    line = xp[i, r + u].ravel()  # one padded input row, (W+2)*C numbers
                    wu = w[u]
                    for k in range(depth):
                        x0 = line[j0 * c + k]
                        x1 = line[(j0 + 1) * c + k]
                        x2 = line[(j0 + 2) * c + k]
                        x3 = line[(j0 + 3) * c + k]
                        for q in range(o):
                            wv = wu[k, q]
                            acc[0, q] += x0 * wv
                            acc[1, q] += x1 * wv
                            acc[2, q] += x2 * wv
                            acc[3, q] += x3 * wv
                for t in range(4):
                    y[i, r, j0 + t] = acc[t]

    return {"bn_forward": bn_forward, "bn_backward": bn_backward, "conv3x3_forward": conv3x3_forward}


def best_of(runs: dict[str, Callable[[int], object]], repeat: int) -> dict[str, float]:
    """Seconds: the best of ``repeat`` rounds, the contenders alternated within each round (round r
    passes r, so each can take the next of its input sets)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run(r)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def check(name: str, ours: np.ndarray, reference: np.ndarray) -> None:
    """Stop (exit 1) when a Numba result differs from minise's by more than float32 rounding."""
    error = float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30))
    if not error <= TOLERANCE:
        raise SystemExit(f"compiled.py: {name} differs from minise's (relative error {error:.1e} > {TOLERANCE:g})")


def batch_norm_relu(kernels: dict, sets: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{'batch norm + ReLU, forward + backward':40s} {'minise ms':>10s} {'Numba ms':>9s} {'speed-up':>9s}")
    for shape in BN_SHAPES:
        _batch_norm_relu_row(kernels, shape, sets, repeat, rng)


def _batch_norm_relu_row(kernels: dict, shape: tuple[int, int, int, int], sets: int, repeat: int,
                         rng: np.random.Generator) -> None:
    """One row: minise's BatchNorm2d then ReLU (forward + backward) against the fused Numba pair."""
    n, c, h, w = shape
    xs = [rng.standard_normal(shape, dtype=np.float32) for _ in range(sets)]
    gys = [rng.standard_normal(shape, dtype=np.float32) for _ in range(sets)]
    bn = nn.BatchNorm2d(c)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, c)
    bn.bias.data[...] = rng.uniform(-0.5, 0.5, c)
    gamma, beta = bn.weight.data, bn.bias.data
    y = np.empty((n, c, h * w), np.float32)
    gx = np.empty_like(y)
    mean, var, invstd = (np.empty(c, np.float32) for _ in range(3))
    ggamma, gbeta = np.empty(c, np.float32), np.empty(c, np.float32)

    def mine(r: int) -> tuple[Tensor, Tensor]:
        x = Tensor(xs[r % sets], requires_grad=True)
        bn.weight.grad = bn.bias.grad = None
        out = F.relu(bn(x))
        out.backward(gys[r % sets])
        return x, out

    def numba_run(r: int) -> None:
        x = xs[r % sets].reshape(n, c, -1)
        kernels["bn_forward"](x, gamma, beta, EPS, True, y, mean, var, invstd)
        kernels["bn_backward"](gys[r % sets].reshape(n, c, -1), y, x, gamma, mean, invstd, True, gx, ggamma, gbeta)

    x, out = mine(0)
    numba_run(0)
    label = "x".join(map(str, shape))
    check(f"batch norm + ReLU {label}, y", y.reshape(shape), out.data)
    check(f"batch norm + ReLU {label}, dL/dx", gx.reshape(shape), x.grad.data)
    check(f"batch norm + ReLU {label}, dL/dgamma", ggamma, bn.weight.grad.data)
    times = best_of({"minise": mine, "numba": numba_run}, repeat)
    print(f"{label:40s} {times['minise'] * 1e3:10.2f} {times['numba'] * 1e3:9.2f} "
          f"{times['minise'] / times['numba']:8.2f}x", flush=True)


def conv(kernels: dict, repeat: int, torch) -> None:
    rng = np.random.default_rng(1)
    print(f"{'conv 3x3 forward':40s} {'minise ms':>10s} {'Numba ms':>9s} {'torch ms':>9s}   "
          "GFLOP/s minise / Numba / torch")
    for n, c, size in CONV_SHAPES:
        _conv_row(kernels, n, c, size, repeat, torch, rng)


def _conv_row(kernels: dict, n: int, c: int, size: int, repeat: int, torch, rng: np.random.Generator) -> None:
    """One row: minise's conv forward, the Numba direct conv and (when installed) PyTorch's."""
    x = rng.standard_normal((n, c, size, size), dtype=np.float32)
    w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    padded = np.zeros((n, size + 2, size + 2, c), np.float32)
    padded[:, 1:-1, 1:-1] = x.transpose(0, 2, 3, 1)
    w_rows = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(3, 3 * c, c)
    y = np.empty((n, size, size, c), np.float32)
    xt, wt = Tensor(x), Tensor(w)

    def mine(r: int) -> np.ndarray:
        with no_grad():
            return F.conv2d(xt, wt, padding=1).data

    runs = {"minise": mine, "numba": lambda r: kernels["conv3x3_forward"](padded, w_rows, y)}
    if torch is not None:
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        runs["torch"] = lambda r: torch.nn.functional.conv2d(tx, tw, padding=1)
    runs["numba"](0)
    label = f"{c}->{c} @{size}, batch {n}"
    check(f"conv {label}", y.transpose(0, 3, 1, 2), mine(0))
    with torch.no_grad() if torch is not None else contextlib.nullcontext():
        times = best_of(runs, repeat)
    flop = 2 * n * size * size * 9 * c * c
    theirs = times.get("torch")
    rates = " / ".join(f"{flop / times[k] / 1e9:.0f}" for k in runs)
    print(f"{label:40s} {times['minise'] * 1e3:10.2f} {times['numba'] * 1e3:9.2f} "
          f"{theirs * 1e3 if theirs else float('nan'):9.2f}   {rates}", flush=True)


def training_steps(kernels: dict, model_name: str, batch: int, rounds: int) -> None:
    """Training steps of ``model_name`` with minise's batch norm fast path (``minise.fast.batchnorm``)
    swapped for the Numba pair without the ReLU (the network is unchanged: its ReLUs stay minise's, so
    this is compiled batch norm alone, not fused with the ReLU after it), alternated in one process
    with unswapped steps. First, one step's gradients in float64 are checked against minise's (the
    kernels are generic over the dtype; float32's own rounding differs from run to run, by more than
    a tolerance could tell from a wrong formula)."""
    import minise.fast.batchnorm as fast_bn
    import minise.models as M
    from minise import optim

    plain = (fast_bn.forward, fast_bn.backward)

    def forward(op, x, gamma, beta):
        op.compiled = op.training and gamma is not None and beta is not None
        if not op.compiled:  # evaluation, or no affine parameters: minise's own
            return plain[0](op, x, gamma, beta)
        n, c = x.shape[:2]
        rows = x.reshape(n, c, -1)
        y = np.empty_like(rows)
        mean, var, invstd = (np.empty(c, x.dtype) for _ in range(3))
        kernels["bn_forward"](rows, gamma, beta, op.eps, False, y, mean, var, invstd)
        op.update_running_stats(mean, var, rows.shape[0] * rows.shape[2], slice(None))
        op.save(rows, mean, invstd, gamma)
        return y.reshape(x.shape)

    def backward(op, gy):
        if not op.compiled:
            return plain[1](op, gy)
        rows, mean, invstd, gamma = op.saved
        c = gy.shape[1]
        gx, ggamma, gbeta = np.empty_like(rows), np.empty(c, gy.dtype), np.empty(c, gy.dtype)
        kernels["bn_backward"](gy.reshape(rows.shape), rows, rows, gamma, mean, invstd, False, gx, ggamma, gbeta)
        need_x, need_w, need_b = op.needs_input_grad
        return (gx.reshape(gy.shape) if need_x else None), (ggamma if need_w else None), (gbeta if need_b else None)

    def use(compiled: bool) -> None:
        fast_bn.forward, fast_bn.backward = (forward, backward) if compiled else plain

    rng = np.random.default_rng(2)
    nn.init.manual_seed(0)  # the same weights in every run
    model = M.create(model_name)
    params = list(model.parameters())
    opt = optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = Tensor(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32))
    labels = rng.integers(0, 10, batch)

    def gradients(inputs: Tensor) -> np.ndarray:
        """Every parameter's gradient for one batch, in one flat float64 array."""
        opt.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        return np.concatenate([p.grad.data.ravel() for p in params]).astype(np.float64)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        opt.step()

    try:
        model.double()  # float64 first: the swap must give minise's gradients up to rounding
        x64 = Tensor(x.data.astype(np.float64))
        use(False)
        exact = gradients(x64)
        use(True)
        error64 = float(np.linalg.norm(gradients(x64) - exact) / np.linalg.norm(exact))
        model.float()
        use(False)
        error_plain = float(np.linalg.norm(gradients(x) - exact) / np.linalg.norm(exact))
        use(True)
        error_numba = float(np.linalg.norm(gradients(x) - exact) / np.linalg.norm(exact))
        print(f"{model_name}: every gradient of a step with Numba's batch norm against minise's, relative error: "
              f"{error64:.1e} in float64; in float32 (against minise's float64) minise {error_plain:.1e}, "
              f"with Numba's batch norm {error_numba:.1e}")
        if not error64 <= 1e-9:
            raise SystemExit(f"compiled.py: in float64, the gradients with Numba's batch norm differ from minise's "
                             f"(relative error {error64:.1e} > 1e-9)")
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(rounds + 1):
            for compiled in ((False, True) if r % 2 == 0 else (True, False)):
                use(compiled)
                start = time.perf_counter()
                step()
                if r > 0:  # the first round warms both up
                    times[compiled].append(time.perf_counter() - start)
    finally:
        use(False)
    pairs = [a / b for a, b in zip(times[True], times[False])]
    print(f"{model_name} training step, batch {batch}, {rounds} alternated pairs:")
    for compiled, label in ((False, "minise's batch norm"), (True, "Numba batch norm")):
        best, median = min(times[compiled]), float(np.median(times[compiled]))
        print(f"  {label:24s} best {best * 1e3:6.0f} ms, median {median * 1e3:6.0f} ms")
    print(f"  Numba / minise, per pair: median {np.median(pairs):.3f} (range {min(pairs):.3f}-{max(pairs):.3f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["bn", "conv", "step"], default=None)
    parser.add_argument("--model", default="se_resnet20", help="the network of the step rows (minise.models.create)")
    parser.add_argument("--batch", type=int, default=128, help="batch of the step rows")
    parser.add_argument("--steps", type=int, default=20, help="alternated pairs of training steps")
    parser.add_argument("--threading-layer", default="workqueue", choices=["workqueue", "omp", "tbb", "default"],
                        help="Numba's threads (default workqueue: OpenMP's spin after each kernel, on the cores "
                             "minise's next op needs)")
    parser.add_argument("--repeat", type=int, default=15, help="alternating rounds; the best is kept")
    parser.add_argument("--sets", type=int, default=6, help="input sets taken in turn by the batch norm rows")
    parser.add_argument("--threads", type=int, default=speed.NUM_THREADS,
                        help="threads for Numba and PyTorch (default: minise's own, speed.NUM_THREADS)")
    args = parser.parse_args(argv)
    if min(args.repeat, args.sets, args.threads, args.batch, args.steps) < 1:
        parser.error("--repeat, --sets, --threads, --batch and --steps must be at least 1")
    try:
        import numba
    except ImportError:
        raise SystemExit("compiled.py needs Numba, which minise does not depend on: pip install numba") from None
    try:
        import torch
    except ImportError:
        torch = None
    numba.config.THREADING_LAYER = args.threading_layer  # before the first parallel kernel runs
    speed.keep_freed_memory()  # as the minise command: repeated arrays reuse memory, no page faults timed
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"float32, Numba {numba.__version__} on {numba.get_num_threads()} threads, minise on {speed.NUM_THREADS}, "
          + (f"torch {torch.__version__} on {torch.get_num_threads()}" if torch is not None else "no torch")
          + f"; best of {args.repeat}")
    kernels = compile_kernels(numba)
    if args.only in (None, "bn"):
        batch_norm_relu(kernels, args.sets, args.repeat)
    if args.only in (None, "conv"):
        conv(kernels, args.repeat, torch)
    if args.only in (None, "step"):
        training_steps(kernels, args.model, args.batch, args.steps)
    print(f"Numba's threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
