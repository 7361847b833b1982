"""Testing helpers shipped with minise (as Chainer ships ``chainer.testing``): a strict simulated GPU.

Students and tests without a GPU can still prove that code is device-clean::

    from minise.testing import simulated_gpu

    with simulated_gpu():                  # "cuda" now means the simulated device
        x = minise.Tensor(data).to("cuda")
        y = model.to("cuda")(x)            # an op that calls numpy behind the data's back raises

The simulated device is NumPy underneath, with CuPy's manners on top. Its arrays
(:class:`DeviceArray`) behave like ``cupy.ndarray`` where it matters for catching bugs:

- implicit conversion to NumPy raises ``TypeError`` (``numpy.asarray(x)``, ``numpy.exp(x)``,
  ``numpy.pad(x, ...)``), exactly where CuPy raises, so an op that calls ``np.`` instead of
  ``xp = get_array_module(x)`` fails its test;
- mixing a NumPy array into an operation with a device array raises ``TypeError``, as CuPy does;
- reductions return 0-d device arrays, not NumPy scalars, as CuPy does;
- ``float(x)``, ``x.item()`` and ``x.get()`` are allowed (a device synchronisation on a GPU) and
  counted in :data:`SYNCS`, so a test can prove that an op's forward and backward pull no scalar
  back to the host.

The module object :data:`xp` stands in for ``cupy``: ``xp.zeros``, ``xp.matmul``,
``xp.lib.stride_tricks.as_strided``, ``xp.random`` ... all return device arrays. The only door
from host to device is ``xp.asarray``/``xp.array`` (like ``cupy.asarray``), and back is ``.get()``.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import backend

__all__ = ["simulated_gpu", "DeviceArray", "xp", "SYNCS"]

SYNCS = [0]  # device-to-host transfers so far (a list, so tests can read and reset it)

_NO_HOST = (
    "implicit conversion of a simulated device array to NumPy is not allowed "
    "(CuPy raises here too): use xp = get_array_module(x), or .get() to copy to the host"
)


def _unwrap(x: Any, allow_host: bool = False) -> Any:
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, np.ndarray) and not allow_host:
        raise TypeError(f"a NumPy array (shape {x.shape}) was mixed with simulated device arrays; "
                        "CuPy raises here too: move it with xp.asarray first")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, allow_host) for v in x)
    if isinstance(x, slice):
        return slice(_unwrap(x.start), _unwrap(x.stop), _unwrap(x.step))
    return x


def _wrap(r: Any) -> Any:
    if isinstance(r, np.ndarray):
        return DeviceArray(r)
    if isinstance(r, np.generic):
        return DeviceArray(np.asarray(r))  # cpu-only
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    if isinstance(r, (np.random.Generator, np.random.RandomState)):  # cpu-only
        return _ObjectProxy(r)
    return r


def _call(fn: Any, args: Any, kwargs: Any, allow_host: bool = False) -> Any:
    return _wrap(fn(*_unwrap(args, allow_host), **{k: _unwrap(v, allow_host) for k, v in kwargs.items()}))


class DeviceArray:
    """An array on the simulated device (see the module docstring)."""

    __array_ufunc__ = None  # numpy ufuncs refuse it; numpy scalars defer to our reflected operators
    __hash__ = None

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_NO_HOST)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(f"numpy.{func.__name__} was called on a simulated device array: {_NO_HOST}")

    # host transfers (counted)
    def get(self) -> np.ndarray:
        SYNCS[0] += 1
        return self._a.copy()

    def item(self) -> Any:
        SYNCS[0] += 1
        return self._a.item()

    def tolist(self) -> Any:
        SYNCS[0] += 1
        return self._a.tolist()

    def __float__(self) -> float:
        SYNCS[0] += 1
        return float(self._a)

    def __int__(self) -> int:
        SYNCS[0] += 1
        return int(self._a)

    def __bool__(self) -> bool:
        SYNCS[0] += 1
        return bool(self._a)

    def __index__(self) -> int:
        SYNCS[0] += 1
        return self._a.__index__()

    # description
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T))
    device = "cuda (simulated)"

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(v) for v in self._a)

    def __repr__(self) -> str:
        return f"DeviceArray({self._a!r})"

    def __getitem__(self, index: Any) -> Any:
        return _wrap(self._a[_unwrap(index)])

    def __setitem__(self, index: Any, value: Any) -> None:
        self._a[_unwrap(index)] = _unwrap(value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # __array_interface__, __array_struct__: NumPy's back doors stay shut
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return _wrap(attr)


def _binary(name: str) -> Any:
    def method(self: DeviceArray, other: Any) -> Any:
        result = getattr(self._a, name)(_unwrap(other))
        return NotImplemented if result is NotImplemented else _wrap(result)

    method.__name__ = name
    return method


def _inplace(name: str) -> Any:
    def method(self: DeviceArray, other: Any) -> Any:
        getattr(self._a, name)(_unwrap(other))
        return self

    method.__name__ = name
    return method


def _unary(name: str) -> Any:
    def method(self: DeviceArray) -> Any:
        return _wrap(getattr(self._a, name)())

    method.__name__ = name
    return method


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
            "lshift", "rshift"):
    setattr(DeviceArray, f"__{_op}__", _binary(f"__{_op}__"))
    setattr(DeviceArray, f"__r{_op}__", _binary(f"__r{_op}__"))
    setattr(DeviceArray, f"__i{_op}__", _inplace(f"__i{_op}__"))
for _op in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(DeviceArray, f"__{_op}__", _binary(f"__{_op}__"))
for _op in ("neg", "pos", "abs", "invert"):
    setattr(DeviceArray, f"__{_op}__", _unary(f"__{_op}__"))


class _ObjectProxy:
    """Wraps an object (a random Generator) so that the arrays it returns live on the device."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return _wrap(attr)


class _UFunc:
    """A numpy ufunc that takes and returns device arrays (``xp.add``, ``xp.add.at``, ``xp.maximum.reduce``)."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._u = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._u, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._u, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return attr


_HOST_TO_DEVICE = {"asarray", "array", "asanyarray", "ascontiguousarray"}


class _ModuleProxy(types.ModuleType):
    """``numpy`` (or one of its submodules) with every array argument and result on the device."""

    def __init__(self, name: str, target: types.ModuleType) -> None:
        super().__init__(name)
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name == "ndarray":
            return DeviceArray
        attr = getattr(self._target, name)
        if isinstance(attr, types.ModuleType):
            proxy = _ModuleProxy(f"{self.__name__}.{name}", attr)
            setattr(self, name, proxy)
            return proxy
        if isinstance(attr, np.ufunc):
            return _UFunc(attr)
        if callable(attr) and not isinstance(attr, type):
            allow_host = name in _HOST_TO_DEVICE

            def function(*args: Any, **kwargs: Any) -> Any:
                return _call(attr, args, kwargs, allow_host)

            function.__name__ = name
            return function
        return attr  # dtypes (xp.float32), constants (xp.pi, xp.inf), exception classes


xp = _ModuleProxy("minise.testing.xp", np)


@contextlib.contextmanager
def simulated_gpu(name: str = "cuda") -> Iterator[types.ModuleType]:
    """Context manager: the device ``name`` means the strict simulated device inside the block (also
    where a real GPU exists); yields :data:`xp`. On leaving, ``name`` is unbound again (for "cuda":
    CuPy is looked for anew when next asked for)."""
    if name == "cpu":
        raise ValueError("simulated_gpu: 'cpu' is NumPy itself and cannot be rebound; choose another name")
    backend.register_device(name, xp, DeviceArray)
    try:
        yield xp
    finally:
        backend.unregister_device(name)
