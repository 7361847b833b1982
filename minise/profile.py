"""Where a training step spends its time: per op type and direction, the share, the time and the bytes.

    from minise.profile import profile_training
    prof = profile_training(model, batch=128, steps=3)
    print(prof.table())
    prof.save_figure("profile.png")

or, around any code (nothing in ``minise`` changes while the block is not running):

    with minise.profile.record() as prof:
        ...                                  # forward, backward, optimizer steps
    print(prof.table())

How it measures. Inside ``record()`` the ``forward`` and ``backward`` of every ``Function`` class
are wrapped (at the class level, undone on leaving the block) by a timer that adds the wall time
of each call to its (op, direction) row. When one op's method calls another's (``super()``, or
its parts on ``minise.speed``'s threads), only the outermost call, on the thread that entered
``record()``, is counted, so no time is counted twice. Two more rows come from
``profile_training``: the optimizer update and the rest of the step (the autograd bookkeeping
between ops: the order of the graph, adding up gradients of a tensor used twice, making Tensors).

Bytes moved are the bytes of the arrays an op takes and gives (forward: its inputs and outputs;
backward: the upstream gradients, what forward saved and the gradients it returns): a lower bound
on its memory traffic, enough to see that batch norm, ReLU and the adds are memory-bound passes
(bytes / time near the memory bandwidth) while a conv is not.

On a GPU the arrays' work is asynchronous: ``record(synchronize=True)`` waits for the device after
every call (slower, but each row then holds its own op's time).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy

from . import backend
from .autograd import Function, Tensor
from .fileio import atomic_path

__all__ = ["OpStats", "Profile", "record", "profile_training"]


@dataclass
class OpStats:
    """One row: an op type in one direction."""

    op: str
    direction: str  # "forward", "backward" or "step" (outside the ops)
    calls: int = 0
    seconds: float = 0.0
    bytes: int = 0


@dataclass
class Profile:
    """The rows recorded, and the wall time of the whole (the steps) they are shares of."""

    rows: dict[tuple[str, str], OpStats] = field(default_factory=dict)
    total_seconds: float = 0.0
    steps: int = 0

    def add(self, op: str, direction: str, seconds: float, nbytes: int = 0) -> None:
        row = self.rows.get((op, direction))
        if row is None:
            row = self.rows[(op, direction)] = OpStats(op, direction)
        row.calls += 1
        row.seconds += seconds
        row.bytes += nbytes

    def sorted_rows(self) -> list[OpStats]:
        """Rows by time, largest first."""
        return sorted(self.rows.values(), key=lambda r: r.seconds, reverse=True)

    @property
    def op_seconds(self) -> float:
        return sum(r.seconds for r in self.rows.values())

    def share(self, row: OpStats) -> float:
        """The row's fraction of the total (of the ops' sum when no total was measured)."""
        total = self.total_seconds or self.op_seconds
        return row.seconds / total if total > 0 else 0.0

    def table(self) -> str:
        """The rows as text: share of the step, ms per step, calls per step, MB per step, GB/s."""
        per = max(1, self.steps)
        lines = [f"{'op':<28} {'direction':<9} {'share':>6} {'ms/step':>9} {'calls':>6} {'MB/step':>9} {'GB/s':>6}"]
        for r in self.sorted_rows():
            # GB/s only where there is time enough to mean something (a pass-through moves nothing)
            rate = f"{r.bytes / r.seconds / 1e9:>6.1f}" if r.bytes and r.seconds / per > 1e-3 else f"{'':>6}"
            lines.append(f"{r.op:<28} {r.direction:<9} {self.share(r):>6.1%} {r.seconds / per * 1e3:>9.2f} "
                         f"{r.calls / per:>6.0f} {r.bytes / per / 2**20:>9.1f} {rate}")
        if self.total_seconds:
            lines.append(f"{'step (total)':<28} {'':<9} {1:>6.1%} {self.total_seconds / per * 1e3:>9.2f}")
        return "\n".join(lines)

    def figure(self, top: int = 16, title: str = "") -> Any:
        """A matplotlib Figure (made without pyplot): one horizontal bar per row, its share of the step."""
        from matplotlib.figure import Figure  # noqa: PLC0415 (matplotlib only when a figure is asked for)

        rows = self.sorted_rows()[:top]
        colours = {"forward": "tab:blue", "backward": "tab:orange", "step": "tab:gray"}
        fig = Figure(figsize=(7.5, 0.32 * len(rows) + 1.4), layout="constrained")
        ax = fig.subplots()
        y = numpy.arange(len(rows))[::-1]
        ax.barh(y, [100 * self.share(r) for r in rows], color=[colours.get(r.direction, "tab:green") for r in rows])
        ax.set_yticks(y, [f"{r.op} ({r.direction})" for r in rows])
        ax.set_xlabel("share of the training step (%)")
        per = max(1, self.steps)
        for yi, r in zip(y, rows):
            ax.text(100 * self.share(r), yi, f" {r.seconds / per * 1e3:.1f} ms", va="center", fontsize=8)
        ax.set_xlim(0, 100 * max((self.share(r) for r in rows), default=0.1) * 1.25 + 1)
        ax.set_title(title or f"where a training step goes ({self.total_seconds / per * 1e3:.0f} ms per step)")
        return fig

    def save_figure(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``figure()`` as a PNG, atomically (a temporary name, then renamed)."""
        with atomic_path(path, suffix=".tmp.png") as tmp:
            self.figure(**kwargs).savefig(tmp, format="png", dpi=110)


