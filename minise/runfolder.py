"""One writer per run folder: a lock held for as long as a run writes there.

    with lock_run_folder(Path("runs/x")):    # refuses (RunFolderBusy) when another process holds it
        ...                                 # check_run_folder(Path("runs/x")) before each write
                                            # refuses (RunFolderGone) when the folder was deleted

The lock is ``flock`` on ``FOLDER/.minise.lock`` (which holds the writer's process id, for the
message): the kernel drops it when the process ends, however it ends, so a killed run never leaves
a folder locked. Inside one process the lock is re-entrant (``minise experiment`` holds it around
a run's log and ``train`` again around the run). Where ``flock`` does not exist (Windows) there is
no lock, only the check that the folder is still there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunFolderBusy", "RunFolderGone", "lock_run_folder", "check_run_folder"]

LOCK_NAME = ".minise.lock"


class RunFolderBusy(UserError):
    """Another process is writing into the run folder."""


class RunFolderGone(UserError):
    """The run folder was deleted (or replaced) while a run was writing into it."""


# folder (resolved) -> [file descriptor (None without flock), (device, inode) of the lock file, depth]
_held: dict[Path, list] = {}


def _acquire(folder: Path) -> tuple[int | None, tuple[int, int]]:
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 32).decode("ascii", "replace").strip()
                    raise RunFolderBusy(f"{folder} is in use by another minise run"
                                        + (f" (process {holder})" if holder.isdigit() else "")
                                        + "; wait for it to end, or choose another folder") from None
            st = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)  # the holder before us removed the file as we opened it: take the new one
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        if fcntl is None:
            os.close(fd)
            return None, (st.st_dev, st.st_ino)
        return fd, (st.st_dev, st.st_ino)


@contextlib.contextmanager
def lock_run_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the block (:class:`RunFolderBusy` if another
    process holds it). A folder it created and nothing was written into is removed at the end."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        _held[key][2] += 1
        try:
            yield folder
        finally:
            _held[key][2] -= 1
        return
    fd, ident = _acquire(folder)
    _held[key] = [fd, ident, 1]
    try:
        yield folder
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            st = os.stat(folder / LOCK_NAME)
            if (st.st_dev, st.st_ino) == ident:
                os.unlink(folder / LOCK_NAME)  # before the lock is released: a waiting writer then retries
        if fd is not None:
            os.close(fd)
        if created:  # a run that stopped before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_run_folder(folder: str | os.PathLike) -> None:
    """:class:`RunFolderGone` when the locked ``folder`` (or its lock file) is no longer the one this
    process locked: it was deleted or replaced during the run, and writing on would recreate it."""
    folder = Path(folder)
    held = _held.get(folder.resolve()) if folder.exists() else None
    ident = None
    if held is not None:
        with contextlib.suppress(OSError):
            st = os.stat(folder / LOCK_NAME)
            ident = (st.st_dev, st.st_ino)
    if held is None or ident != held[1]:
        raise RunFolderGone(f"the run folder {folder} was deleted or replaced during the run; stopping "
                            "(nothing more is written there)")
