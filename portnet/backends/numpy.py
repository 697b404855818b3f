"""NumPy: the CPU; host and device are one, so no transfer is ever made."""

from __future__ import annotations

from ..errors import InputError
from . import Adapter


class NumPy(Adapter):
    name = "numpy"
    install = "pip install numpy"

    def resolve_device(self, lib, spec):
        if spec not in (None, "cpu"):
            raise InputError(f"backend 'numpy' runs on 'cpu' only, not on device {spec!r}")
        return "cpu"

    def thread_pool(self, device):
        return "numpy"


ADAPTER = NumPy()
