"""Training and evaluation on CIFAR: the loop, checkpoints, metrics, and the ``minise`` command line.

    minise train --model se_resnet20 --dataset cifar10 --epochs 30 --device cpu
    minise train --preset he2016 --model se_resnet110 --device cuda     # the paper's full CIFAR recipe
    minise train --quick                                                  # under a minute on a CPU
    minise train --resume runs/se_resnet20-cifar10-.../last.npz
    minise eval --checkpoint runs/.../best.npz

One epoch: a seeded shuffle of the training images, random crop + flip, SGD steps with the
schedule's learning rate, then the test set in evaluation mode. After every epoch the run folder
gets ``last.npz`` (and ``best.npz`` when test accuracy improved), ``metrics.csv``; at the end
``curves.png``. A checkpoint holds everything needed to continue exactly where the run stopped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, assignments, backend
from . import functional as F
from .autograd import Tensor, no_grad
from .backend import DeviceError, get_array_module, to_numpy
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import CIFAR, BatchLoader, DataError, channel_stats, default_data_dir, load_cifar, make_synthetic
from .optim import SGD, CosineLR, MultiStepLR, Schedule, no_decay_groups

__all__ = ["train", "train_epoch", "evaluate", "resolve_config", "main", "UserError", "NonFiniteLoss",
           "DEFAULTS", "PRESETS", "QUICK"]


class UserError(Exception):
    """A mistake in what was asked for (options, paths): reported in one line, exit code 2."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------- configuration
DEFAULTS: dict[str, Any] = {
    "model": "se_resnet20",
    "dataset": "cifar10",
    "reduction": 16,
    "epochs": 30,
    "iterations": None,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "nesterov": False,
    "no_decay_bn_bias": False,
    "schedule": "cosine",
    "warmup_epochs": 0.0,
    "milestones": None,
    "milestone_iters": None,
    "gamma": 0.1,
    "seed": 0,
    "limit_train": None,
    "limit_test": None,
    "drop_last": False,
    "augment": True,
    "eval_batch_size": 500,
    "preset": None,
    "quick": False,
    # keyword arguments for the model's class (se_position, se_stages, se_options, ...), used by
    # `minise experiment` for the paper's ablations; JSON-serialisable
    "model_options": None,
}

# He et al. (2016), the recipe the paper's CIFAR baselines follow: 64k iterations of batch 128,
# lr 0.1 divided by 10 at 32k and 48k iterations, momentum 0.9, weight decay 1e-4.
PRESETS: dict[str, dict[str, Any]] = {
    "he2016": {
        "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
        "schedule": "multistep", "iterations": 64000, "milestone_iters": [32000, 48000], "gamma": 0.1,
        "warmup_epochs": 0.0,
    },
}

# --quick: a slice of CIFAR (or the generated set) small enough for a minute on a laptop CPU.
QUICK: dict[str, Any] = {
    "model": "se_resnet20", "epochs": 2, "batch_size": 64, "lr": 0.05, "schedule": "cosine",
    "limit_train": 1536, "limit_test": 500,
}
QUICK_SYNTHETIC = {"num_train": 1536, "num_test": 500}

# Options that may differ when a run is resumed (they do not change what is computed).
RESUME_FREE = {"device", "data_dir", "out", "stop_after", "resume"}


def resolve_config(options: dict[str, Any]) -> dict[str, Any]:
    """The full configuration of a run: DEFAULTS, then --quick or --preset, then ``options``, validated.

    ``options`` uses the keys of :data:`DEFAULTS`; a bad value raises :class:`UserError`.
    """
    explicit = options
    cfg = dict(DEFAULTS)
    if explicit.get("quick"):
        cfg.update(QUICK)
    preset = explicit.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
        cfg.update(PRESETS[preset])
    cfg.update({k: v for k, v in explicit.items() if k in DEFAULTS})
    if "epochs" in explicit and "iterations" not in explicit:
        cfg["iterations"] = None  # --epochs after a preset that counts iterations
        if "milestones" not in explicit:
            cfg["milestone_iters"] = None
    if "milestones" in explicit and "milestone_iters" not in explicit:
        cfg["milestone_iters"] = None
    _validate(cfg)
    return cfg


