"""Graded tests of assignment "training": ``minise.train.train_epoch``, one epoch of minibatch SGD.

The task as stated to students: with ``train_epoch``, a small network (a 192-64-10 perceptron
with batch norm) reaches at least 95% test accuracy on the generated 8×8 data set below within
3 epochs of batch 50 (60 SGD steps), which takes one to two seconds on one CPU core; the grader
stops the test after 60 s. A second test replays a few steps against the same network in PyTorch
(same weights, same batches, SGD with momentum and weight decay, a learning-rate schedule), which
catches the loops that still learn but not as specified: gradients never cleared, the model left
in evaluation mode, the schedule never stepped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minise import Tensor, nn
from minise.data import BatchLoader, channel_stats, make_synthetic
from minise.nn import init
from minise.optim import SGD, CosineLR, MultiStepLR

from .checks import BACKPROP, assert_close, assert_equal, observe_close, oracle

# everything a training step of the perceptron below runs through
NEEDS = (*BACKPROP, "autograd/linear", "autograd/relu", "se/batchnorm_backward")
TARGET_ACCURACY = 0.95
EPOCHS = 3


def perceptron(features: int = 192, hidden: int = 64, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def torch_perceptron(model: nn.Module) -> torch.nn.Module:
    """The same network in PyTorch, with the same weights (float64)."""
    lin1, bn, lin2 = model[1], model[2], model[4]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(lin1.in_features, lin1.out_features),
                              torch.nn.BatchNorm1d(bn.num_features), torch.nn.ReLU(),
                              torch.nn.Linear(lin2.in_features, lin2.out_features)).double()
    with torch.no_grad():
        for (_, mine), theirs in zip(model.named_parameters(), net.parameters()):
            theirs.copy_(torch.from_numpy(mine.numpy()))
    return net


def small_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The generated CIFAR-format set, 1000 training and 500 test images, averaged down to 8×8."""
    data = make_synthetic(num_train=1000, num_test=500, num_classes=10, seed=seed)

    def down(x):
        return np.rint(x.reshape(len(x), 3, 8, 4, 8, 4).mean(axis=(3, 5))).astype(np.uint8)

    return down(data.train_images), data.train_labels, down(data.test_images), data.test_labels


@pytest.mark.assignment("training/loop", *NEEDS, time_limit=60)
def test_reaches_the_stated_accuracy():
    from minise.train import evaluate, train_epoch

    train_x, train_y, test_x, test_y = small_images()
    mean, std = channel_stats(train_x)
    init.manual_seed(0)
    model = perceptron()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = BatchLoader(train_x, train_y, 50, mean=mean, std=std, shuffle=True, rng=np.random.default_rng(0))
    schedule = CosineLR(optimizer, EPOCHS * len(loader))
    losses = []
    for _ in range(EPOCHS):
        steps = train_epoch(model, loader, optimizer, schedule, on_step=lambda loss, c, n: losses.append(float(loss)))
        assert steps == len(loader)
    assert len(losses) == EPOCHS * len(loader)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]), "the training loss did not fall"
    accuracy = evaluate(model, test_x, test_y, mean, std, num_classes=10)["accuracy"]
    # the grader judges the trained weights (against the reference loop's, which reaches the target)
    for name, p in model.named_parameters():
        observe_close(p.data, f"{name} after {EPOCHS} epochs", rtol=1e-4, atol=1e-5)
    assert accuracy >= TARGET_ACCURACY, f"test accuracy {accuracy:.1%} after {EPOCHS} epochs, expected ≥ 95%"


def _batches(seed: int, count: int, size: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 2, 3)), rng.integers(0, 3, size)) for _ in range(count)]


def _replay_in_torch(net: torch.nn.Module, batches, lr, momentum, weight_decay, milestones):
    """The specification, step by step, in PyTorch: (losses, number correct per step)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    net.train()
    losses, correct = [], []
    for x, y in batches:
        logits = net(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        correct.append(int((logits.argmax(1).numpy() == y).sum()))
    return losses, correct, opt.param_groups[0]["lr"]


@pytest.mark.assignment("training/loop", *NEEDS)
@pytest.mark.parametrize("max_steps", [None, 2])
def test_steps_match_torch(max_steps):
    """Each step: forward, cross-entropy, gradients of this batch alone, SGD update, schedule step."""
    from minise.train import train_epoch

    init.manual_seed(1)
    model = perceptron(6, 5, 3).double()
    net = oracle(lambda: torch_perceptron(model))
    batches = _batches(2, 4)
    optimizer = SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=0.01)
    schedule = MultiStepLR(optimizer, [2], gamma=0.1)
    # stale gradients from an earlier backward pass, and a model left in evaluation mode
    for p in model.parameters():
        p.grad = Tensor(np.ones(p.shape))
    model.eval()
    record = []
    steps = train_epoch(model, batches, optimizer, schedule, max_steps=max_steps,
                        on_step=lambda loss, correct, n: record.append((float(loss), int(correct), n)))
    taken = len(batches) if max_steps is None else max_steps
    replay = oracle(lambda: _replay_in_torch(net, batches[:taken], 0.2, 0.9, 0.01, [2]))
    losses, correct, lr = replay if replay is not None else (None, None, None)

    assert_equal(steps, taken, "the number of steps train_epoch returns")
    assert_equal([n for *_, n in record], [6] * taken, "on_step's batch sizes (once per step)")
    assert_close(np.array([r[0] for r in record]), oracle(lambda: np.array(losses)), "the loss of each step",
                 rtol=1e-10, atol=0)
    assert_equal([r[1] for r in record], correct, "the number of correct predictions of each step")
    assert_close(np.float64(optimizer.param_groups[0]["lr"]), oracle(lambda: np.float64(lr)),
                 "the learning rate after the epoch (the schedule steps once per batch)", rtol=1e-12, atol=0)
    theirs = oracle(lambda: [t.detach().numpy() for t in net.parameters()]) or [None] * len(list(model.parameters()))
    for (name, p), t in zip(model.named_parameters(), theirs):
        assert_close(p.data, t, f"{name} after {taken} steps", 1e-10)
    bn = model[2]
    assert_close(bn.running_mean, oracle(lambda: net[2].running_mean.numpy()), "batch norm running mean", 1e-10)
    assert_close(bn.running_var, oracle(lambda: net[2].running_var.numpy()), "batch norm running variance", 1e-10)
