"""What a run leaves to read: metrics.csv, figures and the evaluation report, all written atomically."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from minise import report

HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "test_loss": 1.9, "train_acc": 0.25, "test_acc": 0.3},
    {"epoch": 2, "train_loss": 1.5, "test_loss": 1.6, "train_acc": 0.5, "test_acc": 0.45},
]


def test_metrics_csv_has_one_row_per_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    report.write_metrics(path, HISTORY)
    rows = list(csv.DictReader(open(path)))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[1]["test_acc"]) == 0.45
    report.write_metrics(tmp_path / "empty.csv", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # nothing for an empty history


def test_figures_are_pngs(tmp_path: Path) -> None:
    report.plot_curves(HISTORY, tmp_path / "curves.png", "se_resnet8 on generated data (not CIFAR)")
    conf = np.array([[3, 1], [0, 4]])
    report.plot_confusion(conf, ["cat", "dog"], tmp_path / "confusion.png")
    for name in ("curves.png", "confusion.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "curves.png"]


def test_eval_report_lines() -> None:
    conf = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    result = {"accuracy": 7 / 8, "correct": 7, "count": 8, "loss": 0.5, "confusion": conf}
    lines = report.eval_report(result, ["cat", "dog", "airplane"])
    assert lines[0] == "test accuracy 87.50% (7 / 8), loss 0.5000"
    assert lines[1:5] == ["per-class accuracy:", "  cat        75.00%  (3/4)", "  dog       100.00%  (4/4)",
                          "  airplane       -  (0/0)"]
    assert lines[5] == "confusion matrix (rows: true class, columns: predicted):"
    assert lines[6].split() == ["cat", "dog", "airpl"]
    assert [int(v) for v in lines[7].split()[1:]] == [3, 1, 0]
    many = np.eye(21, dtype=int)
    lines = report.eval_report({"accuracy": 1.0, "correct": 21, "count": 21, "loss": 0.0, "confusion": many},
                               [f"c{i}" for i in range(21)])
    assert len(lines) == 2 + 21  # more than 20 classes: no printed matrix
