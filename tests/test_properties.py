"""Property-based tests of the parsers that face files and people (Hypothesis).

Whatever a CIFAR batch, a checkpoint or a command line holds, minise answers with a result or with
its own error type (:class:`minise.errors.MiniseError`) and a one-line message: never another
exception, never a half-written file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minise import checkpoint, cli  # noqa: E402
from minise.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from minise.config import DEFAULTS, check_config, resolve_config  # noqa: E402
from minise.data import SPECS, DataError, make_synthetic, read_cifar_folder  # noqa: E402
from minise.errors import MiniseError, UserError  # noqa: E402
from minise.train import _saved_config  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
N_TRAIN, N_TEST = 6, 4
SPEC = dataclasses.replace(SPECS["cifar10"], train_files=("train",), test_files=("test",), meta_file="meta",
                           train_count=N_TRAIN, test_count=N_TEST)
GOOD = make_synthetic(N_TRAIN, N_TEST, seed=5)


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)


# ----------------------------------------------------------------------------- CIFAR batches
def _batch(images: np.ndarray, labels: np.ndarray) -> dict:
    return {b"data": images.reshape(len(images), -1), b"labels": [int(v) for v in labels]}


scalars = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.binary(max_size=8), st.text(max_size=8),
)
small_arrays = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill % 256).astype(dtype),
    st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float32, np.float64, np.bool_]),
    st.sampled_from([(0,), (N_TRAIN,), (N_TRAIN, 3072), (N_TRAIN, 3071), (0, 3072), (2, 3, 4), ()]),
    st.integers(0, 300),
)
GOOD_LABELS = [int(v) for v in GOOD.train_labels]


@st.composite
def label_values(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["good", "one bad", "list", "array", "scalar"]))
    if kind == "good":
        return list(GOOD_LABELS)
    if kind == "one bad":  # a valid list with one value replaced
        labels = list(GOOD_LABELS)
        labels[draw(st.integers(0, N_TRAIN - 1))] = draw(st.one_of(st.integers(-3, 12), scalars))
        return labels
    if kind == "list":
        return draw(st.lists(st.one_of(st.integers(-3, 12), scalars), max_size=N_TRAIN + 1))
    return draw(small_arrays if kind == "array" else scalars)


data_values = st.one_of(st.just(GOOD.train_images.reshape(N_TRAIN, -1)), small_arrays, scalars,
                        st.lists(st.integers(0, 255), max_size=4))


@st.composite
def batches(draw: st.DrawFn) -> object:
    shape = draw(st.sampled_from(["dict", "dict", "dict", "dict", "other"]))
    if shape == "other":
        return draw(st.one_of(scalars, st.lists(scalars, max_size=3)))
    batch: dict = {}
    images = draw(st.integers(0, 9))  # mostly good images, so the labels are what gets tested
    if images:
        batch[b"data"] = GOOD.train_images.reshape(N_TRAIN, -1) if images > 3 else draw(data_values)
    if draw(st.integers(0, 9)):
        batch[b"labels"] = draw(label_values())
    batch.update(draw(st.dictionaries(st.one_of(st.binary(max_size=6), st.text(max_size=6)), scalars, max_size=2)))
    return batch


def _folder(train: object, meta: object) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="minise-prop-"))
    with open(folder / "train", "wb") as f:
        pickle.dump(train, f, protocol=2)
    with open(folder / "test", "wb") as f:
        pickle.dump(_batch(GOOD.test_images, GOOD.test_labels), f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


names_values = st.one_of(st.just([c.encode() for c in GOOD.classes]), st.just(GOOD.classes), st.none(), scalars,
                         st.lists(st.one_of(st.binary(max_size=5), scalars), max_size=11))


@FAST
@given(train=batches(), names=names_values)
def test_any_batch_loads_or_is_a_data_error(train: object, names: object) -> None:
    folder = _folder(train, {b"label_names": names})
    try:
        data = read_cifar_folder(folder, SPEC)
    except DataError as exc:
        _one_line(exc)
        assert str(folder) in str(exc)
        return
    assert data.train_images.shape == (N_TRAIN, 3, 32, 32) and data.train_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int64 and 0 <= data.train_labels.min() <= data.train_labels.max() <= 9
    assert len(data.classes) == 10 and all(isinstance(c, str) for c in data.classes)


@FAST
@given(blob=st.binary(max_size=300), cut=st.integers(0, 10**6), flips=st.lists(st.integers(0, 10**6), max_size=4))
def test_damaged_batch_files_are_data_errors(blob: bytes, cut: int, flips: list[int]) -> None:
    good = bytearray(pickle.dumps(_batch(GOOD.train_images, GOOD.train_labels), protocol=2))
    for at in flips:
        good[at % len(good)] ^= 0xFF
    folder = _folder(None, {})
    (folder / "train").write_bytes(bytes(good[: max(1, cut % (len(good) + 1))]) if blob == b"" else blob)
    try:
        data = read_cifar_folder(folder, SPEC)
    except DataError as exc:
        _one_line(exc)
        return
    assert data.train_images.shape == (N_TRAIN, 3, 32, 32)


# ----------------------------------------------------------------------------- checkpoints
def _good_checkpoint() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "c.npz", {"model/w": np.arange(12, dtype=np.float32).reshape(3, 4),
                                                       "optimizer/momentum/0": np.ones(3)},
                               {"kind": "train", "epoch": 1, "config": {"model": "se_resnet8"}})
        return path.read_bytes()


GOOD_CHECKPOINT = _good_checkpoint()
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)


def _npy(descr: str, shape: tuple[int, ...], payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


@st.composite
def checkpoint_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random", "built"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "mutated":
        blob = bytearray(GOOD_CHECKPOINT)
        for at in draw(st.lists(st.integers(0, len(blob) - 1), max_size=4)):
            blob[at] = draw(st.integers(0, 255))
        return bytes(blob[: draw(st.integers(1, len(blob)))])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as zf:
        for i in range(draw(st.integers(0, 2))):
            shape = tuple(draw(st.lists(st.integers(0, 10**13), max_size=3)))
            descr = draw(st.sampled_from(["<f8", "<f4", "|u1", "<i8", "|O", "|V0", "<U3"]))
            zf.writestr(f"a{i}.npy", _npy(descr, shape, draw(st.binary(max_size=64))))
        meta = draw(st.one_of(json_values, st.just({"format": checkpoint.FORMAT}),
                              st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(
                                  lambda d: {**d, "format": checkpoint.FORMAT})))
        if draw(st.booleans()):
            zf.writestr("meta.json", json.dumps(meta))
    return buf.getvalue()


@FAST
@given(blob=checkpoint_files())
def test_any_file_loads_as_a_checkpoint_or_is_a_checkpoint_error(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.npz"
        path.write_bytes(blob)
        try:
            arrays, meta = load_checkpoint(path)
        except CheckpointError as exc:
            _one_line(exc)
            return
        assert isinstance(meta, dict) and meta["format"] == checkpoint.FORMAT
        assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
        assert sum(a.nbytes for a in arrays.values()) <= 1100 * len(blob)


array_values = st.one_of(
    st.builds(lambda n, dtype: np.arange(n).astype(dtype), st.integers(0, 5),
              st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_])),
    st.just(np.array([None, 1], dtype=object)), st.just(np.array(["a", "bc"])),
)


@FAST
@given(arrays=st.dictionaries(st.text("abc/", min_size=1, max_size=5), array_values, max_size=3),
       meta=st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_saving_never_leaves_half_a_file(arrays: dict, meta: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "c.npz", {"old": np.zeros(2)}, {"epoch": 0})
        try:
            save_checkpoint(path, arrays, meta)
        except TypeError as exc:  # an object array: refused, and the old file stays whole
            assert "dtype object" in str(exc)
            assert load_checkpoint(path)[1]["epoch"] == 0
        else:
            got, got_meta = load_checkpoint(path)
            assert set(got) == set(arrays)
            for key, value in arrays.items():
                np.testing.assert_array_equal(got[key], value)
        assert [p.name for p in Path(tmp).iterdir()] == ["c.npz"]


# ----------------------------------------------------------------------------- the command line
numbers = st.one_of(st.integers(-(10**20), 10**20).map(str), st.floats().map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "-0", "1e400", "", "x", "0x10", "1,2", "3,nan"]))
OPTIONS = {
    "--epochs": numbers, "--iterations": numbers, "--batch-size": numbers, "--lr": numbers, "--momentum": numbers,
    "--weight-decay": numbers, "--warmup-epochs": numbers, "--warmup-iters": numbers, "--milestones": numbers,
    "--gamma": numbers, "--seed": numbers, "--limit-train": numbers, "--limit-test": numbers,
    "--reduction": numbers, "--eval-batch-size": numbers, "--stop-after": numbers,
    "--schedule": st.sampled_from(["cosine", "multistep", "constant", "linear"]),
    "--preset": st.sampled_from(["he2016", "he2017"]), "--model": st.text(max_size=12),
    "--dataset": st.sampled_from(["cifar10", "cifar100", "mnist"]),
}
FLAGS = ["--quick", "--nesterov", "--no-decay-bn-bias", "--drop-last", "--no-augment"]


@st.composite
def train_argv(draw: st.DrawFn) -> list[str]:
    argv = ["train"]
    for option in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=5)):
        argv.append(f"{option}={draw(OPTIONS[option])}")
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return argv


@FAST
@given(argv=train_argv())
def test_any_command_line_gives_a_checked_config_or_a_usage_error(argv: list[str]) -> None:
    parser = cli.build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage and one error line, exit code 2
        assert exc.code == 2
        return
    try:
        config, kwargs = cli.train_options(args)
    except MiniseError as exc:
        _one_line(exc)
        return
    check_config(config)
    assert set(config) == set(DEFAULTS) and resolve_config(config) == config
    for key in ("lr", "momentum", "weight_decay", "gamma", "warmup_epochs"):
        assert math.isfinite(config[key]) and config[key] >= 0
    assert kwargs["stop_after"] is None or kwargs["stop_after"] >= 1


@FAST
@given(options=st.dictionaries(st.sampled_from(sorted(DEFAULTS) + ["surprise"]), json_values, max_size=4))
def test_any_saved_configuration_is_checked(options: dict) -> None:
    try:
        config = _saved_config(Path("last.npz"), {"config": options})
    except CheckpointError as exc:
        _one_line(exc)
        return
    check_config(config)
    with pytest.raises(UserError):
        resolve_config({**options, "surprise": 1})


# ----------------------------------------------------------------------------- a suite folder (experiment report)
_GOOD_RECORD = {"suites": {"s": {"title": "t", "protocol": "budget", "dataset": "cifar10", "seeds": [0, 1],
                                 "configs": [{"name": "a", "label": "A", "baseline": None, "paper": {}},
                                             {"name": "b", "label": "B", "baseline": "a", "paper": {"any": 5.0}}]}}}
_GOOD_RESULT = {"status": "done", "final_error": 30.0, "best_error": 29.0, "best_epoch": 2, "epochs": 2,
                "params": 10, "macs": 20, "images_per_s": 100.0, "wall_s": 3.0}
_GOOD_METRICS = "epoch,step,test_loss,test_acc\n1,4,2.1,0.5\n2,8,1.9,0.7\n"


def _metrics_text(draw: st.DrawFn) -> bytes:
    return draw(st.one_of(
        st.just(_GOOD_METRICS.encode()), st.binary(max_size=40),
        st.lists(st.lists(st.one_of(st.text("0123456789.,-eantif\"\n\x00", max_size=5), st.floats().map(str)),
                          max_size=5).map(",".join), max_size=4).map(lambda rows: "\n".join(rows).encode()),
        st.builds(lambda header, row: f"{header}\n{row}\n".encode(),
                  st.sampled_from(["epoch,test_acc", "epoch,test_accuracy", "test_acc", "epoch,test_acc,x"]),
                  st.sampled_from(["1,0.5", "1,0.5,7", "1,", "1,nan", "1,inf", "x,y", ""])),
    ))


@st.composite
def suite_folders(draw: st.DrawFn) -> dict:
    """{relative path: bytes} of an experiment folder, each file good, damaged or replaced by anything."""
    record = draw(st.one_of(st.just(_GOOD_RECORD), json_values,
                            st.dictionaries(st.sampled_from(["seeds", "configs", "title", "dataset"]), json_values,
                                            max_size=3).map(lambda s: {"suites": {"s": {**_GOOD_RECORD["suites"]["s"],
                                                                                        **s}}})))
    files = {"experiment.json": json.dumps(record).encode()}
    for run in ("a/seed0", "a/seed1", "b/seed0", "b/seed1"):
        result = draw(st.one_of(st.just(_GOOD_RESULT), json_values, st.none(),
                                st.dictionaries(st.sampled_from(sorted(_GOOD_RESULT)), json_values,
                                                max_size=3).map(lambda r: {**_GOOD_RESULT, **r})))
        if result is not None:
            files[f"{run}/result.json"] = (draw(st.binary(max_size=20)) if draw(st.booleans()) and result == {}
                                           else json.dumps(result).encode())
        if draw(st.booleans()):
            files[f"{run}/metrics.csv"] = _metrics_text(draw)
    return files


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=suite_folders())
def test_any_suite_folder_is_reported_or_a_one_line_error(files: dict) -> None:
    from minise.experiment import report

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        try:
            data = report.write_report(root, figures=False)
        except UserError as exc:
            _one_line(exc)
            assert "experiment.json" in str(exc)  # only the index itself stops a report; a damaged run does not
            return
        runs = [r for s in data["suites"] for c in s["configs"] for r in c.runs]
        for r in runs:
            assert r.status in ("done", "diverged", "failed", "damaged", "missing", "interrupted")
            assert "\n" not in r.message
            if r.status == "done":
                assert isinstance(r.final_error, (int, float)) and math.isfinite(r.final_error)
        md = (root / "results.md").read_text()
        assert md.count("**damaged**") == sum(r.status == "damaged" for r in runs)
