"""CuPy: NVIDIA GPUs. It creates arrays and runs kernels on its *current* device (array-api-compat
honours ``device=`` only in ``asarray``), so the backend's device is made current while it is
active; a device is probed with what training needs before it is used."""

from __future__ import annotations

from ..errors import BackendUnavailableError, InputError
from . import CPU_BACKENDS, Adapter

_HINT = "pip install 'cupy-cuda12x[ctk]' (CUDA 12) or 'cupy-cuda13x[ctk]' (CUDA 13)"


class CuPy(Adapter):
    name = "cupy"
    native_random = True
    install = f"{_HINT}, or from portnet's source directory pip install '.[cuda12]' / '.[cuda13]'"

    def resolve_device(self, lib, spec):
        index = 0 if spec is None else spec
        if isinstance(index, str):
            index = index.removeprefix("cuda").removeprefix("gpu").lstrip(":") or "0"
            if not index.isdigit():
                raise InputError(
                    f"unknown CuPy device {spec!r}; expected a GPU index such as 0 or 'cuda:1'"
                )
        try:
            count = lib.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver (cudaErrorInsufficientDriver), no libcudart, ...
            raise BackendUnavailableError(
                f"backend 'cupy' needs an NVIDIA GPU, but no usable GPU and driver are visible here "
                f"({type(exc).__name__}: {exc}); {CPU_BACKENDS}"
            ) from None
        dev = index if isinstance(index, lib.cuda.Device) else lib.cuda.Device(int(index))
        if dev.id >= count:
            raise BackendUnavailableError(
                f"CuPy device {dev.id} is not visible: {count} usable NVIDIA GPU(s) found; "
                f"{CPU_BACKENDS}"
            )
        _probe(lib, dev)
        return dev

    def activate(self, device):
        device.use()

    def current_device(self):
        try:
            return self.load().cuda.Device()
        except Exception:  # CuPy without a usable GPU
            return None

    def to_numpy(self, x):
        return x.get()

    def generator(self, seed, device):
        return _CupyGenerator(seed, device)


def _probe(lib, dev) -> None:
    """Run what training needs once: an elementwise kernel (NVRTC), a matmul (cuBLAS), a random
    draw (cuRAND). A wheel without the CUDA libraries passes a bare allocation but fails here."""
    try:
        with dev:
            a = lib.arange(4, dtype=lib.float32).reshape(2, 2)
            b = lib.random.RandomState(0).random_sample((2, 2), dtype=lib.float32)
            float(((a * 2.0 + b) @ a).sum())
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend 'cupy' cannot compute on GPU {dev.id}: {type(exc).__name__}: {exc}. CuPy needs "
            f"the CUDA libraries (cuBLAS, cuRAND, NVRTC): {_HINT}"
        ) from None


class _CupyGenerator:
    """``cupy.random.RandomState`` on the device."""

    def __init__(self, seed, device):
        import cupy

        self.device = device
        with device:
            self.gen = cupy.random.RandomState(seed)

    def uniform(self, shape, dtype):
        with self.device:
            return self.gen.random_sample(shape, dtype=dtype)

    def permutation(self, n):
        with self.device:
            return self.gen.permutation(n)

    def integers(self, low, high, size):
        with self.device:
            return self.gen.randint(low, high, size, dtype="int64")

    def get_state(self):
        """None: ``cupy.random.RandomState`` does not give its state."""
        return None


ADAPTER = CuPy()
