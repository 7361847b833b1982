"""What a run leaves for people to read: ``metrics.csv``, the curves and confusion-matrix figures,
and the printed evaluation report. Every file is written to a temporary name, then renamed.

Figures use matplotlib's object interface with the Agg canvas (no pyplot: no global state, no
display needed), imported only when a figure is drawn.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_path, write_atomic

__all__ = ["write_metrics", "plot_curves", "plot_confusion", "eval_report"]


def write_metrics(path: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """One CSV row per epoch (the keys of the history records are the columns); nothing when empty."""
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, buf.getvalue())


def _save_figure(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=120)


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy per epoch, training and test, as a PNG."""
    from matplotlib.figure import Figure  # noqa: PLC0415

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
    _save_figure(fig, Path(path))


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
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
    _save_figure(fig, Path(path))


def eval_report(result: dict[str, Any], classes: Sequence[str]) -> list[str]:
    """The lines ``minise eval`` prints: accuracy, per-class accuracy, and (up to 20 classes) the matrix."""
    conf = result["confusion"]
    lines = [f"test accuracy {100 * result['accuracy']:.2f}% ({result['correct']} / {result['count']}), "
             f"loss {result['loss']:.4f}", "per-class accuracy:"]
    width = max(len(c) for c in classes)
    for k, name in enumerate(classes):
        total = int(conf[k].sum())
        acc = f"{100 * conf[k, k] / total:6.2f}%" if total else "     -"
        lines.append(f"  {name:<{width}}  {acc}  ({int(conf[k, k])}/{total})")
    if len(classes) <= 20:
        short = [c[:5] for c in classes]
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        lines.append(" " * (width + 2) + " ".join(f"{s:>5}" for s in short))
        for k, name in enumerate(classes):
            lines.append(f"  {name:<{width}}" + " ".join(f"{int(v):5d}" for v in conf[k]))
    return lines
