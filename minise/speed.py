"""The CPU speed machinery the ops call: threads over the batch, blocks of samples, BLAS thread control.

None of this changes what an op computes; it decides how the work is cut up. The ops read as
textbook code and call these from here:

- ``batch_parts(x)``: contiguous slices of the batch, one per thread (just the whole batch off the
  CPU, with one thread, for a conv too small to gain from threads (``PARALLEL_MIN_MACS``), or where
  the BLAS thread count cannot be set); ``parts(x, axis)`` the same
  for the memory-bound passes, which need no BLAS control (batch norm splits its channels, which
  are independent, so not one number changes);
- ``in_parallel(fn, parts)``: ``[fn(part) for part in parts]`` on the calling thread and the pool
  threads, each taking the next part as soon as it is free (a slower core does fewer), with the
  BLAS library held at one thread meanwhile (NumPy lets go of the GIL in its copies, ufuncs and
  matrix products, so the parts run on separate cores; several BLAS threads per part would fight
  over the same cores);
- ``over_batch(fn, x, shape, dtype)``: ``fn`` on each part of the batch in parallel, its rows
  gathered into one array (no copy when there is one part);
- ``add(a, b)``: ``a + b`` for the sums no op owns (the residual add, the engine's sum of two
  gradients), in parts of the batch on the threads for large arrays;
- ``block_size(x, bytes_per_sample, budget)``: how many samples to take at a time so that a block
  of work stays in the cache (``default_block_bytes()``: half a core's L2; the whole batch off the CPU);
- ``limit_blas_threads(n)``: a context manager over threadpoolctl that counts overlapping users
  (nested blocks, several threads): the first one in sets the limit, the last one out restores it.

``fast_path(name, *arrays)`` is how an op finds its fast path (``minise.fast``): the module
``minise.fast.<name>`` when fast paths are on (``use_fast``, ``MINISE_FAST``), the module exists
(a student copy may leave it out) and it ``supports`` the arrays; otherwise None, and the op runs
its textbook code.

``keep_freed_memory()`` has the C allocator keep freed memory for the next step's arrays (a
program's choice: the ``minise`` command and the benchmarks make it, ``import minise`` never does).

``Prefetcher`` runs the making of the next batches on a background thread, in order, so that
augmentation overlaps with the training step without changing a single number.

Measured effects are in benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import importlib
import os
import platform
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import backend
from .errors import UserError

__all__ = ["num_threads", "ThreadSettingError", "PARALLEL_MIN_BYTES", "PARALLEL_MIN_MACS", "batch_parts", "parts",
           "in_parallel", "over_batch", "block_size", "sample_blocks", "default_block_bytes", "block_bytes",
           "limit_blas_threads", "blas_available", "blas_num_threads", "blas_for_one_part", "Prefetcher", "fast_path",
           "use_fast", "fast_enabled", "keep_freed_memory", "add"]


class ThreadSettingError(UserError, ValueError):
    """``MINISE_NUM_THREADS`` is not a positive int (a one-line error of the ``minise`` command, exit 2)."""


def _default_num_threads() -> int:
    setting = os.environ.get("MINISE_NUM_THREADS")
    if setting is not None and setting.strip():
        text = setting.strip()
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ThreadSettingError(f"MINISE_NUM_THREADS must be a positive int, got {setting!r}")
        return int(text)
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def num_threads() -> int:
    """How many threads an op splits a batch over on the CPU (``NUM_THREADS``): the cores this process
    may use, or the environment variable ``MINISE_NUM_THREADS``. 1 runs the plain sequential code (with
    BLAS's own threads). Read on first use, not at import, so a bad setting stops only what needs it,
    with :class:`ThreadSettingError`; setting ``speed.NUM_THREADS`` overrides it."""
    value = globals().get("NUM_THREADS")
    if value is None:
        value = globals()["NUM_THREADS"] = _default_num_threads()
    return value


def __getattr__(name: str) -> Any:
    if name == "NUM_THREADS":  # speed.NUM_THREADS, read on first use
        return num_threads()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _l2_cache_bytes() -> int | None:
    """The size of one core's level-2 cache (Linux sysfs), or None where it cannot be read. Read
    once: the fast paths ask for their block size on every call, and the sysfs reads cost ~80 µs."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/level") as f:
                if f.read().strip() != "2":
                    continue
            with open(f"{base}/{entry}/size") as f:
                size = f.read().strip().upper()
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    except (OSError, ValueError):
        return None
    return None


