"""Tensor and Function: reverse-mode automatic differentiation in one page.

A :class:`Tensor` wraps an array (NumPy or CuPy) and remembers the :class:`Function` that made
it. ``loss.backward()`` walks those Functions from the loss back to the leaves in reverse
topological order (with an explicit stack, so a 110-layer network needs no deep recursion),
calls each one's hand-written ``backward`` and adds up the gradients of tensors that were used
more than once (a residual connection uses its input twice). Once a Function has passed its
gradients on, its saved arrays are dropped, so memory falls as the backward pass proceeds.

Who holds whom: an output Tensor holds its ``creator`` Function, and a Function holds its input
Tensors, but only weak references to its outputs (as in Chainer and DeZero). The graph therefore
has no reference cycles: when the program drops the last tensor of a forward pass it did not
differentiate (an evaluation without ``no_grad``), reference counting frees the whole graph at once,
without waiting for Python's cyclic garbage collector.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy

from . import backend, speed
from .backend import get_array_module

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "as_tensor"]

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def _set_grad(mode: bool) -> Iterator[None]:
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = mode
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager: operations inside it record no graph (evaluation, weight updates)."""
    return _set_grad(False)


def enable_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager: record the graph again inside a ``no_grad`` block."""
    return _set_grad(True)


def _to_array(data: Any, dtype: Any = None, device: str | None = None) -> Any:
    """An array on ``device`` (default: where ``data`` already is; Python data: the default device)."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (int, float, bool, list, tuple, numpy.generic)):
        arr = numpy.asarray(data)
        if dtype is None and arr.dtype.kind == "f" and not isinstance(data, numpy.generic):
            dtype = numpy.float32  # as PyTorch: Python floats become float32
        # a NumPy scalar (e.g. the result of a reduction on the CPU) is host data like a NumPy array: it stays
        # on the CPU; only Python numbers and lists go to the default device
        host = isinstance(data, numpy.generic)
        data = backend.to_device(arr, device or ("cpu" if host else backend.get_default_device()))
    elif device is not None:
        data = backend.to_device(data, device)
    else:
        backend.device_of(data)  # raises TypeError for something that is not an array
    if dtype is not None and data.dtype != dtype:
        data = data.astype(dtype)
    return data


