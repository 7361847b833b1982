"""Checkpoint files: arrays and JSON in one zip, loaded without pickle, written atomically."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minise import checkpoint
from minise.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path: Path) -> None:
    arrays = {"model/conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
              "model/bn.num_batches_tracked": np.array(7, dtype=np.int64),
              "optimizer/momentum/0": np.ones(3)}
    rng = np.random.default_rng(5)
    meta = {"epoch": 3, "rng_state": rng.bit_generator.state, "lr": 0.1 * 0.1, "history": [{"loss": 1.5}]}
    path = save_checkpoint(tmp_path / "c.npz", arrays, meta)
    got_arrays, got_meta = load_checkpoint(path)
    assert set(got_arrays) == set(arrays)
    for k, v in arrays.items():
        assert got_arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(got_arrays[k], v)
    assert got_meta["lr"] == 0.1 * 0.1  # floats come back bit for bit
    restored = np.random.default_rng()
    restored.bit_generator.state = got_meta["rng_state"]
    assert restored.random() == rng.random()
    # an ordinary npz: numpy reads the arrays without pickle
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["model/conv.weight"], arrays["model/conv.weight"])
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("meta.json"))["epoch"] == 3


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.npz", {"a": np.zeros(2)}, {"epoch": 1})
    with pytest.raises(TypeError, match="dtype object"):
        save_checkpoint(path, {"a": np.array([None, 1], dtype=object)}, {"epoch": 2})
    assert load_checkpoint(path)[1]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left behind


def test_unreadable_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="not a readable minise checkpoint"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(CheckpointError, match="no meta.json"):
        load_checkpoint(plain)
    good = save_checkpoint(tmp_path / "good.npz", {"a": np.zeros(2)}, {})
    blob = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(cut)


def test_pickled_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("a.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        zf.writestr("meta.json", json.dumps({"format": checkpoint.FORMAT}))
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", json.dumps({"format": "something-else/9"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'something-else/9'"):
        load_checkpoint(path)


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("header", ["[1, 2]", '"text"', "3", "null"])
def test_header_that_is_not_an_object_is_refused(tmp_path: Path, header: str) -> None:
    path = _zip(tmp_path / "c.npz", {"meta.json": header.encode()})
    with pytest.raises(CheckpointError, match=r"its meta.json holds a \w+, not an object"):
        load_checkpoint(path)


def test_absurd_array_header_is_refused_before_allocating(tmp_path: Path) -> None:
    """A header declaring 10**12 float64 (7.28 TiB) in a file of a few hundred bytes."""
    meta = json.dumps({"format": checkpoint.FORMAT}).encode()
    path = _zip(tmp_path / "c.npz", {"model/w.npy": _npy_header((10**12,)) + b"\0" * 16, "meta.json": meta})
    with pytest.raises(CheckpointError, match=r"array 'model/w' declares shape \(1000000000000,\) of float64 "
                                              r"\(8000000000000 bytes\), but its member holds only 16"):
        load_checkpoint(path)


def test_forged_member_size_is_refused(tmp_path: Path) -> None:
    """A zip entry claiming more uncompressed bytes than a deflate stream can expand to."""
    meta = json.dumps({"format": checkpoint.FORMAT}).encode()
    path = _zip(tmp_path / "c.npz", {"meta.json": meta, "a.npy": _npy_header((4,)) + b"\0" * 32})
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a.npy")
    # the central directory's uncompressed size of a.npy: 1 TB
    name_at = blob.rindex(b"a.npy")
    entry = blob.rindex(b"PK\x01\x02", 0, name_at)
    blob[entry + 24:entry + 28] = (2**32 - 2).to_bytes(4, "little")
    assert info.file_size < 2**32 - 2
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="declares 4294967294 bytes, more than the .*-byte file can hold"):
        load_checkpoint(path)


def test_unsupported_compression_is_refused(tmp_path: Path) -> None:
    meta = json.dumps({"format": checkpoint.FORMAT}).encode()
    path = _zip(tmp_path / "c.npz", {"meta.json": meta}, zipfile.ZIP_BZIP2)
    with pytest.raises(CheckpointError, match="unsupported compression"):
        load_checkpoint(path)


def test_deeply_nested_header_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = _zip(tmp_path / "c.npz", {"meta.json": b"[" * 100000 + b"]" * 100000})
    with pytest.raises(CheckpointError, match="not a readable minise checkpoint"):
        load_checkpoint(path)


def test_temporary_file_of_an_interrupted_write_is_removed_by_the_next(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "last.npz", {"a": np.zeros(2)}, {"epoch": 1})
    (tmp_path / "last.npz.k2j4_x.tmp").write_bytes(b"half a checkpoint")  # what kill -9 mid-write leaves
    (tmp_path / "best.npz.abc.tmp").write_bytes(b"another file's")
    save_checkpoint(path, {"a": np.ones(2)}, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz.abc.tmp", "last.npz"]
    assert load_checkpoint(path)[1]["epoch"] == 2


def test_load_meta_and_copy(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.npz", {"a": np.arange(3)}, {"epoch": 4})
    assert checkpoint.load_meta(path)["epoch"] == 4
    copy = checkpoint.copy_checkpoint(path, tmp_path / "b.npz")
    assert copy.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]
