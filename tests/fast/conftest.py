"""Shared setup of the fast-path tests: how a fast module's work is cut into blocks and threads."""

import pytest

from minise import speed


@pytest.fixture
def cut_work(monkeypatch):
    """``cut_work(module, block_bytes, threads)``: the fast module sweeps blocks of ``block_bytes``
    (None: the default size) on ``threads`` threads, splitting every array when threads > 1 and
    none when threads == 1 (the module's ``PARALLEL_MIN_BYTES``)."""

    def cut(module, block_bytes, threads):
        if block_bytes is not None:
            monkeypatch.setattr(speed, "default_block_bytes", lambda: block_bytes)
        monkeypatch.setattr(speed, "NUM_THREADS", threads)
        monkeypatch.setattr(module, "PARALLEL_MIN_BYTES", 0 if threads > 1 else 1 << 62)

    return cut
