"""Shared fixtures: the devices every op test runs on.

``device`` is "cpu" (NumPy) and "cuda". Without a GPU, "cuda" is the strict simulated device of
``minise.testing``; with ``MINISE_TEST_GPU=1`` on a machine with CuPy and a GPU it is real
CuPy, so the same tests check the real GPU path.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from minise import backend, speed
from minise import testing as strict_device

REAL_GPU = os.environ.get("MINISE_TEST_GPU") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--assignment", action="append", default=[], metavar="NAME",
                     help="run only the graded tests of this assignment (see docs/instructors.md)")


def pytest_configure(config: pytest.Config) -> None:
    # `minise assignments grade` sets MINISE_GRADE_ROOT: the tests must run against that student copy alone
    root = os.environ.get("MINISE_GRADE_ROOT")
    if root:
        import minise

        here = os.path.realpath(minise.__file__)
        if not here.startswith(os.path.realpath(root) + os.sep):
            pytest.exit(f"grading {root}, but minise was imported from {here}", returncode=3)
    config.addinivalue_line("markers", "slow: opt-in (real data or long training); run with -m slow")
    config.addinivalue_line("markers", "gpu: needs CuPy and a GPU")
    config.addinivalue_line("markers", "assignment(*parts): graded test of assignment parts 'name/part'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = config.getoption("--assignment")
    if chosen:
        # a graded test lists the part it grades first, then the parts it also needs
        from minise.assignments.plugin import assignment_of

        keep = [it for it in items if it.get_closest_marker("assignment") is not None
                and assignment_of(it.get_closest_marker("assignment").args) in chosen]
        config.hook.pytest_deselected(items=[it for it in items if it not in keep])
        items[:] = keep
    if not REAL_GPU:
        skip = pytest.mark.skip(reason="needs a real GPU: set MINISE_TEST_GPU=1 on a machine with CuPy and a GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, in this process (CIFAR's fetch refuses) or in the ones it starts (MINISE_OFFLINE)."""
    from minise.data import cifar

    monkeypatch.setenv("MINISE_OFFLINE", "1")

    def refuse(url: str, dest: object, timeout: float = 30.0) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(cifar, "fetch_url", refuse)


@pytest.fixture(params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest):
    """Run the test on NumPy and on the (real or simulated) GPU."""
    if request.param == "cuda" and not REAL_GPU:
        backend.register_device("cuda", strict_device.xp, strict_device.DeviceArray)
        try:
            yield "cuda"
        finally:
            backend.unregister_device("cuda")
    else:
        yield request.param


def _test_l2_bytes() -> int | None:
    """The L2 cache size the tests see: ``MINISE_TEST_L2_CACHE`` (bytes, or "machine" for this
    machine's own), default 2 MiB. .ci/run runs the speed tests under other sizes too."""
    setting = os.environ.get("MINISE_TEST_L2_CACHE", str(2 << 20)).strip()
    if setting == "machine":
        return None
    try:
        size = int(setting)
    except ValueError:
        raise pytest.UsageError(f"MINISE_TEST_L2_CACHE: a number of bytes or 'machine', got {setting!r}") from None
    if size < 1:
        raise pytest.UsageError(f"MINISE_TEST_L2_CACHE must be positive, got {size}")
    return size


TEST_L2_BYTES = _test_l2_bytes()
_machine_l2_cache_bytes = speed._l2_cache_bytes  # the real probe, before any test replaces it


@pytest.fixture(autouse=True)
def pinned_cache_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the same L2 cache size (``TEST_L2_BYTES``), not the one of the machine it runs on:
    the block sizes of the fast paths follow it, and a test's expectations must not change with the CPU."""
    if TEST_L2_BYTES is not None:
        monkeypatch.setattr(speed, "_l2_cache_bytes", lambda: TEST_L2_BYTES)


@pytest.fixture
def machine_cache_size(monkeypatch: pytest.MonkeyPatch):
    """For the tests of the cache probe itself: ``speed._l2_cache_bytes`` is the real one again (it
    reads this machine's sysfs), and the fixture's value is that function."""
    monkeypatch.setattr(speed, "_l2_cache_bytes", _machine_l2_cache_bytes)
    return _machine_l2_cache_bytes


@pytest.fixture
def split_small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every conv's batch cut over the threads however little its work (``speed.PARALLEL_MIN_MACS``
    = 0): the threaded paths on test-sized inputs, which would otherwise run in one call."""
    from minise import speed

    monkeypatch.setattr(speed, "PARALLEL_MIN_MACS", 0)


@pytest.fixture
def simulated_gpu():
    """The strict simulated device bound to "cuda" for one test (even where a real GPU exists)."""
    backend.register_device("cuda", strict_device.xp, strict_device.DeviceArray)
    try:
        yield strict_device
    finally:
        backend.unregister_device("cuda")


def on(device: str, array: np.ndarray):
    """A copy of a NumPy array on ``device`` (the explicit host-to-device copy; never an alias)."""
    return backend.to_device(np.array(array, copy=True), device)
