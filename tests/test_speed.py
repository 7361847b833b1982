"""minise.speed: BLAS thread control (threadpoolctl, counted), batch parts, blocks, the prefetcher,
the allocator setting."""

import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minise import speed

from .conftest import on


def _libs():
    return speed._controller().lib_controllers


def test_limit_blas_threads_counts_overlapping_users():
    """The first block in sets the limit, the last one out restores it (nested and after an error)."""
    libs = _libs()
    if not libs:
        with speed.limit_blas_threads(1) as limited:
            assert limited is False and speed.blas_num_threads() is None
        return
    original = [lib.num_threads for lib in libs]
    try:
        for lib in libs:
            lib.set_num_threads(2)
        with speed.limit_blas_threads(1) as limited:
            assert limited is True and speed.blas_num_threads() == 1
            with speed.limit_blas_threads(1):
                assert speed.blas_num_threads() == 1
            assert speed.blas_num_threads() == 1  # the outer block still holds the limit
        assert [lib.num_threads for lib in libs] == [2] * len(libs)
        with pytest.raises(RuntimeError), speed.limit_blas_threads(1):
            raise RuntimeError("inside")
        assert [lib.num_threads for lib in libs] == [2] * len(libs)
    finally:
        for lib, count in zip(libs, original):
            lib.set_num_threads(count)


def test_limit_blas_threads_from_two_threads():
    """A pool thread enters and leaves while the calling thread holds the limit: the limit stays in
    force until the calling thread leaves, which restores the count. (OpenBLAS ignores a raise of
    its thread count asked from another thread than the one that lowered it, so the calling thread,
    first in, is the one that should be last out: ``in_parallel`` is used that way.)"""
    if not _libs():
        pytest.skip("no BLAS whose thread count can be set")
    before = speed.blas_num_threads()
    seen = []

    def worker():
        with speed.limit_blas_threads(1):
            seen.append(speed.blas_num_threads())
        seen.append(speed.blas_num_threads())

    with speed.limit_blas_threads(1):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert speed.blas_num_threads() == 1
    assert seen == [1, 1] and speed.blas_num_threads() == before


@pytest.mark.parametrize("n,threads,expected", [
    (7, 3, [(0, 2), (2, 4), (4, 7)]), (1, 4, None), (5, 1, None), (3, 8, [(0, 1), (1, 2), (2, 3)])])
def test_batch_parts(monkeypatch, n, threads, expected):
    if not speed.blas_available():
        pytest.skip("no BLAS whose thread count can be set: no parts")
    monkeypatch.setattr(speed, "NUM_THREADS", threads)
    parts = speed.batch_parts(np.zeros((n, 2)))
    if expected is None:
        assert parts == [slice(None)]
    else:
        assert [(s.start, s.stop) for s in parts] == expected


def test_batch_parts_min_part(monkeypatch):
    monkeypatch.setattr(speed, "NUM_THREADS", 4)
    if speed.blas_available():
        assert len(speed.batch_parts(np.zeros((8, 2)), min_part=4)) == 2
    assert speed.batch_parts(np.zeros((3, 2)), min_part=4) == [slice(None)]


def test_batch_parts_by_work(monkeypatch):
    """Each part does at least PARALLEL_MIN_MACS multiply-adds: samples per part = ⌈limit / macs per sample⌉."""
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    monkeypatch.setattr(speed, "PARALLEL_MIN_MACS", 1000)
    if not speed.blas_available():
        assert speed.batch_parts(np.zeros((8, 2)), macs_per_sample=1000) == [slice(None)]
        return
    assert speed.batch_parts(np.zeros((8, 2)), macs_per_sample=250) == [slice(0, 4), slice(4, 8)]
    assert speed.batch_parts(np.zeros((7, 2)), macs_per_sample=250) == [slice(None)]  # parts of 3 and 4 samples
    assert speed.batch_parts(np.zeros((6, 2)), macs_per_sample=334) == [slice(0, 3), slice(3, 6)]
    assert speed.batch_parts(np.zeros((6, 2)), macs_per_sample=333) == [slice(None)]  # 999 per 3 samples
    assert speed.batch_parts(np.zeros((8, 2)), min_part=5, macs_per_sample=1000) == [slice(None)]  # both limits hold
    assert len(speed.batch_parts(np.zeros((2, 2)), macs_per_sample=0)) == 2  # no work given: no limit by work


