"""Array plumbing: which namespace an array belongs to, dtype names, and the host boundary.

Numerical modules get their namespace here (:func:`namespace_of`, resolved once per array type)
and never import the module that chooses backends; what differs between libraries is asked of
the array's adapter (:func:`portnet.backends.of`). :func:`to_numpy` / :func:`from_numpy` are the
only crossings between host and device.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from . import backends
from .errors import ArrayTypeError

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
                raise ArrayTypeError(
                    f"expected an array (NumPy, CuPy, PyTorch, JAX or array-api-strict), got "
                    f"{t.__name__}; convert it with portnet.asarray(...)"
                )
            found = array_api_compat.array_namespace(x)
            if not is_tracer(x):
                _NAMESPACE_BY_TYPE[t] = found
        if xp is None:
            xp = found
        elif found is not xp:
            raise ArrayTypeError(
                f"arrays from different libraries: {library_name(xp)} and {library_name(found)}; put them on one "
                f"backend with portnet.asarray(...)"
            )
    return xp


def library_name(xp) -> str:
    """'numpy', 'torch', 'cupy', 'jax' or 'array_api_strict' for a namespace of that library:
    read off its name, with no cache a compiler tracing this (torch.compile) would guard on."""
    return xp.__name__.removeprefix("array_api_compat.").split(".", 1)[0]


def is_tracer(x) -> bool:
    """True for a value that stands for an array inside a trace (JAX's jit)."""
    return is_array(x) and backends.of(x).is_tracer(x)


def is_array(x) -> bool:
    """True for an array of any supported library (not for lists or Python scalars)."""
    return array_api_compat.is_array_api_obj(x)


def writeable(x) -> bool:
    """True when ``x`` can be changed in place (NumPy, CuPy, PyTorch, array-api-strict; not JAX)."""
    return array_api_compat.is_writeable_array(x)


def dtype_name(dtype) -> str:
    """'float32' for any library's float32 dtype object."""
    return str(dtype).rsplit(".", 1)[-1].strip("'>").removeprefix("dtype(").strip("')")


def to_numpy(x) -> np.ndarray:
    """Any backend's array (or a NumPy array) back on the host as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    return backends.of(x).to_numpy(x)


def host_namespace():
    """The array-API namespace of host data (NumPy's, through array-api-compat)."""
    return array_api_compat.array_namespace(np.empty(0))


def from_numpy(a: np.ndarray, xp, device, copy=None):
    """Transfer a host array onto ``device`` of namespace ``xp``; ``copy=True`` never shares memory."""
    return xp.asarray(a, device=device, copy=copy)


def book_star_numpy(module: str):
    """A module ``__getattr__`` giving ``np`` lazily: the book's ``from common.functions import *``
    (and ``layers``, ``optimizer``) handed its scripts NumPy as ``np``, and several rely on it.
    portnet's own code never uses it."""

    def __getattr__(name):
        if name == "np":
            import numpy

            return numpy
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