def _validate(cfg: dict[str, Any]) -> None:
    def positive(key: str) -> None:
        if cfg[key] is not None and cfg[key] <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {cfg[key]}")

    for key in ("epochs", "iterations", "batch_size", "limit_train", "limit_test", "eval_batch_size", "reduction"):
        positive(key)
    for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma"):
        if cfg[key] < 0 or not math.isfinite(cfg[key]):
            raise UserError(f"--{key.replace('_', '-')} must be a finite number >= 0, got {cfg[key]}")
    if cfg["schedule"] not in ("cosine", "multistep", "constant"):
        raise UserError(f"unknown schedule {cfg['schedule']!r}: expected cosine, multistep or constant")
    if cfg["nesterov"] and cfg["momentum"] <= 0:
        raise UserError("--nesterov needs --momentum > 0")
    if cfg["dataset"] not in ("cifar10", "cifar100"):
        raise UserError(f"unknown dataset {cfg['dataset']!r}: expected cifar10 or cifar100")


def _plan(cfg: dict[str, Any], num_train: int) -> tuple[int, int, int]:
    """(iterations per epoch, total iterations, epochs) for this configuration and data size."""
    per_epoch = num_train // cfg["batch_size"] if cfg["drop_last"] else math.ceil(num_train / cfg["batch_size"])
    if per_epoch == 0:
        raise UserError(f"{num_train} training images make no full batch of {cfg['batch_size']} with --drop-last")
    if cfg["iterations"] is not None:
        total = int(cfg["iterations"])
        return per_epoch, total, math.ceil(total / per_epoch)
    return per_epoch, per_epoch * int(cfg["epochs"]), int(cfg["epochs"])


def _make_schedule(cfg: dict[str, Any], optimizer: SGD, per_epoch: int, total: int) -> Schedule:
    warmup = int(round(cfg["warmup_epochs"] * per_epoch))
    if cfg["schedule"] == "cosine":
        if warmup >= total:
            raise UserError(f"--warmup-epochs {cfg['warmup_epochs']} covers the whole run of {total} iterations")
        return CosineLR(optimizer, total, warmup_iters=warmup)
    if cfg["schedule"] == "multistep":
        if cfg["milestone_iters"] is not None:
            milestones = [int(m) for m in cfg["milestone_iters"]]
        elif cfg["milestones"] is not None:
            milestones = [int(round(m * per_epoch)) for m in cfg["milestones"]]
        else:  # He et al.'s 32k and 48k of 64k: half and three quarters of the way
            milestones = [total // 2, (3 * total) // 4]
        return MultiStepLR(optimizer, milestones, gamma=cfg["gamma"], warmup_iters=warmup, warmup_factor=0.1)
    return MultiStepLR(optimizer, [], warmup_iters=warmup, warmup_factor=0.1)  # constant


# ----------------------------------------------------------------------------- pieces of a run
def _create_model(cfg: dict[str, Any], num_classes: int) -> Any:
    from . import models  # noqa: PLC0415 - the command line should start even while models import slowly

    name = cfg["model"]
    se = name.startswith("se_")
    names = list(models.names())
    if name not in names:
        # any depth 6n + 2 of He et al.'s CIFAR ResNet (resnet8, se_resnet14, ...), not only the listed ones
        match = re.fullmatch(r"resnet(\d+)", name[3:] if se else name)
        if match and int(match.group(1)) >= 8 and (int(match.group(1)) - 2) % 6 == 0:
            return models.CifarResNet(int(match.group(1)), num_classes=num_classes,
                                      se_reduction=cfg["reduction"] if se else None)
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(names)} "
                        "(or a CIFAR ResNet of depth 6n + 2, e.g. resnet8)")
    options = dict(cfg.get("model_options") or {})
    try:
        if se:
            return models.create(name, num_classes=num_classes, reduction=cfg["reduction"], **options)
        return models.create(name, num_classes=num_classes, **options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r} with options {options}: {exc}") from exc


