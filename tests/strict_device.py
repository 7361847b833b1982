"""The strict simulated device now ships in the package: :mod:`minise.testing`.

This file only re-exports it, for copies of the tests folder that still name it; import from
``minise.testing`` instead.
"""

from minise.testing import SYNCS, DeviceArray, simulated_gpu, xp

__all__ = ["SYNCS", "DeviceArray", "simulated_gpu", "xp"]
