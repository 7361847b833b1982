"""conv2d: finite differences, PyTorch as the oracle, the loop reference, bad input, host syncs."""

import threading

import numpy as np
import pytest
import torch

import minise.functional as F
import minise.functional.conv as conv_module
from minise import Tensor, gradcheck, speed
from minise.functional.conv import Conv2d

from ..conftest import on

# (N, C, H, W), (O, kh, kw), stride, padding, dilation, groups, bias
CASES = [
    ((2, 3, 5, 5), (4, 3, 3), 1, 1, 1, 1, True),        # the CIFAR 3×3 "same" conv
    ((2, 3, 7, 6), (4, 3, 3), 2, 1, 1, 1, True),        # stride 2 (ResNet transition), odd size
    ((1, 2, 6, 5), (3, 3, 3), 2, 0, 1, 1, False),       # stride 2, no padding, batch 1
    ((2, 1, 5, 4), (1, 2, 3), 1, 0, 1, 1, True),        # one channel, non-square kernel
    ((2, 4, 5, 5), (6, 1, 1), 1, 0, 1, 1, True),        # 1×1, stride 1: the pointwise path
    ((2, 4, 6, 5), (6, 1, 1), 2, 0, 1, 1, False),       # 1×1, stride 2: the shortcut projection
    ((2, 4, 5, 5), (3, 1, 1), 1, 1, 1, 1, True),        # 1×1 with padding: the column path
    ((2, 4, 6, 6), (6, 3, 3), 1, 1, 1, 2, True),        # groups = 2
    ((2, 4, 5, 6), (4, 3, 3), 2, 1, 1, 4, False),       # depthwise, stride 2
    ((1, 3, 6, 6), (6, 3, 3), 1, 1, 1, 3, True),        # depthwise with channel multiplier 2
    ((2, 2, 7, 7), (3, 3, 3), 1, 2, 2, 1, True),        # dilation 2
    ((1, 2, 8, 7), (2, 3, 2), (2, 1), (1, 0), (1, 2), 1, True),  # per-axis stride/padding/dilation
    ((2, 2, 4, 4), (3, 4, 4), 1, 0, 1, 1, True),        # kernel as large as the input: 1×1 output
    ((1, 2, 3, 3), (2, 3, 3), 1, 3, 1, 1, False),       # padding larger than the kernel span
    ((2, 2, 5, 5), (2, 3, 3), 3, 2, 1, 1, True),        # stride 3, windows that do not cover the input
]
IDS = [f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}" for c in CASES]