def test_blas_for_one_part_holds_blas_only_for_work_kept_whole_as_too_small(monkeypatch, simulated_gpu):
    """A batch kept whole for too little work runs with BLAS on one thread (its threads would spin on the
    cores the next split op needs); one minise thread, one sample (large or small), enough work or a
    device array leave BLAS as it is."""
    if not speed.blas_available() or speed.blas_num_threads() < 2:
        pytest.skip("needs a controllable BLAS with more than one thread")
    monkeypatch.setattr(speed, "PARALLEL_MIN_MACS", 1000)
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    before = speed.blas_num_threads()
    x = np.zeros((4, 2))
    with speed.blas_for_one_part(x, 499):  # 1996 multiply-adds: under 2 threads × 1000
        assert speed.blas_num_threads() == 1
    assert speed.blas_num_threads() == before
    for args in [(x, 500), (np.zeros((1, 2)), 10**9), (np.zeros((1, 2)), 1), (x, 0), (simulated_gpu.xp.asarray(x), 1)]:
        with speed.blas_for_one_part(*args):
            assert speed.blas_num_threads() == before, args[1:]
    monkeypatch.setattr(speed, "NUM_THREADS", 16)  # many cores: still held only for work under two parts' worth
    with speed.blas_for_one_part(x, 499):
        assert speed.blas_num_threads() == 1
    with speed.blas_for_one_part(x, 500):
        assert speed.blas_num_threads() == before
    monkeypatch.setattr(speed, "NUM_THREADS", 1)
    with speed.blas_for_one_part(x, 1):
        assert speed.blas_num_threads() == before


def test_gpu_is_not_split(simulated_gpu, monkeypatch):
    monkeypatch.setattr(speed, "NUM_THREADS", 4)
    x = on("cuda", np.zeros((8, 2)))
    assert speed.batch_parts(x) == [slice(None)]
    assert speed.block_size(x, 1, 1) == 8


def test_in_parallel_keeps_order_and_limits_blas(monkeypatch):
    seen = []
    result = speed.in_parallel(lambda s: (seen.append(speed.blas_num_threads()), s.start)[1],
                               [slice(0, 1), slice(1, 2), slice(2, 3)])
    assert result == [0, 1, 2]
    if speed.blas_available():
        assert seen == [1, 1, 1]


def test_in_parallel_hands_parts_to_whichever_thread_is_free(monkeypatch):
    """One slow part does not hold up the others: while it runs, the other thread takes every other
    part. (The slow part waits until the others are done; had it to run them itself, it would wait
    in vain and the test fail.)"""
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    threads, others_done = {}, threading.Event()

    def fn(i):
        threads[i] = threading.current_thread().name
        if i == 0:
            assert others_done.wait(timeout=30), "the other parts waited for the slow one"
        elif sum(k != 0 for k in list(threads)) == 5:
            others_done.set()
        return i * i

    assert speed.in_parallel(fn, list(range(6)), limit_blas=False) == [0, 1, 4, 9, 16, 25]
    assert all(threads[i] != threads[0] for i in range(1, 6))
    assert len(set(threads.values())) == 2


def test_in_parallel_raises_the_first_error_after_the_parts_in_flight(monkeypatch):
    """An error stops the handing out of parts; the parts already running finish before it is raised."""
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    finished = []

    def fn(i):
        if i == 1:
            time.sleep(0.05)
            raise KeyError("part 1")
        if i == 0:
            time.sleep(0.2)  # still running when part 1 fails
        finished.append(i)

    with pytest.raises(KeyError, match="part 1"):
        speed.in_parallel(fn, list(range(50)), limit_blas=False)
    assert 0 in finished and len(finished) < 49