class Tensor:
    """An array with a gradient: ``data`` (the raw NumPy/CuPy array), ``grad`` (a Tensor or None)."""

    __array_priority__ = 1000  # NumPy scalars on the left defer to our operators

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 device: str | None = None) -> None:
        self.data = _to_array(data, dtype, device)
        if self.data.dtype.kind not in "biuf":
            raise TypeError(f"Tensor: values of dtype {self.data.dtype} are not numbers; "
                            "expected bool, integer or floating-point values")
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")
        self.creator: Function | None = None  # the Function whose output this is (None for leaves)
        self._retain_grad = False

    # ------------------------------------------------------------------ description
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = numpy.array2string(self.numpy(), precision=4, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}, device={self.device!r}{grad})"

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> numpy.ndarray:
        """A NumPy copy of the values (copied from the GPU when the tensor lives there)."""
        return numpy.array(backend.to_numpy(self.data), copy=True)

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def to(self, device: str) -> Tensor:
        """The same values on another device ('cpu' or 'cuda'); gradients flow back across."""
        if backend.device_of(self.data) == device.split(":")[0]:
            return self
        from .functional.shape import to_device  # noqa: PLC0415 - functional builds on autograd

        return to_device(self, device)

    def detach(self) -> Tensor:
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def astype(self, dtype: Any) -> Tensor:
        """A copy with another dtype, cut off from the graph (use it on leaves, e.g. float64 for gradcheck)."""
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward (useful to inspect activations)."""
        self._retain_grad = True

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ backpropagation
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf) for every leaf that requires a gradient and add it to ``leaf.grad``.

        ``grad`` is the upstream gradient; it may be left out only for a tensor with one element.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, got shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            get_array_module(self.data, grad)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(): gradient shape {tuple(grad.shape)} != tensor shape {self.shape}")
        if self.creator is None:
            self._accumulate(grad)
            return
        backpropagate([self], [grad], retain_graph=retain_graph)

    def _accumulate(self, g: Any) -> None:
        # gradient arrays may be shared between tensors (x + y hands both the same array):
        # never modify a .grad in place
        if self.grad is None:
            self.grad = Tensor(g)
        else:
            self.grad = Tensor(self.grad.data + g)

    # ------------------------------------------------------------------ operators
    # The arithmetic Functions live in minise.functional.arith (which is built on this file).
    def __add__(self, other: Any) -> Tensor:
        return _arith().add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _arith().add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _arith().sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _arith().sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _arith().mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _arith().mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _arith().div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _arith().div(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _arith().matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _arith().matmul(other, self)

    def __neg__(self) -> Tensor:
        return _arith().neg(self)

    def __pow__(self, exponent: float) -> Tensor:
        return _arith().pow(self, exponent)

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return _arith().sum(self, axis, keepdims)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return _arith().mean(self, axis, keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        from .functional.shape import reshape  # noqa: PLC0415

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def __getitem__(self, index: Any) -> Tensor:
        from .functional.shape import getitem  # noqa: PLC0415

        return getitem(self, index)


def _arith() -> Any:
    from .functional import arith  # noqa: PLC0415 - functional builds on autograd

    return arith


_KIND_RANK = {"b": 0, "i": 1, "u": 1, "f": 2}  # bool < integer < floating, PyTorch's dtype categories


def _scalar_rank(x: Any) -> int:
    if isinstance(x, (bool, numpy.bool_)):
        return 0
    return 1 if isinstance(x, (int, numpy.integer)) else 2


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor; a Python number goes to the device of ``like`` and takes its dtype, as in PyTorch:
    unless the number is of a higher kind (a float with an integer tensor: float32; an int with a bool one: int64)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float, bool, numpy.bool_, numpy.integer, numpy.floating)):
        xp = get_array_module(like.data)
        rank = _scalar_rank(x)
        if rank <= _KIND_RANK.get(like.dtype.kind, 2):
            dtype = like.dtype
        else:
            dtype = numpy.float32 if rank == 2 else numpy.int64
        return Tensor(xp.asarray(x, dtype=dtype))
    return Tensor(x)


class Function:
    """One differentiable operation: ``forward`` and ``backward`` on raw arrays, side by side.

    A subclass takes its settings (stride, padding, ...) in ``__init__`` and implements

    - ``forward(*arrays)`` -> an array (or a tuple of arrays); call ``self.save(...)`` with
      only what ``backward`` will need;
    - ``backward(*grads)`` -> one gradient per input, in order (``None`` where the input needs
      none; ``self.needs_input_grad[i]`` says which are wanted, so work can be skipped).

    Calling the Function on Tensors (or arrays, or ``None`` for an absent optional input) runs
    ``forward`` and, when gradients are being recorded, links the outputs into the graph: each
    output's ``creator`` is this Function, which keeps its ``inputs`` and weak references to its
    outputs (read them through :attr:`outputs`).
    """

    keeps_integers: bool = False
    """Integer and bool inputs (the rule of PyTorch's type promotion, decided here for every op): with a
    floating input beside them they take its dtype; alone, they become float32 (PyTorch's default dtype),
    unless the op is closed over the integers (+, −, ×, Σ, matmul, shape ops): those set this to True."""
    index_inputs: tuple[int, ...] = ()
    """Positions of inputs that hold indices or class labels: never converted (the op checks them)."""
    needs_input_grad: tuple[bool, ...] = ()
    saved: tuple[Any, ...] = ()
    _output_refs: tuple[weakref.ref, ...] = ()
    _output_like: tuple[tuple[Any, tuple[int, ...], Any], ...] = ()  # (array module, shape, dtype) per output

    def __call__(self, *inputs: Any) -> Any:
        tensors = [x if (x is None or isinstance(x, Tensor)) else Tensor(x) for x in inputs]
        arrays = [None if t is None else t.data for t in tensors]
        _check_inputs(type(self).__name__, arrays)
        arrays = _promote(self, arrays)
        record = _grad_enabled and any(t is not None and t.requires_grad for t in tensors)
        self.needs_input_grad = tuple(bool(record and t is not None and t.requires_grad) for t in tensors)
        self._recording = record
        result = self.forward(*arrays)
        single = not isinstance(result, tuple)
        outs = [Tensor(r, requires_grad=record) for r in ((result,) if single else result)]
        if record:
            self.inputs = tensors
            # weak references only: an output holds its creator, so strong ones would make a cycle
            self._output_refs = tuple(weakref.ref(o) for o in outs)
            self._output_like = tuple((get_array_module(o.data), o.shape, o.dtype) for o in outs)
            for o in outs:
                o.creator = self
        else:
            self.saved = ()
        return outs[0] if single else tuple(outs)

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        """The output Tensors, in order. One that the program no longer holds cannot have been sent a
        gradient: it comes back as a stand-in of zeros with its shape and dtype (a broadcast view, no memory)."""
        outs = []
        for ref, (xp, shape, dtype) in zip(self._output_refs, self._output_like):
            o = ref()
            outs.append(o if o is not None else Tensor(xp.broadcast_to(xp.zeros((), dtype=dtype), shape)))
        return tuple(outs)

    def save(self, *arrays: Any) -> None:
        """Keep arrays for ``backward`` (ignored when no graph is being recorded)."""
        if self._recording:
            self.saved = arrays

    def forward(self, *arrays: Any) -> Any:
        raise NotImplementedError

    def backward(self, *grads: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _check_inputs(name: str, arrays: Sequence[Any]) -> None:
    """One device for all inputs, and no silent mixing of float32 with float64."""
    present = [a for a in arrays if a is not None]
    get_array_module(*present)  # raises DeviceError for two devices
    float_dtypes = {a.dtype for a in present if a.dtype.kind == "f"}
    if len(float_dtypes) > 1:
        names = ", ".join(sorted(str(d) for d in float_dtypes))
        raise TypeError(f"{name}: inputs have different floating dtypes ({names}); convert them explicitly")


def _promote(fn: Function, arrays: list[Any]) -> list[Any]:
    """Integer and bool inputs converted for a floating op (see :attr:`Function.keeps_integers`)."""
    values = [a for i, a in enumerate(arrays) if a is not None and i not in fn.index_inputs]
    if all(a.dtype.kind == "f" for a in values):
        return arrays
    floating = [a.dtype for a in values if a.dtype.kind == "f"]
    if floating:
        target = floating[0]
    elif fn.keeps_integers:
        return arrays
    else:
        target = numpy.dtype(numpy.float32)
    return [a if a is None or i in fn.index_inputs or a.dtype == target else a.astype(target)
            for i, a in enumerate(arrays)]


def _topological_order(roots: Sequence[Tensor]) -> list[Function]:
    """Functions reachable from ``roots``, each after every Function that consumes its outputs."""
    # BEGIN SOLUTION autograd/topological_order
    order: list[Function] = []
    visited: set[int] = set()
    stack: list[tuple[Function, bool]] = [(r.creator, False) for r in roots if r.creator is not None]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        if getattr(fn, "inputs", None) is None:
            raise RuntimeError(
                "backward() through a graph that was already freed; "
                "call backward(retain_graph=True) the first time to go through it twice"
            )
        visited.add(id(fn))
        stack.append((fn, True))
        for t in fn.inputs:
            if t is not None and t.creator is not None and id(t.creator) not in visited:
                stack.append((t.creator, False))
    order.reverse()  # post-order reversed: consumers before producers
    return order
    # END SOLUTION


def backpropagate(roots: Sequence[Tensor], grads: Sequence[Any], retain_graph: bool = False) -> None:
    """Reverse-mode sweep from ``roots`` (with upstream ``grads``) to the leaves.

    A Function holds its outputs only weakly: a tensor that is on its way to its creator with a
    gradient must be kept alive here until that creator is reached (else, once the consumers that
    held it are freed, its creator could no longer find it among its ``outputs``).
    """
    # BEGIN SOLUTION autograd/backpropagate
    pending: dict[int, Any] = {}  # id(tensor) -> gradient summed so far
    waiting: dict[int, Tensor] = {}  # id(tensor) -> the tensor, kept alive while its gradient waits

    def add(t: Tensor, g: Any) -> None:
        key = id(t)
        pending[key] = g if key not in pending else speed.add(pending[key], g)  # + (threaded when large)
        waiting[key] = t

    for r, g in zip(roots, grads):
        add(r, g)
    for fn in _topological_order(roots):
        xp = None
        gys = []
        for o in fn.outputs:
            g = pending.pop(id(o), None)
            waiting.pop(id(o), None)
            if o._retain_grad and g is not None:
                o._accumulate(g)
            if g is None:
                xp = xp or get_array_module(o.data)
                g = xp.zeros_like(o.data)
            gys.append(g)
        gxs = fn.backward(*gys)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        if len(gxs) != len(fn.inputs):
            raise RuntimeError(
                f"{type(fn).__name__}.backward returned {len(gxs)} gradients for {len(fn.inputs)} inputs"
            )
        for t, g, wanted in zip(fn.inputs, gxs, fn.needs_input_grad):
            if not wanted or g is None:
                continue
            if tuple(g.shape) != t.shape:
                raise RuntimeError(
                    f"{type(fn).__name__}.backward returned a gradient of shape {tuple(g.shape)} "
                    f"for an input of shape {t.shape}"
                )
            if t.creator is None:
                t._accumulate(g)
            else:
                add(t, g)
        if not retain_graph:
            fn.saved = ()
            fn.inputs = None
    # END SOLUTION
