"""Whole-network speed and memory: ResNet-20 and SE-ResNet-20, minise against PyTorch in the same run.

    python benchmarks/models.py                     # CPU: NumPy against PyTorch CPU
    python benchmarks/models.py --device cuda       # GPU: CuPy against PyTorch CUDA
    python benchmarks/profile_step.py --model se_resnet20  # where minise's training step spends its time

For each network, batch 128 of 3×32×32 in float32: a training step (forward, cross-entropy,
backward, SGD update with momentum 0.9 and weight decay 1e-4) and an evaluation forward pass, in
images per second (of the best timed step, the fairest reading on a shared machine; the ratio of
the medians is printed too), and peak memory. Each framework, network and phase runs in its own
process, so thread pools and allocators do not meet. Peak memory: on the CPU the growth of the
process's peak resident set from just before the first step (the same measure for both
frameworks), on the GPU the allocator's peak (CuPy's memory pool, torch.cuda.max_memory_allocated).
minise's processes keep freed memory for the next step (``minise.speed.keep_freed_memory``), as the
``minise`` command does; PyTorch's run as PyTorch runs by default.

The PyTorch networks are those the tests check minise's against (tests/models/torch_nets.py).

Targets (issue 10, on a quiet 2-core machine): minise's training step and evaluation forward at
≥ 0.7× PyTorch CPU's images/s; SE-ResNet-20 within 5 % of ResNet-20 in minise (steps alternated in
one process); peak memory of the SE-ResNet-20 training step no more than before. The same
alternation is run for PyTorch, so the SE's cost in minise can be read beside its cost in the
reference framework on the same network. Measured figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------- minise
def run_minise(name: str, phase: str, batch: int, steps: int, warmup: int, device: str) -> dict:
    sys.path.insert(0, ROOT)
    import minise
    from minise import speed

    speed.keep_freed_memory()  # as the minise command does
    import minise.functional as F
    import minise.models as M
    from minise import backend, optim

    minise.nn.init.manual_seed(0)
    model = M.create(name).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = minise.Tensor(backend.to_device(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), device))
    t = minise.Tensor(backend.to_device(rng.integers(0, 10, batch), device))

    def train_step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()

    def eval_step() -> None:
        with minise.no_grad():
            model(x)

    sync = (lambda: backend.synchronize(device)) if device != "cpu" else (lambda: None)
    pool = None
    if device != "cpu":
        import cupy

        pool = cupy.get_default_memory_pool()
    return _timed(train_step if phase == "train" else eval_step, model, phase, batch, steps, warmup, sync,
                  lambda: pool.total_bytes() / 2**20 if pool is not None else None)


def _timed(fn, model, phase: str, batch: int, steps: int, warmup: int, sync, gpu_peak_mb) -> dict:
    """Images/s of the best and the median step, and peak memory (see the module docstring)."""
    model.train(phase == "train")
    base = rss_peak_mb()
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    gpu = gpu_peak_mb()
    return {"best": batch / min(times), "median": batch / statistics.median(times),
            "mem_mb": gpu if gpu is not None else rss_peak_mb() - base}


# ---------------------------------------------------------------------- PyTorch
def torch_cifar_resnet(se: bool, threads: int):
    """The PyTorch (SE-)ResNet-20 the tests verify minise's against, on ``threads`` threads."""
    import torch

    sys.path.insert(0, ROOT)
    from tests.models.torch_nets import CifarResNet  # it sets torch to one thread on import

    torch.set_num_threads(threads)
    return CifarResNet(depth=20, shortcut="A", se_reduction=16 if se else None)


def run_torch(name: str, phase: str, batch: int, steps: int, warmup: int, device: str, threads: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = torch_cifar_resnet(name.startswith("se_"), threads).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    t = torch.randint(0, 10, (batch,), device=device)

    def train_step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), t).backward()
        opt.step()

    def eval_step() -> None:
        with torch.no_grad():
            model(x)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    result = _timed(train_step if phase == "train" else eval_step, model, phase, batch, steps, warmup, sync,
                    lambda: torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None)
    result["threads"] = torch.get_num_threads()
    return result


