"""minise: Squeeze-and-Excitation Networks (Hu, Shen, Sun, CVPR 2018) in NumPy, every number visible.

    import minise
    import minise.functional as F

    x = minise.Tensor(data, requires_grad=True)
    loss = F.cross_entropy(model(x), target)
    loss.backward()
"""

from . import functional
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad
from .backend import DeviceError, get_array_module, get_default_device, set_default_device
from .gradcheck import GradcheckError, gradcheck, gradcheck_directional

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled",
    "get_array_module", "set_default_device", "get_default_device", "DeviceError",
    "gradcheck", "gradcheck_directional", "GradcheckError", "functional",
]