def _load_data(cfg: dict[str, Any], data_dir: str | None, log: Callable[[str], None]) -> CIFAR:
    """The data set of ``cfg``: CIFAR from ``data_dir``, or the generated set when the run uses it."""
    if cfg.get("data") == "synthetic":
        data = make_synthetic(**QUICK_SYNTHETIC, num_classes=10)
    else:
        try:
            data = load_cifar(cfg["dataset"], data_dir)
        except DataError as exc:
            if not cfg["quick"]:
                raise
            data = make_synthetic(**QUICK_SYNTHETIC, num_classes=10)
            log(f"minise: no {cfg['dataset']} here, so --quick trains on a small GENERATED CIFAR-format set "
                f"(not CIFAR: its accuracy says nothing about CIFAR). {exc}")
        cfg["data"] = "synthetic" if data.synthetic else "cifar"
    return data.subset(cfg["limit_train"], cfg["limit_test"])


def _sync_every(device: str) -> int:
    """Steps between host reads of the loss (each read waits for the GPU; on the CPU it is free)."""
    return 1 if device == "cpu" else 20


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, mean: np.ndarray, std: np.ndarray,
             num_classes: int, batch_size: int = 500, device: str = "cpu") -> dict[str, Any]:
    """Loss, accuracy, predictions and confusion matrix of ``model`` (in eval mode) on a labelled set.

    ``images`` (uint8) and ``labels`` may be NumPy arrays or already on ``device``.
    """
    loader = BatchLoader(images, labels, batch_size, mean=mean, std=std, device=device)
    model.eval()
    preds, loss_sum = [], None
    with no_grad():
        for x, y in loader:
            logits = model(Tensor(x))
            batch_loss = F.cross_entropy(logits, Tensor(y)).data * len(y)
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            preds.append(logits.data.argmax(axis=1))
    xp = get_array_module(loader.images)
    pred = to_numpy(xp.concatenate(preds)) if preds else np.zeros(0, dtype=np.int64)  # cpu-only
    labels = to_numpy(loader.labels)
    n = len(labels)
    confusion = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes)
    return {
        "loss": float(to_numpy(loss_sum)) / n if n else float("nan"),
        "accuracy": float((pred == labels).mean()) if n else float("nan"),
        "correct": int((pred == labels).sum()),
        "count": n,
        "predictions": pred,
        "confusion": confusion,
    }


