"""Op speed: conv2d and pooling, forward + backward, minise against PyTorch measured in the same run.

    python benchmarks/ops.py                    # CPU: NumPy against PyTorch CPU, float32, batch 128
    python benchmarks/ops.py --device cuda      # GPU: CuPy against PyTorch CUDA
    python benchmarks/ops.py --only conv --repeat 30

Shapes are the CIFAR ResNet-20's (16, 32, 64 channels at 32, 16, 8 pixels; 3×3 convs with
padding 1, the stride-2 transitions and the 1×1 stride-2 shortcut projections), the stem conv
(which needs no input gradient), an SE-ResNeXt-style grouped conv, and the pools.

Each row times one forward and backward pass (all input gradients; only the weight gradient for
the stem), in alternating bursts of minise and PyTorch runs so that both see the same load, and
keeps the best of ``--repeat`` runs each: the machine is shared, and the best run is the one least
disturbed. PyTorch uses as many threads as NumPy's BLAS (all cores unless told otherwise).

Like the ``minise`` command, the process keeps the memory it frees for its next arrays
(``minise.speed.keep_freed_memory``; ``--default-allocator`` to leave malloc as it is): without it every
run of either framework writes its large arrays to fresh pages, and the kernel's page faults are timed.

Memory: minise's peak during one forward + backward above what was allocated before it
(tracemalloc, which sees NumPy's allocations; on the GPU, the bytes CuPy's memory pool holds
afterwards), and for convs the size of the full column matrix, which a backward pass that kept
the columns instead of rebuilding them would hold for every conv until its backward ran.

Target (issue 10): every conv row, ResNet-20's and the ImageNet stages', within 2× of PyTorch CPU
on a quiet 2-core machine (ratios, measured in the same run). Measured figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minise.fast.conv as fast_conv
import minise.functional as F
import minise.functional.conv as conv_module
from minise import Tensor, backend, speed

# name, in channels, out channels, size, kernel, stride, padding, groups, needs input grad
CONVS = [
    ("conv 3x3 3->16 @32 (stem)", 3, 16, 32, 3, 1, 1, 1, False),
    ("conv 3x3 16->16 @32", 16, 16, 32, 3, 1, 1, 1, True),
    ("conv 3x3 32->32 @16", 32, 32, 16, 3, 1, 1, 1, True),
    ("conv 3x3 64->64 @8", 64, 64, 8, 3, 1, 1, 1, True),
    ("conv 3x3/2 16->32 @32", 16, 32, 32, 3, 2, 1, 1, True),
    ("conv 3x3/2 32->64 @16", 32, 64, 16, 3, 2, 1, 1, True),
    ("conv 1x1/2 16->32 @32", 16, 32, 32, 1, 2, 0, 1, True),
    ("conv 1x1/2 32->64 @16", 32, 64, 16, 1, 2, 0, 1, True),
    ("conv 3x3 g32 128->128 @8", 128, 128, 8, 3, 1, 1, 32, True),
]
# the ImageNet networks' stage shapes (ResNet-50 / SE-ResNet-50 with the stride in the first 1×1 as
# the paper, ResNeXt-50's grouped 3×3), run at --imagenet-batch
IMAGENET_CONVS = [
    ("in: stem 7x7/2 3->64 @224", 3, 64, 224, 7, 2, 3, 1, False),
    ("in: 1x1 256->64 @56", 256, 64, 56, 1, 1, 0, 1, True),
    ("in: 3x3 64->64 @56", 64, 64, 56, 3, 1, 1, 1, True),
    ("in: 1x1 64->256 @56", 64, 256, 56, 1, 1, 0, 1, True),
    ("in: 1x1/2 256->128 @56", 256, 128, 56, 1, 2, 0, 1, True),
    ("in: 3x3 128->128 @28", 128, 128, 28, 3, 1, 1, 1, True),
    ("in: 3x3 256->256 @14", 256, 256, 14, 3, 1, 1, 1, True),
    ("in: 3x3 512->512 @7", 512, 512, 7, 3, 1, 1, 1, True),
    ("in: 3x3/2 128->128 @56 (torchvision)", 128, 128, 56, 3, 2, 1, 1, True),
    ("in: 3x3 g32 128->128 @56 (ResNeXt)", 128, 128, 56, 3, 1, 1, 32, True),
]
# name, kind, channels, size, kernel, stride, padding
POOLS = [
    ("max_pool 3x3/2 p1 64ch @32", "max", 64, 32, 3, 2, 1),
    ("max_pool 2x2/2 32ch @16", "max", 32, 16, 2, 2, 0),
    ("avg_pool 3x3/2 p1 64ch @32", "avg", 64, 32, 3, 2, 1),
    ("avg_pool 2x2/2 32ch @16", "avg", 32, 16, 2, 2, 0),
    ("global_avg_pool 16ch @32", "gavg", 16, 32, 0, 0, 0),
    ("global_avg_pool 64ch @8", "gavg", 64, 8, 0, 0, 0),
    ("global_max_pool 64ch @8", "gmax", 64, 8, 0, 0, 0),
]


def best_times(fns: dict[str, Callable[[], None]], repeat: int, sync: Callable[[], None],
               burst: int = 5) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` runs, taken in alternating bursts.

    Runs come in bursts of ``burst`` for one framework at a time, with a pause between bursts:
    right after a call, PyTorch's OpenMP threads and OpenBLAS's threads keep spinning for a while,
    and alternating call by call would let each framework's idle spinning slow the other down
    (about 3× here). Alternating bursts still spreads both over the same stretch of machine load.
    """
    best = dict.fromkeys(fns, float("inf"))
    done = dict.fromkeys(fns, 0)
    while min(done.values()) < repeat:
        for name, fn in fns.items():
            time.sleep(0.2)
            fn()  # warm-up: caches, allocator, thread pool
            sync()
            for _ in range(min(burst, repeat - done[name])):
                start = time.perf_counter()
                fn()
                sync()
                best[name] = min(best[name], time.perf_counter() - start)
                done[name] += 1
    return best


