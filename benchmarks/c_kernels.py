"""What kernels in C would buy minise on the CPU: issue 10's open option, measured on whole steps.

    python benchmarks/c_kernels.py                       # needs a C compiler: cc, gcc or clang (--cc, --cflags)
    python benchmarks/c_kernels.py --only step --steps 12

minise's core is NumPy only, and after six rounds on issue 10 its training step sat at 0.5-0.6x PyTorch
CPU's speed, short of the 0.7x target. benchmarks/compiled.py sized one way on, Numba, and found batch
norm 3x faster but a direct conv at half the speed of minise's columns + OpenBLAS, so Numba alone could
not reach the target. This script sizes the other: kernels written in C (benchmarks/c_kernels.c, plain
C with the GCC/Clang vector extension, no intrinsics), built here with ``-O3 -march=native`` and called
through ctypes, which lets go of the interpreter lock so minise's threads run them side by side:

- **conv3x3**: a direct 3x3 conv, stride 1, padding 1 (16 of ResNet-20's 19 convs), for the forward and,
  with the weight flipped, for dL/dx. dL/dW stays minise's (one long matrix product per block, where
  OpenBLAS is at its best: a C version written for this ran at 35-45 GFLOP/s, below it).
- **batch norm** in training: the statistics, y, and the backward, in minise's fast path's formulas.

Two parts (``--only``):

1. **ops**: each kernel against minise's own op and PyTorch's, batch 128, float32, alternated in one
   process, best of ``--repeat``.
2. **step**: whole training steps and evaluation forwards of ``--model`` with minise's fast paths for
   the conv and batch norm swapped for the C kernels (either or both; anything a kernel does not cover,
   such as the stem and the stride-2 convs, stays minise's), alternated in one process with unswapped
   minise steps and PyTorch's, printed as speed relative to PyTorch's; then the peak memory of one
   training step in each mode.

Every kernel is checked against minise before anything is timed: each op in float32 (relative error at
most 1e-4) at the shapes the network uses, and one whole training step's gradients in float64 (the same
source built with REAL=double), against minise's, to 1e-9. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # minise
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the other scripts: models.py, ops.py

from ops import peak_mb  # benchmarks/ops.py: tracemalloc's peak during a call

import minise
import minise.fast.batchnorm as fast_bn
import minise.fast.conv as fast_conv
import minise.functional as F
import minise.models as M
from minise import Tensor, nn, optim, speed
from minise.functional.window import Window

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c_kernels.c")
SHAPES = [(16, 32), (32, 16), (64, 8)]  # ResNet-20's stages: channels, map size
TOLERANCE = 1e-4  # float32 ops against minise's, relative to the largest value
TOLERANCE_64 = 1e-9  # a whole step's gradients in float64
MODES = ("minise", "C conv", "C batch norm", "C conv + batch norm")


class Kernels:
    """The compiled kernels for one dtype; ``lanes``: numbers per vector (16 float32 with AVX-512, else 8),
    of which the conv's channels and batch norm's planes must be a multiple."""

    def __init__(self, library: ctypes.CDLL, dtype: Any) -> None:
        library.vector_lanes.restype = ctypes.c_int
        self.dtype, self.lanes = np.dtype(dtype), library.vector_lanes()
        ptr, num, real = ctypes.c_void_p, ctypes.c_int, ctypes.c_double if dtype == np.float64 else ctypes.c_float
        self._pack, self._conv = library.conv3x3_pack, library.conv3x3
        self._pack.argtypes, self._pack.restype = [ptr, num, num, num, ptr], None
        self._conv.argtypes, self._conv.restype = [ptr, ptr, ptr] + [num] * 6, ctypes.c_int
        self._bn_fwd, self._bn_bwd = library.batchnorm_forward, library.batchnorm_backward
        self._bn_fwd.argtypes, self._bn_fwd.restype = [ptr, ptr, ptr, real] + [ptr] * 5 + [num] * 5, None
        self._bn_bwd.argtypes, self._bn_bwd.restype = [ptr] * 9 + [num] * 5, None

    def conv3x3(self, x: np.ndarray, w: np.ndarray, flip: bool = False) -> np.ndarray:
        """conv(x, w), 3x3, stride 1, padding 1; with ``flip``, dL/dx for dL/dy = x (the flipped, transposed w)."""
        x, w = np.ascontiguousarray(x, self.dtype), np.ascontiguousarray(w, self.dtype)
        n, c, h, width = x.shape
        o = w.shape[1] if flip else w.shape[0]
        packed = np.empty(o * c * 9, self.dtype)
        self._pack(w.ctypes.data, w.shape[0], w.shape[1], int(flip), packed.ctypes.data)
        y = np.empty((n, o, h, width), self.dtype)

        def part(s: slice) -> None:
            if self._conv(x.ctypes.data, packed.ctypes.data, y.ctypes.data, s.start, s.stop, c, o, h, width):
                raise MemoryError("c_kernels.c: conv3x3 ran out of memory")

        speed.in_parallel(part, _batch_slices(n), limit_blas=False)
        return y

    def batchnorm_forward(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> tuple:
        """(y, mean, var, invstd) of training batch norm over x (N, C, ...)."""
        x, gamma, beta = (np.ascontiguousarray(a, self.dtype) for a in (x, gamma, beta))
        n, c = x.shape[:2]
        length = x.size // (n * c)
        y = np.empty_like(x)
        mean, var, invstd = (np.empty(c, self.dtype) for _ in range(3))
        scratch = np.empty(n * c, self.dtype)
        speed.in_parallel(lambda s: self._bn_fwd(x.ctypes.data, gamma.ctypes.data, beta.ctypes.data, eps,
                                                 y.ctypes.data, mean.ctypes.data, var.ctypes.data,
                                                 invstd.ctypes.data, scratch.ctypes.data, n, c, length,
                                                 s.start, s.stop),
                          fast_bn._channel_parts(x), limit_blas=False)
        return y, mean, var, invstd

    def batchnorm_backward(self, gy: np.ndarray, x: np.ndarray, gamma: np.ndarray, mean: np.ndarray,
                           invstd: np.ndarray) -> tuple:
        """(dL/dx, dL/dgamma, dL/dbeta)."""
        gy, x, gamma = (np.ascontiguousarray(a, self.dtype) for a in (gy, x, gamma))
        n, c = gy.shape[:2]
        length = gy.size // (n * c)
        gx, ggamma, gbeta = np.empty_like(gy), np.empty(c, self.dtype), np.empty(c, self.dtype)
        scratch = np.empty(2 * n * c, self.dtype)
        speed.in_parallel(lambda s: self._bn_bwd(gy.ctypes.data, x.ctypes.data, gamma.ctypes.data,
                                                 mean.ctypes.data, invstd.ctypes.data, gx.ctypes.data,
                                                 ggamma.ctypes.data, gbeta.ctypes.data, scratch.ctypes.data,
                                                 n, c, length, s.start, s.stop),
                          fast_bn._channel_parts(gy), limit_blas=False)
        return gx, ggamma, gbeta


def _batch_slices(n: int) -> list[slice]:
    """The batch in parts, taken in turn by whichever thread is free, as many per thread as minise's conv."""
    k = min(n, fast_conv.CHUNKS_PER_THREAD * speed.NUM_THREADS)
    return [slice(i * n // k, (i + 1) * n // k) for i in range(k)]


def find_compiler(name: str | None) -> str:
    """The C compiler to use: ``name`` (or $CC) if given, else the first of cc, gcc and clang on the PATH."""
    for candidate in ([name] if name else [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]):
        found = shutil.which(candidate)
        if found:
            return found
    wanted = name or os.environ.get("CC") or "cc, gcc or clang"
    raise SystemExit(f"c_kernels.py needs a C compiler and found none ({wanted} not on the PATH); "
                     "install one (Debian/Ubuntu: apt install gcc) or name it with --cc")


CFLAGS = "-O3 -march=native"


def build(compiler: str, directory: str, cflags: str = CFLAGS) -> dict[Any, Kernels]:
    """benchmarks/c_kernels.c compiled twice (float32 and float64) into ``directory`` and loaded."""
    kernels = {}
    for dtype, real in ((np.float32, "float"), (np.float64, "double")):
        library = os.path.join(directory, f"c_kernels_{real}.so")
        command = [compiler, *cflags.split(), "-shared", "-fPIC", f"-DREAL={real}", SOURCE, "-o", library, "-lm"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"c_kernels.py: compiling failed ({' '.join(command)}):\n{done.stderr.strip()}")
        kernels[np.dtype(dtype)] = Kernels(ctypes.CDLL(library), dtype)
    return kernels


# ---------------------------------------------------------------------- minise's fast paths, swapped
class Swap:
    """Puts the C kernels in place of minise's conv and batch norm fast paths (``use``), for the arrays
    and shapes they cover; everything else goes on to minise's own."""

    def __init__(self, kernels: dict[Any, Kernels]) -> None:
        self.kernels = kernels
        self.plain = {"conv": (fast_conv.forward, fast_conv.backward), "bn": (fast_bn.forward, fast_bn.backward)}

    def use(self, mode: str) -> None:
        conv = mode in ("C conv", "C conv + batch norm")
        bn = mode in ("C batch norm", "C conv + batch norm")
        fast_conv.forward, fast_conv.backward = (self.conv_forward, self.conv_backward) if conv else self.plain["conv"]
        fast_bn.forward, fast_bn.backward = (self.bn_forward, self.bn_backward) if bn else self.plain["bn"]

    def _conv_kernels(self, x: np.ndarray, w: np.ndarray, geo: Any) -> Kernels | None:
        k = self.kernels.get(x.dtype)
        covered = (k is not None and w.dtype == x.dtype and geo.kernel == (3, 3) and geo.stride == (1, 1)
                   and geo.padding == (1, 1) and geo.dilation == (1, 1)
                   and x.shape[1] % k.lanes == 0 and w.shape[0] % k.lanes == 0)
        return k if covered else None

    def conv_forward(self, x: np.ndarray, w: np.ndarray, geo: Any) -> np.ndarray:
        k = self._conv_kernels(x, w, geo)
        return k.conv3x3(x, w) if k else self.plain["conv"][0](x, w, geo)

    def conv_backward(self, x: np.ndarray, w: np.ndarray, gy: np.ndarray, geo: Any, need_x: bool,
                      need_w: bool) -> tuple:
        k = self._conv_kernels(x, w, geo)
        if k is None:
            return self.plain["conv"][1](x, w, gy, geo, need_x, need_w)
        gw = self.plain["conv"][1](x, w, gy, geo, False, True)[1] if need_w else None  # minise's dL/dW
        return (k.conv3x3(gy, w, flip=True) if need_x else None), gw

    def bn_forward(self, op: Any, x: np.ndarray, gamma: Any, beta: Any) -> np.ndarray:
        k = self.kernels.get(x.dtype)
        n, c = x.shape[:2]
        op.compiled = (k is not None and op.training and gamma is not None and beta is not None
                       and (x.size // (n * c)) % k.lanes == 0)
        if not op.compiled:  # evaluation, no affine parameters, or planes the vectors do not tile
            return self.plain["bn"][0](op, x, gamma, beta)
        y, mean, var, invstd = k.batchnorm_forward(x, gamma, beta, op.eps)
        op.update_running_stats(mean, var, x.size // c, slice(None))
        op.save(np.ascontiguousarray(x), mean, invstd, gamma)
        return y

    def bn_backward(self, op: Any, gy: np.ndarray) -> tuple:
        if not op.compiled:
            return self.plain["bn"][1](op, gy)
        x, mean, invstd, gamma = op.saved
        gx, ggamma, gbeta = self.kernels[gy.dtype].batchnorm_backward(gy, x, gamma, mean, invstd)
        need_x, need_w, need_b = op.needs_input_grad
        return (gx if need_x else None), (ggamma if need_w else None), (gbeta if need_b else None)


# ---------------------------------------------------------------------- checks
def check(name: str, ours: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE) -> None:
    """Stop (exit 1) when a C result differs from minise's by more than rounding (the largest difference
    relative to the largest value)."""
    error = float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30))
    if not error <= tolerance:
        raise SystemExit(f"c_kernels.py: {name} differs from minise's (relative error {error:.1e} > {tolerance:g})")


def check_ops(swap: Swap, rng: np.random.Generator, batch: int = 4) -> None:
    """Each kernel in float32 against minise's op, at ResNet-20's shapes (a small batch)."""
    for c, size in SHAPES:
        x = Tensor(rng.standard_normal((batch, c, size, size), dtype=np.float32), requires_grad=True)
        w = Tensor((rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32), requires_grad=True)
        bn = nn.BatchNorm2d(c)
        bn.weight.data[...] = rng.uniform(0.5, 1.5, c)
        bn.bias.data[...] = rng.uniform(-0.5, 0.5, c)
        gy = rng.standard_normal(x.shape, dtype=np.float32)
        results = {}
        for mode in ("minise", "C conv + batch norm"):
            swap.use(mode)
            x.grad = w.grad = bn.weight.grad = bn.bias.grad = None
            y = F.conv2d(x, w, padding=1)
            y.backward(gy)
            conv_gx, x.grad = x.grad.data, None
            z = bn(x)
            z.backward(gy)
            results[mode] = (y.data, conv_gx, w.grad.data, z.data, x.grad.data, bn.weight.grad.data,
                             bn.bias.grad.data)
        swap.use("minise")
        names = ("conv y", "conv dL/dx", "conv dL/dW", "batch norm y", "batch norm dL/dx", "batch norm dL/dgamma",
                 "batch norm dL/dbeta")
        for name, ours, ref in zip(names, results["C conv + batch norm"], results["minise"]):
            check(f"{name} ({c} channels at {size}x{size})", ours, ref)


def check_step(swap: Swap, model_name: str, rng: np.random.Generator, batch: int = 8) -> float:
    """Every gradient of one float64 training step with both kernels in place, against minise's."""
    nn.init.manual_seed(0)
    model = M.create(model_name).double()
    x = Tensor(rng.standard_normal((batch, 3, 32, 32)))
    labels = rng.integers(0, 10, batch)
    params = list(model.parameters())

    def gradients(mode: str) -> np.ndarray:
        swap.use(mode)
        for p in params:
            p.grad = None
        F.cross_entropy(model(x), labels).backward()
        swap.use("minise")
        return np.concatenate([p.grad.data.ravel() for p in params])

    exact = gradients("minise")
    error = float(np.linalg.norm(gradients("C conv + batch norm") - exact) / np.linalg.norm(exact))
    if not error <= TOLERANCE_64:
        raise SystemExit(f"c_kernels.py: a float64 training step with the C kernels differs from minise's "
                         f"(relative error {error:.1e} > {TOLERANCE_64:g})")
    return error


# ---------------------------------------------------------------------- timing
def best_of(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each run, ``repeat`` rounds, the runs alternated (forwards, then backwards) in each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ops(swap: Swap, torch: Any, repeat: int, rng: np.random.Generator) -> None:
    print(f"{'op, batch 128, float32':34s} {'minise ms':>10s} {'C ms':>8s} {'torch ms':>9s} {'C speed-up':>11s}")
    for c, size in SHAPES:
        _op_rows(swap, torch, c, size, repeat, rng)


def _op_rows(swap: Swap, torch: Any, c: int, size: int, repeat: int, rng: np.random.Generator) -> None:
    """The rows of one stage: the conv's forward and dL/dx, batch norm's forward + backward."""
    k = swap.kernels[np.dtype(np.float32)]
    x = rng.standard_normal((128, c, size, size), dtype=np.float32)
    w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    gy = rng.standard_normal(x.shape, dtype=np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.uniform(-0.5, 0.5, c).astype(np.float32)
    geo = Window(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), h=size, w=size)
    conv_forward, conv_backward = swap.plain["conv"]
    bn = nn.BatchNorm2d(c)
    bn.weight.data[...], bn.bias.data[...] = gamma, beta
    xt = Tensor(x, requires_grad=True)

    def minise_bn() -> None:  # minise's op as a training step runs it: its fast path, autograd included
        xt.grad = bn.weight.grad = bn.bias.grad = None
        bn(xt).backward(gy)

    def c_bn() -> None:
        y, mean, var, invstd = k.batchnorm_forward(x, gamma, beta, 1e-5)
        k.batchnorm_backward(gy, x, gamma, mean, invstd)

    swap.use("minise")
    rows = {
        f"conv 3x3 {c}->{c} @{size} forward": (lambda: conv_forward(x, w, geo), lambda: k.conv3x3(x, w),
                                              _torch_conv(torch, x, w, None)),
        f"conv 3x3 {c}->{c} @{size} dL/dx": (lambda: conv_backward(x, w, gy, geo, True, False),
                                            lambda: k.conv3x3(gy, w, flip=True), _torch_conv(torch, x, w, gy)),
        f"batch norm {c} @{size} fwd + bwd": (minise_bn, c_bn, _torch_bn(torch, x, gamma, beta, gy)),
    }
    for label, (mine, ours, theirs) in rows.items():
        runs = {"minise": mine, "C": ours} | ({"torch": theirs} if theirs else {})
        best = {name: min(t) for name, t in best_of(runs, repeat).items()}
        print(f"{label:34s} {best['minise'] * 1e3:10.2f} {best['C'] * 1e3:8.2f} "
              f"{best.get('torch', float('nan')) * 1e3:9.2f} {best['minise'] / best['C']:10.2f}x", flush=True)


def _torch_conv(torch: Any, x: np.ndarray, w: np.ndarray, gy: np.ndarray | None) -> Callable | None:
    """PyTorch's conv forward, or (gy given) its dL/dx alone."""
    if torch is None:
        return None
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    if gy is None:
        return lambda: torch.nn.functional.conv2d(tx, tw, padding=1)
    tg = torch.from_numpy(gy)
    return lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, padding=1)


def _torch_bn(torch: Any, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, gy: np.ndarray) -> Callable | None:
    if torch is None:
        return None
    tx = torch.from_numpy(x).requires_grad_()
    tg, tb, tgy = (torch.from_numpy(a).requires_grad_() for a in (gamma, beta, gy))

    def run() -> None:
        tx.grad = tg.grad = tb.grad = None
        torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True).backward(tgy)

    return run


def steps(swap: Swap, torch: Any, model_name: str, batch: int, rounds: int, rng: np.random.Generator) -> None:
    """Training steps and evaluation forwards in every mode and PyTorch's, alternated in one process."""
    nn.init.manual_seed(0)
    model = M.create(model_name)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    labels = Tensor(rng.integers(0, 10, batch))

    def train(mode: str) -> Callable[[], None]:
        def run() -> None:
            swap.use(mode)
            try:
                opt.zero_grad()
                F.cross_entropy(model(x), labels).backward()
                opt.step()
            finally:
                swap.use("minise")
        return run

    def evaluate(mode: str) -> Callable[[], None]:
        def run() -> None:
            swap.use(mode)
            model.eval()
            try:
                with minise.no_grad():
                    model(x)
            finally:
                model.train()
                swap.use("minise")
        return run

    train_runs = {mode: train(mode) for mode in MODES}
    eval_runs = {mode: evaluate(mode) for mode in ("minise", "C conv")}  # batch norm's kernel is for training
    if torch is not None:
        from models import torch_cifar_resnet

        torch.manual_seed(0)
        tmodel = torch_cifar_resnet(model_name.startswith("se_"), speed.NUM_THREADS)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        tx, tt = torch.from_numpy(x.data.copy()), torch.from_numpy(labels.data.astype(np.int64))

        def torch_train() -> None:
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tmodel(tx), tt).backward()
            topt.step()

        def torch_eval() -> None:
            tmodel.eval()
            with torch.no_grad():
                tmodel(tx)
            tmodel.train()

        train_runs["PyTorch"], eval_runs["PyTorch"] = torch_train, torch_eval
    for phase, runs in (("training step", train_runs), ("evaluation forward", eval_runs)):
        for run in runs.values():  # warm up: buffers, thread pools, first-use costs
            run()
        times = best_of(runs, rounds)
        print(f"{model_name} {phase}, batch {batch}, {rounds} alternated rounds:")
        reference = times.get("PyTorch")
        for name, t in times.items():
            line = f"  {name:22s} best {min(t) * 1e3:7.1f} ms  median {statistics.median(t) * 1e3:7.1f} ms"
            if reference:
                line += (f"   speed / PyTorch's: best {min(reference) / min(t):.2f}, "
                         f"median {statistics.median(reference) / statistics.median(t):.2f}")
            print(line, flush=True)
    peaks = ", ".join(f"{mode} {peak_mb(train_runs[mode], 'cpu'):.0f} MB" for mode in MODES)
    print(f"peak memory of one {model_name} training step (tracemalloc: NumPy's arrays, not the kernels' own "
          f"few hundred KiB per thread): {peaks}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["ops", "step"], default=None, help="one part (default: both)")
    parser.add_argument("--model", choices=["resnet20", "se_resnet20"], default="se_resnet20",
                        help="the network of the step part")
    parser.add_argument("--batch", type=int, default=128, help="batch of the step part")
    parser.add_argument("--steps", type=int, default=10, help="alternated rounds of the step part")
    parser.add_argument("--repeat", type=int, default=15, help="alternated rounds of each op row; the best is kept")
    parser.add_argument("--cc", default=None, help="the C compiler (default: $CC, else cc, gcc or clang)")
    parser.add_argument("--cflags", default=CFLAGS, help=f"the compiler's options (default: {CFLAGS})")
    args = parser.parse_args(argv)
    if min(args.batch, args.steps, args.repeat) < 1:
        parser.error("--batch, --steps and --repeat must be at least 1")
    compiler = find_compiler(args.cc)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(speed.NUM_THREADS)
    speed.keep_freed_memory()  # as the minise command does
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory:
        swap = Swap(build(compiler, directory, args.cflags))
        try:
            check_ops(swap, rng)
            error = check_step(swap, args.model, rng)
            print(f"checked: every op within {TOLERANCE:g} of minise's in float32; a float64 {args.model} "
                  f"training step's gradients within {error:.1e}")
            print(f"compiler {compiler} {args.cflags}, {swap.kernels[np.dtype(np.float32)].lanes} float32 per vector; "
                  f"minise on {speed.NUM_THREADS} threads, "
                  + (f"torch {torch.__version__} on {torch.get_num_threads()}" if torch is not None else "no torch"))
            if args.only in (None, "ops"):
                ops(swap, torch, args.repeat, rng)
            if args.only in (None, "step"):
                steps(swap, torch, args.model, args.batch, args.steps, rng)
        finally:
            swap.use("minise")


if __name__ == "__main__":
    main()