def test_in_parallel_nested_calls_finish(monkeypatch):
    """A part that calls in_parallel itself (its pool threads busy) still finishes: the caller runs parts too."""
    monkeypatch.setattr(speed, "NUM_THREADS", 2)

    def inner(i):
        return speed.in_parallel(lambda j: i * 10 + j, list(range(3)), limit_blas=False)

    expected = [[10 * i + j for j in range(3)] for i in range(4)]
    assert speed.in_parallel(inner, list(range(4)), limit_blas=False) == expected


def test_block_size():
    x = np.zeros((10, 3))
    assert speed.block_size(x, 100, 1000) == 10
    assert speed.block_size(x, 100, 350) == 3
    assert speed.block_size(x, 100, 1) == 1  # at least one sample


def test_num_threads_setting(monkeypatch):
    monkeypatch.setenv("MINISE_NUM_THREADS", "3")
    assert speed._default_num_threads() == 3
    monkeypatch.setenv("MINISE_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="MINISE_NUM_THREADS must be a positive int, got 'many'"):
        speed._default_num_threads()


# ---------------------------------------------------------------------- the prefetcher
def _batches(seed, count=6):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.standard_normal((4, 3))


def test_prefetcher_same_items_in_order():
    """Making the batches on the background thread changes no number for a seed."""
    expected = list(_batches(1))
    with speed.Prefetcher(_batches(1), depth=2) as batches:
        got = list(batches)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_prefetcher_runs_ahead_on_another_thread():
    made_on = []

    def source():
        for k in range(3):
            made_on.append(threading.current_thread().name)
            yield k

    assert list(speed.Prefetcher(source())) == [0, 1, 2]
    assert made_on == ["minise-prefetch"] * 3


def test_prefetcher_makes_batches_under_the_creators_errstate():
    """numpy.errstate is per thread: a loop run under invalid="raise" raises from the batch that makes a
    NaN, as it would without the prefetcher, and the background thread sees the same setting."""
    def source():
        yield np.geterr()["invalid"]
        yield np.array([np.inf]) - np.array([np.inf])

    with np.errstate(invalid="raise"):
        it = iter(speed.Prefetcher(source()))
        assert next(it) == "raise"
        with pytest.raises(FloatingPointError):
            next(it)


def test_prefetcher_raises_where_the_error_happened():
    def source():
        yield 1
        raise OSError("disk gone")

    it = iter(speed.Prefetcher(source()))
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_prefetcher_close_early_stops_the_thread():
    def endless():
        k = 0
        while True:
            yield k
            k += 1

    p = speed.Prefetcher(endless(), depth=1)
    assert next(iter(p)) == 0
    p.close()
    assert not p._thread.is_alive()


@pytest.mark.parametrize("depth", [0, True, 1.5])
def test_prefetcher_bad_depth(depth):
    with pytest.raises(ValueError, match="depth must be a positive int"):
        speed.Prefetcher([], depth=depth)


def test_prefetcher_bounded_by_islice_leaves_the_generator_where_a_plain_loop_would():
    """The prefetcher runs ahead: a loop that stops early must bound it (islice), or the background
    thread will already have drawn the next batches' random numbers."""
    import itertools

    def source(rng):
        while True:
            yield rng.standard_normal(3)

    plain_rng, fetched_rng = np.random.default_rng(7), np.random.default_rng(7)
    plain = list(itertools.islice(source(plain_rng), 3))
    with speed.Prefetcher(itertools.islice(source(fetched_rng), 3), depth=2) as batches:
        fetched = list(batches)
    for a, b in zip(plain, fetched):
        np.testing.assert_array_equal(a, b)
    assert plain_rng.bit_generator.state == fetched_rng.bit_generator.state


def test_default_block_bytes(monkeypatch, machine_cache_size):
    """Half the L2 cache, at least 256 KiB, 1 MiB where it cannot be read; the probe reads a plausible size."""
    monkeypatch.setattr(speed, "_l2_cache_bytes", lambda: 2 << 20)
    assert speed.default_block_bytes() == 1 << 20
    monkeypatch.setattr(speed, "_l2_cache_bytes", lambda: 128 << 10)
    assert speed.default_block_bytes() == 256 << 10
    monkeypatch.setattr(speed, "_l2_cache_bytes", lambda: None)
    assert speed.default_block_bytes() == 1 << 20
    size = machine_cache_size()  # this machine's own, from sysfs
    assert size is None or size >= 1 << 14


# ---------------------------------------------------------------------- memory-bound ops in parts
@pytest.fixture
def three_parts(monkeypatch):
    """Split every array, however small, over three threads."""
    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    monkeypatch.setattr(speed, "PARALLEL_MIN_BYTES", 0)


def test_parts():
    x = np.zeros((7, 5), np.float32)
    assert speed.parts(x, min_bytes=10**9) == [slice(None)]
    if speed.NUM_THREADS > 1:
        split = speed.parts(x, axis=1, min_bytes=0)
        assert split[0].start == 0 and split[-1].stop == 5 and len(split) == min(speed.NUM_THREADS, 5)


def test_parts_split_along_the_axis(three_parts):
    assert speed.parts(np.zeros((7, 5)), axis=1) == [slice(0, 1), slice(1, 3), slice(3, 5)]


def _relu_and_bn(training, dtype=np.float64):
    import minise.functional as F
    from minise import Tensor

    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((5, 7, 4, 3)).astype(dtype) * 2 + 1, requires_grad=True)
    w = Tensor(rng.uniform(0.5, 1.5, 7).astype(dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(7).astype(dtype), requires_grad=True)
    rm, rv = rng.standard_normal(7).astype(dtype), rng.uniform(0.5, 2, 7).astype(dtype)
    y = F.relu(F.batch_norm(x, rm, rv, w, b, training=training))
    y.backward(rng.standard_normal(y.shape).astype(dtype))
    return [y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy(), rm, rv]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_in_parts_gives_the_same_numbers(monkeypatch, training, dtype):
    """Batch norm splits its (independent) channels over the threads: not one number changes."""
    whole = _relu_and_bn(training, dtype)
    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    monkeypatch.setattr(speed, "PARALLEL_MIN_BYTES", 0)
    split = _relu_and_bn(training, dtype)
    for k, (a, b) in enumerate(zip(split, whole)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {k} (y, dL/dx, dL/dw, dL/db, running mean, var)")


# ---------------------------------------------------------------------- sums on the threads
@pytest.fixture
def add_in_parts(monkeypatch):
    """speed.add splits every array, however small, over three threads; returns the parts it was handed."""
    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    monkeypatch.setattr(speed, "ADD_MIN_BYTES", 0)
    seen = []
    real = speed.in_parallel

    def spy(fn, parts, limit_blas=True):
        seen.append(list(parts))
        return real(fn, parts, limit_blas)

    monkeypatch.setattr(speed, "in_parallel", spy)
    return seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_in_parts_is_a_plus_b_to_the_bit(add_in_parts, dtype):
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal((7, 3, 4, 5)).astype(dtype) for _ in range(2))
    a[0, 0, 0, :3] = [np.nan, np.inf, -0.0]
    b[0, 0, 0, :3] = [1.0, -np.inf, 0.0]
    with np.errstate(invalid="ignore"):  # inf − inf, in the first part: silent there too
        total, expected = speed.add(a, b), a + b
    assert add_in_parts == [[slice(0, 2), slice(2, 4), slice(4, 7)]]
    assert total.dtype == dtype and total.shape == a.shape
    np.testing.assert_array_equal(total, expected)
    np.testing.assert_array_equal(np.signbit(total), np.signbit(expected))
    assert not np.shares_memory(total, a) and not np.shares_memory(total, b)  # a new array, inputs untouched


def test_parts_run_under_the_callers_errstate(monkeypatch):
    """numpy.errstate is per thread (a context variable): in_parallel carries the caller's into its threads,
    so ``invalid="raise"`` raises from whichever part meets inf − inf, as one thread would."""
    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    a = np.zeros((6, 4))
    a[5, 0] = np.inf  # the last part: on a pool thread, or on the caller if it got there first
    with np.errstate(invalid="raise"):
        with pytest.raises(FloatingPointError):
            speed.in_parallel(lambda s: a[s] - a[s], [slice(0, 2), slice(2, 4), slice(4, 6)])
        barrier = threading.Barrier(3, timeout=10)  # three threads, one part each: two on the pool

        def part(s):
            barrier.wait()
            return np.geterr()["invalid"], threading.current_thread() is threading.main_thread()

        seen = speed.in_parallel(part, [0, 1, 2], limit_blas=False)
    assert [mode for mode, _ in seen] == ["raise"] * 3 and sum(main for _, main in seen) == 1
    assert np.geterr()["invalid"] != "raise"  # the caller's own setting left as it was outside the block


def test_add_in_parts_takes_a_broadcast_view_and_any_strides(add_in_parts):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 4, 3, 6)).transpose(0, 1, 3, 2)  # not contiguous
    b = np.broadcast_to(rng.standard_normal((5, 4, 1, 1)), a.shape)  # the squeeze's gradient, read-only
    np.testing.assert_array_equal(speed.add(a, b), a + b)
    assert len(add_in_parts) == 1