def _alternated(models: dict, train, evaluate, steps: int, warmup: int, sync) -> dict:
    """ResNet-20 and SE-ResNet-20 (``models``, by name) stepped in turn in one process, training then
    evaluation: ``train(name)`` and ``evaluate(name)`` run one step of that network. Returns plain / SE
    speed of the best steps (``train``, ``eval``) and of the median steps (``train_median``, ``eval_median``)."""
    out = {}
    for phase in ("train", "eval"):
        times: dict[str, list[float]] = {name: [] for name in models}
        for i in range(warmup + steps):
            for name, model in models.items():
                model.train(phase == "train")
                start = time.perf_counter()
                (train if phase == "train" else evaluate)(name)
                sync()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
        out[phase] = min(times["resnet20"]) / min(times["se_resnet20"])
        out[phase + "_median"] = statistics.median(times["resnet20"]) / statistics.median(times["se_resnet20"])
    return out


NETWORKS = ("resnet20", "se_resnet20")


def se_cost_minise(batch: int, steps: int, warmup: int, device: str) -> dict:
    """The SE's cost in minise, both networks' steps alternated in one process (``_alternated``): without
    the drift between processes that a shared machine adds (separate runs can differ by 10 % on their own)."""
    sys.path.insert(0, ROOT)
    import minise
    from minise import speed

    speed.keep_freed_memory()  # as the minise command does
    import minise.functional as F
    import minise.models as M
    from minise import backend, optim

    rng = np.random.default_rng(0)
    x = minise.Tensor(backend.to_device(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), device))
    t = minise.Tensor(backend.to_device(rng.integers(0, 10, batch), device))
    models = {name: M.create(name).to(device) for name in NETWORKS}
    opts = {name: optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4) for name, m in models.items()}

    def train(name: str) -> None:
        opts[name].zero_grad()
        F.cross_entropy(models[name](x), t).backward()
        opts[name].step()

    def evaluate(name: str) -> None:
        with minise.no_grad():
            models[name](x)

    return _alternated(models, train, evaluate, steps, warmup, lambda: backend.synchronize(device))


def se_cost_torch(batch: int, steps: int, warmup: int, device: str, threads: int) -> dict:
    """The same for PyTorch: what the SE block costs the reference framework on this network."""
    import torch

    torch.manual_seed(0)
    models = {name: torch_cifar_resnet(name.startswith("se_"), threads).to(device) for name in NETWORKS}
    opts = {name: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            for name, m in models.items()}
    x = torch.randn(batch, 3, 32, 32, device=device)
    t = torch.randint(0, 10, (batch,), device=device)

    def train(name: str) -> None:
        opts[name].zero_grad()
        torch.nn.functional.cross_entropy(models[name](x), t).backward()
        opts[name].step()

    def evaluate(name: str) -> None:
        with torch.no_grad():
            models[name](x)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return _alternated(models, train, evaluate, steps, warmup, sync)


# ---------------------------------------------------------------------- driver
def worker(args: argparse.Namespace) -> None:
    if args.worker == "se_cost":
        print(json.dumps(se_cost_minise(args.batch, args.steps, args.warmup, args.device)))
        return
    if args.worker == "se_cost_torch":
        print(json.dumps(se_cost_torch(args.batch, args.steps, args.warmup, args.device, args.threads)))
        return
    if args.worker == "minise":
        result = run_minise(args.model, args.phase, args.batch, args.steps, args.warmup, args.device)
    else:
        result = run_torch(args.model, args.phase, args.batch, args.steps, args.warmup, args.device, args.threads)
    print(json.dumps(result))


