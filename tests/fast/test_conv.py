"""minise/fast/conv.py against the textbook conv2d (speed.use_fast(False)): values and gradients."""

import threading

import numpy as np
import pytest

import minise.fast.conv as fast_conv
import minise.functional as F
from minise import Tensor, speed
from minise.functional.window import Window

from ..conftest import on

# (N, C, H, W), (O, kh, kw), stride, padding, dilation
CASES = [
    ((2, 16, 8, 8), (16, 3, 3), 1, 1, 1),             # ResNet-20's 3×3, stride 1: ∂L/∂x by correlation
    ((3, 8, 9, 7), (5, 3, 3), 1, 1, 1),               # odd sizes, C ≠ O
    ((2, 8, 9, 8), (6, 3, 3), 2, 1, 1),               # stride 2 (the transition): ∂L/∂x by col2im
    ((1, 8, 7, 6), (4, 3, 3), 2, 0, 1),               # stride 2, no padding, batch 1
    ((2, 12, 7, 7), (4, 3, 3), 1, 2, 1),              # padding 2 > d(k − 1) − p ... still a correlation
    ((2, 12, 6, 6), (4, 3, 3), 1, 3, 1),              # padding 3 > d(k − 1): col2im at stride 1
    ((2, 12, 9, 9), (5, 3, 3), 1, 2, 2),              # dilation 2
    ((1, 12, 8, 7), (3, 3, 2), (2, 1), (1, 0), (1, 2)),  # per-axis stride, padding, dilation
    ((2, 12, 5, 5), (3, 3, 3), 3, 2, 1),              # stride 3: windows that skip input pixels
    ((2, 12, 4, 4), (3, 4, 4), 1, 0, 1),              # kernel as large as the input
    ((2, 4, 5, 5), (3, 1, 1), 1, 1, 1),               # 1×1 with padding
    ((2, 3, 9, 9), (4, 3, 3), 1, 1, 1),               # the stem (3 channels): per-sample planes
    ((2, 3, 11, 10), (4, 7, 7), 2, 3, 1),             # the ImageNet stem, 7×7/2: planes of stride phases
    ((1, 2, 9, 9), (3, 3, 3), 2, 2, 2),               # planes, stride 2 with dilation 2
    ((2, 3, 10, 9), (2, 3, 3), (3, 2), 0, (2, 3)),    # planes, uneven strides and dilations
    ((2, 16, 5, 24), (8, 3, 3), 1, 1, 1),             # long rows (2·W_out ≥ kw·C): planes both ways
    ((2, 16, 6, 6), (4, 3, 3), 1, 1, 1),              # rows forward, ∂L/∂x (4 channels of ∂L/∂y) by planes
    ((2, 3, 9, 9), (24, 3, 3), 1, 1, 1),              # planes forward, ∂L/∂x (24 channels) by rows
    ((2, 8, 5, 21), (5, 3, 5), 1, (1, 2), 1),         # same size, long rows: shifted planes, a 3×5 kernel
    ((2, 8, 6, 25), (4, 3, 3), 1, 2, 2),              # shifted planes with dilation 2
    ((3, 1, 4, 3), (2, 3, 3), 1, 1, 1),               # one channel: planes forward, shifted planes backward
    ((2, 8, 6, 6), (40, 3, 3), 1, 1, 1),              # rows, 40 filters: the flipped kernel copied 32 filters at a time
    ((2, 8, 7, 7), (40, 3, 2), 2, 1, 1),              # rows, stride 2, 40 filters, a 3×2 kernel: W_o, col2im
]
IDS = [f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}" for c in CASES]


