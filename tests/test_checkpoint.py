"""Checkpoint files: arrays and JSON in one zip, loaded without pickle, written atomically."""

from __future__ import annotations

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
