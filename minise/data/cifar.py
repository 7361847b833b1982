"""CIFAR-10 and CIFAR-100 in their original "python version" format: find, download, verify, parse.

Where the data comes from, in order:

1. an extracted folder in the data directory (``cifar-10-batches-py/`` or ``cifar-100-python/``),
   used as it is once its shapes, label range and image counts check out;
2. the official archive in the data directory (``cifar-10-python.tar.gz``), used once its MD5
   matches, then extracted safely (regular files only, nothing outside the folder);
3. a download of that archive (to a temporary name, renamed only after its MD5 matches).

The data directory is ``--data-dir``, else the environment variable ``MINISE_DATA``, else
``~/.cache/minise`` (``$XDG_CACHE_HOME/minise`` where that is set). Every byte from the network
passes through :func:`fetch_url`, so tests replace that one function and never touch the network.

The batches are pickles (the format the dataset is published in). They are read with an
unpickler that builds only plain containers and NumPy arrays, so a doctored file cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MiniseError, one_line

__all__ = [
    "DataError",
    "DataNotFound",
    "CIFAR",
    "SPECS",
    "load_cifar",
    "default_data_dir",
    "fetch_url",
    "md5_of",
    "read_cifar_folder",
    "missing_data_message",
]


class DataError(MiniseError, RuntimeError):
    """The data set cannot be used: missing, corrupt, or not what it claims to be."""


class DataNotFound(DataError):
    """No copy of the data set at all: none in the data directory and none could be downloaded.

    Only this case may fall back to generated data; a copy that is there but corrupt is a plain
    :class:`DataError`, because training on something else would hide the problem.
    """


@dataclass(frozen=True)
class Spec:
    """What one CIFAR variant looks like on disk and in numbers."""

    name: str
    url: str
    archive: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    train_count: int
    test_count: int


SPECS: dict[str, Spec] = {
    "cifar10": Spec(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        train_count=50000,
        test_count=10000,
    ),
    "cifar100": Spec(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",  # the 100 fine classes; the 20 coarse super-classes are not used
        names_key=b"fine_label_names",
        num_classes=100,
        train_count=50000,
        test_count=10000,
    ),
}


@dataclass
class CIFAR:
    """A CIFAR data set in memory: uint8 images (N, 3, 32, 32) in RGB order, int64 labels (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str = ""  # where it was read from, for the log
    synthetic: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, limit_train: int | None = None, limit_test: int | None = None) -> CIFAR:
        """The first ``limit_train`` training and ``limit_test`` test images (None: all)."""
        return CIFAR(
            self.name,
            self.train_images[:limit_train], self.train_labels[:limit_train],
            self.test_images[:limit_test], self.test_labels[:limit_test],
            list(self.classes), self.source, self.synthetic, dict(self.extra),
        )


# --------------------------------------------------------------------------- where the data lives
def default_data_dir() -> Path:
    """``$MINISE_DATA``, else ``$XDG_CACHE_HOME/minise``, else ``~/.cache/minise``."""
    env = os.environ.get("MINISE_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "minise"


def missing_data_message(spec: Spec, data_dir: Path, reason: str = "") -> str:
    """Where to put the archive or folder, in one paragraph."""
    return (
        f"{spec.name} not found in {data_dir}"
        + (f" ({one_line(reason)})" if reason else "")
        + f". Put the official archive {spec.archive} (from {spec.url}) or its extracted folder "
        f"{spec.folder}/ in {data_dir}, or point --data-dir (or MINISE_DATA) at a folder that holds one."
    )


# --------------------------------------------------------------------------- network and checksums
def fetch_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Copy ``url`` to the file ``dest``. The only function in minise that touches the network.

    Setting the environment variable ``MINISE_OFFLINE=1`` turns downloads off (tests, CI, air-gapped machines).
    """
    if os.environ.get("MINISE_OFFLINE", "") not in ("", "0"):
        raise OSError("downloads are turned off (MINISE_OFFLINE is set)")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out, length=1 << 20)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(spec: Spec, data_dir: Path) -> Path:
    """Download the archive to a temporary name; rename it only once its MD5 matches."""
    final = data_dir / spec.archive
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=spec.archive + ".", suffix=".part", dir=data_dir)
    except OSError as exc:
        raise DataNotFound(missing_data_message(spec, data_dir, f"cannot write there to download: {exc}")) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            fetch_url(spec.url, tmp)
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections are OSErrors
            raise DataNotFound(missing_data_message(spec, data_dir, f"download from {spec.url} failed: {exc}")) from exc
        got = md5_of(tmp)
        if got != spec.md5:
            raise DataError(
                f"the download of {spec.url} is corrupt or incomplete (MD5 {got}, expected {spec.md5}); "
                "it was discarded. Try again, or fetch the archive yourself and put it in " f"{data_dir}."
            )
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


# --------------------------------------------------------------------------- extraction
def _extract(spec: Spec, archive: Path, data_dir: Path) -> Path:
    """Unpack the archive's folder into ``data_dir`` through a temporary folder, safely.

    Only regular files and folders under ``spec.folder/`` are accepted: no links, devices,
    absolute paths or ``..``, so an archive cannot write outside its folder.
    """
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = []
                for m in tar.getmembers():
                    parts = Path(m.name).parts
                    if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
                        raise DataError(f"{archive} holds an unsafe entry {m.name!r}; refusing to extract it")
                    if parts and parts[0] == spec.folder:
                        members.append(m)
                if not any(m.isfile() for m in members):
                    raise DataError(f"{archive} does not contain the folder {spec.folder}/")
                for m in members:
                    if m.isdir():
                        (staging / m.name).mkdir(parents=True, exist_ok=True)
                        continue
                    target = staging / m.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(m)
                    assert source is not None  # a regular file always has content
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{archive} cannot be read as a .tar.gz archive ({exc}); delete it and try again") from exc
        final = data_dir / spec.folder
        os.replace(staging / spec.folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- parsing
class _ArrayUnpickler(pickle.Unpickler):
    """Builds only NumPy arrays (and the dicts, lists, strings and numbers around them)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # Python 2 pickles of arrays store their bytes through it
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if (module, name) in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return _empty_bytes  # type: ignore[return-value]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected here")


def _empty_bytes(*args: object) -> bytes:
    """Protocol-2 pickles store an empty bytes object (an empty array's data) as ``bytes()``."""
    if args:
        raise pickle.UnpicklingError("refusing bytes(...) with arguments: only an empty bytes object is expected")
    return b""


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or foreign file: say which one
        raise DataError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {one_line(exc, 200)})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch: expected a dict, found {type(obj).__name__}")
    return obj