def peak_mb(fn: Callable[[], None], device: str) -> float:
    """minise's peak memory during ``fn`` above what was allocated before it."""
    if device == "cpu":
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            fn()
            return (tracemalloc.get_traced_memory()[1] - base) / 2**20
        finally:
            tracemalloc.stop()
    pool = backend.module_for(device).get_default_memory_pool()
    pool.free_all_blocks()
    base = pool.used_bytes()
    fn()
    backend.synchronize(device)
    return (pool.total_bytes() - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=15, help="alternating rounds; the best is kept")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch CPU threads")
    parser.add_argument("--only", choices=["conv", "imagenet", "pool"], default=None)
    parser.add_argument("--imagenet-batch", type=int, default=8, help="batch of the ImageNet-stage conv rows")
    parser.add_argument("--imagenet-repeat", type=int, default=4, help="rounds for the ImageNet-stage rows")
    parser.add_argument("--block-kib", type=int, default=None,
                        help="minise's CPU column block size, textbook and fast paths "
                             "(default: half a core's L2 cache, minise.speed.default_block_bytes())")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc as it is (default: keep freed memory, as the minise command does)")
    args = parser.parse_args()
    if not args.default_allocator:
        speed.keep_freed_memory()  # both frameworks' repeated arrays reuse memory instead of faulting fresh pages
    if args.block_kib:
        conv_module.CPU_BLOCK_BYTES = fast_conv.BLOCK_BYTES = args.block_kib << 10
    block_bytes = speed.block_bytes(conv_module.CPU_BLOCK_BYTES)

    import torch  # benchmarks may use torch; the package never does
    import torch.nn.functional as TF

    torch.set_num_threads(args.threads)
    device = args.device
    tdev = "cuda" if device == "cuda" else "cpu"
    if device == "cuda":
        backend.module_for("cuda")  # a clear error when CuPy or the GPU is missing

    def sync() -> None:
        if device == "cuda":
            backend.synchronize("cuda")
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    n = args.batch
    print(f"device {device}, float32, batch {n}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"minise CPU blocks of {block_bytes >> 10} KiB, best of {args.repeat}")
    print(f"{'op (forward + backward)':40s} {'minise ms':>10s} {'torch ms':>9s} {'ratio':>6s} "
          f"{'minise peak MB':>15s} {'cols kept MB':>13s}")

    ratios: dict[str, float] = {}

    def report(name: str, mine: Callable[[], None], theirs: Callable[[], None], cols_mb: float | None,
               repeat: int | None = None) -> None:
        times = best_times({"mine": mine, "theirs": theirs}, repeat or args.repeat, sync)
        ratios[name] = times["mine"] / times["theirs"]
        mem = peak_mb(mine, device)
        cols = f"{cols_mb:13.1f}" if cols_mb is not None else f"{'':13s}"
        print(f"{name:40s} {times['mine'] * 1e3:10.2f} {times['theirs'] * 1e3:9.2f} "
              f"{times['mine'] / times['theirs']:6.2f} {mem:15.1f} {cols}", flush=True)

    def tensors(*shapes: tuple[int, ...], grads: tuple[bool, ...]) -> tuple[list[Tensor], list[torch.Tensor]]:
        arrays = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]
        mine = [Tensor(backend.to_device(a, device), requires_grad=g) for a, g in zip(arrays, grads)]
        theirs = [torch.tensor(a, device=tdev, requires_grad=g) for a, g in zip(arrays, grads)]
        return mine, theirs

    def runner(fn: Callable, inputs: list, gy: object) -> Callable[[], None]:
        def run() -> None:
            for t in inputs:
                t.grad = None
            fn(*inputs).backward(gy)
        return run

    rows = [(row, n, None) for row in CONVS] if args.only in (None, "conv") else []
    if args.only in (None, "imagenet"):
        rows += [(row, args.imagenet_batch, args.imagenet_repeat) for row in IMAGENET_CONVS]
    for (name, cin, cout, size, k, stride, pad, groups, input_grad), n, repeat in rows:
        if name.startswith("in: "):
            name = f"{name} b{n}"
        (x, w), (xt, wt) = tensors((n, cin, size, size), (cout, cin // groups, k, k), grads=(input_grad, True))
        settings = dict(stride=stride, padding=pad, groups=groups)
        out = (size + 2 * pad - k) // stride + 1
        gy = (rng.standard_normal((n, cout, out, out))).astype(np.float32)
        mine = runner(lambda x, w, s=settings: F.conv2d(x, w, **s), [x, w], backend.to_device(gy, device))
        theirs = runner(lambda x, w, s=settings: TF.conv2d(x, w, **s), [xt, wt], torch.tensor(gy, device=tdev))
        cols_mb = cin * k * k * n * out * out * 4 / 2**20
        report(name, mine, theirs, cols_mb, repeat)
    conv_ratios = {k: v for k, v in ratios.items() if k.startswith(("conv", "in: "))}
    if conv_ratios:
        worst = max(conv_ratios, key=conv_ratios.get)
        met = sum(v <= 2 for v in conv_ratios.values())
        print(f"conv rows within 2× of PyTorch (issue 10 target): {met} of {len(conv_ratios)}; "
              f"worst {worst} at {conv_ratios[worst]:.2f}×", flush=True)

    if args.only in (None, "pool"):
        for name, kind, c, size, k, stride, pad in POOLS:
            (x,), (xt,) = tensors((n, c, size, size), grads=(True,))
            if kind == "max":
                pair = (lambda x, k=k, s=stride, p=pad: F.max_pool2d(x, k, s, p),
                        lambda x, k=k, s=stride, p=pad: TF.max_pool2d(x, k, s, p))
            elif kind == "avg":
                pair = (lambda x, k=k, s=stride, p=pad: F.avg_pool2d(x, k, s, p),
                        lambda x, k=k, s=stride, p=pad: TF.avg_pool2d(x, k, s, p))
            elif kind == "gavg":
                pair = (F.global_avg_pool2d, lambda x: x.mean(dim=(2, 3)))
            else:
                pair = (F.global_max_pool2d, lambda x: x.amax(dim=(2, 3)))
            with torch.no_grad():
                out_shape = tuple(pair[1](xt).shape)
            gy = rng.standard_normal(out_shape).astype(np.float32)
            report(name, runner(pair[0], [x], backend.to_device(gy, device)),
                   runner(pair[1], [xt], torch.tensor(gy, device=tdev)), None)


if __name__ == "__main__":
    main()