def default_block_bytes() -> int:
    """A block of work for one thread: half a core's L2 cache (so the block and the product's other
    operands fit together), 1 MiB where the cache size cannot be read; at least 256 KiB."""
    l2 = _l2_cache_bytes()
    return max(256 << 10, l2 // 2) if l2 else 1 << 20


def block_bytes(setting: int | None) -> int:
    """A module's block size setting, or ``default_block_bytes()`` where it is None (read at each call,
    so the machine's cache size, or a test's pinned one, decides)."""
    return default_block_bytes() if setting is None else setting


# ---------------------------------------------------------------------- BLAS thread control
_blas_lock = threading.Lock()
_blas_controller: Any = None  # threadpoolctl's view of the BLAS libraries, made on first use
_blas_users = 0  # how many limit_blas_threads blocks are open
_blas_limiter: Any = None


def _controller() -> Any:
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - on first use (NumPy, above, loads its BLAS)

        _blas_controller = ThreadpoolController().select(user_api="blas")
    return _blas_controller


def blas_available() -> bool:
    """Whether a loaded BLAS library was found whose thread count can be set (OpenBLAS, MKL, BLIS...)."""
    return bool(_controller().lib_controllers)


def blas_num_threads() -> int | None:
    """The thread count of the first BLAS library found (None if there is none)."""
    libs = _controller().lib_controllers
    return libs[0].num_threads if libs else None


@contextmanager
def limit_blas_threads(n: int) -> Iterator[bool]:
    """Run the block with every BLAS library limited to ``n`` threads; restore the counts after.

    Overlapping uses (nested, or from several threads) are counted: the first sets the limit, the
    last restores it. Yields whether a limit is in force (False: no controllable BLAS).

    OpenBLAS ignores a raise of its thread count asked from a thread other than the one that
    lowered it, so the thread that enters first should leave last (``in_parallel`` does: the
    calling thread holds the limit around its pool threads' work)."""
    global _blas_users, _blas_limiter
    if not blas_available():
        yield False
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _controller().limit(limits=n)
        _blas_users += 1
    try:
        yield True
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


# ---------------------------------------------------------------------- threads over the batch
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _executor(size: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``size`` threads, made on first use (and again when the size changes:
    the same threads run every call, so each makes its per-thread buffers once)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(size, thread_name_prefix="minise-worker"), size
        return _pool


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it makes a pool of its own."""
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users, _blas_limiter
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()
    _blas_lock, _blas_users, _blas_limiter = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


PARALLEL_MIN_MACS = 1 << 24
"""A conv splits its batch over the threads only where each part then does at least this many
multiply-adds (about 17 million); a smaller one runs as one part on the calling thread, BLAS held at
one thread (``blas_for_one_part``). A part of ResNet-20's 16→16 3×3 conv at 32×32 does 2.4 million
per sample forward, twice that backward (both gradients): its forward splits from batch 16, its
backward from batch 8. SE-ResNet-20 steps, this limit against none (0), alternated in one process
(new / old, median of pairs): training 0.83 at batch 2, 1.03 at 8, 1.01 at 16, 0.97 at 32, 1.00 at
128; evaluation 0.72, 0.96, 1.03, 1.00 and 0.98 (benchmarks/README.md, fifth round)."""


def _samples_for_work(macs_per_sample: int) -> int:
    """How many samples one part needs to do ``PARALLEL_MIN_MACS`` multiply-adds (1 when the work is not given)."""
    return -(-PARALLEL_MIN_MACS // macs_per_sample) if macs_per_sample > 0 else 1


def batch_parts(x: Any, min_part: int = 1, macs_per_sample: int = 0) -> list[slice]:
    """Contiguous slices of the batch (axis 0), one per thread, each at least ``min_part`` samples and,
    given the multiply-adds per sample of the work, at least ``PARALLEL_MIN_MACS`` of them; just
    [slice(None)] (the whole batch on the calling thread) off the CPU, with one thread or too little
    work, or without a controllable BLAS."""
    n = x.shape[0]
    t = min(num_threads(), n // max(1, min_part, _samples_for_work(macs_per_sample)))
    if t <= 1 or backend.device_of(x) != "cpu" or not blas_available():
        return [slice(None)]
    return [slice(k * n // t, (k + 1) * n // t) for k in range(t)]


def blas_for_one_part(x: Any, macs_per_sample: int) -> contextlib.AbstractContextManager:
    """The BLAS thread count for work on x's whole batch on the calling thread (one part of
    ``batch_parts``): held at one thread (``limit_blas_threads(1)``) where minise runs several threads
    on the CPU and a batch of two or more samples was kept whole for too little work (two parts would
    each do fewer than ``PARALLEL_MIN_MACS`` multiply-adds); BLAS's own threads otherwise
    (``NUM_THREADS`` = 1, or one sample, which the threads cannot share: an ImageNet image at batch 1).
    So the held work is always small, under 2·PARALLEL_MIN_MACS, whatever the number of cores.

    Why: OpenBLAS's threads spin for a while after a product before they sleep, taking the cores the
    next op's parts run on. Small convs left to BLAS between split ones made SE-ResNet-20's training
    step at batch 16–24 about 20 % slower; held, the same step took what the split one does."""
    n = x.shape[0]
    too_little = macs_per_sample > 0 and 2 <= n < 2 * _samples_for_work(macs_per_sample)
    if num_threads() > 1 and too_little and backend.device_of(x) == "cpu":
        return limit_blas_threads(1)
    return contextlib.nullcontext()


PARALLEL_MIN_BYTES = 1 << 20
"""Arrays smaller than this are not split for the memory-bound ops (a thread hand-off costs more)."""


def parts(x: Any, axis: int = 0, min_bytes: int | None = None) -> list[slice]:
    """Contiguous slices of ``x`` along ``axis``, one per thread, for work that needs no BLAS (the
    memory-bound passes: batch norm, ReLU); [slice(None)] off the CPU, with one thread, or for an
    array under ``min_bytes`` (default ``PARALLEL_MIN_BYTES``)."""
    n = x.shape[axis]
    t = min(num_threads(), n)
    if t <= 1 or x.nbytes < (PARALLEL_MIN_BYTES if min_bytes is None else min_bytes) or backend.device_of(x) != "cpu":
        return [slice(None)]
    return [slice(k * n // t, (k + 1) * n // t) for k in range(t)]


def in_parallel(fn: Callable[[Any], Any], parts: list[Any], limit_blas: bool = True) -> list[Any]:
    """[fn(part) for part in parts], the parts shared out among up to ``NUM_THREADS`` threads (the
    calling thread and pool threads) and (unless ``limit_blas`` is False) BLAS on one thread meanwhile.

    Each thread takes the next part not yet taken as soon as it is free, so with more parts than
    threads a faster core does more of them: the call ends when the last part ends, and a core slowed
    by the machine (another program, a hypervisor's neighbour, a laptop's efficiency cores) no longer
    holds up the others with half the work. Which thread runs a part never changes what it computes,
    and the results come back in the order of ``parts``, so callers that add them up in that order
    get the same bits whatever the timing. An exception in one part stops the handing out; the first
    one is raised here once every part already started has finished. The pool threads run in a copy of
    the caller's context, so ``numpy.errstate`` holds there too (``invalid="raise"`` raises from any
    part, as it would on one thread)."""
    if len(parts) == 1:
        return [fn(parts[0])]
    sweep = _Sweep(fn, parts)
    helpers = min(num_threads(), len(parts)) - 1
    caller = contextvars.copy_context()  # NumPy's errstate lives there: parts raise or warn as the caller asked
    with limit_blas_threads(1) if limit_blas else contextlib.nullcontext():
        for _ in range(helpers):
            _executor(num_threads() - 1).submit(caller.copy().run, sweep.work)  # one copy per thread
        sweep.work()  # the calling thread takes parts too (one thread hand-off fewer per call)
        sweep.finished.wait()
    if sweep.error is not None:
        raise sweep.error
    return sweep.results


class _Sweep:
    """The parts of one ``in_parallel`` call, handed out one at a time to whichever thread asks."""

    def __init__(self, fn: Callable[[Any], Any], parts: list[Any]) -> None:
        self.fn, self.parts = fn, parts
        self.results: list[Any] = [None] * len(parts)
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._next = 0
        self._left = len(parts)
        self._lock = threading.Lock()

    def _take(self) -> int:
        """The index of the next part not yet taken (under the lock: no two threads get the same one)."""
        with self._lock:
            i, self._next = self._next, self._next + 1
        return i

    def work(self) -> None:
        """Run parts until none is left (after an error: count the rest as done without running them)."""
        while (i := self._take()) < len(self.parts):
            if self.error is None:
                try:
                    self.results[i] = self.fn(self.parts[i])
                except BaseException as exc:  # handed to the caller, raised there
                    with self._lock:
                        self.error = self.error or exc
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self.finished.set()


def over_batch(fn: Callable[[slice], tuple[Any, Any]], x: Any, shape: tuple[int, ...] | None,
               dtype: Any, macs_per_sample: int = 0) -> tuple[Any, list[Any]]:
    """Run ``fn(part)`` for each part of x's batch (``batch_parts``, ``in_parallel``); ``fn`` returns
    (the rows ``part`` of one array of ``shape`` and ``dtype``, anything else). Returns (that whole
    array, [the other results in order]). With one part the array is ``fn``'s own (no copy); with
    several, each thread copies its rows into one new array. ``shape=None``: no array is gathered.
    ``macs_per_sample``: the multiply-adds of ``fn`` per sample (too little work is not split)."""
    split = batch_parts(x, macs_per_sample=macs_per_sample)
    if len(split) == 1:
        with blas_for_one_part(x, macs_per_sample):
            rows, other = fn(split[0])
        return rows, [other]
    out = None if shape is None else backend.get_array_module(x).empty(shape, dtype=dtype)

    def run(s: slice) -> Any:
        rows, other = fn(s)
        if out is not None:
            out[s] = rows
        return other

    return out, in_parallel(run, split)


ADD_MIN_BYTES = 4 << 20
"""Arrays from this size are summed on the threads by ``add``. Measured on fresh arrays (median of 60,
one thread against two, alternated): 128×16×32×32 float32 (8 MiB) 1.68 → 1.13 ms (with a broadcast
operand 1.57 → 1.16), 128×32×16×16 (4 MiB) 0.80 → 0.63, 128×64×8×8 (2 MiB) 0.32 → 0.32 (not split)."""


def add(a: Any, b: Any) -> Any:
    """a + b, the same numbers; two large CPU arrays of one floating dtype and one shape are added in
    parts of the batch on the threads (``in_parallel``), anything else is just ``a + b``.

    For the sums that no op owns: the residual connection's forward (``Add``) and the autograd
    engine's sum of the gradients that reach a tensor from two consumers. Each runs over the whole
    array on one core otherwise (8 MiB at ResNet-20's first stage). ``b`` may be a broadcast view
    of ``a``'s shape (the squeeze's gradient, one number per plane), as NumPy's ``+`` allows."""
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.shape == b.shape and a.dtype == b.dtype
            and a.dtype.kind == "f" and a.ndim and fast_enabled()):
        split = parts(a, min_bytes=ADD_MIN_BYTES)
        if len(split) > 1:
            out = np.empty(a.shape, dtype=a.dtype)  # cpu-only: a and b are NumPy arrays (checked above)
            in_parallel(lambda s: np.add(a[s], b[s], out=out[s]), split, limit_blas=False)  # cpu-only
            return out
    return a + b


