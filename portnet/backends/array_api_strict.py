"""array-api-strict: the standard and nothing more, on NumPy; its extra devices ('device1') catch
any array made on the wrong device without a GPU. It has no random generator: draws come from
the host."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import Adapter


class ArrayApiStrict(Adapter):
    name = "array_api_strict"
    install = "pip install array-api-strict"

    def namespace(self, lib):
        return lib

    def resolve_device(self, lib, spec):
        if spec is None:
            return lib.Device()
        if isinstance(spec, lib.Device):
            return spec
        try:
            return lib.Device(str(spec))
        except ValueError:
            raise InputError(
                f"unknown array_api_strict device {spec!r}; expected 'CPU_DEVICE', 'device1' or 'device2'"
            ) from None

    def thread_pool(self, device):
        return "numpy"  # it computes with NumPy

    def to_numpy(self, x):
        return np.asarray(x.to_device(self.load().Device()))


ADAPTER = ArrayApiStrict()