def _labels(path: Path, raw: object, count: int, spec: Spec) -> np.ndarray:
    """The batch's labels as int64, after checking that each one is an integer class index."""
    last = spec.num_classes - 1
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise DataError(f"{path}: labels must be integers in 0..{last}, found an array of {raw.dtype} "
                            f"with shape {raw.shape}")
        values = raw
    elif isinstance(raw, (list, tuple)):
        for i, v in enumerate(raw):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DataError(f"{path}: label {i} is {one_line(repr(v), 40)} ({type(v).__name__}); "
                                f"labels must be integers in 0..{last}")
        values = raw
    else:
        raise DataError(f"{path}: labels must be a list of integers in 0..{last}, found {type(raw).__name__}")
    if len(values) != count:
        raise DataError(f"{path}: {count} images but {len(values)} labels")
    for i, v in enumerate(values):
        if not 0 <= v <= last:
            raise DataError(f"{path}: label {i} is {one_line(v, 40)}, outside the classes 0..{last} of {spec.name}")
    return np.array(values, dtype=np.int64)


def _read_batches(folder: Path, files: tuple[str, ...], spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{folder} is incomplete: {name} is missing")
        batch = _read_pickle(path)
        if b"data" not in batch or spec.label_key not in batch:
            keys = ", ".join(sorted(one_line(repr(k), 40) for k in batch)[:20])
            raise DataError(f"{path} lacks b'data' or {spec.label_key!r} (found keys {keys})")
        data = batch[b"data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: expected uint8 images of shape (N, 3072), found {found}")
        if data.shape[0] == 0:
            raise DataError(f"{path} is an empty batch: it holds 0 images")
        labels.append(_labels(path, batch[spec.label_key], data.shape[0], spec))
        images.append(data.reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _class_names(path: Path, meta: dict, spec: Spec) -> list[str] | None:
    """The class names a ``batches.meta`` (or ``meta``) file lists; None when it lists none."""
    names = meta.get(spec.names_key)
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path}: {spec.names_key!r} must be a list of class names, found "
                        f"{one_line(repr(names), 60)}")
    if len(names) != spec.num_classes:
        raise DataError(f"{path} lists {len(names)} class names; {spec.name} has {spec.num_classes} classes")
    return [one_line(n.decode("utf-8", "replace") if isinstance(n, bytes) else n, 60) for n in names]


def read_cifar_folder(folder: Path, spec: Spec) -> CIFAR:
    """Parse an extracted folder and check its shapes, label range and image counts."""
    folder = Path(folder)
    train_x, train_y = _read_batches(folder, spec.train_files, spec)
    test_x, test_y = _read_batches(folder, spec.test_files, spec)
    for split, y, want in (("training", train_y, spec.train_count), ("test", test_y, spec.test_count)):
        if y.size != want:
            raise DataError(f"{folder}: expected {want} {split} images for {spec.name}, found {y.size}")
        if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
            raise DataError(
                f"{folder}: {split} labels must lie in 0..{spec.num_classes - 1}, found {y.min()}..{y.max()}"
            )
    classes = [str(i) for i in range(spec.num_classes)]
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        classes = _class_names(meta_path, _read_pickle(meta_path), spec) or classes
    return CIFAR(spec.name, np.ascontiguousarray(train_x), train_y, np.ascontiguousarray(test_x), test_y,
                 classes, source=str(folder))


# --------------------------------------------------------------------------- the entry point
def load_cifar(name: str = "cifar10", data_dir: str | os.PathLike | None = None, download: bool = True) -> CIFAR:
    """Load CIFAR-10 or CIFAR-100 (``name`` = "cifar10" | "cifar100") from ``data_dir``.

    Uses the extracted folder if present, else the archive (MD5-checked), else downloads the
    archive when ``download`` is true (and ``MINISE_OFFLINE`` is not set). Raises
    :class:`DataError` with a message saying where to put the data when none can be had.
    """
    if name not in SPECS:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(SPECS)}")
    spec = SPECS[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = root / spec.folder
    if folder.is_dir():
        return read_cifar_folder(folder, spec)
    archive = root / spec.archive
    if archive.is_file():
        got = md5_of(archive)
        if got != spec.md5:
            raise DataError(
                f"{archive} is corrupt or incomplete (MD5 {got}, expected {spec.md5}); it was not used. "
                f"Delete it and download it again from {spec.url}."
            )
    elif download:
        archive = _download(spec, root)
    else:
        raise DataNotFound(missing_data_message(spec, root))
    return read_cifar_folder(_extract(spec, archive, root), spec)