def block_size(x: Any, bytes_per_sample: int, budget: int) -> int:
    """How many samples of x go into one block of about ``budget`` bytes (the whole batch off the CPU)."""
    n = x.shape[0]
    if backend.device_of(x) != "cpu":
        return n
    return max(1, min(n, budget // max(1, bytes_per_sample)))


def sample_blocks(x: Any, part: slice = slice(None)) -> list[slice]:
    """The samples ``part`` of x (axis 0) cut into consecutive slices of about ``default_block_bytes()``
    each (``block_size``): the blocks a memory-bound pass sweeps while they are in the cache."""
    start, stop, _ = part.indices(x.shape[0])
    step = block_size(x, x[0].nbytes if x.shape[0] else 1, default_block_bytes())
    return [slice(b, min(b + step, stop)) for b in range(start, stop, step)]


# ---------------------------------------------------------------------- fast paths
_fast_setting: bool | None = None  # use_fast's choice; None: the environment decides
_fast_modules: dict[str, Any] = {}


def fast_enabled() -> bool:
    """Whether ops may take their fast paths: ``use_fast``'s setting, else ``MINISE_FAST`` (default on)."""
    if _fast_setting is not None:
        return _fast_setting
    setting = os.environ.get("MINISE_FAST", "1").strip().lower()
    if setting in ("1", "on", "true", "yes", ""):
        return True
    if setting in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"MINISE_FAST must be 1 or 0, got {setting!r}")


@contextmanager
def use_fast(enabled: bool) -> Iterator[None]:
    """Within the block, ops take their fast paths (True) or only their textbook code (False)."""
    global _fast_setting
    if not isinstance(enabled, bool):
        raise TypeError(f"use_fast: expected True or False, got {enabled!r}")
    before, _fast_setting = _fast_setting, enabled
    try:
        yield
    finally:
        _fast_setting = before


def fast_path(name: str, *arrays: Any) -> Any:
    """The module ``minise.fast.<name>`` if fast paths are on, it exists and it supports ``arrays``; else None."""
    if not fast_enabled():
        return None
    if name not in _fast_modules:
        try:
            _fast_modules[name] = importlib.import_module(f"minise.fast.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"minise.fast.{name}":
                raise  # the module is there but something it imports is not
            _fast_modules[name] = None  # left out (a student copy): the textbook path
    module = _fast_modules[name]
    return module if module is not None and module.supports(*arrays) else None


# ---------------------------------------------------------------------- the allocator
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_MMAP_THRESHOLD_MAX = 32 << 20  # the largest glibc accepts on 64-bit systems


def keep_freed_memory(keep_bytes: int = 1 << 30) -> bool:
    """Have the C allocator (glibc's malloc) keep the memory the program frees for its next arrays,
    instead of handing it back to the operating system.

    A training step makes and frees the same large arrays every time. By default glibc returns
    large freed blocks to the kernel (each block over its mmap threshold, and the free top of the
    heap once it exceeds the trim threshold), so the next step writes to fresh pages, which the
    kernel maps and zeroes on first touch: about 38,000 page faults and 100 ms of system time per
    ResNet-20 training step at batch 128 on the development machine. With this setting, arrays up
    to 32 MiB come from the heap and up to ``keep_bytes`` of freed heap is kept: no page faults after
    the first step. The peak resident memory stays that of the step (the next step reuses it); the
    process only no longer shrinks between steps.

    It changes the allocator of the whole process, so a program chooses it (the ``minise`` command,
    the benchmarks); ``import minise`` never does. Returns whether the setting was made: False off
    glibc (macOS, Windows, musl), where nothing changes.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    keep = max(0, min(int(keep_bytes), 2**31 - 1))
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))


# ---------------------------------------------------------------------- background batches
class Prefetcher:
    """Iterate over ``batches`` with the next ``depth`` items made on a background thread.

    The items come out in the same order and with the same values as from ``batches`` itself: the
    background thread is the only one that advances the iterator (and so the random generator
    inside it), so the numbers for a seed do not change. An exception raised while making a batch
    is raised here, at the item where it happened. ``close()`` (or leaving a ``with`` block) stops
    the thread early.

    It runs up to ``depth`` items ahead: a loop that may stop before the end (``max_steps``) should
    hand it a bounded iterator (``itertools.islice(loader, max_steps)``), or the random generator
    will have moved on by the batches made but never used. Meant for CPU data: a GPU array made on
    another thread belongs to another CUDA stream.
    """

    _DONE = object()

    def __init__(self, batches: Iterable[Any], depth: int = 2) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"Prefetcher: depth must be a positive int, got {depth!r}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # in a copy of the creator's context: the batches are made under its numpy.errstate, as in a plain loop
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._fill, iter(batches)),
                                        name="minise-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, it: Iterator[Any]) -> None:
        try:
            for item in it:
                if not self._put((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put((None, error))
            return
        self._put((self._DONE, None))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item, error = self._queue.get()
            if error is not None:
                self.close()
                raise error
            if item is self._DONE:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