def measure(framework: str, model: str, phase: str, args: argparse.Namespace) -> dict:
    """One framework, network and phase in a fresh process (its own threads, allocator and peak memory)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
           "--threads", str(args.threads)]
    if model:
        cmd += ["--model", model, "--phase", phase]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} {model} {phase} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default="resnet20,se_resnet20")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="PyTorch CPU threads")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything this many times, minise and PyTorch back to back in each round "
                             "(their order swapped every round); ratios are taken within a round and their median "
                             "and range printed: the machine's drift between rounds then cancels")
    parser.add_argument("--worker", choices=["minise", "torch", "se_cost", "se_cost_torch"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["train", "eval"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if args.worker:
        worker(args)
        return
    models = args.models.split(",")
    print(f"batch {args.batch} × 3×32×32 float32 on {args.device}; {args.steps} timed steps after "
          f"{args.warmup} warm-up; {os.cpu_count()} CPUs; {args.rounds} round(s)")
    rounds = []  # one measurement of everything per round; minise and PyTorch back to back, order swapped each round
    for k in range(args.rounds):
        order = ("minise", "torch") if k % 2 == 0 else ("torch", "minise")
        rounds.append({(fw, m, ph): measure(fw, m, ph, args)
                       for m in models for ph in ("train", "eval") for fw in order})

    def med(values: list[float]) -> float:
        return statistics.median(values)

    def ratios(m: str, ph: str, key: str = "best") -> list[float]:
        return [r[("minise", m, ph)][key] / r[("torch", m, ph)][key] for r in rounds]

    def spread(values: list[float]) -> str:
        return f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""

    mem = "GPU peak MB" if args.device == "cuda" else "peak RSS +MB"
    print(f"\n{'network':<12} {'phase':<6} {'minise img/s':>13} {'torch img/s':>12} {'ratio':>6}  "
          f"{'(median ratio)':>14}  {'minise ' + mem:>19} {'torch ' + mem:>18}")
    for m in models:
        for ph in ("train", "eval"):
            a = [r[("minise", m, ph)] for r in rounds]
            b = [r[("torch", m, ph)] for r in rounds]
            print(f"{m:<12} {ph:<6} {med([x['best'] for x in a]):>13.1f} {med([x['best'] for x in b]):>12.1f} "
                  f"{med(ratios(m, ph)):>6.2f}  {med(ratios(m, ph, 'median')):>14.2f}  "
                  f"{max(x['mem_mb'] for x in a):>19.0f} {max(x['mem_mb'] for x in b):>18.0f}")
    print(f"(img/s: best step{', median over the rounds' if len(rounds) > 1 else ''}; ratio: of the best steps "
          f"{'in the same round, median over the rounds' if len(rounds) > 1 else ''}; "
          f"torch threads: {rounds[0][('torch', models[0], 'train')].get('threads')})")
    if {"resnet20", "se_resnet20"} <= set(models):
        def se_ratio(fw: str, ph: str) -> float:
            return med([r[(fw, "se_resnet20", ph)]["best"] / r[(fw, "resnet20", ph)]["best"] for r in rounds])

        print(f"\nSE-ResNet-20 / ResNet-20 speed, separate processes: minise train {se_ratio('minise', 'train'):.3f}, "
              f"eval {se_ratio('minise', 'eval'):.3f}; torch train {se_ratio('torch', 'train'):.3f}, "
              f"eval {se_ratio('torch', 'eval'):.3f}")
        for job, who, target in (("se_cost", "minise", "; target ≥ 0.95"), ("se_cost_torch", "PyTorch", "")):
            se = [measure(job, "", "", args) for _ in rounds]
            print(f"SE-ResNet-20 / ResNet-20 speed in {who}, steps alternated in one process: train "
                  f"{med([x['train'] for x in se]):.3f}{spread([x['train'] for x in se])} (median step "
                  f"{med([x['train_median'] for x in se]):.3f}), eval {med([x['eval'] for x in se]):.3f}"
                  f"{spread([x['eval'] for x in se])} (median step {med([x['eval_median'] for x in se]):.3f})"
                  f"{target}")
        for m in ("resnet20", "se_resnet20"):
            print(f"minise / torch training step, {m}: {med(ratios(m, 'train')):.2f}{spread(ratios(m, 'train'))}, "
                  f"evaluation {med(ratios(m, 'eval')):.2f}{spread(ratios(m, 'eval'))} (targets ≥ 0.7)")

if __name__ == "__main__":
    main()
