"""Backend selection: which array library portnet creates arrays with, and on which device.

This is the one boundary module that knows the libraries by name. Everything numerical
elsewhere follows its inputs: the namespace comes from :func:`namespace_of` (resolved once per
array type) and the device from ``array_api_compat.device``. The active backend matters only
where arrays are *created* without an input array: :func:`asarray`, initial weights, datasets.

The choice comes from ``PORTNET_BACKEND`` / ``PORTNET_DEVICE`` / ``PORTNET_DTYPE`` (read on first
use, never at import) or from :func:`set_backend` / :func:`use_backend`. Nothing falls back
silently: an unknown name, a missing library or a missing GPU is an error that says what to do.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
DTYPES = ("float32", "float64")

_INSTALL_HINT = {
    "cupy": "pip install 'portnet[cuda12]' (CUDA 12) or 'portnet[cuda13]' (CUDA 13)",
    "torch": "pip install 'portnet[torch]'",
    "jax": "pip install 'portnet[jax]'",
    "array_api_strict": "pip install array-api-strict (or 'portnet[test]')",
}


class BackendUnavailableError(RuntimeError):
    """The requested backend's library is missing, or its device is not visible."""


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
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def _resolve_device(name: str, lib, device):
    """Map a user's device spec (None, a string, an index, a device object) to the library's."""
    spec = None if device is None or device == "" else device
    if name == "numpy":
        if spec not in (None, "cpu"):
            raise ValueError(f"backend 'numpy' runs on 'cpu' only, not on device {spec!r}")
        return "cpu"
    if name == "array_api_strict":
        if spec is None:
            return lib.Device()
        if isinstance(spec, lib.Device):
            return spec
        try:
            return lib.Device(str(spec))
        except ValueError:
            raise ValueError(
                f"unknown array_api_strict device {spec!r}; expected 'CPU_DEVICE', 'device1' or 'device2'"
            ) from None
    if name == "torch":
        try:
            dev = lib.device(spec if spec is not None else "cpu")
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown torch device {spec!r}; expected e.g. 'cpu', 'cuda', 'cuda:1'") from None
        if dev.type == "cuda":
            count = lib.cuda.device_count() if lib.cuda.is_available() else 0
            if (dev.index or 0) >= count:
                raise BackendUnavailableError(
                    f"torch device {str(dev)!r} is not visible: {count} CUDA device(s) found "
                    f"(torch {lib.__version__}, CUDA build: {lib.version.cuda or 'no'})"
                )
        return dev
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
            raise ValueError(f"unknown CuPy device {spec!r}; expected a GPU index such as 0 or 'cuda:1'")
    try:
        count = lib.cuda.runtime.getDeviceCount()
        dev = index if isinstance(index, lib.cuda.Device) else lib.cuda.Device(int(index))
        with dev:  # a probe allocation: a driver or device problem shows up here, not later
            lib.zeros(1, dtype=lib.float32).sum().item()
    except Exception as exc:  # CUDARuntimeError, missing libcudart, ...
        raise BackendUnavailableError(
            f"backend 'cupy' needs a visible CUDA device, but device {index!r} is not usable: {exc}"
        ) from None
    if dev.id >= count:
        raise BackendUnavailableError(f"CuPy device {dev.id} is not visible: {count} CUDA device(s) found")
    return dev


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
            raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        return getattr(xp, dtype)
    if dtype not in (xp.float32, xp.float64):
        name = getattr(dtype, "__name__", dtype)
        raise ValueError(f"unsupported dtype {name!r}; expected float32 or float64 of {xp.__name__}")
    return dtype


def dtype_name(dtype) -> str:
    """'float32' for any library's float32 dtype object."""
    return str(dtype).rsplit(".", 1)[-1].strip("'>").removeprefix("dtype(").strip("')")


def make_backend(name: str, device=None, dtype=None) -> Backend:
    """Resolve and validate a backend without activating it."""
    lib = _import(_check_name(name))
    xp = _namespace_for(name, lib)
    return Backend(name, xp, _resolve_device(name, lib, device), resolve_dtype(xp, dtype))


def _from_environment() -> Backend:
    name = os.environ.get("PORTNET_BACKEND") or "numpy"
    try:
        _check_name(name)
    except ValueError:
        raise ValueError(
            f"PORTNET_BACKEND={name!r} is not a backend; expected one of {', '.join(BACKENDS)}"
        ) from None
    return make_backend(name, os.environ.get("PORTNET_DEVICE") or None)


# --------------------------------------------------------------------------- public API
def active() -> Backend:
    """The active backend (read from the environment on first use)."""
    global _active
    if _active is None:
        _active = _from_environment()
    return _active


def set_backend(name: str, device=None, dtype=None) -> Backend:
    """Make ``name`` the active backend, on ``device`` (default: the backend's default)."""
    global _active
    _active = make_backend(name, device, dtype)
    return _active