@pytest.mark.parametrize("a, b", [
    (np.ones((6, 2), np.float32), np.ones((6, 2), np.float64)),  # two dtypes: NumPy's promotion decides
    (np.ones((6, 2), np.int64), np.ones((6, 2), np.int64)),  # integers
    (np.ones((6, 2)), np.ones((1, 2))),  # shapes that broadcast
    (np.ones((6, 2)), 2.0),  # a Python number
    (np.float64(1.0), np.float64(2.0)),  # NumPy scalars
])
def test_add_leaves_everything_else_to_plus(add_in_parts, a, b):
    total = speed.add(a, b)
    expected = a + b
    assert type(total) is type(expected) and np.asarray(total).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(total, expected)
    assert add_in_parts == []


def test_add_does_not_split_small_arrays_device_arrays_or_with_fast_paths_off(monkeypatch, simulated_gpu):
    seen = []
    monkeypatch.setattr(speed, "in_parallel", lambda fn, parts, limit_blas=True: seen.append(parts))
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    small = np.ones((4, 8), np.float32)
    np.testing.assert_array_equal(speed.add(small, small), 2 * small)  # under ADD_MIN_BYTES
    monkeypatch.setattr(speed, "ADD_MIN_BYTES", 0)
    on_device = on("cuda", small)
    np.testing.assert_array_equal(speed.add(on_device, on_device).get(), 2 * small)
    with speed.use_fast(False):
        np.testing.assert_array_equal(speed.add(small, small), 2 * small)
    assert seen == []


