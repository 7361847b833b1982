"""Which array module holds the numbers: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op asks the data where it lives::

    xp = get_array_module(x)      # numpy for NumPy arrays, cupy for CuPy arrays
    y = xp.maximum(x, 0)

so the same code runs on both. A device is a name ("cpu" or "cuda") bound to an array
module. Tests bind "cuda" to a strict simulated device (see ``minise.testing``)
to prove that no op reaches for NumPy behind the data's back.

The default device (where new tensors and parameters are made) is "cpu" unless the environment
variable ``MINISE_DEVICE`` names another. It is read when a default device is first needed, not
at import: ``import minise`` and ``minise --version`` work whatever it holds, and a bad value is a
:class:`DeviceError` only for the code that needs the device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy

from .errors import MiniseError

__all__ = [
    "DeviceError",
    "get_array_module",
    "device_of",
    "module_for",
    "to_device",
    "to_numpy",
    "set_default_device",
    "get_default_device",
    "default_device",
    "register_device",
    "synchronize",
    "gpu_available",
    "device_from_environment",
]


class DeviceError(MiniseError, RuntimeError):
    """Raised when a device is asked for but cannot be used, or arrays on two devices meet."""


# device name -> (array module, array type); "cuda" is filled in lazily on first use.
_DEVICES: dict[str, tuple[ModuleType, type]] = {"cpu": (numpy, numpy.ndarray)}
_default_device: str | None = None  # None: not chosen yet (MINISE_DEVICE, else "cpu", on first use)

_CUPY_HINT = (
    'Install CuPy for your CUDA version, for example `pip install "minise[gpu]"` '
    "(or `pip install cupy-cuda12x`), on a machine with an NVIDIA GPU."
)


def _load_cupy() -> tuple[ModuleType, type]:
    try:
        import cupy  # noqa: PLC0415 - optional dependency, imported only when asked for
    except ImportError as exc:
        raise DeviceError(f"device 'cuda' needs CuPy, which is not installed. {_CUPY_HINT}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise DeviceError(f"device 'cuda': CuPy is installed but no usable GPU was found ({exc}).") from exc
    if count < 1:
        raise DeviceError("device 'cuda': CuPy is installed but no GPU was found.")
    return cupy, cupy.ndarray


def register_device(name: str, module: ModuleType, array_type: type) -> None:
    """Bind a device name to an array module (tests use this for the simulated device)."""
    _DEVICES[name] = (module, array_type)


def unregister_device(name: str) -> None:
    """Forget a device binding made by :func:`register_device` ("cpu" stays)."""
    if name != "cpu":
        _DEVICES.pop(name, None)


def _check_name(device: str) -> str:
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.split(":")[0].lower()
    if name not in ("cpu", "cuda") and name not in _DEVICES:
        raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")
    return name


def module_for(device: str) -> ModuleType:
    """The array module of a device name ('cpu' -> numpy, 'cuda' -> cupy)."""
    name = _check_name(device)
    if name not in _DEVICES:
        _DEVICES[name] = _load_cupy()
    return _DEVICES[name][0]


def device_of(array: Any) -> str:
    """The device name an array lives on."""
    for name, (_, array_type) in _DEVICES.items():
        if isinstance(array, array_type):
            return name
    if isinstance(array, (numpy.generic, int, float, bool)):
        return "cpu"
    # a CuPy array met before "cuda" was ever asked for
    if type(array).__module__.startswith("cupy"):
        module_for("cuda")
        return "cuda"
    raise TypeError(f"not an array minise knows: {type(array).__name__}")


def get_array_module(*arrays: Any) -> ModuleType:
    """The array module of the given arrays (numpy or cupy); Python scalars and None are ignored.

    Arrays on two devices are an error, never a silent copy.
    """
    found = None
    found_name = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, bool, numpy.generic)):
            continue
        name = device_of(a)
        if found_name is None:
            found_name, found = name, _DEVICES[name][0]
        elif name != found_name:
            raise DeviceError(
                f"arrays on two devices in one operation: {found_name!r} and {name!r}; "
                "move them with Tensor.to(device) first"
            )
    return found if found is not None else numpy


def to_device(array: Any, device: str) -> Any:
    """Copy an array to a device (a no-op when it is already there)."""
    name = _check_name(device)
    xp = module_for(name)
    if device_of(array) == name:
        return array
    if name == "cpu":
        return to_numpy(array)
    return xp.asarray(to_numpy(array))


def to_numpy(array: Any) -> numpy.ndarray:
    """A NumPy array with the same values (a device-to-host copy for GPU arrays)."""
    if isinstance(array, numpy.ndarray):
        return array
    if hasattr(array, "get"):  # CuPy (and the simulated device) copy to the host with .get()
        return array.get()
    return numpy.asarray(array)


def set_default_device(device: str) -> None:
    """Where new tensors and parameters are created: 'cpu' (NumPy) or 'cuda' (CuPy)."""
    global _default_device
    name = _check_name(device)
    module_for(name)  # fail now, with the clear message, if the device cannot be used
    _default_device = name


def get_default_device() -> str:
    """The device of new tensors: as set, else ``MINISE_DEVICE``, else "cpu" (see the module's notes)."""
    global _default_device
    if _default_device is None:
        _default_device = device_from_environment()
    return _default_device


@contextlib.contextmanager
def default_device(device: str) -> Iterator[str]:
    """Within the block, new tensors and parameters are made on ``device``; the previous default returns after.

    ``minise.train`` runs a whole training in it, so ``--device cpu`` never reaches for the device that
    ``MINISE_DEVICE`` names (one default per process: not for threads that want different devices).
    """
    global _default_device
    name = _check_name(device)
    module_for(name)
    previous = _default_device
    _default_device = name
    try:
        yield name
    finally:
        _default_device = previous


def device_from_environment(fallback: str = "cpu") -> str:
    """The device ``MINISE_DEVICE`` names, checked to be usable; ``fallback`` when it is unset or empty.

    A name minise does not know, or a device that cannot be used here, is a :class:`DeviceError`
    that names the variable.
    """
    env = os.environ.get("MINISE_DEVICE", "").strip()
    if not env:
        return fallback
    try:
        name = _check_name(env)
        module_for(name)
    except (ValueError, DeviceError) as exc:
        raise DeviceError(f"MINISE_DEVICE={env!r}: {exc}") from None
    return name


def synchronize(device: str | None = None) -> None:
    """Wait for the GPU to finish queued work (timing without it measures only the launch)."""
    name = _check_name(device or get_default_device())
    xp = module_for(name)
    cuda = getattr(xp, "cuda", None)
    if cuda is not None and hasattr(cuda, "Device"):
        cuda.Device().synchronize()


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _load_cupy()
    except DeviceError:
        return False
    return True

