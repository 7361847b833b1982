"""Writing files so that a reader never sees half of one: a temporary name in the same folder, then a rename.

    with atomic_path("runs/x/last.npz") as tmp:     # tmp: runs/x/last.npz.<random>.tmp
        write_somehow(tmp)                          # renamed over last.npz only if this finishes
    write_atomic("runs/x/result.json", text)

A crash or an exception leaves the old file as it was and removes the temporary one; a kill -9 may
leave a ``NAME.<random>.tmp`` behind, which :func:`minise.checkpoint.remove_temporaries` clears.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "temporaries"]

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def _prefix(name: str, suffix: str) -> str:
    """``name``, or as much of it as leaves room in one file name for ``.<8 hex digits><suffix>``: a name
    that fits must never fail to be written because its temporary name does not."""
    room = NAME_MAX - len(f".{'0' * 8}{suffix}".encode())
    raw = name.encode("utf-8", "surrogateescape")
    return name if len(raw) <= room else raw[:room].decode("utf-8", "ignore")


def temporaries(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """The temporary files that interrupted writes of ``path`` (by :func:`atomic_path`) may have left."""
    path = Path(path)
    return sorted(path.parent.glob(glob.escape(_prefix(path.name, suffix)) + ".*" + glob.escape(suffix)))


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path beside ``path``; renamed to ``path`` when the block ends without an error."""
    path = Path(path)
    while True:  # not tempfile.mkstemp: its files are 0600, and a run's files should be readable as usual
        tmp = path.with_name(f"{_prefix(path.name, suffix)}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path
