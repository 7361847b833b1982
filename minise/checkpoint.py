"""Checkpoints that load without running code: a zip of ``.npy`` arrays plus ``meta.json``.

The file is an ordinary ``.npz`` (``numpy.load(path, allow_pickle=False)`` lists the arrays), with
one more member, ``meta.json``, for everything that is not an array: the run's configuration, the
epoch, optimizer hyper-parameters, schedule and random-generator state, metrics so far. Read it
with ``unzip -p last.npz meta.json``. Arrays are stored by name: ``model/<state_dict key>``,
``optimizer/momentum/<parameter index>``.

Writing goes to a temporary file in the same folder, then ``os.replace``: a crash leaves the old
checkpoint whole, never half a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "FORMAT"]

FORMAT = "minise-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit what it is loaded into."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} cannot go into a checkpoint's meta.json")


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` (name -> NumPy array) and ``meta`` (JSON-able) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, **meta}, indent=1, default=_json_default, allow_nan=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            for name, array in arrays.items():
                array = np.asarray(array)  # cpu-only
                if array.dtype == object:
                    raise TypeError(f"array {name!r} has dtype object; checkpoints hold plain arrays only")
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
            zf.writestr("meta.json", text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) from a checkpoint written by :func:`save_checkpoint`. No pickle is ever loaded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "meta.json" not in names:
                raise CheckpointError(f"{path} is not a minise checkpoint (it has no meta.json)")
            meta = json.loads(zf.read("meta.json").decode("utf-8"))
            arrays = {}
            for name in names:
                if name.endswith(".npy"):
                    with zf.open(name) as f:
                        arrays[name[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable minise checkpoint ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return arrays, meta
