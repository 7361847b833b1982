"""Count a network: each layer's output shape, parameters and multiply-accumulates (MACs).

The paper's "GFLOPs" are multiply-adds (MACs). Counted here, per image batch of the given shape:

- convolution: N·H_out·W_out·C_out·(C_in/groups)·kh·kw;   linear: N·in·out;
- the SE block's own work, as the paper counts it: one add per element of u for the squeeze
  (Eq. 2) and one multiply per element for the scale (Eq. 4); its W1 and W2 count as layers;
- average pooling: one add per input element in each window.

Batch norm (which folds into the preceding convolution at inference), activations, max pooling
and the residual additions are not counted. With these rules SE-ResNet-50 at 224×224 (stride on
the first 1×1 conv, as in the paper) comes to 3.87 G, ResNet-50 to 3.86 G.

No convolution is computed: every layer that knows its output shape (``output_shape``) hands on
zeros of that shape, and only the glue inside blocks (additions, concatenations, the SE's
pooling and scaling) runs, on those zeros. ResNet-152 at 224×224 is counted in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from .. import backend
from ..autograd import Tensor, no_grad
from ..nn.module import Module

__all__ = ["summary", "Summary", "LayerRow"]


@dataclass
class LayerRow:
    """One call of one module during the traced forward pass."""

    name: str
    type: str
    depth: int
    parent: int | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()
    params: int = 0  # the module's own parameters (counted at its first call only)
    macs: int = 0  # the module's own multiply-accumulates (children excluded)
    is_leaf: bool = True
    subtree_params: int = 0
    subtree_macs: int = 0


class Summary:
    """The rows of a traced forward pass and their totals; ``str(summary)`` is the table."""

    def __init__(self, rows: list[LayerRow], total_params: int, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...]) -> None:
        self.rows = rows
        self.total_params = total_params
        self.total_macs = sum(r.macs for r in rows)
        self.input_shape, self.output_shape = input_shape, output_shape

    @property
    def gmacs(self) -> float:
        """Total multiply-accumulates in units of 10⁹ (the paper's "GFLOPs")."""
        return self.total_macs / 1e9

    def macs_by_type(self) -> dict[str, int]:
        """Multiply-accumulates per module type, e.g. {"Conv2d": …, "Linear": …, "SqueezeExcitation": …}."""
        out: dict[str, int] = {}
        for r in self.rows:
            if r.macs:
                out[r.type] = out.get(r.type, 0) + r.macs
        return out

    def params_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            if r.params:
                out[r.type] = out.get(r.type, 0) + r.params
        return out

    def table(self, depth: int | None = None) -> str:
        """The table; ``depth`` folds everything below that many name components into its ancestor's row."""
        lines = []
        header = f"{'layer':<44} {'type':<18} {'output shape':<20} {'params':>12} {'MACs':>15}"
        lines += [header, "-" * len(header)]
        for r in self.rows:
            if r.depth == 0 and depth != 0:
                continue
            if depth is not None and r.depth > depth:
                continue
            folded = depth is not None and r.depth == depth
            if not folded and not r.is_leaf and not r.params and not r.macs:
                continue
            params, macs = (r.subtree_params, r.subtree_macs) if folded else (r.params, r.macs)
            name = "  " * max(r.depth - 1, 0) + (r.name or "(model)")
            shape = "×".join(str(s) for s in r.output_shape)
            lines.append(f"{name:<44} {r.type:<18} {shape:<20} {params:>12,} {macs:>15,}")
        lines.append("-" * len(header))
        lines.append(f"input {tuple(self.input_shape)} -> output {tuple(self.output_shape)}")
        lines.append(f"parameters: {self.total_params:,} ({self.total_params / 1e6:.2f} M)")
        lines.append(f"multiply-accumulates: {self.total_macs:,} ({self.gmacs:.2f} G)")
        parts = ", ".join(f"{k} {v / 1e9:.4f} G" for k, v in self.macs_by_type().items())
        lines.append(f"  by type: {parts}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Summary(params={self.total_params:,}, macs={self.total_macs:,})"


def summary(model: Module, input_shape: tuple[int, ...], dtype: Any = numpy.float32,
            device: str | None = None) -> Summary:
    """Trace ``model`` on an input of ``input_shape`` — (C, H, W) for one image, or (N, C, H, W) —
    and return each layer's output shape, parameters and MACs (see the module docstring).

    The model's train/eval modes and batch-norm statistics are left as they were.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if device is None:
        first = next(model.parameters(), None)
        device = backend.device_of(first.data) if first is not None else backend.get_default_device()
    xp = backend.module_for(device)
    ids = {id(m): n for n, m in model.named_modules()}
    rows: list[LayerRow] = []
    stack: list[int] = []
    counted: set[int] = set()

    def hook(module: Module, args: tuple[Any, ...], forward: Any) -> Any:
        x = args[0]
        name = ids.get(id(module), f"<{type(module).__name__}>")
        own = 0
        for p in module.parameters(recurse=False):
            if id(p) not in counted:
                counted.add(id(p))
                own += p.size
        row = LayerRow(name, type(module).__name__, 0 if name == "" else name.count(".") + 1,
                       stack[-1] if stack else None, tuple(x.shape), params=own)
        rows.append(row)
        if row.parent is not None:
            rows[row.parent].is_leaf = False
        stack.append(len(rows) - 1)
        try:
            if hasattr(module, "output_shape"):
                out = Tensor(xp.zeros(module.output_shape(tuple(x.shape)), dtype=x.dtype))
            else:
                out = forward(*args)
        finally:
            stack.pop()
        row.output_shape = tuple(out.shape)
        if hasattr(module, "macs"):
            row.macs = int(module.macs(row.input_shape, row.output_shape))
        return out

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad(), model.forward_hook(hook):
            out = model(Tensor(xp.zeros(shape, dtype=dtype)))
    finally:
        for m, mode in modes:
            m.training = mode
    for r in rows:
        r.subtree_params, r.subtree_macs = r.params, r.macs
    for r in reversed(rows):
        if r.parent is not None:
            rows[r.parent].subtree_params += r.subtree_params
            rows[r.parent].subtree_macs += r.subtree_macs
    return Summary(rows, model.num_parameters(), shape, tuple(out.shape))

