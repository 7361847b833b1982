"""Checkpoints that load without running code: a zip of ``.npy`` arrays plus ``meta.json``.

The file is an ordinary ``.npz`` (``numpy.load(path, allow_pickle=False)`` lists the arrays), with
one more member, ``meta.json``, for everything that is not an array: the run's configuration, the
epoch, optimizer hyper-parameters, schedule and random-generator state, metrics so far, and
``arrays``: the name and shape of every array the file holds (a missing or extra one is an error on
reading, so no flipped bit can silently drop, say, a momentum buffer). Read it
with ``unzip -p last.npz meta.json``. Arrays are stored by name: ``model/<state_dict key>``,
``optimizer/momentum/<parameter index>``.

Writing goes to a temporary file in the same folder, then ``os.replace``: a crash leaves the old
checkpoint whole, never half a new one (and the next write of that checkpoint removes the temporary
file the crash left behind).

Reading trusts nothing in the file: no pickle is loaded, the header must be a JSON object, and
an array is read only when its declared size fits in the bytes the file really holds (a forged
header cannot make it allocate terabytes).
"""

from __future__ import annotations

import json
import os
import shutil
import tokenize
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MiniseError, one_line
from .fileio import atomic_path, temporaries

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_meta", "copy_checkpoint",
           "remove_temporaries", "FORMAT"]

FORMAT = "minise-checkpoint/1"


class CheckpointError(MiniseError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit what it is loaded into."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} cannot go into a checkpoint's meta.json")


def remove_temporaries(path: Path) -> None:
    """Delete ``NAME.*.tmp`` files that an interrupted earlier write of ``path`` left in its folder."""
    for stale in temporaries(path):
        try:
            stale.unlink()
        except OSError:  # gone already, or not ours to delete: the write goes on
            pass


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` (name -> NumPy array) and ``meta`` (JSON-able) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    listed = {name: list(np.shape(array)) for name, array in arrays.items()}  # what a reader must find
    text = json.dumps({"format": FORMAT, **meta, "arrays": listed}, indent=1, default=_json_default, allow_nan=True)
    remove_temporaries(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            array = np.asarray(array)  # cpu-only
            if array.dtype == object:
                raise TypeError(f"array {name!r} has dtype object; checkpoints hold plain arrays only")
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
        zf.writestr("meta.json", text)
    return path


def copy_checkpoint(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a checkpoint file to ``dest`` atomically (a temporary name, then a rename)."""
    source, dest = Path(source), Path(dest)
    remove_temporaries(dest)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


# Deflate expands at most about 1032 times; minise writes members uncompressed (ZIP_STORED).
_MAX_EXPANSION = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1100}


def _check_member(path: Path, info: zipfile.ZipInfo, disk_size: int) -> None:
    """A member's declared size must be one that its bytes in the file can really hold."""
    ratio = _MAX_EXPANSION.get(info.compress_type)
    if ratio is None:
        raise CheckpointError(f"{path}: member {info.filename!r} uses an unsupported compression "
                              f"(type {info.compress_type}); minise checkpoints are stored or deflated")
    if info.compress_size > disk_size or info.file_size > ratio * max(info.compress_size, 1):
        raise CheckpointError(f"{path}: member {info.filename!r} declares {info.file_size} bytes, more than "
                              f"the {disk_size}-byte file can hold; the file is corrupt or forged")


def _array_nbytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Bytes the ``.npy`` member's header declares, checked against the bytes that follow the header."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
        header = f.tell()
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * dtype.itemsize
    if nbytes > info.file_size - header:
        raise CheckpointError(f"{path}: array {info.filename[:-4]!r} declares shape {tuple(shape)} of {dtype} "
                              f"({nbytes} bytes), but its member holds only {info.file_size - header}; "
                              "the file is corrupt or forged")
    return nbytes


def _check_listed(path: Path, meta: dict[str, Any], infos: dict[str, zipfile.ZipInfo]) -> None:
    """Every member is ``meta.json`` or an array the header lists, and every listed array is there.

    (Checkpoints written before the header listed its arrays have no ``arrays``: only their member
    names are checked.)"""
    strays = sorted(n for n in infos if n != "meta.json" and not n.endswith(".npy"))
    if strays:
        raise CheckpointError(f"{path} holds {one_line(repr(strays[0]), 80)}, which is neither meta.json nor an "
                              "array (.npy); the file is damaged")
    listed = meta.get("arrays")
    if listed is None:
        return
    if not isinstance(listed, dict) or not all(
            isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v)
            for v in listed.values()):
        raise CheckpointError(f"{path}: its header's list of arrays is not name: shape; the file is damaged")
    held = {n[:-4] for n in infos if n.endswith(".npy")}
    missing, unexpected = sorted(set(listed) - held), sorted(held - set(listed))
    if missing:
        raise CheckpointError(f"{path}: its header lists array {one_line(repr(missing[0]), 80)}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + ", which the file does not hold; the file is damaged")
    if unexpected:
        raise CheckpointError(f"{path} holds array {one_line(repr(unexpected[0]), 80)}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
                              + ", which its header does not list; the file is damaged")


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) from a checkpoint written by :func:`save_checkpoint`. No pickle is ever loaded.

    Anything wrong with the file is a :class:`CheckpointError` with a one-line message.
    """
    return _load(Path(path), with_arrays=True)


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the ``meta.json`` of a checkpoint (checked as :func:`load_checkpoint` checks it)."""
    return _load(Path(path), with_arrays=False)[1]


def _load(path: Path, with_arrays: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        disk_size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = {info.filename: info for info in zf.infolist()}
            if "meta.json" not in infos:
                raise CheckpointError(f"{path} is not a minise checkpoint (it has no meta.json)")
            _check_member(path, infos["meta.json"], disk_size)
            meta = json.loads(zf.read("meta.json").decode("utf-8"))
            if not isinstance(meta, dict):
                raise CheckpointError(f"{path}: its meta.json holds a {type(meta).__name__}, not an object; "
                                      "not a minise checkpoint")
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: unknown checkpoint format {one_line(repr(meta.get('format')), 80)}, "
                                      f"expected {FORMAT!r}")
            _check_listed(path, meta, infos)
            arrays: dict[str, np.ndarray] = {}
            total = 0
            for name, info in infos.items() if with_arrays else ():
                if not name.endswith(".npy"):
                    continue
                _check_member(path, info, disk_size)
                total += _array_nbytes(path, zf, info)
                if total > _MAX_EXPANSION[zipfile.ZIP_DEFLATED] * disk_size:
                    raise CheckpointError(f"{path}: its arrays declare more bytes than the file can hold; "
                                          "the file is corrupt or forged")
                with zf.open(info) as f:
                    arrays[name[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
                listed = meta.get("arrays")
                if listed is not None and list(arrays[name[:-4]].shape) != listed[name[:-4]]:
                    raise CheckpointError(f"{path}: array {name[:-4]!r} has shape {arrays[name[:-4]].shape}, its "
                                          f"header says {tuple(listed[name[:-4]])}; the file is damaged")
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError, TypeError,
            OverflowError, RecursionError, NotImplementedError, RuntimeError, SyntaxError, tokenize.TokenError,
            IndexError) as exc:
        # json, the zip reader and the .npy reader raise these for damaged or foreign files
        raise CheckpointError(f"{path} is not a readable minise checkpoint "
                              f"({type(exc).__name__}: {one_line(exc, 200)})") from exc
    return arrays, meta
