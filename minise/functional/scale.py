"""Channel-wise scaling, the last step of the SE block (Eq. 4)."""

from __future__ import annotations

from .. import speed
from ..autograd import Function, Tensor

__all__ = ["scale"]


class Scale(Function):
    """x̃_c = F_scale(u_c, s_c) = s_c · u_c,  u: (N, C, H, W), s: (N, C)   (Eq. 4)

    ∂L/∂u_c(i, j) = s_c · ∂L/∂x̃_c(i, j),     ∂L/∂s_c = Σ_i Σ_j ∂L/∂x̃_c(i, j) · u_c(i, j)

    On the CPU the work goes to ``minise.fast.scale`` (the same products by einsum, in cache-sized blocks).
    """

    def forward(self, u, s):
        if u.ndim != 4:
            raise ValueError(f"scale: expected u of shape (N, C, H, W), got {tuple(u.shape)}")
        if tuple(s.shape) != tuple(u.shape[:2]):
            raise ValueError(f"scale: expected s of shape {tuple(u.shape[:2])} (N, C) for u {tuple(u.shape)}, "
                             f"got {tuple(s.shape)}")
        self.fast = speed.fast_path("scale", u, s)
        if self.fast is not None:
            return self.fast.forward(self, u, s)
        # BEGIN SOLUTION se/scale_forward
        self.save(u, s)
        return u * s[:, :, None, None]
        # END SOLUTION

    def backward(self, gy):
        if self.fast is not None:
            return self.fast.backward(self, gy)
        # BEGIN SOLUTION se/scale_backward
        u, s = self.saved
        n, c = s.shape
        gu = gy * s[:, :, None, None] if self.needs_input_grad[0] else None
        gs = None
        if self.needs_input_grad[1]:
            # Σ over the H·W positions of each (n, c) plane, as one batched dot product
            gs = (gy.reshape(n, c, 1, -1) @ u.reshape(n, c, -1, 1)).reshape(n, c)
        return gu, gs
        # END SOLUTION


def scale(u: Tensor, s: Tensor) -> Tensor:
    """Multiply every channel c of u (N, C, H, W) by its excitation s_c (N, C): Eq. 4 of the paper."""
    return Scale()(u, s)
