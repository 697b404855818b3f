"""Half precision (ch. 8.3.4): float16 and bfloat16 for inference and evaluation.

The book's ``half_float_network.py`` shows that a trained network keeps its accuracy when its
values are rounded to float16. portnet computes in half precision end to end where the library has
the dtype (:data:`portnet.backend.DTYPES`), with the sums that need range or digits done in float32
(:func:`accumulator`): the softmax's denominator and the cross-entropy's mean, and the matmuls on
the CPU (:func:`portnet.delegation.matmul`). Host data reach a half dtype NumPy lacks (bfloat16)
through float32, cast on the device (:func:`to_device`); the arrays of a saved state go back the
same way (:func:`host_copy`, :func:`host_like`).
"""

from __future__ import annotations

import array_api_compat

from .arrays import dtype_name, from_numpy, is_array, namespace_of, to_numpy
from .errors import CheckpointError

#: The half-precision dtypes, by name.
HALF = ("float16", "bfloat16")
#: The float dtypes NumPy has: host arrays are cast to these before they travel.
_HOST = ("float16", "float32", "float64")


def is_half(dtype) -> bool:
    """True for float16 and bfloat16 of any library."""
    return dtype_name(dtype) in HALF


def accumulator(xp, dtype):
    """The dtype sums of ``dtype`` values are done in: float32 for half precision, else ``dtype``."""
    return xp.float32 if is_half(dtype) else dtype


def to_device(a, xp, device, dtype):
    """Host array ``a`` as ``dtype`` (any library's, or a name) on ``device`` of namespace ``xp``:
    cast on the host where NumPy has the dtype, else sent as float32 and cast there (bfloat16)."""
    name = dtype_name(dtype)
    if name in _HOST:
        return from_numpy(a.astype(name), xp, device)
    return xp.astype(from_numpy(a.astype("float32"), xp, device), getattr(xp, name))


def host_copy(x):
    """A host copy of ``x`` (an array of any library, or a Python number, kept): what a state
    dict holds, unchanged by later in-place updates."""
    return to_numpy(namespace_of(x).asarray(x, copy=True)) if is_array(x) else x


def host_like(a, like, what="the value"):
    """Host array ``a`` made like ``like`` (its namespace, device and dtype; a Python number
    stays one), after checking its shape."""
    if not is_array(like):
        return float(a)
    if tuple(a.shape) != tuple(like.shape):
        raise CheckpointError(f"{what} has shape {tuple(a.shape)}, expected {tuple(like.shape)}")
    xp = namespace_of(like)
    return to_device(a, xp, array_api_compat.device(like), like.dtype)