def _make(case, device, dtype=np.float64, seed=0):
    shape, (o, kh, kw), stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(seed)
    x = Tensor(on(device, rng.standard_normal(shape).astype(dtype)), requires_grad=True)
    w = Tensor(on(device, rng.standard_normal((o, shape[1] // groups, kh, kw)).astype(dtype)), requires_grad=True)
    b = Tensor(on(device, rng.standard_normal(o).astype(dtype)), requires_grad=True) if bias else None
    settings = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, settings


@pytest.fixture(params=["one block", "one sample per block"])
def blocks(request, monkeypatch):
    """The default block size, and blocks of one sample (so the CPU loop over blocks runs)."""
    if request.param == "one sample per block":
        monkeypatch.setattr(conv_module, "CPU_BLOCK_BYTES", 1)
    return request.param


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck(device, case):
    x, w, b, settings = _make(case, device)
    inputs = [x, w] + ([b] if b is not None else [])
    assert gradcheck(lambda x, w, b=None: F.conv2d(x, w, b, **settings), inputs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_reference(case):
    x, w, b, settings = _make(case, "cpu", seed=1)
    inputs = [x, w] + ([b] if b is not None else [])
    assert gradcheck(lambda x, w, b=None: F.conv2d_reference(x, w, b, **settings), inputs)


def _torch_run(fn, x, w, b, settings, gy):
    y = fn(x, w, b, **settings)
    y.backward(gy)
    return [y] + [t.grad for t in (x, w, b) if t is not None]


def _compare(mine, theirs, rtol):
    for k, (m, t) in enumerate(zip(mine, theirs)):
        m = m.numpy() if isinstance(m, Tensor) else m
        t = t.detach().numpy()
        assert m.dtype == t.dtype, f"output {k}: dtype {m.dtype} != {t.dtype}"
        scale = np.abs(t).max()
        np.testing.assert_allclose(m, t, rtol=rtol, atol=rtol * scale, err_msg=f"output {k} (0: y, then grads)")


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_against_torch(device, blocks, case, dtype, rtol):
    x, w, b, settings = _make(case, device, dtype, seed=2)
    y = F.conv2d(x, w, b, **settings)
    gy = np.random.default_rng(3).standard_normal(y.shape).astype(dtype)
    y.backward(on(device, gy))
    mine = [y, x.grad, w.grad] + ([b.grad] if b is not None else [])
    xt, wt = (torch.tensor(t.numpy(), requires_grad=True) for t in (x, w))
    bt = torch.tensor(b.numpy(), requires_grad=True) if b is not None else None
    theirs = _torch_run(torch.nn.functional.conv2d, xt, wt, bt, settings, torch.tensor(gy))
    _compare(mine, theirs, rtol)


@pytest.mark.parametrize("shape,o,stride", [((3, 16, 12, 12), 16, 1), ((3, 16, 12, 12), 32, 2), ((2, 32, 9, 9), 32, 1)])
def test_against_torch_resnet_sizes(blocks, shape, o, stride):
    """Larger float32 shapes like the CIFAR ResNet's, where the column blocks hold many samples."""
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal(shape).astype(np.float32)
    w_np = (rng.standard_normal((o, shape[1], 3, 3)) * 0.1).astype(np.float32)
    x, w = Tensor(x_np, requires_grad=True), Tensor(w_np, requires_grad=True)
    y = F.conv2d(x, w, stride=stride, padding=1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    xt, wt = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    theirs = _torch_run(torch.nn.functional.conv2d, xt, wt, None, dict(stride=stride, padding=1), torch.tensor(gy))
    _compare([y, x.grad, w.grad], theirs, 1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_reference(device, blocks, case):
    """The im2col path against the plain loops, forward and every gradient."""
    results = []
    for fn in (F.conv2d, F.conv2d_reference):
        x, w, b, settings = _make(case, device, seed=5)
        y = fn(x, w, b, **settings)
        y.backward(on(device, np.random.default_rng(6).standard_normal(y.shape)))
        results.append([t.numpy() for t in (y, x.grad, w.grad) + ((b.grad,) if b is not None else ())])
    for k, (fast, slow) in enumerate(zip(*results)):
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12, err_msg=f"output {k}")


def test_reference_by_hand():
    """One number worked out by hand, so the reference itself is pinned down."""
    x = Tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    w = Tensor(np.array([[[[1.0, 0.0], [0.0, -1.0]]]]))
    y = F.conv2d_reference(x, w, Tensor(np.array([0.5])), stride=2)
    # each window: top-left − bottom-right = −5, plus the bias
    np.testing.assert_array_equal(y.numpy(), np.full((1, 1, 2, 2), -4.5))
    np.testing.assert_array_equal(F.conv2d(x, w, Tensor(np.array([0.5])), stride=2).numpy(), y.numpy())


@pytest.mark.parametrize("pointwise", [False, True])
def test_skips_unneeded_gradients(device, pointwise):
    """The first conv of a network needs no input gradient: backward must not compute it."""
    rng = np.random.default_rng(7)
    k = 1 if pointwise else 3
    x = Tensor(on(device, rng.standard_normal((2, 3, 5, 5))))  # no requires_grad
    w = Tensor(on(device, rng.standard_normal((4, 3, k, k))), requires_grad=True)
    fn = Conv2d(padding=0 if pointwise else 1)
    y = fn(x, w)
    gy = on(device, rng.standard_normal(y.shape))
    gx, gw = fn.backward(gy)
    assert gx is None and gw.shape == w.shape
    fn = Conv2d(padding=0 if pointwise else 1)
    x.requires_grad, w.requires_grad = True, False
    fn(x, w, None)
    gx, gw, gb = fn.backward(gy)
    assert gw is None and gb is None and gx.shape == x.shape


def test_float32_stays_float32(device):
    rng = np.random.default_rng(8)
    x = Tensor(on(device, rng.standard_normal((2, 3, 6, 6)).astype(np.float32)), requires_grad=True)
    w = Tensor(on(device, rng.standard_normal((4, 3, 3, 3)).astype(np.float32)), requires_grad=True)
    b = Tensor(on(device, rng.standard_normal(4).astype(np.float32)), requires_grad=True)
    y = F.conv2d(x, w, b, stride=2, padding=1)
    y.backward(on(device, np.ones(y.shape, np.float32)))
    assert {t.dtype for t in (y, x.grad, w.grad, b.grad)} == {np.dtype(np.float32)}


def test_non_contiguous_input():
    rng = np.random.default_rng(9)
    x_np = rng.standard_normal((5, 5, 3, 2)).transpose(3, 2, 0, 1)  # a (2, 3, 5, 5) view
    w_np = rng.standard_normal((4, 3, 3, 3))
    y = F.conv2d(Tensor(x_np), Tensor(w_np), padding=1)
    expected = torch.nn.functional.conv2d(torch.tensor(np.ascontiguousarray(x_np)), torch.tensor(w_np), padding=1)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [F.conv2d, F.conv2d_reference])
def test_bad_input(fn):
    x = Tensor(np.zeros((2, 4, 5, 5)))
    w = Tensor(np.zeros((6, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"expected a 4-D input \(N, C, H, W\), got shape \(4, 5, 5\)"):
        fn(Tensor(np.zeros((4, 5, 5))), w)
    with pytest.raises(ValueError, match=r"expected a 4-D weight .* got shape \(6, 4, 3\)"):
        fn(x, Tensor(np.zeros((6, 4, 3))))
    with pytest.raises(ValueError, match=r"weight.shape\[1\] \* groups = 3 \* 1 = 3 channels, got 4 channels"):
        fn(x, Tensor(np.zeros((6, 3, 3, 3))))
    with pytest.raises(ValueError, match=r"weight.shape\[1\] \* groups = 4 \* 2 = 8 channels, got 4 channels"):
        fn(x, Tensor(np.zeros((6, 4, 3, 3))), groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(6, weight.shape\[0\]\) must be divisible by groups \(4\)"):
        fn(x, Tensor(np.zeros((6, 1, 3, 3))), groups=4)
    with pytest.raises(ValueError, match=r"in_channels \(4\) must be divisible by groups \(3\)"):
        fn(x, Tensor(np.zeros((6, 1, 3, 3))), groups=3)
    with pytest.raises(ValueError, match=r"kernel 7x7 is larger than the padded input 5x5: "
                                         r"output size would be -1x-1"):
        fn(x, Tensor(np.zeros((6, 4, 7, 7))))
    with pytest.raises(ValueError, match=r"kernel 3x3 \(dilation 4x4\) is larger than the padded input 7x7"):
        fn(x, w, padding=1, dilation=4)
    with pytest.raises(ValueError, match=r"expected bias of shape \(6,\), got \(4,\)"):
        fn(x, w, Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match=r"stride must be an int or a pair of ints, got 1.5"):
        fn(x, w, stride=1.5)
    with pytest.raises(ValueError, match=r"stride must be >= 1, got \(0, 0\)"):
        fn(x, w, stride=0)
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        fn(x, w, padding=-1)
    with pytest.raises(ValueError, match=r"groups must be a positive int, got 0"):
        fn(x, w, groups=0)


def test_no_host_syncs(simulated_gpu):
    """Forward and backward on the simulated GPU pull no number back to the host."""
    rng = np.random.default_rng(10)
    cases = [((2, 4, 6, 6), (4, 3, 3), 1, 1, 1, 1, True), ((2, 4, 7, 7), (6, 3, 3), 2, 1, 1, 2, True),
             ((2, 4, 6, 6), (6, 1, 1), 2, 0, 1, 1, True)]
    for case in cases:
        x, w, b, settings = _make(case, "cuda", np.float32)
        y = F.conv2d(x, w, b, **settings)
        gy = on("cuda", rng.standard_normal(y.shape).astype(np.float32))
        simulated_gpu.SYNCS[0] = 0
        y = F.conv2d(x, w, b, **settings)
        y.backward(gy)
        assert simulated_gpu.SYNCS[0] == 0, f"{simulated_gpu.SYNCS[0]} host syncs for {case}"
        assert x.grad is not None and w.grad is not None and b.grad is not None


# ---------------------------------------------------------------------- threads over the batch
needs_openblas = pytest.mark.skipif(not speed.blas_available(), reason="no OpenBLAS whose thread count can be set: "
                                                                  "conv2d stays on one thread")
THREAD_CASES = [CASES[0], CASES[1], CASES[7], CASES[10], CASES[8]]  # stride 1 / 2, groups, dilation, depthwise


def _forward_backward(case, batch, threads, monkeypatch, dtype=np.float64):
    monkeypatch.setattr(speed, "NUM_THREADS", threads)
    shape, *rest = case
    x, w, b, settings = _make(((batch,) + shape[1:], *rest), "cpu", dtype, seed=11)
    y = F.conv2d(x, w, b, **settings)
    y.backward(np.random.default_rng(12).standard_normal(y.shape).astype(dtype))
    return [t.numpy() for t in (y, x.grad, w.grad) + ((b.grad,) if b is not None else ())]


@needs_openblas
@pytest.mark.parametrize("batch,threads", [(1, 2), (2, 2), (5, 2), (7, 3), (3, 8)])
@pytest.mark.parametrize("case", THREAD_CASES, ids=[IDS[CASES.index(c)] for c in THREAD_CASES])
def test_threads_match_one_thread(blocks, split_small_batches, monkeypatch, case, batch, threads):
    """Chunks of the batch on several threads give the numbers of one thread, up to rounding: the
    samples are independent, but BLAS may order a product's sums differently for narrower
    matrices, and ∂L/∂W and ∂L/∂b add up the chunks' sums."""
    sequential = _forward_backward(case, batch, 1, monkeypatch)
    threaded = _forward_backward(case, batch, threads, monkeypatch)
    for k, (mine, expected) in enumerate(zip(threaded, sequential)):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max(),
                                   err_msg=f"output {k} (0: y, 1: dL/dx, then dL/dW, dL/db)")


@needs_openblas
@pytest.mark.parametrize("stride", [1, 2])  # the input gradient as a correlation, and by col2im
def test_threads_split_the_batch(split_small_batches, monkeypatch, stride):
    """With 3 threads a batch of 7 runs as chunks of 2, 2 and 3 samples, on the calling thread and the
    pool threads, with OpenBLAS on one thread; afterwards OpenBLAS has its thread count back."""
    monkeypatch.setenv("MINISE_FAST", "0")  # the textbook path's internals (the fast path's: tests/fast/test_conv.py)
    calls = []
    lock = threading.Lock()

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            arg = args[1] if name == "_backward_by_columns" else args[0]  # (self, x, ...) or (x, ...)
            with lock:
                calls.append((name, arg.shape[0], threading.current_thread().name, speed.blas_num_threads()))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(conv_module, "_correlate", spy("_correlate", conv_module._correlate))
    monkeypatch.setattr(Conv2d, "_backward_by_columns",
                        spy("_backward_by_columns", Conv2d._backward_by_columns))
    before = speed.blas_num_threads()
    _forward_backward(((7, 3, 6, 6), (4, 3, 3), stride, 1, 1, 1, True), 7, 3, monkeypatch)
    assert speed.blas_num_threads() == before
    names = {"forward": "_correlate", "backward": "_correlate" if stride == 1 else "_backward_by_columns"}
    expected = [names["forward"]] * 3 + [names["backward"]] * 3 + ["_backward_by_columns"] * 3 * (stride == 1)
    assert sorted(name for name, *_ in calls) == sorted(expected)
    for name in set(expected):
        assert sorted(n for called, n, *_ in calls if called == name) == sorted([2, 2, 3] * (expected.count(name) // 3))
    caller = threading.current_thread().name
    assert all(thread == caller or thread.startswith("minise-worker") for *_, thread, _ in calls)
    assert all(blas_threads == 1 for *_, blas_threads in calls)


@needs_openblas
@pytest.mark.parametrize("stride", [1, 2])
def test_too_little_work_per_thread_stays_one_call(monkeypatch, stride):
    """The textbook path splits the batch only where each part does speed.PARALLEL_MIN_MACS multiply-adds
    or more, the backward counting one product per gradient: with the limit just above two samples'
    forward, a batch of 4 runs its forward in one call and its backward in two parts."""
    monkeypatch.setenv("MINISE_FAST", "0")
    monkeypatch.setattr(speed, "NUM_THREADS", 2)
    macs = ((6 - 1) // stride + 1) ** 2 * 4 * 3 * 9  # per sample: 6×6 input, 3 → 4 channels, 3×3, padding 1
    monkeypatch.setattr(speed, "PARALLEL_MIN_MACS", 2 * macs + 1)
    split = []
    original = speed.batch_parts
    monkeypatch.setattr(speed, "batch_parts", lambda *a, **k: split.append(len(original(*a, **k))) or original(*a, **k))
    case = ((4, 3, 6, 6), (4, 3, 3), stride, 1, 1, 1, True)
    mine = _forward_backward(case, 4, 2, monkeypatch)
    assert split == [1, 2]
    expected = _forward_backward(case, 4, 1, monkeypatch)
    for k, (m, e) in enumerate(zip(mine, expected)):
        np.testing.assert_allclose(m, e, rtol=1e-12, atol=1e-12 * np.abs(e).max(), err_msg=f"output {k}")


def test_gpu_keeps_one_call(simulated_gpu, monkeypatch):
    """Off the CPU the batch is not split: the GPU takes it in one call."""
    monkeypatch.setattr(speed, "NUM_THREADS", 4)
    x = on("cuda", np.zeros((8, 2, 5, 5)))
    assert speed.batch_parts(x) == [slice(None)]


def test_backward_of_an_empty_batch() -> None:
    """Issue 30: ∂L/∂x of 0 images is empty and ∂L/∂W = Σ over no images = 0 (was an AttributeError)."""
    for shape, kwargs in (((4, 3, 3, 3), {}), ((4, 3, 3, 3), {"stride": 2, "padding": 1}), ((4, 3, 1, 1), {})):
        x = Tensor(np.zeros((0, 3, 5, 5), np.float32), requires_grad=True)
        w = Tensor(np.ones(shape, np.float32), requires_grad=True)
        b = Tensor(np.ones(4, np.float32), requires_grad=True)
        F.conv2d(x, w, b, **kwargs).sum().backward()
        assert x.grad.shape == (0, 3, 5, 5) and w.grad.shape == shape
        assert not w.grad.data.any() and not b.grad.data.any()
