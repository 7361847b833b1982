"""The grader's judgement: a student's observed values against the reference run's.

A graded test reports the values it computed (``tests/assignments/checks.py``: ``assert_close``,
``assert_equal``, ``assert_order``) on the grader's pipe. The grader runs every graded test on the
instructor's reference package too, and a student's test passes only if each of its observations
matches the reference's, judged here, in the grader's process, with the reference's tolerances:

- ``close``: same shape and dtype, values within the reference's ``rtol``/``atol``;
- ``equal``: the same plain value;
- ``order``: a permutation of the reference graph's nodes, each producer after all its consumers.

Arrays travel as dtype, shape and raw bytes (never pickles); anything malformed is a failure.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

__all__ = ["decode", "judge", "mismatch", "MAX_ARRAY_BYTES"]

MAX_ARRAY_BYTES = 64 << 20
_KINDS = set("biufc")


class _Malformed(ValueError):
    pass


def decode(value: Any) -> Any:
    """An encoded observation value: ``{"json": v}`` or ``{"dtype", "shape", "b64"}`` (a NumPy array)."""
    if not isinstance(value, dict):
        raise _Malformed("not an encoded value")
    if "json" in value:
        return value["json"]
    try:
        dtype = np.dtype(str(value["dtype"]))
        shape = tuple(int(n) for n in value["shape"])
        raw = base64.b64decode(str(value["b64"]), validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise _Malformed(f"a malformed array ({exc})") from None
    if dtype.kind not in _KINDS or dtype.hasobject or any(n < 0 for n in shape) or len(raw) > MAX_ARRAY_BYTES:
        raise _Malformed("an array of a kind the grader does not accept")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise _Malformed("an array whose bytes do not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _close(mine: Any, ref: Any, options: dict[str, Any]) -> str | None:
    if isinstance(ref, np.ndarray) != isinstance(mine, np.ndarray):
        return "got None" if mine is None else f"got {type(mine).__name__}, expected an array"
    if not isinstance(ref, np.ndarray):
        return None if mine == ref else f"got {mine!r}, expected {ref!r}"
    if mine.shape != ref.shape:
        return f"shape {mine.shape}, expected {ref.shape}"
    if mine.dtype != ref.dtype:
        return f"dtype {mine.dtype}, expected {ref.dtype}"
    rtol, atol = float(options.get("rtol", 0.0)), float(options.get("atol", 0.0))
    if ref.dtype.kind in "biu":
        ok = np.array_equal(mine, ref)
    else:
        ok = bool(np.allclose(mine, ref, rtol=rtol, atol=atol, equal_nan=False))
    if ok:
        return None
    return mismatch(mine, ref, rtol, atol, "the reference's")


def mismatch(mine: np.ndarray, expected: np.ndarray, rtol: float, atol: float, whose: str = "the expected",
             equal_nan: bool = False) -> str:
    """How two arrays of one shape differ, for a person: how many values, the first one (index, expected,
    got) and the largest difference. The graded tests' self-check says it the same way (tests/assignments)."""
    with np.errstate(all="ignore"):
        mine = np.asarray(mine)
        expected = np.asarray(expected)
        bad = ~np.isclose(mine, expected, rtol=rtol, atol=atol, equal_nan=equal_nan)
        if not mine.size or not bad.any():
            return f"the values agree with {whose} (rtol={rtol:g}, atol={atol:g})"
        diff = np.abs(mine.astype(np.complex128) - expected.astype(np.complex128))  # cpu-only
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"index {first}" if mine.ndim else "the value"
    return (f"{int(bad.sum())} of {mine.size} values differ from {whose}; first at {where}: expected "
            f"{expected[first].item():.8g}, got {mine[first].item():.8g} (largest difference "
            f"{np.nanmax(diff):.3g}; tolerance rtol={rtol:g}, atol={atol:g})")


def _order(mine: Any, options: dict[str, Any]) -> str | None:
    nodes = int(options["nodes"])
    edges = decode(options["edges"])
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2) if len(edges) else np.zeros((0, 2), np.int64)  # cpu-only
    if not isinstance(mine, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in mine):
        return "not a list of the graph's Functions"
    if sorted(mine) != list(range(nodes)):
        return f"{len(mine)} Functions returned, {nodes} reachable from the roots (each exactly once)"
    position = {n: i for i, n in enumerate(mine)}
    for producer, consumer in edges.tolist():
        if position[producer] < position[consumer]:
            return "a Function comes before one that consumes its output"
    return None


def judge(reference: list[dict[str, Any]], student: list[dict[str, Any]]) -> str | None:
    """None if the student's observations match the reference's, else the first reason they do not."""
    try:
        for i, ref in enumerate(reference):
            what = ref.get("what", f"value {i + 1}")
            if i >= len(student):
                return f"{what}: never computed (the test stopped before it)"
            mine = student[i]
            if mine.get("what") != what or mine.get("kind") != ref.get("kind"):
                return f"{what}: the test reported {mine.get('what')!r} in its place"
            value = decode(mine.get("value"))
            options = ref.get("options") or {}
            kind = ref.get("kind")
            if kind == "close":
                why = _close(value, decode(ref["value"]), options)
            elif kind == "equal":
                expected = decode(ref["value"])
                why = None if value == expected else f"got {value!r}, expected {expected!r}"
            elif kind == "order":
                why = _order(value, options)
            else:
                why = f"an observation of unknown kind {kind!r}"
            if why is not None:
                return f"{what}: {why}"
        if len(student) > len(reference):
            return "the test reported more values than the reference run did"
    except (_Malformed, KeyError, TypeError, ValueError) as exc:
        return f"a malformed report ({exc})"
    return None
