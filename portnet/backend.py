"""Backend selection: which array library portnet creates arrays with, and on which device.

Selecting a backend picks its adapter (:mod:`portnet.backends`), which resolves the device and
gives the namespace. Everything numerical follows its inputs instead: the namespace comes from
:func:`portnet.arrays.namespace_of` and the device from ``array_api_compat.device``. The active
backend matters only where arrays are *created* without an input array: :func:`asarray`, initial
weights, datasets.

The choice comes from ``PORTNET_BACKEND`` / ``PORTNET_DEVICE`` / ``PORTNET_DTYPE`` (read on first
use, never at import) or from :func:`set_backend` / :func:`use_backend`. Nothing falls back
silently: an unknown name, a missing library or a missing GPU is an error that says what to do.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from . import backends as _adapters
from .arrays import dtype_name, from_numpy, namespace_of, to_numpy  # noqa: F401  (public names)
from .errors import BackendUnavailableError, InputError
from .randomness import Random, host_rng, random_normal  # noqa: F401  (public names)
from .threads import fit_threads

BACKENDS = _adapters.NAMES
#: The float dtypes by name: float16 and bfloat16 (half precision, ch. 8.3.4) for inference and
#: evaluation, where the library has them (float16: all but array-api-strict; bfloat16: torch, JAX).
DTYPES = ("float32", "float64", "float16", "bfloat16")


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
def resolve_dtype(xp, dtype):
    """A dtype of namespace ``xp`` from a name (:data:`DTYPES`) or a dtype object; a name the
    library lacks (bfloat16 on NumPy, float16 on array-api-strict) is an error naming it."""
    if dtype is None:
        dtype = os.environ.get("PORTNET_DTYPE") or "float32"
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        if not hasattr(xp, dtype):
            has = [name for name in DTYPES if hasattr(xp, name)]
            raise InputError(
                f"dtype {dtype!r} is not available on {_adapters.of_namespace(xp).name}, which has "
                f"{', '.join(has)} (float16: numpy, torch, jax, cupy; bfloat16: torch, jax)"
            )
        return getattr(xp, dtype)
    known = [getattr(xp, name) for name in DTYPES if hasattr(xp, name)]
    if not any(dtype == d for d in known):
        name = getattr(dtype, "__name__", dtype)
        raise InputError(
            f"unsupported dtype {name!r}; expected one of {', '.join(map(dtype_name, known))} "
            f"of {xp.__name__}"
        )
    return dtype


def make_backend(name: str, device=None, dtype=None) -> Backend:
    """Resolve and validate a backend without activating it."""
    adapter = _adapters.get(name)
    lib = adapter.load()
    spec = None if device is None or device == "" else device
    device = adapter.resolve_device(lib, spec)  # first: a missing GPU is the error to report
    xp = adapter.namespace(lib)
    return Backend(name, xp, device, resolve_dtype(xp, dtype))


def _from_environment() -> Backend:
    name = os.environ.get("PORTNET_BACKEND") or "numpy"
    if name not in BACKENDS:
        raise InputError(
            f"PORTNET_BACKEND={name!r} is not a backend; expected one of {', '.join(BACKENDS)}"
        )
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
    chosen = make_backend(name, device, dtype)
    adapter = _adapters.get(chosen.name)
    previous, previous_device = _active, adapter.current_device()
    _active = chosen
    _make_current(_active)
    try:
        yield _active
    finally:
        _active = previous
        if previous_device is not None:
            adapter.activate(previous_device)


def _make_current(b: Backend) -> None:
    """Make the backend's device where new arrays go (CuPy's current device), and fit the CPU
    thread pool it computes with to the cores free now (:func:`portnet.threads.fit_threads`)."""
    adapter = _adapters.get(b.name)
    adapter.activate(b.device)
    pool = adapter.thread_pool(b.device)
    if pool is not None:
        fit_threads(pool)


def get_namespace():
    """The array-API namespace of the active backend."""
    return active().xp


def backend_info() -> dict:
    """What is active: backend, namespace, device, default dtype and library versions."""
    b = active()
    versions = {"numpy": np.__version__, "array_api_compat": array_api_compat.__version__}
    if b.name != "numpy":
        versions[b.name] = _adapters.get(b.name).version()
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
        status[name] = f"{_adapters.get(name).version()}, default device {b.device}"
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