def test_residual_add_and_gradient_sums_go_through_add(monkeypatch):
    """The Add op's forward and the engine's sum of two gradients for one tensor both use speed.add."""
    from minise import Tensor

    calls = []
    real = speed.add
    monkeypatch.setattr(speed, "add", lambda a, b: calls.append((a.shape, b.shape)) or real(a, b))
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    h = x * 1.0
    y = h + h * 2.0  # forward: one Add; backward: h gets a gradient from each of its two uses
    y.backward(np.ones((2, 3)))
    assert calls == [((2, 3), (2, 3)), ((2, 3), (2, 3))]
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 3.0))


def test_parts_never_more_than_the_axis(three_parts):
    assert speed.parts(np.zeros((2, 5))) == [slice(0, 1), slice(1, 2)]


def test_over_batch_gathers_rows_and_keeps_a_single_part_uncopied(monkeypatch):
    x = np.arange(14.0).reshape(7, 2)
    monkeypatch.setattr(speed, "NUM_THREADS", 1)
    mine = []
    rows, others = speed.over_batch(lambda s: (mine.append(x[s] * 2) or mine[-1], s), x, x.shape, x.dtype)
    assert rows is mine[0] and others == [slice(None)]
    if speed.blas_available():
        monkeypatch.setattr(speed, "NUM_THREADS", 3)
        rows, others = speed.over_batch(lambda s: (x[s] * 2, s.stop - s.start), x, x.shape, x.dtype)
        np.testing.assert_array_equal(rows, x * 2)
        assert others == [2, 2, 3]
        rows, others = speed.over_batch(lambda s: (None, 1), x, None, x.dtype)
        assert rows is None and others == [1, 1, 1]


