"""The fully connected layer: W1 and W2 of the excitation (Eq. 3) and the classifier."""

from __future__ import annotations

from ..autograd import Function, Tensor

__all__ = ["linear"]


class Linear(Function):
    """y = x Wᵀ + b,  x: (N, in), W: (out, in), b: (out,)

    ∂L/∂x = ∂L/∂y W,   ∂L/∂W = (∂L/∂y)ᵀ x,   ∂L/∂b = Σ_n ∂L/∂y[n]
    """

    def forward(self, x, weight, bias):
        if x.ndim != 2:
            raise ValueError(f"linear: expected input of shape (N, in_features), got {tuple(x.shape)}")
        if weight.ndim != 2 or weight.shape[1] != x.shape[1]:
            raise ValueError(
                f"linear: weight of shape (out_features, {x.shape[1]}) expected for input {tuple(x.shape)}, "
                f"got {tuple(weight.shape)}"
            )
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"linear: bias of shape ({weight.shape[0]},) expected, got {tuple(bias.shape)}")
        self.save(x, weight)
        self.has_bias = bias is not None
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def backward(self, gy):
        # BEGIN SOLUTION autograd/linear
        x, weight = self.saved
        gx = gy @ weight if self.needs_input_grad[0] else None
        gw = gy.T @ x if self.needs_input_grad[1] else None
        gb = gy.sum(axis=0) if self.has_bias and self.needs_input_grad[2] else None
        return gx, gw, gb
        # END SOLUTION


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # torch's name
    return Linear()(input, weight, bias)
