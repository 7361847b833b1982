"""Every op of an SE network as a Function with a hand-written forward and backward.

Import as ``import minise.functional as F``. Names and argument order follow
``torch.nn.functional`` where PyTorch has the op.
"""

from .activation import relu, sigmoid, tanh
from .arith import add, div, matmul, mean, mul, neg, pow, sub, sum
from .conv import conv2d, conv2d_reference
from .linear import linear
from .loss import cross_entropy
from .normalization import batch_norm
from .pooling import avg_pool2d, global_avg_pool2d, global_max_pool2d, max_pool2d
from .scale import scale
from .shape import concat, flatten, reshape

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "sum", "mean",
    "reshape", "flatten", "concat",
    "conv2d", "conv2d_reference",
    "max_pool2d", "avg_pool2d", "global_avg_pool2d", "global_max_pool2d",
    "linear", "relu", "sigmoid", "tanh", "scale", "batch_norm", "cross_entropy",
]
