"""What every tutorial step shares: the command line, the output folder, figures, checks, timing, data.

Each step is run as ``python tutorials/NN_name.py [--out DIR] [--quick]``. This module

- makes ``import minise`` work from a plain checkout (it puts the repository root on ``sys.path``
  when minise is not installed),
- switches matplotlib to the Agg backend (no display needed),
- gives each step ``--out`` (default ``./tutorial_out/NN_name/``) and ``--quick``,
- provides :func:`claim`, the assertion every step uses for the facts it teaches: it raises
  ``AssertionError`` with the message (never stripped by ``python -O``) and prints ``[ok]``.

The same scripts are the pages of the course site's tutorial gallery (docs/conf.py, sphinx-gallery),
which runs them without ``__file__`` and with ``__doc__ = ""``: :func:`setup` therefore finds the
script through ``sys.argv[0]`` and reads its docstring from the file itself.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("minise") is None:  # a plain checkout: use the package next to tutorials/
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402 - the backend must be chosen before pyplot is imported

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["setup", "save", "claim", "best_time", "get_cifar", "plt", "ROOT", "section"]


def setup(description: str | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None,
          argv: list[str] | None = None, file: str | None = None) -> argparse.Namespace:
    """Parse the step's command line and create its output folder (``args.out``, a Path).

    ``description`` is the step's docstring (``__doc__``); ``file`` its path, by default the script
    being run (``sys.argv[0]``). An empty description is read from that file's own docstring. Where no
    tutorial script is running (a notebook downloaded from the site) the defaults apply: nothing is read
    from the command line, whose arguments then belong to Jupyter.
    """
    script = Path(file if file is not None else (sys.argv[0] if sys.argv else ""))
    is_step = re.match(r"\d\d_", script.name) is not None and script.suffix == ".py"
    if not description and is_step and script.is_file():
        description = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    if argv is None and not is_step and file is None:
        argv = []  # e.g. ipykernel's "-f kernel.json"
    name = script.stem if is_step else "notebook"  # e.g. "03_convolution_three_ways"
    parser = argparse.ArgumentParser(description=(description or name).strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tutorial_out") / name,
                        help=f"folder for the figures (default: ./tutorial_out/{name}/)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for tests (a few seconds)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"Step {name.replace('_', ' ', 1)}"
    print("=" * len(title))
    print(title)
    print("=" * len(title))
    return args


def section(title: str) -> None:
    print(f"\n--- {title} ---")


def save(fig: Any, out: Path, filename: str) -> Path:
    """Save a figure to ``out/filename`` and close it."""
    path = Path(out) / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")
    return path


def claim(condition: Any, message: str) -> None:
    """Assert a fact the step teaches; print it when it holds."""
    if not bool(condition):
        raise AssertionError(f"tutorial claim failed: {message}")
    print(f"  [ok] {message}")


def best_time(fn: Callable[[], Any], repeat: int = 3, sync: Callable[[], None] | None = None) -> float:
    """The fastest of ``repeat`` runs of ``fn()``, in seconds (``sync`` waits for a GPU to finish)."""
    best = float("inf")
    for _ in range(repeat):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz "
                             "(default: $MINISE_DATA, else ~/.cache/minise)")
    parser.add_argument("--download", action="store_true",
                        help="download CIFAR-10 (170 MB) if it is not found (default: fall back to synthetic data)")


def get_cifar(data_dir: Path | None, download: bool = False) -> tuple[Any, str]:
    """CIFAR-10 from ``data_dir``, else (only when there is no copy at all) the generated stand-in.

    The rule is :func:`minise.data.cifar_or_generated`'s (a corrupt copy is an error, not a fallback).
    Returns (data set, label for titles); the label says SYNTHETIC loudly when no CIFAR copy was found.
    """
    from minise.data import cifar_or_generated

    t0 = time.perf_counter()
    data, why = cifar_or_generated("cifar10", data_dir, download=download, num_train=2000, num_test=500, seed=0)
    if why is None:
        print(f"CIFAR-10 read from {data.source} in {time.perf_counter() - t0:.1f} s "
              f"({len(data.train_labels)} training, {len(data.test_labels)} test images)")
        return data, "CIFAR-10"
    print("!" * 78)
    print(f"! No CIFAR-10 copy found: {why[:300]}")
    print("! Falling back to a SMALL SYNTHETIC data set (coloured block patterns, NOT CIFAR).")
    print("! Its pictures and numbers say nothing about CIFAR. Use --data-dir DIR (or --download).")
    print("!" * 78)
    return data, "SYNTHETIC data (not CIFAR)"


def fmt_count(n: float) -> str:
    return f"{n:,.0f}"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
