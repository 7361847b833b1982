"""One function per ``minise experiment`` sub-command."""

from __future__ import annotations

import argparse

from ..train import UserError


def dispatch(args: argparse.Namespace) -> int:
    command = getattr(args, "experiment_command", None)
    raise UserError(f"minise experiment {command}: not written yet (work in progress)")