# ---------------------------------------------------------------------- the hook
def _function_classes() -> list[type]:
    """Function and every subclass defined so far."""
    found, todo = [], [Function]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _nbytes(arrays: Any) -> int:
    total = 0
    for a in arrays if isinstance(arrays, (tuple, list)) else (arrays,):
        if isinstance(a, Tensor):
            a = a.data
        total += int(getattr(a, "nbytes", 0) or 0)
    return total


_active = threading.local()  # .depth: how many timed calls this thread is inside
_lock = threading.Lock()
_recording = False


def _timed(method: Callable, direction: str, prof: Profile, sync: Callable[[], None], owner: int) -> Callable:
    def wrapper(self: Function, *args: Any) -> Any:
        # calls inside a timed one (super(), or an op's parts on minise.speed's threads) are its time
        if getattr(_active, "depth", 0) or threading.get_ident() != owner:
            return method(self, *args)
        _active.depth = 1
        try:
            start = time.perf_counter()
            result = method(self, *args)
            sync()
            seconds = time.perf_counter() - start
        finally:
            _active.depth = 0
        moved = _nbytes(args) + _nbytes(result) + (_nbytes(self.saved) if direction == "backward" else 0)
        prof.add(type(self).__name__, direction, seconds, moved)
        return result

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


@contextmanager
def record(synchronize: bool = False, device: str = "cpu") -> Iterator[Profile]:
    """Time every Function's forward and backward while the block runs; yields the Profile it fills.

    The wrappers are put on the classes on entry and taken off on exit (also after an error). One
    ``record`` at a time: a nested or concurrent one raises RuntimeError."""
    global _recording
    with _lock:
        if _recording:
            raise RuntimeError("minise.profile.record: already recording (one record block at a time)")
        _recording = True
    prof = Profile()
    sync = (lambda: backend.synchronize(device)) if synchronize else (lambda: None)
    patched: list[tuple[type, str, Callable]] = []
    try:
        for cls in _function_classes():
            for direction in ("forward", "backward"):
                method = cls.__dict__.get(direction)
                if method is not None:
                    setattr(cls, direction, _timed(method, direction, prof, sync, threading.get_ident()))
                    patched.append((cls, direction, method))
        yield prof
    finally:
        for cls, direction, method in reversed(patched):
            setattr(cls, direction, method)
        with _lock:
            _recording = False


def profile_training(model: Any, batch: int = 128, steps: int = 3, warmup: int = 1, input_shape: tuple = (3, 32, 32),
                     num_classes: int = 10, lr: float = 0.1, seed: int = 0) -> Profile:
    """Run ``warmup`` + ``steps`` training steps of ``model`` on random data (SGD with momentum 0.9
    and weight decay 1e-4, cross-entropy) and profile the last ``steps``.

    Rows: every op's forward and backward, "SGD.step (update)" and "autograd and Python (rest)" (the
    step's wall time not inside an op or the update). The model's weights change (it trains)."""
    from . import functional as F  # noqa: PLC0415
    from . import optim  # noqa: PLC0415

    if steps < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"profile_training: need steps >= 1, warmup >= 0 and batch >= 1, "
                         f"got steps={steps}, warmup={warmup}, batch={batch}")
    params = list(model.parameters())
    if not params:
        raise ValueError("profile_training: the model has no parameters to train")
    device = backend.device_of(params[0].data)
    rng = numpy.random.default_rng(seed)
    x = Tensor(backend.to_device(rng.standard_normal((batch, *input_shape)).astype(numpy.float32), device))
    t = Tensor(backend.to_device(rng.integers(0, num_classes, batch), device))
    opt = optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()

    def sync() -> None:
        if device != "cpu":
            backend.synchronize(device)

    def step(prof: Profile | None) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        start = time.perf_counter()
        opt.step()
        sync()
        if prof is not None:
            moved = 5 * _nbytes([p.data for p in params])  # reads p, g, v; writes p, v
            prof.add("SGD.step (update)", "step", time.perf_counter() - start, moved)

    for _ in range(warmup):
        step(None)
    with record(synchronize=device != "cpu", device=device) as prof:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step(prof)
        sync()
        prof.total_seconds = time.perf_counter() - start
    prof.steps = steps
    rest = prof.total_seconds - prof.op_seconds
    prof.rows[("autograd and Python (rest)", "step")] = OpStats("autograd and Python (rest)", "step", steps,
                                                              max(rest, 0.0), 0)
    return prof
