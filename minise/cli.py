"""The ``minise`` command line: the argument parsers, and one function per command.

    minise train --model se_resnet20 --dataset cifar10 --epochs 30 --device cpu
    minise train --preset he2016 --model se_resnet110 --device cuda     # the paper's full CIFAR recipe
    minise train --quick                                                  # under a minute on a CPU
    minise train --resume runs/se_resnet20-cifar10-.../last.npz
    minise eval --checkpoint runs/.../best.npz
    minise assignments make OUT_DIR
    minise experiment run se-vs-plain --out runs/exp

Exit codes: 0 done, 1 training diverged (the training loss, or the test loss after an epoch, became
NaN or infinite), 2 a usage error (bad options, missing or corrupt data or checkpoint, an unusable
device: one line on stderr, no traceback), 130 interrupted, 143 terminated (SIGTERM).
The device is ``--device``, else ``MINISE_DEVICE``, else the CPU.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .errors import MiniseError, one_line

__all__ = ["main", "build_parser", "train_options"]


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _add_train_arguments(t: argparse.ArgumentParser) -> None:
    from .config import DEFAULTS, PRESETS  # noqa: PLC0415
    from .data import default_data_dir  # noqa: PLC0415

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
    t.add_argument("--warmup-iters", type=int,
                   help="the warm-up length in iterations instead (the he2016 preset: 400)")
    t.add_argument("--milestones", type=_numbers,
                   help="multistep: epochs at which lr is multiplied by gamma, e.g. 82,123 "
                        "(default: half and three quarters of the run)")
    t.add_argument("--gamma", type=float, help="multistep factor; default 0.1")
    t.add_argument("--preset", choices=sorted(PRESETS),
                   help="he2016: the paper's CIFAR recipe (He et al.): batch 128, momentum 0.9, weight decay "
                        "1e-4, lr 0.1 / 10 at 32k and 48k iterations, stop at 64k (~164 epochs), lr 0.01 for the "
                        "first 400 iterations")
    t.add_argument("--quick", action="store_true",
                   help="a run of about a minute on a CPU: 2 epochs on 1536 training / 500 test images; with no "
                        "CIFAR at all, on a generated CIFAR-format set instead (said in the first line)")
    t.add_argument("--limit-train", type=int, help="train on the first N training images only")
    t.add_argument("--limit-test", type=int, help="evaluate on the first N test images only")
    t.add_argument("--drop-last", action="store_true", help="skip each epoch's last, smaller batch")
    t.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop and flip (normalisation only)")
    t.add_argument("--eval-batch-size", type=int, help=f"images per evaluation batch; default "
                                                       f"{DEFAULTS['eval_batch_size']}")
    t.add_argument("--seed", type=int, help="seed of weight initialisation, shuffling and augmentation; default 0")
    t.add_argument("--device", choices=["cpu", "cuda"],
                   help="cpu (NumPy) or cuda (CuPy); default $MINISE_DEVICE, else cpu")
    t.add_argument("--data-dir", help="folder holding (or to receive) CIFAR; default $MINISE_DATA or "
                                      f"{default_data_dir()}")
    t.add_argument("--out", help="run folder for checkpoints, metrics.csv and curves.png; default "
                                 "runs/MODEL-DATA-TIME (DATA: cifar10, cifar100 or generated), or the resumed "
                                 "checkpoint's folder")
    t.add_argument("--resume", help="continue the run saved in this checkpoint (or run folder: its last.npz) "
                                    "with its saved configuration")
    t.add_argument("--stop-after", type=int, help="end after this epoch even if the run plans more (continue "
                                                  "later with --resume); the schedule is unchanged")
    t.add_argument("--progress", choices=["auto", "on", "off"],
                   help="progress bars: auto = only when stderr is a terminal; default auto")


def _add_eval_arguments(e: argparse.ArgumentParser) -> None:
    from .data import default_data_dir  # noqa: PLC0415

    e.add_argument("--checkpoint", required=True, help="a checkpoint file (or a run folder: its best.npz)")
    e.add_argument("--data-dir", help=f"folder holding CIFAR; default $MINISE_DATA or {default_data_dir()}")
    e.add_argument("--device", choices=["cpu", "cuda"],
                   help="cpu (NumPy) or cuda (CuPy); default $MINISE_DEVICE, else cpu")
    e.add_argument("--model", help="build this network instead of the one the checkpoint names")
    e.add_argument("--limit-test", type=int, help="evaluate on the first N test images only")
    e.add_argument("--out", help="folder for the confusion-matrix PNG (default: the checkpoint's folder)")


def _add_module_command(sub: Any, name: str, module: str, **kwargs: Any) -> None:
    """A command that lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``.

    When that module cannot be imported, the command still appears and says why when it is run.
    """
    p = sub.add_parser(name, **kwargs)
    try:
        mod = importlib.import_module(f"minise.{module}")
        mod.add_arguments(p)
    except (ImportError, AttributeError) as exc:
        reason = one_line(f"{type(exc).__name__}: {exc}")
        p.set_defaults(func=lambda args: _unavailable(name, reason))
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    p.set_defaults(func=mod.run)


def _unavailable(name: str, reason: str) -> int:
    raise MiniseError(f"`minise {name}` is not available in this installation ({reason})")


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
    _add_train_arguments(t)
    t.set_defaults(func=train_command)

    e = sub.add_parser("eval", help="evaluate a checkpoint on the test set",
                       description="Test accuracy, per-class accuracy and the confusion matrix of a checkpoint "
                                   "(printed, and saved as confusion-NAME.png beside it or in --out).")
    _add_eval_arguments(e)
    e.set_defaults(func=eval_command)

    _add_module_command(sub, "experiment", "experiment",
                        help="suites of training runs x seeds (the paper's tables), their statistics and report",
                        description="Run a suite of trainings (configurations x seeds), resumably, and report "
                                    "their statistics against the paper's.")
    _add_module_command(sub, "assignments", "assignments",
                        help="course assignments: make student copies, grade them",
                        description="Make a student copy with the marked solutions taken out, or grade one "
                                    "(see docs/instructors.md).")
    return parser


def train_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(configuration, keyword arguments of :func:`minise.train.train`) from ``minise train``'s arguments.

    A fresh run's configuration is resolved and checked (:class:`UserError` when it cannot be
    used); with --resume the configuration comes from the checkpoint, read once by ``train``, which
    refuses any option given here that contradicts it (``resume_options``).
    """
    from .config import resolve_config  # noqa: PLC0415
    from .errors import UserError  # noqa: PLC0415

    given = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    kwargs = {
        "device": given.pop("device", None), "data_dir": given.pop("data_dir", None), "out": given.pop("out", None),
        "resume": given.pop("resume", None), "stop_after": given.pop("stop_after", None),
        "progress": {"auto": None, "on": True, "off": False}[given.pop("progress", "auto")],
    }
    if kwargs["stop_after"] is not None and kwargs["stop_after"] < 1:
        raise UserError(f"--stop-after must be at least 1, got {kwargs['stop_after']}")
    if kwargs["resume"] is None:
        return resolve_config(given), kwargs
    return {}, {**kwargs, "resume_options": given}  # checked against the checkpoint when train() reads it


