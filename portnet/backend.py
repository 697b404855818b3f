"""Backend selection: which array library portnet creates arrays with, and on which device.

This is the one module that chooses libraries by name. Everything numerical elsewhere follows its
inputs: the namespace comes from :func:`portnet.arrays.namespace_of` and the device from
``array_api_compat.device``. The active backend matters only where arrays are *created* without
an input array: :func:`asarray`, initial weights, datasets.

The choice comes from ``PORTNET_BACKEND`` / ``PORTNET_DEVICE`` / ``PORTNET_DTYPE`` (read on first
use, never at import) or from :func:`set_backend` / :func:`use_backend`. Nothing falls back
silently: an unknown name, a missing library or a missing GPU is an error that says what to do.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .arrays import dtype_name, from_numpy, namespace_of, to_numpy  # noqa: F401  (public names)
from .errors import BackendUnavailableError, InputError
from .randomness import Random, host_rng, random_normal  # noqa: F401  (public names)
from .threads import fit_threads

BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
#: The backend matrix the tests and benchmarks run: (id, backend, device, on a GPU).
#: array_api_strict's 'device1' catches any array made on the wrong device, without a GPU.
MATRIX = (
    ("numpy", "numpy", None, False),
    ("array_api_strict", "array_api_strict", None, False),
    ("array_api_strict-device1", "array_api_strict", "device1", False),
    ("torch-cpu", "torch", "cpu", False),
    ("torch-cuda", "torch", "cuda", True),
    ("jax", "jax", None, False),
    ("cupy", "cupy", 0, True),
)
DTYPES = ("float32", "float64")

#: Commands that work as written: the libraries are on PyPI; portnet's extras need its source tree.
_CUPY_HINT = "pip install 'cupy-cuda12x[ctk]' (CUDA 12) or 'cupy-cuda13x[ctk]' (CUDA 13)"
_INSTALL_HINT = {
    "cupy": f"{_CUPY_HINT}, or from portnet's source directory pip install '.[cuda12]' / '.[cuda13]'",
    "torch": "pip install torch, or from portnet's source directory pip install '.[torch]'",
    "jax": "pip install jax, or from portnet's source directory pip install '.[jax]'",
    "array_api_strict": "pip install array-api-strict",
}
#: What to say where a GPU backend finds no GPU.
_CPU_BACKENDS = "the CPU backends are numpy, torch (device 'cpu'), jax and array_api_strict"
#: torch device types that hold data portnet can compute with ('meta' holds none).
_TORCH_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


@dataclass(frozen=True)
class Backend:
    """An active choice: the library's name, its array-API namespace, a device, a float dtype."""

    name: str
    xp: Any
    device: Any
    dtype: Any

    def __str__(self) -> str:
        return f"{self.name} on {self.device} ({dtype_name(self.dtype)})"


_active: Backend | None = None


# --------------------------------------------------------------------------- resolution
def _import(name: str):
    module = {"array_api_strict": "array_api_strict"}.get(name, name)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} needs the library {module!r}, which is not installed here "
            f"({exc}); install it with: {_INSTALL_HINT[name]}"
        ) from None


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def _resolve_device(name: str, lib, device):
    """Map a user's device spec (None, a string, an index, a device object) to the library's."""
    spec = None if device is None or device == "" else device
    if name == "numpy":
        if spec not in (None, "cpu"):
            raise InputError(f"backend 'numpy' runs on 'cpu' only, not on device {spec!r}")
        return "cpu"
    if name == "array_api_strict":
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
    if name == "torch":
        try:
            dev = lib.device(spec if spec is not None else "cpu")
        except (RuntimeError, TypeError):
            raise InputError(f"unknown torch device {spec!r}; expected e.g. 'cpu', 'cuda', 'cuda:1'") from None
        if dev.type not in _TORCH_DEVICE_TYPES:
            raise InputError(f"torch device {spec!r} cannot hold data to compute with; expected 'cpu' or 'cuda[:N]'")
        if dev.type == "cuda":
            count = lib.cuda.device_count() if lib.cuda.is_available() else 0
            if (dev.index or 0) >= count:
                raise BackendUnavailableError(
                    f"torch device {str(dev)!r} is not visible: {count} usable NVIDIA GPU(s) found (torch "
                    f"{lib.__version__}, CUDA build: {lib.version.cuda or 'no'}); {_CPU_BACKENDS}"
                )
        try:  # the device its own tensors report: 'cuda' -> 'cuda:0', 'cpu:0' -> 'cpu'
            return lib.empty(0, device=dev).device
        except RuntimeError as exc:
            raise BackendUnavailableError(f"torch device {str(dev)!r} is not usable: {exc}") from None
    if name == "jax":
        if spec is None or not isinstance(spec, (str, int)):
            return spec if spec is not None else lib.devices()[0]
        platform, _, index = str(spec).partition(":")
        if platform.isdigit():
            platform, index = "", platform
        try:
            devices = lib.devices(platform or None)
            return devices[int(index or 0)]
        except (RuntimeError, IndexError, ValueError):
            raise BackendUnavailableError(
                f"jax device {spec!r} is not available; jax sees {lib.devices()}"
            ) from None
    # cupy: an index, "cuda:1", or a cupy.cuda.Device
    index = 0 if spec is None else spec
    if isinstance(index, str):
        index = index.removeprefix("cuda").removeprefix("gpu").lstrip(":") or "0"
        if not index.isdigit():
            raise InputError(f"unknown CuPy device {spec!r}; expected a GPU index such as 0 or 'cuda:1'")
    try:
        count = lib.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver (cudaErrorInsufficientDriver), no libcudart, ...
        raise BackendUnavailableError(
            f"backend 'cupy' needs an NVIDIA GPU, but no usable GPU and driver are visible here "
            f"({type(exc).__name__}: {exc}); {_CPU_BACKENDS}"
        ) from None
    dev = index if isinstance(index, lib.cuda.Device) else lib.cuda.Device(int(index))
    if dev.id >= count:
        raise BackendUnavailableError(f"CuPy device {dev.id} is not visible: {count} usable NVIDIA GPU(s) found; {_CPU_BACKENDS}")
    _probe_cupy(lib, dev)
    return dev


