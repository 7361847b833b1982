"""One training run on CIFAR: ``train_epoch``, ``evaluate``, ``train``, ``eval_checkpoint``.

    from minise.config import resolve_config
    from minise.train import train
    summary = train(resolve_config({"model": "se_resnet20", "epochs": 30}), out="runs/se20")

(``minise train`` and ``minise eval`` in :mod:`minise.cli` call these; the configuration, its
defaults and presets are in :mod:`minise.config`.) One epoch: a seeded
shuffle of the training images, random crop + flip, SGD steps with the schedule's learning rate,
then the test set in evaluation mode. After every epoch the run folder gets ``last.npz`` (then
``best.npz`` when test accuracy improved) and ``metrics.csv``; at the end ``curves.png``
(:mod:`minise.report` writes those). A checkpoint holds everything needed to continue exactly
where the run stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, backend
from . import functional as F
from .autograd import Tensor, no_grad
from .backend import get_array_module, to_numpy
from .checkpoint import (
    CheckpointError,
    copy_checkpoint,
    load_checkpoint,
    load_meta,
    remove_temporaries,
    save_checkpoint,
)
from .config import DEFAULTS, QUICK_SYNTHETIC, RESUME_FREE, check_config, make_schedule, plan, resolve_config
from .data import CIFAR, BatchLoader, DataError, channel_stats, cifar_or_generated, load_cifar, make_synthetic
from .errors import UserError, one_line
from .fileio import write_atomic
from .functional.loss import checked_targets
from .optim import SGD, Schedule, no_decay_groups
from .report import eval_report, plot_confusion, plot_curves, write_metrics
from .runfolder import check_run_folder, lock_run_folder
from .speed import Prefetcher

__all__ = ["train", "train_epoch", "evaluate", "eval_checkpoint", "UserError", "NonFiniteLoss", "Interrupted",
           "OutOfMemory", "Terminated", "terminate_as_interrupt"]


class NonFiniteLoss(RuntimeError):
    """The training loss, or the test loss after an epoch, became NaN or infinite."""


class OutOfMemory(UserError):
    """The run (or evaluation) needed more memory than there is: a usage error (exit 2) naming the batch size."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``kill`` and job schedulers send), raised by the ``minise`` command's handler so that
    a run stops as it does on Ctrl-C: a checkpoint being written is finished or discarded, never half left."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run; the message says which checkpoint (if any) the run can continue
    from. ``exit_code``: 130 after Ctrl-C, 143 after SIGTERM (128 + the signal's number, as shells say)."""

    def __init__(self, message: str = "interrupted", exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (as Ctrl-C raises
    KeyboardInterrupt), so a run says what it saved and exits 143; the old handler is put back after."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- pieces of a run
def _create_model(cfg: dict[str, Any], num_classes: int) -> Any:
    from . import models  # noqa: PLC0415 - the command line should start even while models import slowly

    name, options = cfg["model"], dict(cfg.get("model_options") or {})
    reduction = {"reduction": cfg["reduction"]} if name.startswith("se_") else {}
    try:
        return models.create(name, num_classes=num_classes, **reduction, **options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r}" + (f" with options {options}" if options else "")
                        + f": {one_line(exc)}") from exc


def _load_data(cfg: dict[str, Any], data_dir: str | os.PathLike | None, log: Callable[[str], None]) -> CIFAR:
    """The data set of ``cfg`` (and ``cfg["data"]`` set to which one it is).

    CIFAR from ``data_dir``; the generated set when the run trains on it, or with --quick when there
    is no CIFAR at all (a corrupt CIFAR copy is an error, never replaced).
    """
    if cfg.get("data") == "synthetic":
        data = make_synthetic(**QUICK_SYNTHETIC, num_classes=10)
    elif cfg["quick"] and cfg.get("data") is None:
        data, why = cifar_or_generated(cfg["dataset"], data_dir, **QUICK_SYNTHETIC)
        if why is not None:
            log(f"minise: no {cfg['dataset']} here, so --quick trains on a small GENERATED CIFAR-format set "
                f"(not CIFAR: its accuracy says nothing about CIFAR). {why}")
    else:
        data = load_cifar(cfg["dataset"], data_dir)
    cfg["data"] = "synthetic" if data.synthetic else "cifar"
    return data.subset(cfg["limit_train"], cfg["limit_test"])


def _label_problem(labels: Any, num_classes: int) -> str | None:
    """What is wrong with class labels that should lie in 0..num_classes-1 (None: nothing).

    One read of the whole set (free on the host; one sync for labels already on a GPU), so that
    the loss need not check every batch's targets on the device (``checked_targets``)."""
    if len(labels) and bool(((labels < 0) | (labels >= num_classes)).any()):
        return f"must lie in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}"
    return None


def _check_labels(data: CIFAR) -> None:
    """Every training and test label is a class of the data set: checked once here, on the host,
    so that no training step has to read its targets back from the device to check them."""
    for split, labels in (("training", data.train_labels), ("test", data.test_labels)):
        problem = _label_problem(labels, data.num_classes)
        if problem is not None:
            raise DataError(f"the {split} labels of {data.name} {problem} ({data.num_classes} classes)")


def _data_name(cfg: dict[str, Any]) -> str:
    """How run folders and titles name the data: the CIFAR variant, or "generated" for the stand-in."""
    return "generated" if cfg.get("data") == "synthetic" else cfg["dataset"]


def _normalisation(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the training images; a channel with none is a data error."""
    mean, std = channel_stats(images)
    flat = [int(c) for c in np.flatnonzero(~(std > 0))]
    if flat:
        raise DataError(f"the training images are constant in channel(s) {flat} (standard deviation 0), "
                        "so they cannot be normalised: the data is broken or not images")
    return mean, std


def _saved_normalisation(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel mean and standard deviation a checkpoint's run normalised with (host arrays)."""
    return np.asarray(meta["mean"], dtype=np.float64), np.asarray(meta["std"], dtype=np.float64)  # cpu-only


def _sync_every(device: str) -> int:
    """Steps between host reads of the loss (each read waits for the GPU; on the CPU it is free)."""
    return 1 if device == "cpu" else 20


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, mean: np.ndarray, std: np.ndarray,
             num_classes: int, batch_size: int = 500, device: str = "cpu") -> dict[str, Any]:
    """Loss, accuracy, predictions and confusion matrix of ``model`` (in eval mode) on a labelled set.

    ``images`` (uint8) and ``labels`` may be NumPy arrays or already on ``device``; the labels
    must lie in 0..num_classes-1 (checked once, before the first batch).
    """
    problem = _label_problem(labels, num_classes)
    if problem is not None:
        raise ValueError(f"evaluate: the labels {problem}")
    loader = BatchLoader(images, labels, batch_size, mean=mean, std=std, device=device)
    model.eval()
    preds, loss_sum = [], None
    with no_grad(), checked_targets(num_classes):
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
        # one read for both rows (exact: a float32 loss and a count up to the batch size fit a float64)
        both = xp.stack([xp.stack([p[0] for p in self.pending]).astype(xp.float64),
                         xp.stack([p[1] for p in self.pending]).astype(xp.float64)])
        losses, rights = to_numpy(both)
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
        self.correct += int(round(rights.sum()))
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


# ----------------------------------------------------------------------------- checkpoints of a run
def _checkpoint_path(path: str | os.PathLike, default: str) -> Path:
    """A checkpoint file, or a run folder's ``default`` file in it."""
    path = Path(path)
    return path / default if path.is_dir() else path


def _require(path: Path, meta: dict[str, Any], checks: dict[str, Callable[[Any], bool]]) -> None:
    for key, ok in checks.items():
        if key not in meta:
            raise CheckpointError(f"{path}: its header lacks {key!r}; not a checkpoint of a minise run")
        try:
            good = ok(meta[key])
        except (TypeError, ValueError):
            good = False
        if not good:
            raise CheckpointError(f"{path}: its header's {key!r} is {one_line(repr(meta[key]), 60)}, "
                                  "which no minise run writes; the file is damaged or was edited")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_stats(v: Any) -> bool:
    """Channel means or standard deviations: three finite numbers."""
    return (isinstance(v, list) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def _saved_config(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The run configuration in a checkpoint, completed from DEFAULTS (older files) and checked."""
    _require(path, meta, {"config": lambda v: isinstance(v, dict)})
    unknown = sorted(set(meta["config"]) - set(DEFAULTS))
    if unknown:
        raise CheckpointError(f"{path}: its configuration has unknown key(s) {one_line(', '.join(unknown), 80)}")
    cfg = {**DEFAULTS, **meta["config"]}
    if cfg["data"] is None and meta.get("synthetic") is True:  # a tutorial's checkpoint
        cfg["data"] = "synthetic"
    try:
        check_config(cfg)
    except UserError as exc:
        raise CheckpointError(f"{path}: its saved configuration is invalid ({exc})") from None
    return cfg


def _model_meta_checks() -> dict[str, Callable[[Any], bool]]:
    return {"num_classes": lambda v: _is_int(v) and v >= 1, "mean": _is_stats,
            "std": lambda v: _is_stats(v) and min(v) > 0}


@dataclass
class _Resume:
    """A training checkpoint, read once and checked: where it is, its arrays, header and configuration."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


def _read_resume(resume: str | os.PathLike) -> _Resume:
    path = _checkpoint_path(resume, "last.npz")
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != "train":
        raise CheckpointError(f"{path} is not a training checkpoint (kind {one_line(repr(meta.get('kind')), 40)})")
    _require(path, meta, {
        **_model_meta_checks(),
        "epoch": lambda v: _is_int(v) and v >= 0, "step": lambda v: _is_int(v) and v >= 0,
        "best_epoch": lambda v: _is_int(v) and v >= 0,
        "best_acc": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 1,
        "history": lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
        "optimizer": lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list),
        "schedule": lambda v: isinstance(v, dict), "rng_state": lambda v: isinstance(v, dict),
    })
    if meta["best_epoch"] > meta["epoch"]:
        raise CheckpointError(f"{path}: best epoch {meta['best_epoch']} lies after the epoch {meta['epoch']} "
                              "it was saved at; the file is damaged or was edited")
    return _Resume(path, arrays, meta, _saved_config(path, meta))


def _split_arrays(path: Path, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    model_sd = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    momentum = {}
    for k, v in arrays.items():
        if k.startswith("optimizer/momentum/"):
            index = k[len("optimizer/momentum/"):]
            if not (index.isascii() and index.isdigit()):
                raise CheckpointError(f"{path}: array {one_line(repr(k), 60)} names no parameter index")
            momentum[int(index)] = v
        elif not k.startswith("model/"):
            raise CheckpointError(f"{path}: array {one_line(repr(k), 60)} belongs to neither the model nor the "
                                  "optimizer; the file is damaged or not a minise run's")
    return model_sd, momentum


def _load_model_state(model: Any, state: dict[str, np.ndarray], path: Path, model_name: str) -> None:
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:  # StateDictError is a KeyError
        raise CheckpointError(f"checkpoint {path} does not fit model {model_name}: {one_line(exc)}") from exc


@dataclass
class _Run:
    """Everything a run carries from epoch to epoch (and writes into its checkpoints)."""

    cfg: dict[str, Any]
    data: CIFAR
    device: str
    model: Any
    optimizer: SGD
    schedule: Schedule
    rng: np.random.Generator  # cpu-only: shuffles and augmentation draw on the host
    mean: np.ndarray
    std: np.ndarray
    per_epoch: int
    total_iters: int
    num_epochs: int
    epoch: int = 0
    step: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    saved_epoch: int | None = None  # the epoch of the last.npz this process wrote (None: none yet)

    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta) of the run as it stands: a checkpoint to continue from, exactly."""
        opt = self.optimizer.state_dict()
        arrays = {f"model/{k}": to_numpy(v) for k, v in self.model.state_dict().items()}
        for i, buf in opt["momentum_buffers"].items():
            arrays[f"optimizer/momentum/{i}"] = buf
        meta = {
            "kind": "train", "minise_version": __version__, "config": self.cfg, "model": self.cfg["model"],
            "num_classes": self.data.num_classes, "classes": self.data.classes, "synthetic": self.data.synthetic,
            "epoch": self.epoch, "step": self.step, "optimizer": {"param_groups": opt["param_groups"]},
            "schedule": self.schedule.state_dict(), "rng_state": self.rng.bit_generator.state,
            "mean": self.mean.tolist(), "std": self.std.tolist(), "history": self.history,
            "best_acc": self.best_acc, "best_epoch": self.best_epoch,
        }
        return arrays, meta


def _start(cfg: dict[str, Any], data: CIFAR, device: str, resumed: _Resume | None) -> _Run:
    """Model, optimizer, schedule, random generator and normalisation of a new run, or of a resumed
    one exactly as its checkpoint left them."""
    per_epoch, total_iters, num_epochs = plan(cfg, len(data.train_labels))
    from .nn import init  # noqa: PLC0415

    init.manual_seed(cfg["seed"])
    model = _create_model(cfg, data.num_classes)
    rng = np.random.default_rng([cfg["seed"], 1])  # cpu-only: shuffles and augmentation
    if resumed is None:
        mean, std = _normalisation(data.train_images)
    else:
        meta = resumed.meta
        if meta["num_classes"] != data.num_classes:
            raise CheckpointError(f"{resumed.path} was trained for {meta['num_classes']} classes, the data has "
                                  f"{data.num_classes}")
        mean, std = _saved_normalisation(meta)
        model_sd, momentum = _split_arrays(resumed.path, resumed.arrays)
        _load_model_state(model, model_sd, resumed.path, cfg["model"])
    model.to(device)
    groups = (no_decay_groups(model.named_parameters(), cfg["weight_decay"]) if cfg["no_decay_bn_bias"]
              else list(model.parameters()))
    optimizer = SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                    nesterov=cfg["nesterov"])
    schedule = make_schedule(cfg, optimizer, per_epoch, total_iters)
    run = _Run(cfg, data, device, model, optimizer, schedule, rng, mean, std, per_epoch, total_iters, num_epochs)
    if resumed is not None:
        try:
            optimizer.load_state_dict({"param_groups": meta["optimizer"]["param_groups"], "momentum_buffers": momentum})
            schedule.load_state_dict(meta["schedule"])
            rng.bit_generator.state = meta["rng_state"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {resumed.path}: optimizer, schedule or random state does not fit "
                                  f"({one_line(exc)})") from exc
        run.epoch, run.step = meta["epoch"], meta["step"]
        run.history = list(meta["history"])
        run.best_acc, run.best_epoch = float(meta["best_acc"]), meta["best_epoch"]
    return run


def _refuse_changes(resumed: _Resume, options: dict[str, Any]) -> None:
    """A resumed run keeps its saved configuration: an option that says otherwise is a usage error."""
    saved = resumed.meta["config"]
    for key, value in options.items():
        if key not in RESUME_FREE and saved.get(key) != value:
            raise UserError(
                f"--resume continues a run with its saved configuration, but --{key.replace('_', '-')} "
                f"{one_line(value, 40)} differs from the checkpoint's {one_line(saved.get(key), 40)}; leave it "
                "out or start a new run")


def _run_folder(out: str | os.PathLike | None, cfg: dict[str, Any], resumed: _Resume | None) -> Path:
    if out is not None:
        return Path(out)
    if resumed is not None:
        return resumed.path.parent
    return Path("runs") / f"{cfg['model']}-{_data_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"


RUN_FILES = ("last.npz", "best.npz", "metrics.csv", "config.json")


def _refuse_existing_run(out_dir: Path) -> None:
    """A new run never writes over another run's files: continue that one with --resume, or go elsewhere."""
    if (out_dir / "last.npz").exists():
        raise UserError(f"{out_dir} already holds a run (last.npz): continue it with --resume "
                        f"{out_dir / 'last.npz'}, or choose another --out")
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found:
        raise UserError(f"{out_dir} already holds a run's files ({', '.join(found)}) but no last.npz to continue "
                        "from: move them away, or choose another --out")


def _prepare_folder(out_dir: Path, run: _Run, resumed: _Resume | None, log: Callable[[str], None]) -> None:
    """Create the run folder, write config.json; when resuming, clear what an interrupted run left.

    A run writes ``last.npz`` before ``best.npz``, so a run stopped between the two leaves a
    ``best.npz`` one improvement behind. At that moment both files hold the same epoch (the best
    one is the last one), so the repair is an exact copy.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("last.npz", "best.npz", "config.json", "metrics.csv"):
        remove_temporaries(out_dir / name)
    write_atomic(out_dir / "config.json", json.dumps(run.cfg, indent=1) + "\n")
    if resumed is not None and run.epoch > 0 and out_dir.resolve() != resumed.path.parent.resolve():
        _bring_best(out_dir, run, resumed, log)
        return
    if resumed is None or run.epoch == 0 or run.best_epoch != run.epoch:
        return
    best = out_dir / "best.npz"
    if best.exists() and best.resolve() == resumed.path.resolve():
        return
    try:
        held = load_meta(best).get("epoch") if best.exists() else None
    except CheckpointError:
        held = None
    if held != run.epoch:
        copy_checkpoint(resumed.path, best)
        log(f"best.npz held epoch {held}, but the run's best is epoch {run.epoch} (it stopped between writing "
            f"last.npz and best.npz): restored best.npz from {resumed.path.name}")


def _bring_best(out_dir: Path, run: _Run, resumed: _Resume, log: Callable[[str], None]) -> None:
    """A run resumed into another folder (--resume X --out elsewhere) takes its best checkpoint along."""
    if run.best_epoch == run.epoch:
        copy_checkpoint(resumed.path, out_dir / "best.npz")
        log(f"best.npz: a copy of {resumed.path} (the run's best epoch so far, {run.best_epoch}, is the one it "
            "continues from)")
        return
    source = resumed.path.parent / "best.npz"
    try:
        held = load_meta(source).get("epoch") if source.is_file() else None
    except CheckpointError:
        held = None
    if held == run.best_epoch:
        copy_checkpoint(source, out_dir / "best.npz")
        log(f"best.npz: copied from {source} (epoch {held}, the run's best so far)")
    else:
        log(f"the run's best epoch so far ({run.best_epoch}) has no checkpoint in {resumed.path.parent}, so this "
            "folder gets a best.npz only when a later epoch beats it")


def _log_start(run: _Run, out_dir: Path, resumed: _Resume | None, log: Callable[[str], None]) -> None:
    cfg, data = run.cfg, run.data
    n_params = sum(p.size for p in run.model.parameters())
    what = "GENERATED data (not CIFAR)" if data.synthetic else f"{cfg['dataset']} from {data.source}"
    log(f"data: {what}: {len(data.train_labels)} training / {len(data.test_labels)} test images")
    log(f"model: {cfg['model']} ({n_params:,} parameters) on {run.device}; {run.num_epochs} epoch(s) of "
        f"{run.per_epoch} iterations (batch {cfg['batch_size']}), {cfg['schedule']} schedule, lr {cfg['lr']}; "
        f"run folder {out_dir}")
    if resumed is not None:
        log(f"resuming from {resumed.path} after epoch {run.epoch} (step {run.step})")


def _batches(run: _Run, loader: BatchLoader, prefetch: bool) -> contextlib.AbstractContextManager[Iterable[Any]]:
    """The epoch's batches: exactly the ones its steps will use (so that a run which stops early
    leaves the random generator where it would be without prefetching), made on a background thread
    while the steps run when ``prefetch`` is on and the device is the CPU."""
    batches = itertools.islice(loader, min(run.per_epoch, run.total_iters - run.step))
    if prefetch and run.device == "cpu":  # a GPU array made on another thread belongs to another stream
        return Prefetcher(batches, depth=1)  # one batch takes milliseconds, a step hundreds
    return contextlib.nullcontext(batches)


def _train_and_evaluate(run: _Run, loader: BatchLoader, test: tuple[Any, Any],
                        progress: bool | None, prefetch: bool = True) -> dict[str, Any]:
    """One epoch of training, then the test set: the epoch's record for metrics.csv."""
    meter = _EpochMeter(run.epoch, run.per_epoch, run.step, run.num_epochs,
                        min(run.per_epoch, run.total_iters - run.step), progress)
    lr_epoch = run.schedule.lr
    sync_every = _sync_every(run.device)

    def on_step(loss: Any, correct: Any, size: int) -> None:
        run.step += 1
        meter.add(loss, correct, size, sync=run.step % sync_every == 0)

    # the labels were checked on the host (_train), so the loss need not read them from the device
    with _batches(run, loader, prefetch) as batches, checked_targets(run.data.num_classes):
        train_epoch(run.model, batches, run.optimizer, run.schedule, max_steps=run.total_iters - run.step,
                    on_step=on_step)
    seen, loss_sum, correct, train_time = meter.close()
    run.epoch += 1
    t0 = time.perf_counter()
    result = evaluate(run.model, *test, run.mean, run.std, run.data.num_classes, run.cfg["eval_batch_size"],
                      run.device)
    eval_time = time.perf_counter() - t0
    if not math.isfinite(result["loss"]):  # the weights are no longer numbers: this epoch is not saved
        raise NonFiniteLoss(f"the test loss became {result['loss']} after epoch {run.epoch} (step {run.step})")
    return {
        "epoch": run.epoch, "step": run.step, "lr": lr_epoch,
        "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
        "test_loss": result["loss"], "test_acc": result["accuracy"],
        "images_per_s": seen / train_time if train_time > 0 else float("nan"),
        "train_time_s": train_time, "eval_time_s": eval_time,
    }


def _save_epoch(run: _Run, out_dir: Path, record: dict[str, Any]) -> bool:
    """Record the epoch, write last.npz, then best.npz when it improved, then metrics.csv (never into a
    run folder that was deleted during the run: that stops the run)."""
    check_run_folder(out_dir)
    run.history.append(record)
    improved = record["test_acc"] > run.best_acc
    if improved:
        run.best_acc, run.best_epoch = record["test_acc"], run.epoch
    arrays, meta = run.checkpoint()
    save_checkpoint(out_dir / "last.npz", arrays, meta)
    run.saved_epoch = run.epoch
    if improved:
        save_checkpoint(out_dir / "best.npz", arrays, meta)
    write_metrics(out_dir / "metrics.csv", run.history)
    return improved


def _log_epoch(run: _Run, record: dict[str, Any], improved: bool, log: Callable[[str], None]) -> None:
    log(f"epoch {run.epoch}/{run.num_epochs}  lr {record['lr']:.4g}  train loss {record['train_loss']:.4f} "
        f"acc {100 * record['train_acc']:.2f}%  test loss {record['test_loss']:.4f} "
        f"acc {100 * record['test_acc']:.2f}%  {record['images_per_s']:.0f} img/s  "
        f"({record['train_time_s']:.1f}s + eval {record['eval_time_s']:.1f}s)" + ("  *best*" if improved else ""))


def _draw_curves(run: _Run, out_dir: Path, log: Callable[[str], None]) -> None:
    if not run.history:
        return
    data = "generated data (not CIFAR)" if run.data.synthetic else run.cfg["dataset"]
    try:
        plot_curves(run.history, out_dir / "curves.png", f"{run.cfg['model']} on {data}")
    except Exception as exc:  # a plotting failure must not hide the run's real outcome
        log(f"(could not draw curves.png: {one_line(exc)})")


def _saved_so_far(out_dir: Path, run: _Run | None, resumed: _Resume | None) -> tuple[Path, int] | None:
    """The checkpoint a stopped run can continue from, and its epoch (None: there is none)."""
    if run is not None and run.saved_epoch is not None:
        return out_dir / "last.npz", run.saved_epoch
    if resumed is not None:
        return resumed.path, resumed.meta["epoch"]
    return None


def train(config: dict[str, Any], *, out: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          device: str | None = None, resume: str | os.PathLike | None = None, stop_after: int | None = None,
          log: Callable[[str], None] = print, progress: bool | None = None,
          resume_options: dict[str, Any] | None = None, prefetch: bool = True) -> dict[str, Any]:
    """Train as ``config`` says; returns the run's summary.

    ``config``: a run configuration (see :data:`minise.config.DEFAULTS` and
    :func:`minise.config.resolve_config`).
    ``device``: "cpu" or "cuda" (None: the default device, i.e. ``MINISE_DEVICE`` or "cpu").
    ``resume``: a checkpoint (or run folder) to continue from; its configuration is used and
    ``config`` is ignored, but each of ``resume_options`` (what a user asked for along with the
    resume) must equal the saved value. ``stop_after``: end after that epoch even if the run plans
    more (it can be resumed later). ``progress``: tqdm bars (None: only when stderr is a terminal).
    ``prefetch``: on the CPU, make the next batches (shuffle, crop and flip, normalisation) on a
    background thread while a step runs; the numbers are the same either way.

    Summary keys: out, epoch, step, best_acc, best_epoch, history, stopped_early, model, synthetic.
    """
    device = backend.get_default_device() if device is None else device
    with backend.default_device(device):  # a clear error now if the device cannot be used
        return _train(config, out, data_dir, device, resume, stop_after, log, progress, resume_options, prefetch)


def _train(config: dict[str, Any], out: str | os.PathLike | None, data_dir: str | os.PathLike | None, device: str,
           resume: str | os.PathLike | None, stop_after: int | None, log: Callable[[str], None],
           progress: bool | None, resume_options: dict[str, Any] | None, prefetch: bool) -> dict[str, Any]:
    """The steps of a run (see :func:`train`), with ``device`` the default device for every new tensor."""
    if stop_after is not None and stop_after < 1:
        raise UserError(f"--stop-after must be at least 1, got {stop_after}")
    resumed = _read_resume(resume) if resume is not None else None
    if resumed is not None:
        _refuse_changes(resumed, resume_options or {})
    cfg = dict(resumed.config) if resumed is not None else resolve_config(config)
    if resumed is None and out is not None:
        _refuse_existing_run(Path(out))
    run: _Run | None = None
    out_dir = Path(out) if out is not None else Path(".")
    try:
        data = _load_data(cfg, data_dir, log)
        _check_labels(data)
        out_dir = _run_folder(out, cfg, resumed)
        with lock_run_folder(out_dir):  # one writer per run folder
            if resumed is None or out_dir.resolve() != resumed.path.parent.resolve():
                _refuse_existing_run(out_dir)  # a resume elsewhere must not write over another run either
            run = _start(cfg, data, device, resumed)
            _prepare_folder(out_dir, run, resumed, log)
            _log_start(run, out_dir, resumed, log)
            loader = BatchLoader(data.train_images, data.train_labels, cfg["batch_size"], mean=run.mean, std=run.std,
                                 shuffle=True, augment=cfg["augment"], drop_last=cfg["drop_last"], rng=run.rng,
                                 device=device)
            test = (backend.to_device(data.test_images, device), backend.to_device(data.test_labels, device))
            stopped_early = False
            try:
                while run.epoch < run.num_epochs and run.step < run.total_iters:
                    if stop_after is not None and run.epoch >= stop_after:
                        stopped_early = True
                        break
                    record = _train_and_evaluate(run, loader, test, progress, prefetch)
                    improved = _save_epoch(run, out_dir, record)
                    _log_epoch(run, record, improved, log)
            finally:
                _draw_curves(run, out_dir, log)
    except NonFiniteLoss as exc:
        saved = _saved_so_far(out_dir, run, resumed)
        kept = (f"the last good checkpoint is {saved[0]} (epoch {saved[1]})" if saved
                else "no checkpoint was written (no epoch had finished)")
        raise NonFiniteLoss(f"{exc}; training stopped, {kept}") from None
    except MemoryError as exc:  # NumPy's ArrayMemoryError and CuPy's OutOfMemoryError are MemoryErrors
        saved = _saved_so_far(out_dir, run, resumed)
        kept = (f"the last checkpoint is {saved[0]} (epoch {saved[1]})" if saved else "no checkpoint was written")
        raise OutOfMemory(f"out of memory ({one_line(exc, 120) or type(exc).__name__}) training {cfg['model']} at "
                          f"batch size {cfg['batch_size']} (evaluation batch size {cfg['eval_batch_size']}) on "
                          f"{device}: try a smaller --batch-size or --eval-batch-size; {kept}") from None
    except KeyboardInterrupt as exc:
        saved = _saved_so_far(out_dir, run, resumed)
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        raise Interrupted(f"{how}; continue from the last checkpoint, {saved[0]} (epoch {saved[1]}), with "
                          f"`minise train --resume {saved[0]}`" if saved else
                          f"{how} before the first epoch ended: no checkpoint was written",
                          143 if isinstance(exc, Terminated) else 130) from None
    return _summary(run, out_dir, stopped_early, log)


def _summary(run: _Run, out_dir: Path, stopped_early: bool, log: Callable[[str], None]) -> dict[str, Any]:
    if run.history:
        last = run.history[-1]
        log(f"done: {run.epoch} epochs, {run.step} steps; test accuracy {100 * last['test_acc']:.2f}% "
            f"(best {100 * run.best_acc:.2f}% at epoch {run.best_epoch}); files in {out_dir}"
            + (f"; stopped early (--stop-after), continue with --resume {out_dir / 'last.npz'}"
               if stopped_early else ""))
    return {
        "out": str(out_dir), "epoch": run.epoch, "step": run.step, "best_acc": run.best_acc,
        "best_epoch": run.best_epoch, "history": run.history, "stopped_early": stopped_early, "model": run.model,
        "synthetic": run.data.synthetic,
    }


# ----------------------------------------------------------------------------- evaluating a checkpoint
def eval_checkpoint(path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, device: str | None = None,
                    model_name: str | None = None, limit_test: int | None = None, out: str | os.PathLike | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Test accuracy, per-class accuracy and confusion matrix of a checkpoint (printed and as a PNG).

    ``path``: a checkpoint, or a run folder (its best.npz). ``device`` None: the default device.
    """
    device = backend.get_default_device() if device is None else device
    with backend.default_device(device):
        return _eval_checkpoint(_checkpoint_path(path, "best.npz"), data_dir, device, model_name, limit_test, out, log)


def _eval_checkpoint(path: Path, data_dir: str | os.PathLike | None, device: str, model_name: str | None,
                     limit_test: int | None, out: str | os.PathLike | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    arrays, meta = load_checkpoint(path)
    cfg = _saved_config(path, meta)
    _require(path, meta, _model_meta_checks())
    name = model_name or cfg["model"]
    if limit_test is not None:
        if isinstance(limit_test, bool) or not isinstance(limit_test, int) or limit_test < 1:
            raise UserError(f"--limit-test must be positive, got {limit_test}")
        cfg["limit_test"] = limit_test
    data = _load_data(cfg, data_dir, log)
    if data.num_classes != meta["num_classes"]:
        raise CheckpointError(f"{path} was trained for {meta['num_classes']} classes, the test set has "
                              f"{data.num_classes}")
    model = _create_model({**cfg, "model": name}, meta["num_classes"])
    model_sd, _ = _split_arrays(path, arrays)
    _load_model_state(model, model_sd, path, name)
    model.to(device)
    mean, std = _saved_normalisation(meta)
    try:
        result = evaluate(model, data.test_images, data.test_labels, mean, std, data.num_classes,
                          cfg["eval_batch_size"], device)
    except MemoryError as exc:  # NumPy's ArrayMemoryError and CuPy's OutOfMemoryError are MemoryErrors
        raise OutOfMemory(f"out of memory ({one_line(exc, 120) or type(exc).__name__}) evaluating {name} at the "
                          f"checkpoint's evaluation batch size {cfg['eval_batch_size']} on {device}") from None
    saved_classes = meta.get("classes")
    classes = ([one_line(c, 40) for c in saved_classes] if isinstance(saved_classes, list)
               and len(saved_classes) == data.num_classes and all(isinstance(c, str) for c in saved_classes)
               else list(data.classes))
    epoch = meta.get("epoch")
    log(f"checkpoint {path}: {name} on {'generated data (not CIFAR)' if data.synthetic else cfg['dataset']}"
        + (f", after epoch {epoch}" if _is_int(epoch) else ""))
    for line in eval_report(result, classes):
        log(line)
    out_dir = Path(out) if out is not None else path.parent
    png = out_dir / f"confusion-{path.stem}.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_confusion(result["confusion"], classes, png, f"{name}: test accuracy {100 * result['accuracy']:.2f}%")
    except Exception as exc:  # as train's curves.png: the image must not turn printed results into a failure
        log(f"(could not write the confusion matrix image {png}: {one_line(exc)})")
        result["png"] = None
        return result
    log(f"confusion matrix image: {png}")
    result["png"] = str(png)
    return result

