"""Limit the threads of the OpenBLAS that NumPy loaded, for a while, without threadpoolctl.

conv2d on the CPU splits the batch over a few Python threads (NumPy releases the GIL in its copies
and matrix products). Each thread's products must then run on one BLAS thread, or the BLAS threads
of every chunk fight over the same cores. OpenBLAS exports ``openblas_set_num_threads`` and
``openblas_get_num_threads`` (NumPy's wheels rename them, e.g.
``scipy_openblas_set_num_threads64_``); we find every OpenBLAS mapped into the process (Linux:
``/proc/self/maps``), look those functions up with ctypes, and call them.

    with limit_threads(1) as limited:
        ...                              # BLAS on one thread here (if `limited`)

Where no controllable OpenBLAS is found (macOS Accelerate, MKL, BLIS, a non-Linux system)
``limit_threads`` changes nothing and yields False: callers then keep their sequential path.
Nested or concurrent uses from several threads are counted; the first one in saves the thread
counts and sets the limit, the last one out restores them.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["available", "get_num_threads", "limit_threads"]

# How the two functions are spelled: plain OpenBLAS, 64-bit-integer builds, NumPy/SciPy wheels.
_PREFIXES = ("openblas_", "scipy_openblas_")
_SUFFIXES = ("", "64_", "_64_")


class _OpenBLAS:
    """The get/set-num-threads functions of one loaded OpenBLAS library."""

    def __init__(self, path: str, get, set_) -> None:
        self.path, self._get, self._set = path, get, set_

    def get(self) -> int:
        return int(self._get())

    def set(self, n: int) -> None:
        self._set(n)


def _mapped_openblas_paths() -> list[str]:
    """Shared objects with "openblas" in their file name that this process has loaded."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        fields = line.split(maxsplit=5)  # address, permissions, offset, device, inode, path
        path = fields[5].strip() if len(fields) == 6 else ""
        if "openblas" in os.path.basename(path).lower() and ".so" in path and path not in paths:
            paths.append(path)
    return paths


def _load(path: str) -> _OpenBLAS | None:
    try:
        lib = ctypes.CDLL(path)  # already loaded: this only opens another handle on it
    except OSError:
        return None
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return _OpenBLAS(path, get, set_)
    return None


_libraries: list[_OpenBLAS] | None = None
_lock = threading.Lock()
_users = 0  # how many limit_threads blocks are open
_saved: list[int] = []


def _openblas() -> list[_OpenBLAS]:
    """Every controllable OpenBLAS in the process (looked up once, after NumPy is imported)."""
    global _libraries
    if _libraries is None:
        import numpy  # noqa: F401, PLC0415  (make sure NumPy's OpenBLAS is loaded before we look)
        found = [_load(path) for path in _mapped_openblas_paths()]
        _libraries = [lib for lib in found if lib is not None]
    return _libraries


def available() -> bool:
    """Whether a loaded OpenBLAS was found whose thread count we can set."""
    return bool(_openblas())


def get_num_threads() -> int | None:
    """The thread count of the first OpenBLAS found (None if there is none)."""
    libs = _openblas()
    return libs[0].get() if libs else None


@contextmanager
def limit_threads(n: int) -> Iterator[bool]:
    """Run the block with every OpenBLAS found limited to ``n`` threads; restore the counts after.

    Yields whether the limit is in force (False: no controllable OpenBLAS, nothing changed)."""
    global _users, _saved
    libs = _openblas()
    if not libs:
        yield False
        return
    with _lock:
        if _users == 0:
            _saved = [lib.get() for lib in libs]
            for lib in libs:
                lib.set(n)
        _users += 1
    try:
        yield True
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for lib, count in zip(libs, _saved):
                    lib.set(count)
