import numpy as np
import pytest
import torch

import minise.functional as F
from minise import Tensor, gradcheck

from ..conftest import on


@pytest.mark.parametrize("n,k", [(1, 2), (5, 10), (8, 3)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradcheck(device, n, k, smoothing):
    rng = np.random.default_rng(0)
    x = Tensor(on(device, rng.standard_normal((n, k)) * 3), requires_grad=True)
    t = Tensor(on(device, rng.integers(0, k, n)))
    assert gradcheck(lambda x: F.cross_entropy(x, t, label_smoothing=smoothing), [x])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_against_torch(device, smoothing, dtype, tol):
    rng = np.random.default_rng(3)
    x_np = (rng.standard_normal((16, 10)) * 4).astype(dtype)
    t_np = rng.integers(0, 10, 16)
    x = Tensor(on(device, x_np), requires_grad=True)
    loss = F.cross_entropy(x, Tensor(on(device, t_np)), label_smoothing=smoothing)
    loss.backward(on(device, np.array(1.7, dtype=dtype)))
    xt = torch.tensor(x_np, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(t_np), label_smoothing=smoothing)
    (lt * 1.7).backward()
    assert loss.dtype == dtype and loss.shape == ()
    np.testing.assert_allclose(loss.numpy(), lt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol)


def test_stable_for_huge_logits():
    x = Tensor(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]]), requires_grad=True)
    loss = F.cross_entropy(x, Tensor(np.array([0, 0])))
    loss.backward()
    assert loss.item() == pytest.approx(1000.0)
    assert np.isfinite(x.grad.numpy()).all()


def test_bad_targets(device):
    x = Tensor(on(device, np.zeros((3, 4))))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        F.cross_entropy(x, Tensor(on(device, np.array([0, 4, 1]))))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        F.cross_entropy(x, Tensor(on(device, np.array([0, -1, 1]))))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(x, Tensor(on(device, np.array([0.0, 1.0, 1.0]))))
    with pytest.raises(ValueError, match=r"target of shape \(3,\)"):
        F.cross_entropy(x, Tensor(on(device, np.array([0, 1]))))


def test_checked_targets_leave_out_only_the_device_read(simulated_gpu):
    """A caller that checked its labels on the host vouches for them: no device read per call, and
    the check still runs where the word does not reach: fewer logits than the classes vouched for,
    another thread, after the block."""
    import threading

    from minise.functional.loss import checked_targets

    x = Tensor(on("cuda", np.zeros((3, 4))))
    good, bad = Tensor(on("cuda", np.array([0, 3, 1]))), Tensor(on("cuda", np.array([0, 4, 1])))
    syncs = simulated_gpu.SYNCS
    syncs[0] = 0
    F.cross_entropy(x, good)
    assert syncs[0] == 1  # the op's own range check reads the device
    with checked_targets(4):
        loss = F.cross_entropy(x, good)
        assert syncs[0] == 1
        errors = []

        def elsewhere():
            try:
                F.cross_entropy(x, bad)
            except ValueError as error:
                errors.append(str(error))

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert errors == ["cross_entropy: target classes must lie in [0, 3]"]  # vouched on this thread only
    np.testing.assert_allclose(loss.numpy(), np.log(4.0), rtol=1e-12)
    with checked_targets(5), pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        F.cross_entropy(x, bad)  # vouched for 5 classes, the logits have 4: still checked
    with pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        F.cross_entropy(x, bad)  # after the block
    for wrong in (0, True, 2.0):
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            with checked_targets(wrong):
                pass


@pytest.mark.parametrize("shape", [(0, 10), (3, 0)])
def test_cross_entropy_of_no_rows_or_no_classes_is_an_error(shape) -> None:
    """Issue 30: the mean over 0 rows was NaN with only a RuntimeWarning."""
    with pytest.raises(ValueError, match=r"cross_entropy: needs at least one row and one class"):
        F.cross_entropy(Tensor(np.zeros(shape, np.float32)), Tensor(np.zeros(shape[0], np.int64)))