def _run(case, dtype, fast, input_grad=True, bias=True, seed=0):
    """y, ∂L/∂x, ∂L/∂W, ∂L/∂b of one conv2d, by the fast path or the textbook one."""
    shape, (o, kh, kw), stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=input_grad)
    w = Tensor(rng.standard_normal((o, shape[1], kh, kw)).astype(dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(o).astype(dtype), requires_grad=True) if bias else None
    with speed.use_fast(fast):
        y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
        y.backward(rng.standard_normal(y.shape).astype(dtype))
    return [y.numpy(), None if x.grad is None else x.grad.numpy(), w.grad.numpy(),
            None if b is None else b.grad.numpy()]


def _assert_close(fast, textbook, rtol):
    for name, f, t in zip(["y", "dx", "dW", "db"], fast, textbook):
        assert (f is None) == (t is None), name
        if t is None:
            continue
        assert f.dtype == t.dtype and f.shape == t.shape, name
        np.testing.assert_allclose(f, t, rtol=rtol, atol=rtol * np.abs(t).max(), err_msg=name)


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of the fast forward and backward (so a test knows the fast path ran)."""
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        original = getattr(fast_conv, name)

        def wrapped(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(fast_conv, name, wrapped)
    return calls


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_equals_the_textbook_path(case, counted):
    fast = _run(case, np.float64, True)
    assert counted == {"forward": 1, "backward": 1}
    _assert_close(fast, _run(case, np.float64, False), rtol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_equals_the_textbook_path(case):
    fast = _run(case, np.float32, True, bias=False)
    assert fast[3] is None
    _assert_close(fast, _run(case, np.float32, False, bias=False), rtol=2e-5)


WEIGHT_ALONE = [0, 2, 11, 12, 18, 19, 20, 22]


@pytest.mark.parametrize("case", [CASES[i] for i in WEIGHT_ALONE], ids=[IDS[i] for i in WEIGHT_ALONE])
def test_weight_gradient_alone(case, counted):
    """An input without a gradient (the stem): only ∂L/∂W (per-sample planes for few channels; the shifted
    planes, every window row in one stacked product, for same-size convs: 3×5 kernel, dilation 2, one channel)."""
    fast = _run(case, np.float64, True, input_grad=False)
    assert fast[1] is None and counted["backward"] == 1
    _assert_close(fast, _run(case, np.float64, False, input_grad=False), rtol=1e-12)


@pytest.mark.parametrize("case", [CASES[i] for i in (1, 2, 11, 12, 15, 18, 19, 21, 22)],
                         ids=[IDS[i] for i in (1, 2, 11, 12, 15, 18, 19, 21, 22)])
def test_many_blocks_and_two_threads(split_small_batches, case, monkeypatch):
    """Blocks of one sample, the batch cut in parts on two threads: the same numbers."""
    textbook = _run(case, np.float64, False, seed=3)
    monkeypatch.setattr(fast_conv, "BLOCK_BYTES", 1)
    _assert_close(_run(case, np.float64, True, seed=3), textbook, rtol=1e-12)
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    if len(speed.batch_parts(np.zeros((2, 1)))) != 2:
        pytest.skip("no controllable BLAS: the batch is not cut")
    _assert_close(_run(case, np.float64, True, seed=3), textbook, rtol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[11], CASES[15], CASES[17]],
                         ids=[IDS[0], IDS[2], IDS[11], IDS[15], IDS[17]])
def test_parts_run_on_pool_threads_with_blas_on_one_thread(split_small_batches, monkeypatch, case):
    """With 3 threads a batch of 7 runs as parts of 2, 2 and 3 samples on the calling thread and the pool
    threads, BLAS on one thread meanwhile; afterwards BLAS has its thread count back. Blocks larger than
    the batch (whatever the machine's cache), so each part is one block: one padded input per part."""
    if not speed.blas_available():
        pytest.skip("no controllable BLAS: the batch is not cut")
    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    monkeypatch.setattr(fast_conv, "BLOCK_BYTES", 1 << 30)
    monkeypatch.setattr(fast_conv, "PLANES_BLOCK_BYTES", 1 << 30)
    seen = []
    original = fast_conv._buffer

    def spy(role, shape, dtype):
        seen.append((role, shape[0], threading.current_thread().name, speed.blas_num_threads()))
        return original(role, shape, dtype)

    monkeypatch.setattr(fast_conv, "_buffer", spy)
    before = speed.blas_num_threads()
    case = ((7,) + case[0][1:],) + case[1:]
    fast = _run(case, np.float64, True)
    assert speed.blas_num_threads() == before
    blocks = [n for role, n, _, _ in seen if role == "grid"]  # one padded input per block, forward and backward
    assert len(blocks) % 3 == 0 and sorted(blocks) == sorted([2, 2, 3] * (len(blocks) // 3)) and blocks
    caller = threading.current_thread().name
    assert all((thread == caller or thread.startswith("minise-worker")) and blas == 1 for _, _, thread, blas in seen)
    _assert_close(fast, _run(case, np.float64, False), rtol=1e-12)


@pytest.mark.parametrize("case", [CASES[1], CASES[11], CASES[15]], ids=[IDS[1], IDS[11], IDS[15]])
def test_more_blocks_than_threads_make_parts_of_whole_blocks(split_small_batches, monkeypatch, case):
    """A batch of 20 in blocks of one sample on two threads: the forward in CHUNKS_PER_THREAD parts per
    thread, each a run of whole blocks; the backward, which keeps one ∂L/∂W per part, in one part per
    thread when the weight is larger than BLOCK_BYTES (here it is: BLOCK_BYTES is 1); the same numbers
    as the textbook code (∂L/∂W summed part by part in batch order)."""
    if not speed.blas_available():
        pytest.skip("no controllable BLAS: the batch is not cut")
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    monkeypatch.setattr(fast_conv, "BLOCK_BYTES", 1)
    monkeypatch.setattr(fast_conv, "PLANES_BLOCK_BYTES", 1)
    parts = []
    original = speed.in_parallel

    def spy(fn, split, limit_blas=True):
        parts.append([(s.start, s.stop) for s in split])
        return original(fn, split, limit_blas)

    monkeypatch.setattr(speed, "in_parallel", spy)
    case = ((20,) + case[0][1:],) + case[1:]
    fast = _run(case, np.float64, True)
    assert parts == [[(0, 2), (2, 5), (5, 7), (7, 10), (10, 12), (12, 15), (15, 17), (17, 20)], [(0, 10), (10, 20)]]
    _assert_close(fast, _run(case, np.float64, False), rtol=1e-12)


@pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 11, 15, 18)], ids=[IDS[i] for i in (0, 2, 11, 15, 18)])
def test_too_little_work_per_thread_stays_one_part(monkeypatch, case):
    """A conv whose parts would each do fewer than speed.PARALLEL_MIN_MACS multiply-adds runs as one part
    on the calling thread (no hand-off), BLAS held at one thread meanwhile. The backward counts one product
    per gradient it makes: with the limit just above two samples' forward, a batch of 4 splits in the
    backward (both gradients) and not in the forward, nor in the backward of the stem (∂L/∂W alone); the
    numbers stay the textbook's."""
    if not speed.blas_available():
        pytest.skip("no controllable BLAS: the batch is not cut")
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    shape, (o, kh, kw), stride, padding, dilation = case
    case = ((4,) + shape[1:],) + case[1:]
    y = F.conv2d(Tensor(np.zeros(case[0])), Tensor(np.zeros((o, shape[1], kh, kw))), stride=stride,
                 padding=padding, dilation=dilation)
    macs = y.shape[2] * y.shape[3] * o * shape[1] * kh * kw  # per sample, forward
    monkeypatch.setattr(speed, "PARALLEL_MIN_MACS", 2 * macs + 1)
    parts, blas = [], set()
    original_parts, original_buffer = speed.batch_parts, fast_conv._buffer

    def spy_parts(*args, **kwargs):
        split = original_parts(*args, **kwargs)
        parts.append(len(split))
        return split

    def spy_buffer(role, shape, dtype):
        blas.add(speed.blas_num_threads())
        return original_buffer(role, shape, dtype)

    monkeypatch.setattr(speed, "batch_parts", spy_parts)
    monkeypatch.setattr(fast_conv, "_buffer", spy_buffer)
    before = speed.blas_num_threads()
    fast = _run(case, np.float64, True)
    assert parts == [1, 2] and blas == {1}  # forward, backward; BLAS on one thread in both
    assert speed.blas_num_threads() == before
    _assert_close(fast, _run(case, np.float64, False), rtol=1e-12)
    parts.clear()
    _run(case, np.float64, True, input_grad=False)
    assert parts == [1, 1]
    parts.clear()
    monkeypatch.setattr(speed, "PARALLEL_MIN_MACS", 2 * macs)  # two samples per part are enough: both split
    _run(case, np.float64, True)
    assert parts == [2, 2]


def test_small_weights_get_several_parts_per_thread_in_backward(monkeypatch):
    """A weight of a quarter of BLOCK_BYTES or less: the backward too runs CHUNKS_PER_THREAD parts per thread."""
    if not speed.blas_available():
        pytest.skip("no controllable BLAS: the batch is not cut")
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    x, w = np.zeros((20, 4, 6, 6)), np.zeros((4, 4, 3, 3))
    monkeypatch.setattr(fast_conv, "BLOCK_BYTES", 4 * w.nbytes)
    seen = []
    fast_conv._by_parts(lambda a, b: seen.append((a, b)), 20, x, 1, speed.PARALLEL_MIN_MACS, w)
    assert len(seen) == 2 * fast_conv.CHUNKS_PER_THREAD
    seen.clear()
    monkeypatch.setattr(fast_conv, "BLOCK_BYTES", 4 * w.nbytes - 1)
    fast_conv._by_parts(lambda a, b: seen.append((a, b)), 20, x, 1, speed.PARALLEL_MIN_MACS, w)
    assert len(seen) == 2 * 3


def test_reused_buffers_do_not_leak_between_shapes():
    """A large conv, then smaller ones with other paddings in the same buffers: borders are zero again."""
    for case in [CASES[4], CASES[0], CASES[5], CASES[3], CASES[11], CASES[12], CASES[13], CASES[0]]:
        _assert_close(_run(case, np.float64, True, seed=5), _run(case, np.float64, False, seed=5), rtol=1e-12)


def test_grouped_convolutions_keep_the_textbook_path(counted):
    geo = Window((3, 3), (1, 1), (1, 1), (1, 1), 8, 8)
    assert fast_conv.handles(geo, 1) and not fast_conv.handles(geo, 2)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 4, 6, 6)), requires_grad=True)
    w = Tensor(rng.standard_normal((6, 2, 3, 3)), requires_grad=True)
    F.conv2d(x, w, padding=1, groups=2).backward(np.ones((2, 6, 6, 6)))
    assert counted == {"forward": 0, "backward": 0}


def test_supports_float_numpy_arrays_of_one_dtype():
    a32, a64 = np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1))
    assert fast_conv.supports(a32, a32, None) and fast_conv.supports(a64, a64, a64)
    assert not fast_conv.supports(a32, a64)
    assert not fast_conv.supports(a32.astype(np.float16), a32.astype(np.float16))
    assert not fast_conv.supports([[0.0]], a64)


def test_the_simulated_gpu_takes_the_textbook_path(counted, simulated_gpu):
    x = Tensor(on("cuda", np.ones((1, 2, 5, 5))), requires_grad=True)
    w = Tensor(on("cuda", np.ones((3, 2, 3, 3))), requires_grad=True)
    F.conv2d(x, w, padding=1).backward(on("cuda", np.ones((1, 3, 5, 5))))
    assert counted == {"forward": 0, "backward": 0}
    assert x.grad is not None and w.grad is not None