@contextlib.contextmanager
def use_backend(name: str, device=None, dtype=None):
    """Context manager: ``with use_backend('torch', 'cuda'): ...`` then restore the previous one."""
    global _active
    previous = _active
    _active = make_backend(name, device, dtype)
    try:
        yield _active
    finally:
        _active = previous


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


_NAMESPACE_BY_TYPE: dict[type, Any] = {}


def namespace_of(*arrays):
    """The array-API namespace shared by ``arrays``, cached per array type.

    ``array_api_compat.array_namespace`` costs microseconds a call; a training step asks dozens of
    times, always with the same types, so the answer is remembered per type.
    """
    xp = None
    for x in arrays:
        t = type(x)
        found = _NAMESPACE_BY_TYPE.get(t)
        if found is None:
            if not array_api_compat.is_array_api_obj(x):  # lists and Python scalars are not
                raise TypeError(
                    f"expected an array (NumPy, CuPy, PyTorch, JAX or array-api-strict), got "
                    f"{t.__name__}; convert it with portnet.asarray(...)"
                )
            found = array_api_compat.array_namespace(x)
            if not _is_tracer(t):
                _NAMESPACE_BY_TYPE[t] = found
        if xp is None:
            xp = found
        elif found is not xp:
            raise TypeError(f"arrays from different libraries: {xp.__name__} and {found.__name__}")
    return xp


def _is_tracer(t: type) -> bool:
    return "jax" in t.__module__ and "Tracer" in t.__name__


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


def to_numpy(x) -> np.ndarray:
    """Any backend's array (or a NumPy array) back on the host as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_array_api_strict_namespace(namespace_of(x)):
        import array_api_strict

        x = x.to_device(array_api_strict.Device())
    return np.asarray(x)


def from_numpy(a: np.ndarray, xp, device, copy=None):
    """Transfer a host array onto ``device`` of namespace ``xp``; ``copy=True`` never shares memory."""
    return xp.asarray(a, device=device, copy=copy)


# --------------------------------------------------------------------------- randomness
def host_rng(seed=None) -> np.random.Generator:
    """A seeded NumPy generator: initial weights are drawn on the host, then transferred once."""
    return np.random.default_rng(seed)


def random_normal(rng: np.random.Generator, shape, scale, xp, device, dtype):
    """``scale`` times standard normal draws (float64 on the host), as ``dtype`` on ``device``.

    The same generator state gives the same numbers on every backend.
    """
    draws = scale * rng.standard_normal(shape)
    return from_numpy(draws.astype(dtype_name(dtype)), xp, device)


class Random:
    """Random numbers made where the data lives.

    ``source='native'`` uses the backend's own generator (CuPy, PyTorch, JAX; NumPy's on the CPU), so
    nothing crosses between host and device. ``source='host'`` draws with NumPy and transfers: the
    same draws on every backend, for parity tests. array-api-strict has no generator: host always.
    """

    def __init__(self, xp, device, seed=None, source="native"):
        if source not in ("native", "host"):
            raise ValueError(f"unknown random source {source!r}; expected 'native' or 'host'")
        self.xp, self.device = xp, device
        seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        self._host = np.random.default_rng(seed)
        self._kind = "host"
        if source == "native":
            if array_api_compat.is_numpy_namespace(xp):
                self._kind = "numpy"
            elif array_api_compat.is_torch_namespace(xp):
                import torch

                self._kind = "torch"
                self._gen = torch.Generator(device=device).manual_seed(seed)
            elif array_api_compat.is_cupy_namespace(xp):
                import cupy

                self._kind = "cupy"
                with device:
                    self._gen = cupy.random.RandomState(seed)
            elif array_api_compat.is_jax_namespace(xp):
                import jax

                self._kind = "jax"
                self._key = jax.random.key(seed)

    def uniform(self, shape, dtype):
        """Uniform draws in [0, 1) of ``shape`` and float ``dtype``, on the device."""
        shape = tuple(shape)
        if self._kind == "torch":
            import torch

            return torch.rand(shape, generator=self._gen, device=self.device, dtype=dtype)
        if self._kind == "cupy":
            with self.device:
                return self._gen.random_sample(shape, dtype=dtype)
        if self._kind == "jax":
            import jax

            self._key, key = jax.random.split(self._key)
            return jax.device_put(jax.random.uniform(key, shape, dtype=dtype), self.device)
        draws = self._host.random(shape, dtype=np.dtype(dtype_name(dtype)))
        return draws if self._kind == "numpy" else from_numpy(draws, self.xp, self.device)

    def permutation(self, n: int):
        """A random permutation of ``range(n)`` as an int64 array on the device."""
        if self._kind == "torch":
            import torch

            return torch.randperm(n, generator=self._gen, device=self.device)
        if self._kind == "cupy":
            with self.device:
                return self._gen.permutation(n)
        if self._kind == "jax":
            import jax

            self._key, key = jax.random.split(self._key)
            return jax.device_put(jax.random.permutation(key, n), self.device)
        perm = self._host.permutation(n)
        return perm if self._kind == "numpy" else from_numpy(perm, self.xp, self.device)