def _print(line: str) -> None:
    print(line, flush=True)


def train_command(args: argparse.Namespace, *, log: Callable[[str], None] = _print) -> int:
    """``minise train``: 0 when at least one epoch ran, 1 when none did."""
    from .train import train  # noqa: PLC0415

    config, kwargs = train_options(args)
    summary = train(config, log=log, **kwargs)
    return 0 if summary["epoch"] > 0 else 1


def eval_command(args: argparse.Namespace, *, log: Callable[[str], None] = _print) -> int:
    """``minise eval``: accuracy, per-class accuracy and the confusion matrix of a checkpoint."""
    from .train import eval_checkpoint  # noqa: PLC0415

    eval_checkpoint(args.checkpoint, data_dir=args.data_dir, device=args.device, model_name=args.model,
                    limit_test=args.limit_test, out=args.out, log=log)
    return 0


def _error(message: str) -> int:
    print(f"minise: error: {one_line(message, 2000)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """The ``minise`` command. Returns the exit code: 0 done, 1 training failed (NaN), 2 a usage error,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."""
    from .train import Interrupted, NonFiniteLoss, Terminated, terminate_as_interrupt  # noqa: PLC0415

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command in ("train", "eval", "experiment"):
            from .speed import keep_freed_memory, num_threads  # noqa: PLC0415 - only the commands that run steps

            num_threads()  # a bad MINISE_NUM_THREADS is a usage error now, before any work
            keep_freed_memory()  # each step reuses the memory the last one freed (no page faults per step)
        with terminate_as_interrupt():  # SIGTERM stops a run as Ctrl-C does (exit 143)
            return int(args.func(args))
    except MiniseError as exc:  # UserError, DataError, CheckpointError, DeviceError, ...
        return _error(str(exc))
    except OSError as exc:  # a folder that cannot be written, a disk that is full
        return _error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except MemoryError as exc:  # outside a run (train and eval name their batch size themselves)
        return _error(f"out of memory ({one_line(exc, 120) or type(exc).__name__})")
    except NonFiniteLoss as exc:
        print(f"minise: {one_line(exc, 2000)}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"minise: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("minise: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("minise: interrupted", file=sys.stderr)
        return 130
