"""CIFAR loading: folders, archives, checksums, downloads (faked: no test touches the network)."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from minise.data import cifar
from minise.data.cifar import SPECS, DataError, DataNotFound, load_cifar, md5_of
from minise.data.synthetic import cifar_or_generated, make_synthetic, write_cifar_archive, write_cifar_folder

N_TRAIN, N_TEST = 50, 20
_REAL_FETCH_URL = cifar.fetch_url  # kept before the autouse fixture replaces it


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, dest: Path, timeout: float = 30.0) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(cifar, "fetch_url", refuse)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Tiny data sets, and SPECS that expect their sizes (the real ones expect 50000 / 10000)."""
    data = {name: make_synthetic(N_TRAIN, N_TEST, num_classes=SPECS[name].num_classes, seed=1)
            for name in SPECS}
    for name, spec in SPECS.items():
        monkeypatch.setitem(SPECS, name, dataclasses.replace(spec, train_count=N_TRAIN, test_count=N_TEST))
    return data


def _set_md5(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> None:
    monkeypatch.setitem(SPECS, name, dataclasses.replace(SPECS[name], md5=md5_of(path)))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_folder_is_parsed_exactly(tmp_path: Path, tiny: dict, name: str) -> None:
    src = tiny[name]
    folder = write_cifar_folder(tmp_path, src, name)
    assert folder.name == SPECS[name].folder
    got = load_cifar(name, tmp_path)
    assert got.train_images.dtype == np.uint8 and got.train_images.shape == (N_TRAIN, 3, 32, 32)
    assert got.train_labels.dtype == np.int64 and got.test_labels.shape == (N_TEST,)
    np.testing.assert_array_equal(got.train_images, src.train_images)
    np.testing.assert_array_equal(got.train_labels, src.train_labels)
    np.testing.assert_array_equal(got.test_images, src.test_images)
    np.testing.assert_array_equal(got.test_labels, src.test_labels)
    assert got.classes == src.classes


def test_row_layout_is_rgb_planes(tmp_path: Path, tiny: dict) -> None:
    """A CIFAR row holds the red plane, then green, then blue, each 32x32 row-major."""
    src = tiny["cifar10"]
    folder = write_cifar_folder(tmp_path, src)
    with open(folder / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][0]
    got = load_cifar("cifar10", tmp_path)
    assert row[0] == got.train_images[0, 0, 0, 0]
    assert row[1] == got.train_images[0, 0, 0, 1]
    assert row[32] == got.train_images[0, 0, 1, 0]
    assert row[1024] == got.train_images[0, 1, 0, 0]
    assert row[2048 + 33] == got.train_images[0, 2, 1, 1]


def test_verified_archive_is_extracted_and_used(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = write_cifar_archive(tmp_path / SPECS["cifar10"].archive, tiny["cifar10"])
    _set_md5(monkeypatch, "cifar10", archive)
    got = load_cifar("cifar10", tmp_path)
    np.testing.assert_array_equal(got.test_images, tiny["cifar10"].test_images)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract")]  # staging folder removed


def test_wrong_checksum_is_refused(tmp_path: Path, tiny: dict) -> None:
    write_cifar_archive(tmp_path / SPECS["cifar10"].archive, tiny["cifar10"])  # real MD5 expected: mismatch
    with pytest.raises(DataError, match="corrupt or incomplete.*MD5.*c58f30108f718f92721af3b95e74349a"):
        load_cifar("cifar10", tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing extracted from the bad file


def test_truncated_archive_is_refused(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = write_cifar_archive(tmp_path / SPECS["cifar10"].archive, tiny["cifar10"])
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt or incomplete"):
        load_cifar("cifar10", tmp_path)
    # even when the checksum were to match (a wrong MD5 table, say), the broken archive is a clear error
    _set_md5(monkeypatch, "cifar10", archive)
    with pytest.raises(DataError, match="cannot be read as a .tar.gz"):
        load_cifar("cifar10", tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_unsafe_archive_member_is_refused(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / SPECS["cifar10"].archive
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    _set_md5(monkeypatch, "cifar10", archive)
    with pytest.raises(DataError, match="unsafe entry"):
        load_cifar("cifar10", tmp_path)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_missing_data_without_network_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", tmp_path / "empty")
    msg = str(info.value)
    assert "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py/" in msg
    assert str(tmp_path / "empty") in msg and "network disabled in tests" in msg
    with pytest.raises(DataError, match="cifar-100-python"):
        load_cifar("cifar100", tmp_path / "empty", download=False)


def test_offline_environment_variable_blocks_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINISE_OFFLINE", "1")
    with pytest.raises(OSError, match="MINISE_OFFLINE"):
        _REAL_FETCH_URL("https://example.invalid/x", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_download_is_verified_then_renamed(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_cifar_archive(tmp_path / "source.tar.gz", tiny["cifar10"])
    _set_md5(monkeypatch, "cifar10", good)
    seen = []

    def fake_fetch(url: str, dest: Path, timeout: float = 30.0) -> None:
        seen.append((url, Path(dest).name))
        Path(dest).write_bytes(good.read_bytes())

    monkeypatch.setattr(cifar, "fetch_url", fake_fetch)
    data_dir = tmp_path / "cache"
    got = load_cifar("cifar10", data_dir)
    assert seen[0][0] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert seen[0][1] != "cifar-10-python.tar.gz"  # written under a temporary name first
    assert (data_dir / "cifar-10-python.tar.gz").is_file()
    np.testing.assert_array_equal(got.train_labels, tiny["cifar10"].train_labels)


def test_corrupt_download_is_discarded(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_fetch(url: str, dest: Path, timeout: float = 30.0) -> None:
        Path(dest).write_bytes(b"<html>captive portal</html>")

    monkeypatch.setattr(cifar, "fetch_url", fake_fetch)
    with pytest.raises(DataError, match="download.*corrupt or incomplete.*discarded"):
        load_cifar("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the archive nor a temporary file is left


def test_folder_with_wrong_count_is_refused(tmp_path: Path, tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_folder(tmp_path, tiny["cifar10"])
    monkeypatch.setitem(SPECS, "cifar10", dataclasses.replace(SPECS["cifar10"], train_count=50000))
    with pytest.raises(DataError, match="expected 50000 training images.*found 50"):
        load_cifar("cifar10", tmp_path)


def test_folder_with_missing_batch_is_refused(tmp_path: Path, tiny: dict) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        load_cifar("cifar10", tmp_path)


def test_labels_out_of_range_are_refused(tmp_path: Path, tiny: dict) -> None:
    src = tiny["cifar10"]
    bad = dataclasses.replace(src, test_labels=src.test_labels.copy())
    bad.test_labels[3] = 10
    write_cifar_folder(tmp_path, bad)
    with pytest.raises(DataError, match=r"test_batch: label 3 is 10, outside the classes 0\.\.9 of cifar10"):
        load_cifar("cifar10", tmp_path)


def test_wrong_image_shape_is_refused(tmp_path: Path, tiny: dict) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((N_TEST, 1024), np.uint8), b"labels": [0] * N_TEST}, f)
    with pytest.raises(DataError, match=r"\(N, 3072\).*\(20, 1024\)"):
        load_cifar("cifar10", tmp_path)


def _rewrite(path: Path, change) -> None:
    """Load a pickled batch, let ``change`` edit the dict in place, write it back."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    change(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("label, message", [
    (b"x", r"test_batch: label 4 is b'x' \(bytes\); labels must be integers in 0\.\.9"),
    (None, r"test_batch: label 4 is None \(NoneType\)"),
    (2**70, r"test_batch: label 4 is 1180591620717411303424, outside the classes 0\.\.9 of cifar10"),
    (1.9, r"test_batch: label 4 is 1\.9 \(float\); labels must be integers"),  # was truncated to 1
    (True, r"test_batch: label 4 is True \(bool\)"),
    (-1, r"test_batch: label 4 is -1, outside the classes"),
])
def test_labels_of_the_wrong_type_are_refused(tmp_path: Path, tiny: dict, label: object, message: str) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    _rewrite(folder / "test_batch", lambda b: b[b"labels"].__setitem__(4, label))
    with pytest.raises(DataError, match=message):
        load_cifar("cifar10", tmp_path)


@pytest.mark.parametrize("labels, message", [
    (7, r"labels must be a list of integers in 0\.\.9, found int"),
    (np.full(N_TEST, 1.0), r"labels must be integers in 0\.\.9, found an array of float64"),
    (list(range(10)) * 3, rf"{N_TEST} images but 30 labels"),
])
def test_label_containers_are_checked(tmp_path: Path, tiny: dict, labels: object, message: str) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    _rewrite(folder / "test_batch", lambda b: b.__setitem__(b"labels", labels))
    with pytest.raises(DataError, match=message):
        load_cifar("cifar10", tmp_path)


def test_integer_label_arrays_are_accepted(tmp_path: Path, tiny: dict) -> None:
    src = tiny["cifar10"]
    folder = write_cifar_folder(tmp_path, src)
    _rewrite(folder / "test_batch", lambda b: b.__setitem__(b"labels", src.test_labels.astype(np.uint8)))
    np.testing.assert_array_equal(load_cifar("cifar10", tmp_path).test_labels, src.test_labels)


@pytest.mark.parametrize("names, message", [
    (7, r"batches.meta: b'label_names' must be a list of class names, found 7"),
    ([b"cat", 3] * 5, r"must be a list of class names"),
    ([b"cat", b"dog"], r"batches.meta lists 2 class names; cifar10 has 10 classes"),
])
def test_class_names_are_checked(tmp_path: Path, tiny: dict, names: object, message: str) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    _rewrite(folder / "batches.meta", lambda b: b.__setitem__(b"label_names", names))
    with pytest.raises(DataError, match=message):
        load_cifar("cifar10", tmp_path)


def test_empty_batch_is_named(tmp_path: Path, tiny: dict) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    _rewrite(folder / "test_batch", lambda b: b.update({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    with pytest.raises(DataError, match=r"test_batch is an empty batch: it holds 0 images"):
        load_cifar("cifar10", tmp_path)


def test_generated_data_only_when_there_is_no_copy_at_all(tmp_path: Path, tiny: dict) -> None:
    data, why = cifar_or_generated("cifar10", tmp_path / "empty", download=False, num_train=30, num_test=10)
    assert data.synthetic and len(data.train_labels) == 30 and why.startswith("cifar10 not found in")
    with pytest.raises(DataNotFound):
        load_cifar("cifar10", tmp_path / "empty", download=False)
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])
    data, why = cifar_or_generated("cifar10", tmp_path, download=False)
    assert why is None and not data.synthetic
    (folder / "data_batch_2").write_bytes(b"garbage")  # a damaged copy is an error, never replaced
    with pytest.raises(DataError, match="data_batch_2 is not a readable CIFAR batch") as info:
        cifar_or_generated("cifar10", tmp_path, download=False)
    assert not isinstance(info.value, DataNotFound)


def test_pickle_with_code_is_refused(tmp_path: Path, tiny: dict) -> None:
    folder = write_cifar_folder(tmp_path, tiny["cifar10"])

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_cifar("cifar10", tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        load_cifar("mnist")


def test_default_data_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MINISE_DATA", str(tmp_path / "d"))
    assert cifar.default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("MINISE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cifar.default_data_dir() == tmp_path / "cache" / "minise"


def test_synthetic_set_is_balanced_and_deterministic() -> None:
    a = make_synthetic(100, 30, seed=3)
    b = make_synthetic(100, 30, seed=3)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert a.train_images.dtype == np.uint8 and a.train_images.shape == (100, 3, 32, 32)
    np.testing.assert_array_equal(np.bincount(a.train_labels), np.full(10, 10))
    assert a.synthetic and not np.array_equal(a.train_images, make_synthetic(100, 30, seed=4).train_images)


def _real_cifar10_dir() -> Path:
    """The folder $MINISE_DATA names, when it holds CIFAR-10 (the slow tests need the real data set)."""
    root = os.environ.get("MINISE_DATA")
    spec = SPECS["cifar10"]
    if not root or not ((Path(root) / spec.folder).is_dir() or (Path(root) / spec.archive).is_file()):
        pytest.skip("set MINISE_DATA to a folder holding CIFAR-10 (cifar-10-batches-py/ or the archive)")
    return Path(root)


@pytest.mark.slow
def test_real_cifar10(tmp_path: Path) -> None:
    """The real CIFAR-10 in $MINISE_DATA: sizes, balance, class names and the known channel statistics."""
    data = load_cifar("cifar10", _real_cifar10_dir(), download=False)
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    np.testing.assert_array_equal(np.bincount(data.train_labels), np.full(10, 5000))
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    from minise.data import channel_stats

    mean, std = channel_stats(data.train_images)
    # the published statistics are mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616); a copy
    # re-encoded as JPEG (as on our development machines) has std (0.2452, 0.2428, 0.2606)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=3e-4)
    np.testing.assert_allclose(std, [0.2461, 0.2432, 0.2611], atol=1.1e-3)