def test_profile_counts_an_op_once_when_its_parts_run_on_threads(monkeypatch):
    import minise.functional as F
    from minise import Tensor, profile

    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    monkeypatch.setattr(speed, "PARALLEL_MIN_BYTES", 0)
    x = Tensor(np.random.default_rng(1).standard_normal((4, 6, 3, 3)), requires_grad=True)
    with profile.record() as prof:
        F.relu(F.batch_norm(x, None, None, training=True)).backward(np.ones((4, 6, 3, 3)))
    assert prof.rows[("BatchNorm", "forward")].calls == 1
    assert prof.rows[("ReLU", "forward")].calls == 1


# ---------------------------------------------------------------------- the fast-path switch
def test_use_fast_and_the_environment_decide_whether_fast_paths_run(monkeypatch):
    monkeypatch.delenv("MINISE_FAST", raising=False)
    assert speed.fast_enabled()
    monkeypatch.setenv("MINISE_FAST", "0")
    assert not speed.fast_enabled()
    with speed.use_fast(True):  # the code's choice wins over the environment's
        assert speed.fast_enabled()
        with speed.use_fast(False):
            assert not speed.fast_enabled()
        assert speed.fast_enabled()
    assert not speed.fast_enabled()
    monkeypatch.setenv("MINISE_FAST", "maybe")
    with pytest.raises(ValueError, match="MINISE_FAST must be 1 or 0"):
        speed.fast_enabled()
    with pytest.raises(TypeError, match="True or False"):
        with speed.use_fast(1):
            pass


def test_fast_path_is_none_when_off_missing_or_unsupported(monkeypatch):
    import types

    x = np.zeros((2, 3))
    assert speed.fast_path("no_such_module", x) is None  # a student copy without the module
    fake = types.SimpleNamespace(supports=lambda *arrays: arrays[0].ndim == 2)
    monkeypatch.setitem(speed._fast_modules, "fake", fake)
    assert speed.fast_path("fake", x) is fake
    assert speed.fast_path("fake", np.zeros(3)) is None  # arrays the module does not handle
    with speed.use_fast(False):
        assert speed.fast_path("fake", x) is None


def test_make_leaves_out_the_fast_paths_of_the_stripped_assignments(tmp_path):
    from minise.assignments import AssignmentError
    from minise.assignments.make import remove_fast_paths

    (tmp_path / "minise" / "fast").mkdir(parents=True)
    (tmp_path / "tests" / "fast").mkdir(parents=True)
    (tmp_path / "minise" / "fast" / "__init__.py").write_text('"""docs"""\n')
    (tmp_path / "minise" / "fast" / "a.py").write_text('SOLVES = ("conv/forward",)\n')
    (tmp_path / "minise" / "fast" / "b.py").write_text('SOLVES = ("se/scale_backward", "autograd/relu")\n')
    (tmp_path / "tests" / "fast" / "test_a.py").write_text("")
    (tmp_path / "tests" / "fast" / "test_b.py").write_text("")
    assert remove_fast_paths(tmp_path, ["autograd"]) == ["minise/fast/b.py"]
    assert not (tmp_path / "tests" / "fast" / "test_b.py").exists()
    assert (tmp_path / "minise" / "fast" / "a.py").exists() and (tmp_path / "tests" / "fast" / "test_a.py").exists()
    (tmp_path / "minise" / "fast" / "c.py").write_text("SOLVES = []\n")  # not a tuple of literals
    with pytest.raises(AssignmentError, match="must name the regions it solves"):
        remove_fast_paths(tmp_path, ["conv"])


