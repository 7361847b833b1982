"""Suites of training runs × seeds, their statistics and report: ``minise experiment run|list|report``.

    minise experiment list [--protocol budget|paper]
    minise experiment run se-vs-plain --out runs/exp --seeds 0,1,2 --protocol budget --jobs 2
    minise experiment report runs/exp

Each run is an ordinary ``minise train`` run in ``DIR/<config>/seed<k>/`` (see
:mod:`minise.experiment.runner`); the suites and protocols are in :mod:`minise.experiment.suites`,
the statistics in :mod:`minise.experiment.report`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``run``, ``list`` and ``report`` sub-commands to the parser of ``minise experiment``."""
    sub = parser.add_subparsers(dest="experiment_command", metavar="{run,list,report}")
    sub.required = True

    p = sub.add_parser("run", help="train every configuration of a suite × every seed (resumable)")
    p.add_argument("suite", help="a built-in suite (see `minise experiment list`) or a TOML file")
    p.add_argument("--out", required=True, help="experiment folder: DIR/<config>/seed<k>/")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the suite's, else 0,1,2)")
    p.add_argument("--protocol", default=None, choices=("budget", "paper"),
                   help="training schedule (default: the suite's, else budget)")
    p.add_argument("--configs", default=None, metavar="NAMES",
                   help="only these configurations (comma-separated names or globs; their baselines come along)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once on this machine (threads split)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (with --jobs N, one GPU per job)")
    p.add_argument("--data-dir", default=None, help="folder with the CIFAR python-format data")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the trainings as tasks on a Dask distributed cluster (pip install minise[cluster])")

    p = sub.add_parser("list", help="the built-in suites, their sizes and estimated cost")
    p.add_argument("--protocol", default="budget", choices=("budget", "paper"))
    p.add_argument("--seeds", default="0,1,2", help="seeds to count in the cost (default 0,1,2)")

    p = sub.add_parser("report", help="write results.md, results.csv and figures for an experiment folder")
    p.add_argument("dir", help="the experiment folder given to `run --out`")


def run(args: argparse.Namespace) -> int:
    """Carry out ``minise experiment <command>``; returns the exit code. Usage errors raise UserError."""
    from . import commands  # noqa: PLC0415 - keep `minise --help` fast

    return commands.dispatch(args)