def _probe_cupy(lib, dev) -> None:
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
            f"the CUDA libraries (cuBLAS, cuRAND, NVRTC): {_CUPY_HINT}"
        ) from None


def _namespace_for(name: str, lib):
    if name == "jax":
        # float64 must stay float64: portnet promises the book's digits on every backend.
        lib.config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy")
    if name == "array_api_strict":
        return lib
    return importlib.import_module(f"array_api_compat.{name}")


def resolve_dtype(xp, dtype):
    """A dtype of namespace ``xp`` from a name ('float32', 'float64') or a dtype object."""
    if dtype is None:
        dtype = os.environ.get("PORTNET_DTYPE") or "float32"
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        return getattr(xp, dtype)
    if dtype not in (xp.float32, xp.float64):
        name = getattr(dtype, "__name__", dtype)
        raise InputError(f"unsupported dtype {name!r}; expected float32 or float64 of {xp.__name__}")
    return dtype


def make_backend(name: str, device=None, dtype=None) -> Backend:
    """Resolve and validate a backend without activating it."""
    lib = _import(_check_name(name))
    device = _resolve_device(name, lib, device)  # first: a missing GPU is the error to report
    xp = _namespace_for(name, lib)
    return Backend(name, xp, device, resolve_dtype(xp, dtype))


def _from_environment() -> Backend:
    name = os.environ.get("PORTNET_BACKEND") or "numpy"
    try:
        _check_name(name)
    except ValueError:
        raise InputError(
            f"PORTNET_BACKEND={name!r} is not a backend; expected one of {', '.join(BACKENDS)}"
        ) from None
    return make_backend(name, os.environ.get("PORTNET_DEVICE") or None)


# --------------------------------------------------------------------------- public API
def active() -> Backend:
    """The active backend (read from the environment on first use)."""
    global _active
    if _active is None:
        _active = _from_environment()
        _make_current(_active)
    return _active


def set_backend(name: str, device=None, dtype=None) -> Backend:
    """Make ``name`` the active backend, on ``device`` (default: the backend's default)."""
    global _active
    _active = make_backend(name, device, dtype)
    _make_current(_active)
    return _active


@contextlib.contextmanager
def use_backend(name: str, device=None, dtype=None):
    """Context manager: ``with use_backend('torch', 'cuda'): ...`` then restore the previous one."""
    global _active
    previous, previous_gpu = _active, _current_cupy_device()
    _active = make_backend(name, device, dtype)
    _make_current(_active)
    try:
        yield _active
    finally:
        _active = previous
        if previous_gpu is not None:
            previous_gpu.use()


def _make_current(b: Backend) -> None:
    """CuPy creates arrays and runs kernels on its *current* device (array-api-compat honours
    ``device=`` only in ``asarray``): make the backend's device current. On the CPU, fit the
    library's thread pools to the cores free now (:func:`portnet.threads.fit_threads`)."""
    if b.name == "cupy":
        b.device.use()
    elif b.name in ("numpy", "array_api_strict") or (b.name == "torch" and b.device.type == "cpu"):
        fit_threads("numpy" if b.name == "array_api_strict" else b.name)


def _current_cupy_device():
    cupy = sys.modules.get("cupy")  # not imported: nothing to restore
    if cupy is None:
        return None
    try:
        return cupy.cuda.Device()
    except Exception:  # CuPy without a usable GPU
        return None


def get_namespace():
    """The array-API namespace of the active backend."""
    return active().xp


def backend_info() -> dict:
    """What is active: backend, namespace, device, default dtype and library versions."""
    b = active()
    versions = {"numpy": np.__version__, "array_api_compat": array_api_compat.__version__}
    if b.name != "numpy":
        versions[b.name] = getattr(importlib.import_module(b.name), "__version__", "unknown")
    return {
        "backend": b.name,
        "namespace": b.xp.__name__,
        "device": str(b.device),
        "dtype": dtype_name(b.dtype),
        "versions": versions,
    }


def available_backends() -> dict:
    """Each backend's status on this machine: its device list, or why it cannot run."""
    status = {}
    for name in BACKENDS:
        try:
            b = make_backend(name)
        except (BackendUnavailableError, ValueError) as exc:
            status[name] = f"unavailable: {exc}"
            continue
        version = getattr(importlib.import_module(name), "__version__", "?")
        status[name] = f"{version}, default device {b.device}"
    return status


def asarray(obj, dtype=None, *, copy=None):
    """``obj`` (a list, a scalar, any library's array) as an array of the active backend on its device.

    With ``dtype=None`` the values keep the dtype NumPy would give them (Python floats: float64).
    """
    b = active()
    if isinstance(dtype, str):
        dtype = resolve_dtype(b.xp, dtype)
    if array_api_compat.is_array_api_obj(obj):
        if namespace_of(obj) is b.xp and array_api_compat.device(obj) == b.device:
            return b.xp.asarray(obj, dtype=dtype, copy=copy)
        obj = to_numpy(obj)  # another library or device: through the host, once
    return b.xp.asarray(np.asarray(obj), dtype=dtype, device=b.device, copy=copy)