def _state_arrays(model: Any, optimizer_state: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays = {f"model/{k}": to_numpy(v) for k, v in model.state_dict().items()}
    for i, buf in optimizer_state["momentum_buffers"].items():
        arrays[f"optimizer/momentum/{i}"] = buf
    return arrays


def _split_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    model_sd = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    momentum = {int(k.rsplit("/", 1)[1]): v for k, v in arrays.items() if k.startswith("optimizer/momentum/")}
    return model_sd, momentum


def _load_model_state(model: Any, state: dict[str, np.ndarray], path: Path, model_name: str) -> None:
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:  # StateDictError is a KeyError
        raise CheckpointError(
            f"checkpoint {path} does not fit model {model_name}: {exc}") from exc


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    tmp = out / "metrics.csv.tmp"
    tmp.write_text(buf.getvalue())
    os.replace(tmp, out / "metrics.csv")


def _save_figure(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    FigureCanvasAgg(fig)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training and test, as a PNG (no display needed)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - no pyplot: no global state, no display

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> None:
    """The confusion matrix (rows: true class, columns: predicted) as a PNG."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    k = len(classes)
    size = max(5.0, min(0.45 * k + 2, 24.0))
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= 20:
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        top = confusion.max() if confusion.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i, j] > top / 2 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    fig.tight_layout()
    _save_figure(fig, path)


class _EpochMeter:
    """Running loss and accuracy of one epoch, read from the device every few steps, with a tqdm bar.

    The per-step losses stay on the device until :meth:`add` is asked to sync (each read waits for
    the GPU); then any NaN or infinity among them stops the run, naming the step where it appeared.
    """

    def __init__(self, epoch: int, per_epoch: int, step: int, num_epochs: int, steps: int,
                 progress: bool | None) -> None:
        from tqdm.auto import tqdm  # noqa: PLC0415

        self.epoch, self.per_epoch, self.step = epoch, per_epoch, step
        self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{num_epochs}", unit="batch",
                        disable=(None if progress is None else not progress), leave=False, dynamic_ncols=True)
        self.pending: list[tuple[Any, Any, int]] = []  # (loss, number correct, batch size), not yet read
        self.seen, self.loss_sum, self.correct = 0, 0.0, 0
        self.start = time.perf_counter()

    def add(self, loss: Any, correct: Any, size: int, sync: bool) -> None:
        self.pending.append((loss, correct, size))
        if sync:
            self._flush()
        self.bar.update(1)

    def _flush(self) -> None:
        if not self.pending:
            return
        xp = get_array_module(self.pending[0][0])
        losses = to_numpy(xp.stack([p[0] for p in self.pending])).astype(np.float64)
        rights = to_numpy(xp.stack([p[1] for p in self.pending]))
        sizes = np.array([p[2] for p in self.pending])  # cpu-only
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            at = self.step + int(bad[0]) + 1  # steps are counted from 1
            self.bar.close()
            raise NonFiniteLoss(f"the training loss became {losses[bad[0]]} at step {at} (epoch {self.epoch + 1}, "
                                f"batch {at - self.epoch * self.per_epoch} of {self.per_epoch})")
        self.step += len(self.pending)
        self.seen += int(sizes.sum())
        self.loss_sum += float((losses * sizes).sum())
        self.correct += int(rights.sum())
        self.pending.clear()
        elapsed = time.perf_counter() - self.start
        self.bar.set_postfix_str(f"loss {self.loss_sum / self.seen:.3f} acc {100 * self.correct / self.seen:.1f}% "
                                 f"{self.seen / max(elapsed, 1e-9):.0f} img/s", refresh=False)

    def close(self) -> tuple[int, float, int, float]:
        """(images, summed loss, correct, seconds) of the epoch."""
        self._flush()
        elapsed = time.perf_counter() - self.start
        self.bar.close()
        return self.seen, self.loss_sum, self.correct, elapsed


# ----------------------------------------------------------------------------- the training loop
def train_epoch(model: Any, loader: Iterable[tuple[Any, Any]], optimizer: SGD, schedule: Schedule | None = None,
                *, max_steps: int | None = None,
                on_step: Callable[[Any, Any, int], None] | None = None) -> int:
    """One pass of minibatch SGD over ``loader``; returns the number of steps taken.

    With the model in training mode (batch norm normalises with, and updates, the batch
    statistics), for each batch (x, y) of raw arrays from ``loader``, at most ``max_steps`` of them:

        logits = model(x),   L = cross_entropy(logits, y)                      (the mean over the batch)
        ∂L/∂θ for every parameter θ, by backpropagation from L alone           (no gradient of an
                                                                                earlier step may remain)
        optimizer.step(), then schedule.step() (when there is a schedule)      (one step per batch)

    and then ``on_step(loss, correct, batch_size)``, with the batch's loss and its number of correct
    predictions (argmax of the logits) as arrays on the model's device: the caller decides when to
    read them, so a GPU is not made to wait for the host after every step.
    """
    # BEGIN SOLUTION training/loop
    model.train()
    steps = 0
    for x, y in loader:
        if max_steps is not None and steps >= max_steps:
            break
        logits = model(Tensor(x))
        loss = F.cross_entropy(logits, Tensor(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        steps += 1
        if on_step is not None:
            on_step(loss.data, (logits.data.argmax(axis=1) == y).sum(), len(y))
    return steps
    # END SOLUTION


def train(config: dict[str, Any], *, out: str | os.PathLike | None = None, data_dir: str | None = None,
          device: str = "cpu", resume: str | os.PathLike | None = None, stop_after: int | None = None,
          log: Callable[[str], None] = print, progress: bool | None = None) -> dict[str, Any]:
    """Train as ``config`` says (see :data:`DEFAULTS`); returns the summary of the run.

    ``resume``: a checkpoint (or run folder) to continue from; its configuration is used and
    ``config`` is ignored. ``stop_after``: end after that epoch even if the run plans more (it can be
    resumed later). ``progress``: tqdm bars (None: only when stderr is a terminal).
    """
    resumed = None
    if resume is not None:
        ckpt_path = Path(resume)
        if ckpt_path.is_dir():
            ckpt_path = ckpt_path / "last.npz"
        arrays, meta = load_checkpoint(ckpt_path)
        if meta.get("kind") != "train":
            raise CheckpointError(f"{ckpt_path} is not a training checkpoint")
        cfg = dict(meta["config"])
        resumed = (ckpt_path, arrays, meta)
        out_dir = Path(out) if out is not None else ckpt_path.parent
    else:
        cfg = dict(config)
        out_dir = Path(out) if out is not None else Path("runs") / f"{cfg['model']}-{cfg['dataset']}-" \
            f"{time.strftime('%Y%m%d-%H%M%S')}"
        if (out_dir / "last.npz").exists():
            raise UserError(f"{out_dir} already holds a run (last.npz): continue it with --resume "
                            f"{out_dir / 'last.npz'}, or choose another --out")

    backend.module_for(device)  # a clear error now if the device cannot be used
    data = _load_data(cfg, data_dir, log)
    per_epoch, total_iters, num_epochs = _plan(cfg, len(data.train_labels))

    from .nn import init  # noqa: PLC0415

    init.manual_seed(cfg["seed"])
    model = _create_model(cfg, data.num_classes)
    rng = np.random.default_rng([cfg["seed"], 1])  # cpu-only: shuffles and augmentation
    if resumed is not None:
        ckpt_path, arrays, meta = resumed
        model_sd, momentum = _split_arrays(arrays)
        _load_model_state(model, model_sd, ckpt_path, cfg["model"])
        mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])  # cpu-only
        rng.bit_generator.state = meta["rng_state"]
    else:
        mean, std = channel_stats(data.train_images)
    model.to(device)

    groups = (no_decay_groups(model.named_parameters(), cfg["weight_decay"]) if cfg["no_decay_bn_bias"]
              else list(model.parameters()))
    optimizer = SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                    nesterov=cfg["nesterov"])
    schedule = _make_schedule(cfg, optimizer, per_epoch, total_iters)
    history: list[dict[str, Any]] = []
    epoch, step, best_acc, best_epoch = 0, 0, -1.0, 0
    if resumed is not None:
        ckpt_path, arrays, meta = resumed
        opt_state = {"param_groups": meta["optimizer"]["param_groups"], "momentum_buffers": momentum}
        try:
            optimizer.load_state_dict(opt_state)
            schedule.load_state_dict(meta["schedule"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {ckpt_path}: optimizer state does not fit ({exc})") from exc
        epoch, step = int(meta["epoch"]), int(meta["step"])
        history = list(meta["history"])
        best_acc, best_epoch = float(meta["best_acc"]), int(meta["best_epoch"])

    out_dir.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.size for p in model.parameters())
    source = "generated (not CIFAR)" if data.synthetic else data.source
    log(f"data: {cfg['dataset'] if not data.synthetic else 'synthetic'} from {source}: "
        f"{len(data.train_labels)} training / {len(data.test_labels)} test images")
    log(f"model: {cfg['model']} ({n_params:,} parameters) on {device}; {num_epochs} epoch(s) of {per_epoch} "
        f"iterations (batch {cfg['batch_size']}), {cfg['schedule']} schedule, lr {cfg['lr']}; run folder {out_dir}")
    if resumed is not None:
        log(f"resuming from {resumed[0]} after epoch {epoch} (step {step})")
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")

    loader = BatchLoader(data.train_images, data.train_labels, cfg["batch_size"], mean=mean, std=std,
                         shuffle=True, augment=cfg["augment"], drop_last=cfg["drop_last"], rng=rng, device=device)
    test_images = backend.to_device(data.test_images, device)  # moved once, not every epoch
    test_labels = backend.to_device(data.test_labels, device)

    def checkpoint_meta(optimizer_state: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": "train", "minise_version": __version__, "config": cfg, "model": cfg["model"],
            "num_classes": data.num_classes, "classes": data.classes, "epoch": epoch, "step": step,
            "optimizer": {"param_groups": optimizer_state["param_groups"]},
            "schedule": schedule.state_dict(), "rng_state": rng.bit_generator.state,
            "mean": mean.tolist(), "std": std.tolist(), "history": history,
            "best_acc": best_acc, "best_epoch": best_epoch,
        }

    last_path = out_dir / "last.npz"
    sync_every = _sync_every(device)
    stopped_early = False
    try:
        while epoch < num_epochs and step < total_iters:
            if stop_after is not None and epoch >= stop_after:
                stopped_early = True
                break
            meter = _EpochMeter(epoch, per_epoch, step, num_epochs, min(per_epoch, total_iters - step), progress)
            lr_epoch = schedule.lr
            def on_step(loss: Any, correct: Any, size: int, meter: _EpochMeter = meter) -> None:
                nonlocal step
                step += 1
                meter.add(loss, correct, size, sync=step % sync_every == 0)

            train_epoch(model, loader, optimizer, schedule, max_steps=total_iters - step, on_step=on_step)
            seen, loss_sum, correct, train_time = meter.close()
            epoch += 1

            t0 = time.perf_counter()
            result = evaluate(model, test_images, test_labels, mean, std, data.num_classes,
                              cfg["eval_batch_size"], device)
            eval_time = time.perf_counter() - t0
            record = {
                "epoch": epoch, "step": step, "lr": lr_epoch,
                "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "test_loss": result["loss"], "test_acc": result["accuracy"],
                "images_per_s": seen / train_time if train_time > 0 else float("nan"),
                "train_time_s": train_time, "eval_time_s": eval_time,
            }
            history.append(record)
            improved = result["accuracy"] > best_acc
            if improved:
                best_acc, best_epoch = result["accuracy"], epoch
            optimizer_state = optimizer.state_dict()
            arrays = _state_arrays(model, optimizer_state)
            meta = checkpoint_meta(optimizer_state)
            save_checkpoint(last_path, arrays, meta)
            if improved:
                save_checkpoint(out_dir / "best.npz", arrays, meta)
            _write_metrics(out_dir, history)
            log(f"epoch {epoch}/{num_epochs}  lr {lr_epoch:.4g}  train loss {record['train_loss']:.4f} "
                f"acc {100 * record['train_acc']:.2f}%  test loss {record['test_loss']:.4f} "
                f"acc {100 * record['test_acc']:.2f}%  {record['images_per_s']:.0f} img/s  "
                f"({train_time:.1f}s + eval {eval_time:.1f}s)" + ("  *best*" if improved else ""))
    except NonFiniteLoss as exc:
        kept = (f"the last good checkpoint is {last_path} (epoch {epoch})" if last_path.exists()
                else "no checkpoint was written (no epoch had finished)")
        raise NonFiniteLoss(f"{exc}; training stopped, {kept}") from None
    finally:
        if history:
            try:
                plot_curves(history, out_dir / "curves.png", f"{cfg['model']} on {cfg['dataset']}")
            except Exception as exc:  # a plotting failure must not hide the run's real outcome
                log(f"(could not draw curves.png: {exc})")

    summary = {
        "out": str(out_dir), "epoch": epoch, "step": step, "best_acc": best_acc, "best_epoch": best_epoch,
        "history": history, "stopped_early": stopped_early, "model": model, "synthetic": data.synthetic,
    }
    if history:
        last = history[-1]
        log(f"done: {epoch} epochs, {step} steps; test accuracy {100 * last['test_acc']:.2f}% "
            f"(best {100 * best_acc:.2f}% at epoch {best_epoch}); files in {out_dir}"
            + ("; stopped early (--stop-after), continue with --resume " + str(last_path) if stopped_early else ""))
    return summary


# ----------------------------------------------------------------------------- evaluation command
def eval_checkpoint(path: str | os.PathLike, *, data_dir: str | None = None, device: str = "cpu",
                    model_name: str | None = None, limit_test: int | None = None, out: str | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Test accuracy, per-class accuracy and confusion matrix of a checkpoint (printed and as a PNG)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.npz"
    arrays, meta = load_checkpoint(path)
    cfg = dict(meta["config"])
    name = model_name or cfg["model"]
    if limit_test is not None:
        cfg["limit_test"] = limit_test
    backend.module_for(device)
    data = _load_data(cfg, data_dir, log)
    if data.num_classes != int(meta["num_classes"]):
        raise CheckpointError(f"{path} was trained for {meta['num_classes']} classes, the test set has "
                              f"{data.num_classes}")
    model = _create_model({**cfg, "model": name}, int(meta["num_classes"]))
    model_sd, _ = _split_arrays(arrays)
    _load_model_state(model, model_sd, path, name)
    model.to(device)
    mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])  # cpu-only
    result = evaluate(model, data.test_images, data.test_labels, mean, std, data.num_classes,
                      cfg["eval_batch_size"], device)
    classes = list(meta.get("classes") or data.classes)
    conf = result["confusion"]
    log(f"checkpoint {path}: {name} on {cfg['dataset'] if not data.synthetic else 'synthetic data'}, "
        f"after epoch {meta['epoch']}")
    log(f"test accuracy {100 * result['accuracy']:.2f}% ({result['correct']} / {result['count']}), "
        f"loss {result['loss']:.4f}")
    log("per-class accuracy:")
    width = max(len(c) for c in classes)
    for k, cname in enumerate(classes):
        total = int(conf[k].sum())
        acc = f"{100 * conf[k, k] / total:6.2f}%" if total else "     -"
        log(f"  {cname:<{width}}  {acc}  ({int(conf[k, k])}/{total})")
    if len(classes) <= 20:
        short = [c[:5] for c in classes]
        log("confusion matrix (rows: true class, columns: predicted):")
        log(" " * (width + 2) + " ".join(f"{s:>5}" for s in short))
        for k, cname in enumerate(classes):
            log(f"  {cname:<{width}}" + " ".join(f"{int(v):5d}" for v in conf[k]))
    out_dir = Path(out) if out is not None else path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"confusion-{path.stem}.png"
    plot_confusion(conf, classes, png, f"{name}: test accuracy {100 * result['accuracy']:.2f}%")
    log(f"confusion matrix image: {png}")
    result["png"] = str(png)
    return result


# ----------------------------------------------------------------------------- the command line
def _int_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minise", description="Squeeze-and-Excitation networks in NumPy: train and evaluate on CIFAR.")
    parser.add_argument("--version", action="version", version=f"minise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train", help="train a network on CIFAR-10/100",
        description="Train a (SE-)ResNet on CIFAR with SGD. Unset options take the defaults shown, "
                    "or the values of --quick / --preset.",
        argument_default=argparse.SUPPRESS)
    t.add_argument("--model", help=f"network name (see minise.models.names()); default {DEFAULTS['model']}")
    t.add_argument("--dataset", choices=["cifar10", "cifar100"], help=f"data set; default {DEFAULTS['dataset']}")
    t.add_argument("--reduction", type=int, help=f"SE reduction ratio r (hidden width C/r); default "
                                                 f"{DEFAULTS['reduction']}")
    t.add_argument("--epochs", type=int, help=f"passes over the training set; default {DEFAULTS['epochs']}")
    t.add_argument("--iterations", type=int, help="stop after this many SGD steps instead (the preset: 64000)")
    t.add_argument("--batch-size", type=int, help=f"images per SGD step; default {DEFAULTS['batch_size']}")
    t.add_argument("--lr", type=float, help=f"peak learning rate; default {DEFAULTS['lr']}")
    t.add_argument("--momentum", type=float, help=f"SGD momentum; default {DEFAULTS['momentum']}")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    t.add_argument("--weight-decay", type=float, help=f"L2 weight decay; default {DEFAULTS['weight_decay']}")
    t.add_argument("--no-decay-bn-bias", action="store_true",
                   help="no weight decay on batch-norm scales/shifts and biases")
    t.add_argument("--schedule", choices=["cosine", "multistep", "constant"],
                   help="learning-rate schedule, stepped every iteration: cosine decay to 0, or multistep "
                        f"(x gamma at each milestone); default {DEFAULTS['schedule']}")
    t.add_argument("--warmup-epochs", type=float,
                   help="warm-up length: cosine rises linearly from 0; multistep/constant run at 0.1 x lr "
                        "(He et al.'s ResNet-110 warm-up); default 0")
    t.add_argument("--milestones", type=_int_list,
                   help="multistep: epochs at which lr is multiplied by gamma, e.g. 82,123 "
                        "(default: half and three quarters of the run)")
    t.add_argument("--gamma", type=float, help="multistep factor; default 0.1")
    t.add_argument("--preset", choices=sorted(PRESETS),
                   help="he2016: the paper's CIFAR recipe (He et al.): batch 128, momentum 0.9, weight decay "
                        "1e-4, lr 0.1 / 10 at 32k and 48k iterations, stop at 64k (~164 epochs)")
    t.add_argument("--quick", action="store_true",
                   help="a run of about a minute on a CPU: 2 epochs on 1536 training / 500 test images; with no "
                        "CIFAR available, on a generated CIFAR-format set instead (said in the first line)")
    t.add_argument("--limit-train", type=int, help="train on the first N training images only")
    t.add_argument("--limit-test", type=int, help="evaluate on the first N test images only")
    t.add_argument("--drop-last", action="store_true", help="skip each epoch's last, smaller batch")
    t.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop and flip (normalisation only)")
    t.add_argument("--eval-batch-size", type=int, help=f"images per evaluation batch; default "
                                                       f"{DEFAULTS['eval_batch_size']}")
    t.add_argument("--seed", type=int, help="seed of weight initialisation, shuffling and augmentation; default 0")
    t.add_argument("--device", choices=["cpu", "cuda"], help="cpu (NumPy) or cuda (CuPy); default cpu")
    t.add_argument("--data-dir", help="folder holding (or to receive) CIFAR; default $MINISE_DATA or "
                                      f"{default_data_dir()}")
    t.add_argument("--out", help="run folder for checkpoints, metrics.csv and curves.png; "
                                 "default runs/MODEL-DATASET-TIME (or the resumed checkpoint's folder)")
    t.add_argument("--resume", help="continue the run saved in this checkpoint (or run folder: its last.npz) "
                                    "with its saved configuration")
    t.add_argument("--stop-after", type=int, help="end after this epoch even if the run plans more (continue "
                                                  "later with --resume); the schedule is unchanged")
    t.add_argument("--progress", choices=["auto", "on", "off"],
                   help="progress bars: auto = only when stderr is a terminal; default auto")

    e = sub.add_parser("eval", help="evaluate a checkpoint on the test set",
                       description="Test accuracy, per-class accuracy and the confusion matrix of a checkpoint "
                                   "(printed, and saved as confusion-NAME.png beside it or in --out).")
    e.add_argument("--checkpoint", required=True, help="a checkpoint file (or a run folder: its best.npz)")
    e.add_argument("--data-dir", help="folder holding CIFAR; default $MINISE_DATA or " f"{default_data_dir()}")
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (NumPy) or cuda (CuPy)")
    e.add_argument("--model", help="build this network instead of the one the checkpoint names")
    e.add_argument("--limit-test", type=int, help="evaluate on the first N test images only")
    e.add_argument("--out", help="folder for the confusion-matrix PNG (default: the checkpoint's folder)")

    a = sub.add_parser("assignments", help="course assignments: make student copies, grade them",
                       description="Make a student copy with the marked solutions taken out, or grade one "
                                   "(see docs/instructors.md).")
    assignments.add_arguments(a)
    return parser


def _train_command(args: argparse.Namespace) -> int:
    given = vars(args).copy()
    given.pop("command", None)
    device = given.pop("device", "cpu")
    data_dir = given.pop("data_dir", None)
    out = given.pop("out", None)
    resume = given.pop("resume", None)
    stop_after = given.pop("stop_after", None)
    progress = {"auto": None, "on": True, "off": False}[given.pop("progress", "auto")]
    if stop_after is not None and stop_after < 1:
        raise UserError(f"--stop-after must be at least 1, got {stop_after}")
    if resume is not None:
        path = Path(resume)
        ckpt = path / "last.npz" if path.is_dir() else path
        _, meta = load_checkpoint(ckpt)
        saved = meta.get("config", {})
        for key, value in given.items():
            if key not in RESUME_FREE and saved.get(key) != value:
                raise UserError(
                    f"--resume continues a run with its saved configuration, but --{key.replace('_', '-')} "
                    f"{value} differs from the checkpoint's {saved.get(key)}; leave it out or start a new run")
        config = saved
    else:
        config = resolve_config(given)
    summary = train(config, out=out, data_dir=data_dir, device=device, resume=resume, stop_after=stop_after,
                    progress=progress, log=lambda s: print(s, flush=True))
    return 0 if summary["epoch"] > 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The ``minise`` command. Returns the exit code: 0 done, 1 training failed (NaN), 2 a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            return _train_command(args)
        if args.command == "assignments":
            return assignments.run(args)
        eval_checkpoint(args.checkpoint, data_dir=args.data_dir, device=args.device, model_name=args.model,
                        limit_test=args.limit_test, out=args.out, log=lambda s: print(s, flush=True))
        return 0
    except (UserError, DataError, CheckpointError, DeviceError) as exc:
        print(f"minise: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written, a disk that is full
        print(f"minise: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except NonFiniteLoss as exc:
        print(f"minise: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("minise: interrupted; the last checkpoint written is last.npz in the run folder", file=sys.stderr)
        return 130


_resolve = resolve_config  # the old private name
