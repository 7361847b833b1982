"""minise.profile: the per-op timer, its bytes, its clean-up, the training profile and its figure."""

import os

import numpy as np
import pytest

import minise.functional as F
import minise.models as M
from minise import Tensor, nn, profile
from minise.autograd import Function
from minise.functional.activation import ReLU


def test_record_counts_calls_and_bytes():
    x = Tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)  # float64: 96 bytes
    with profile.record() as prof:
        for _ in range(2):
            F.relu(x).backward(np.ones((3, 4)))
    fwd, bwd = prof.rows[("ReLU", "forward")], prof.rows[("ReLU", "backward")]
    assert (fwd.calls, bwd.calls) == (2, 2)
    assert fwd.bytes == 2 * (96 + 96)  # x in, y out
    assert bwd.bytes == 2 * (96 + 96 + 96)  # ∂L/∂y in, y saved, ∂L/∂x out
    assert fwd.seconds > 0 and bwd.seconds > 0
    assert set(prof.rows) == {("ReLU", "forward"), ("ReLU", "backward")}


def test_record_takes_the_wrappers_off_even_after_an_error():
    before = ReLU.__dict__["forward"], ReLU.__dict__["backward"], Function.__dict__["forward"]
    with pytest.raises(ZeroDivisionError), profile.record():
        assert ReLU.__dict__["forward"] is not before[0]
        raise ZeroDivisionError("inside")
    assert (ReLU.__dict__["forward"], ReLU.__dict__["backward"], Function.__dict__["forward"]) == before
    with profile.record() as prof:  # usable again
        F.relu(Tensor(np.ones(3)))
    assert prof.rows[("ReLU", "forward")].calls == 1


def test_one_record_at_a_time():
    with profile.record(), pytest.raises(RuntimeError, match="already recording"), profile.record():
        pass


def test_super_calls_are_counted_once():
    class Double(Function):
        def forward(self, x):
            return 2 * x

    class DoublePlusOne(Double):
        def forward(self, x):
            return super().forward(x) + 1

    with profile.record() as prof:
        y = DoublePlusOne()(Tensor(np.ones(4)))
    np.testing.assert_array_equal(y.numpy(), np.full(4, 3.0))
    assert list(prof.rows) == [("DoublePlusOne", "forward")] and prof.rows[("DoublePlusOne", "forward")].calls == 1


def test_profile_training_rows_and_shares(tmp_path):
    nn.init.manual_seed(0)
    model = M.create("se_resnet8")
    prof = profile.profile_training(model, batch=4, steps=2, warmup=1, input_shape=(3, 8, 8))
    assert prof.steps == 2 and prof.total_seconds > 0
    for key in [("Conv2d", "forward"), ("Conv2d", "backward"), ("BatchNorm", "backward"), ("Scale", "forward"),
                ("CrossEntropy", "forward"), ("SGD.step (update)", "step"), ("autograd and Python (rest)", "step")]:
        assert key in prof.rows, key
    assert prof.rows[("Conv2d", "forward")].calls == 2 * 7  # stem + 3 blocks × 2 convs, per step
    assert prof.rows[("Scale", "forward")].calls == 2 * 3  # one SE block per residual block
    assert sum(prof.share(r) for r in prof.rows.values()) == pytest.approx(1.0, abs=1e-9)
    text = prof.table()
    assert text.splitlines()[1].split()[0] == prof.sorted_rows()[0].op.split()[0]
    assert "step (total)" in text
    out = tmp_path / "profile.png"
    prof.save_figure(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["profile.png"]  # no temporary file left


def test_profile_training_bad_arguments():
    model = M.create("resnet8")
    with pytest.raises(ValueError, match="need steps >= 1"):
        profile.profile_training(model, steps=0)
    with pytest.raises(ValueError, match="no parameters"):
        profile.profile_training(nn.ReLU())
