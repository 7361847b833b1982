"""minise.fileio: a write either replaces the file whole or leaves the old one, never a temporary."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from minise import fileio


def test_write_atomic_replaces_the_file_whole(tmp_path: Path) -> None:
    path = fileio.write_atomic(tmp_path / "config.json", "old\n")
    fileio.write_atomic(path, b"new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = fileio.write_atomic(tmp_path / "config.json", "old\n")
    with pytest.raises(TypeError):
        fileio.write_atomic(path, 3)  # type: ignore[arg-type]  # fails after the temporary file was made
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_atomic_path_renames_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "last.npz"
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("last.npz.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
    with fileio.atomic_path(target, suffix=".tmp.png") as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["last.npz"]


def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Not mkstemp's 0600: a run's files are readable by whoever may read the folder (the umask decides)."""
    old = os.umask(0o022)
    try:
        path = fileio.write_atomic(tmp_path / "result.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
