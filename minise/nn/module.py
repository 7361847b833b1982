"""Module and Parameter: the bookkeeping that turns functions into networks with named weights.

A :class:`Module` is a function with state. Its *parameters* are the :class:`Parameter` tensors it
holds as attributes (found by looking, as in PyTorch), its *children* are the Modules it holds,
and its *buffers* are raw arrays that are state but not trained (batch norm's running mean and
variance), registered by name with :meth:`Module.register_buffer`. Names join with dots along
the way down, so a weight in an SE-ResNet-50 is called ``layer1.0.conv1.weight`` exactly as in
torchvision, and ``layer1.0.se.fc1.weight`` exactly as in timm.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy

from .. import backend
from ..autograd import Tensor

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "StateDictError", "IncompatibleKeys", "ForwardHook"]

ForwardHook = Callable[["Module", tuple[Any, ...], Callable[..., Any]], Any]
"""``hook(module, args, forward) -> output``: called instead of ``module(*args)``; ``forward(*args)`` runs the
module's own computation (and returns its output), so a hook may look at the inputs, run the module
(or not), look at or replace the output, and see which calls happen inside which."""


class Parameter(Tensor):
    """A Tensor that a Module trains: ``requires_grad`` is on, and Modules find it among their attributes."""

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None, device: str | None = None) -> None:
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


class StateDictError(KeyError):
    """A state dict that does not fit the model: missing, unexpected or wrongly shaped entries."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer, block and network.

    Subclasses set their Parameters, child Modules and settings as attributes in ``__init__``
    (calling ``super().__init__()`` first) and define ``forward``. Calling the module calls
    ``forward``. Attributes whose names start with an underscore are private and never searched.
    """

    training: bool = True
    _buffer_names: tuple[str, ...] = ()
    _forward_hooks: tuple[ForwardHook, ...] = ()

    def __init__(self) -> None:
        self.training = True
        self._buffer_names = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (list, tuple)) and any(isinstance(v, Module) for v in value):
            raise TypeError(
                f"{type(self).__name__}.{name}: a plain {type(value).__name__} of Modules hides their parameters; "
                "use minise.nn.ModuleList or minise.nn.Sequential"
            )
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any) -> Any:
        if self._forward_hooks:
            return self._call_through(self._forward_hooks, args)
        return self.forward(*args)

    def _call_through(self, hooks: tuple[ForwardHook, ...], args: tuple[Any, ...]) -> Any:
        # the first hook installed is the outermost; the last one calls forward itself
        if not hooks:
            return self.forward(*args)
        return hooks[0](self, args, lambda *a: self._call_through(hooks[1:], a))

    @contextlib.contextmanager
    def forward_hook(self, hook: ForwardHook) -> Iterator[Module]:
        """Context manager: every call of this module, or of a module below it, goes through ``hook``.

        ``hook(module, args, forward)`` is called instead of ``module(*args)`` and returns the output;
        ``forward(*args)`` runs the module as usual (its own children go through the hook in turn)::

            def show(module, args, forward):
                out = forward(*args)
                print(type(module).__name__, args[0].shape, "->", out.shape)
                return out

            with model.forward_hook(show):
                model(x)

        Unlike PyTorch's forward hooks (called after ``forward``, with its output), the hook wraps the
        call, so it can also skip the computation (``minise.models.summary`` hands on zeros of the right
        shape instead of convolving). Hooks nest: the one installed first is the outermost. On leaving
        the block the modules are as before, also after an exception. The modules below this one
        are those it holds on entry.
        """
        if not callable(hook):
            raise TypeError(f"forward_hook: expected a callable hook(module, args, forward), got {type(hook).__name__}")
        before = [(m, m._forward_hooks) for m in self.modules()]
        for m, hooks in before:
            object.__setattr__(m, "_forward_hooks", (*hooks, hook))
        try:
            yield self
        finally:
            for m, hooks in before:
                object.__setattr__(m, "_forward_hooks", hooks)

    # ------------------------------------------------------------------ structure
    def register_buffer(self, name: str, array: Any) -> None:
        """Keep ``array`` (a raw NumPy/CuPy array) as state saved in the state dict but not trained."""
        if isinstance(array, Tensor):
            raise TypeError(f"register_buffer({name!r}): buffers are raw arrays, got a Tensor (pass tensor.data)")
        object.__setattr__(self, name, array)
        if name not in self._buffer_names:
            self._buffer_names = (*self._buffer_names, name)

    def _own(self) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if not name.startswith("_"):
                yield name, value

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in self._own():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named ``prefix``) and every module below it, parents before children."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            kids = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """("layer1.0.conv1.weight", Parameter) pairs, each Parameter once, in PyTorch's order.

        ``recurse=False``: only this module's own parameters (those of its children left out)."""
        seen: set[int] = set()
        for prefix, module in (self.named_modules() if recurse else [("", self)]):
            for name, value in module._own():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{prefix}.{name}" if prefix else name), value

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        for prefix, module in self.named_modules():
            for name in module._buffer_names:
                value = getattr(module, name)
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    def buffers(self) -> Iterator[Any]:
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self) -> int:
        """Σ over parameters of their number of elements (what papers call "params")."""
        return sum(p.size for p in self.parameters())

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for m in self.modules():
            fn(m)
        return self

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> Module:
        """Training mode (batch norm uses batch statistics and updates its running estimates)."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Evaluation mode (batch norm uses its running estimates)."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    # ------------------------------------------------------------------ devices and dtypes
    def _map_arrays(self, fn: Callable[[Any], Any], floating_only: bool) -> Module:
        for module in self.modules():
            for _, value in module._own():
                if isinstance(value, Parameter):
                    value.data = fn(value.data)
                    if value.grad is not None:
                        value.grad = Tensor(fn(value.grad.data))
            for name in module._buffer_names:
                value = getattr(module, name)
                if value is not None and (not floating_only or value.dtype.kind == "f"):
                    object.__setattr__(module, name, fn(value))
        return self

    def to(self, device: str) -> Module:
        """Move every parameter, gradient and buffer to ``device`` ('cpu' or 'cuda'), in place."""
        backend.module_for(device)  # fails with the clear message before anything moves
        return self._map_arrays(lambda a: backend.to_device(a, device), floating_only=False)

    def astype(self, dtype: Any) -> Module:
        """Convert every floating-point parameter and buffer to ``dtype``, in place (integer buffers stay)."""
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"astype: parameters must stay floating point, got {dtype}")
        return self._map_arrays(lambda a: a.astype(dtype, copy=False) if a.dtype.kind == "f" else a,
                                floating_only=True)

    def double(self) -> Module:
        """float64 everywhere (gradient checks, comparisons with PyTorch to ~1e-10)."""
        return self.astype(numpy.float64)

    def float(self) -> Module:
        """float32 everywhere (training)."""
        return self.astype(numpy.float32)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, Any]:
        """Every parameter and buffer by name, as copies of the raw arrays (on their device).

        Unlike PyTorch, the values are copies: a state dict taken now stays as it is while
        training goes on. Per module, parameters come before buffers, parents before children.
        """
        return OrderedDict((key, array.copy()) for key, (_, _, array) in self._state_targets().items())

    def _state_targets(self) -> OrderedDict[str, tuple[Module, str, Any]]:
        """name -> (owning module, attribute, current array) for every entry of the state dict."""
        targets: OrderedDict[str, tuple[Module, str, Any]] = OrderedDict()
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, value in module._own():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    targets[dot + name] = (module, name, value.data)
            for name in module._buffer_names:
                value = getattr(module, name)
                if value is not None:
                    targets[dot + name] = (module, name, value)
        return targets

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters and buffers of the same names, in place.

        Everything is checked before anything changes: with ``strict`` (the default) a missing or
        unexpected name is an error, and a value whose shape differs from the model's is always one;
        the error lists every offending name. Values may be NumPy or CuPy arrays or Tensors; each
        is copied to the device and dtype of the array it replaces.
        """
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        wrong_shape, not_numbers = [], []
        for key, (_, _, current) in targets.items():
            if key in state_dict:
                value = state_dict[key]
                shape = tuple(getattr(value, "shape", ()))
                if shape != tuple(current.shape):
                    wrong_shape.append(f"{key}: model has {tuple(current.shape)}, state dict has {shape}")
                dtype = value.dtype if hasattr(value, "dtype") else numpy.asarray(value).dtype
                if numpy.dtype(dtype).kind not in "biuf":  # e.g. an object array of None: would load NaN
                    not_numbers.append(f"{key}: dtype {dtype}")
        problems = []
        if wrong_shape:
            problems.append("wrong shape:\n    " + "\n    ".join(wrong_shape))
        if not_numbers:
            problems.append("not numbers (expected bool, integer or floating-point values): "
                            + _short_list(not_numbers))
        if strict and missing:
            problems.append(f"missing ({len(missing)}): " + _short_list(missing))
        if strict and unexpected:
            problems.append(f"unexpected ({len(unexpected)}): " + _short_list(unexpected))
        if problems:
            raise StateDictError(
                f"state dict does not fit {type(self).__name__}; nothing was loaded.\n  " + "\n  ".join(problems)
            )
        converted = {}
        for key, (_, _, current) in targets.items():
            if key in state_dict:
                value = state_dict[key]
                value = value.data if isinstance(value, Tensor) else value
                if not hasattr(value, "dtype"):
                    value = numpy.asarray(value)
                value = backend.to_device(value, backend.device_of(current))
                converted[key] = value.astype(current.dtype, copy=False)
        for key, value in converted.items():
            module, name, current = targets[key]
            current[...] = value
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The settings shown between the parentheses of ``repr`` (e.g. channels, stride)."""
        return ""

    def __repr__(self) -> str:
        kids = list(self.named_children())
        extra = self.extra_repr()
        if not kids:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}("] + ([f"  {extra}"] if extra else [])
        for name, m in kids:
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


def _short_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class ModuleList(Module):
    """A list of Modules whose parameters are found (children named "0", "1", ...)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self._n = 0
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        object.__setattr__(self, str(self._n), module)
        self._n += 1
        return self

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Module:
        if not -self._n <= index < self._n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {self._n}")
        return getattr(self, str(index % self._n))

    def __iter__(self) -> Iterator[Module]:
        for i in range(self._n):
            yield getattr(self, str(i))


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x