def test_every_fast_module_names_real_regions_and_has_tests():
    from pathlib import Path

    from minise.assignments.make import fast_solves
    from minise.assignments.markers import find_regions

    root = Path(__file__).resolve().parent.parent
    tags = {r.tag for py in (root / "minise").rglob("*.py") for r in find_regions(py.read_text(encoding="utf-8"))}
    for py in sorted((root / "minise" / "fast").glob("*.py")):
        if py.name == "__init__.py":
            continue
        solves = fast_solves(py.read_text(encoding="utf-8"), str(py))
        assert solves and set(solves) <= tags, f"{py.name}: SOLVES {solves} must name existing regions"
        assert (root / "tests" / "fast" / f"test_{py.name}").exists(), f"{py.name} has no tests/fast/test_{py.name}"


# ---------------------------------------------------------------------- the allocator
_ROUNDS = """
import resource, sys
import numpy as np
import minise.speed as speed
kept = speed.keep_freed_memory() if sys.argv[1] == "keep" else None
def step():  # a step's worth of large arrays, written, then all freed
    arrays = [np.ones(2 << 20, np.float32) for _ in range(12)]
    del arrays
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_means_no_page_faults_in_the_next_step():
    """Each setting in a fresh process (it changes the allocator for good): the second round of the
    same arrays touches no new pages when freed memory is kept, and many without it."""
    def faults(mode: str) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        kept, count = done.stdout.split()
        return kept, int(count)

    pages = 12 * (8 << 20) // 4096
    kept, with_setting = faults("keep")
    assert kept == "True" and with_setting < pages // 100
    kept, without = faults("default")  # import minise alone leaves the allocator as it was
    assert kept == "None" and without > max(10, 10 * with_setting)


def test_every_fast_module_leaves_device_arrays_to_the_textbook_code():
    """The fast modules call NumPy directly: their ``supports`` is their only guard against GPU arrays."""
    import importlib
    from pathlib import Path

    from minise.testing import simulated_gpu

    root = Path(__file__).resolve().parent.parent / "minise" / "fast"
    names = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    assert names, "no fast modules found"
    host = np.ones((2, 3, 4, 4), dtype=np.float32)
    for name in names:
        module = importlib.import_module(f"minise.fast.{name}")
        assert module.supports(host, host), f"{name}: NumPy float32 arrays should take the fast path"
        with simulated_gpu() as gpu:
            on_device = gpu.asarray(host)
            assert not module.supports(on_device, on_device), f"{name} accepts device arrays"
            assert speed.fast_path(name, on_device, on_device) is None


def test_sample_blocks_cover_a_part_in_order(monkeypatch):
    x = np.zeros((10, 4, 5))  # 160 bytes a sample
    monkeypatch.setattr(speed, "default_block_bytes", lambda: 3 * 160)
    assert speed.sample_blocks(x) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert speed.sample_blocks(x, slice(4, 9)) == [slice(4, 7), slice(7, 9)]
    assert speed.sample_blocks(np.zeros((0, 4))) == []
    monkeypatch.setattr(speed, "default_block_bytes", lambda: 1)  # less than a sample: one at a time
    assert speed.sample_blocks(x, slice(8, None)) == [slice(8, 9), slice(9, 10)]


def test_the_cache_size_is_read_once(monkeypatch, machine_cache_size):
    speed._l2_cache_bytes.cache_clear()
    opened = []
    real_listdir = speed.os.listdir
    monkeypatch.setattr(speed.os, "listdir", lambda path: opened.append(path) or real_listdir(path))
    first = speed.default_block_bytes()
    assert speed.default_block_bytes() == first and len(opened) <= 1


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "²"])
def test_a_bad_thread_setting_is_refused_when_needed_not_at_import(value: str, tmp_path) -> None:
    """Issue 30: "abc" broke even `minise --version` (a ValueError at import); 0 and -1 became 1."""
    env = {**os.environ, "MINISE_NUM_THREADS": value, "MINISE_OFFLINE": "1",
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    version = subprocess.run([sys.executable, "-m", "minise", "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("minise "), version.stderr
    train = subprocess.run([sys.executable, "-m", "minise", "train", "--quick", "--data-dir", str(tmp_path / "no"),
                            "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert train.returncode == 2
    assert train.stderr == f"minise: error: MINISE_NUM_THREADS must be a positive int, got {value!r}\n"
    assert not (tmp_path / "run").exists()
