"""The book's pickled parameters (``sample_weight.pkl``, its ConvNets' ``params.pkl``), read
without running any of the file's code, and written as the book's ``save_params`` writes them.

A pickle may name only the few NumPy functions that rebuild plain numeric arrays, each guarded,
in any protocol (0-5); its arrays may not claim more than :data:`MAX_ELEMENTS` elements in all,
checked *before* anything is allocated, nor the file take more than :data:`MAX_STEPS` steps.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, UnsafePickleError
from .files import check_writable, read_bounded, write_atomic

#: The most elements a file may hold in all its arrays (4 GB of float64): checked before allocating.
MAX_ELEMENTS = 500_000_000
#: The most opcodes a pickle may run (the book's files take a few hundred): bounds the Python
#: objects a small file could ask for.
MAX_STEPS = 100_000


def _plain(dtype) -> bool:
    """True for bool, integer and float dtypes without fields or sub-arrays."""
    return dtype.kind in "biuf" and dtype.fields is None and dtype.subdtype is None


def _numeric_dtype(value, where) -> np.dtype:
    try:
        dtype = np.dtype(value) if isinstance(value, (str, np.dtype)) else None
    except TypeError:
        dtype = None
    if dtype is None or not _plain(dtype):
        raise UnsafePickleError(f"{where}: dtype {value!r} is not a plain numeric dtype")
    return dtype


def _count(shape, where) -> int:
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise UnsafePickleError(f"{where}: shape {shape!r} is not a tuple of sizes")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise UnsafePickleError(
            f"{where}: an array of shape {shape} ({count:,} elements) exceeds the limit of {MAX_ELEMENTS:,}"
        )
    return count


class _NdarrayType:
    """Stands for ``numpy.ndarray`` inside a pickle: usable only as ``_reconstruct``'s argument."""


def _reconstruct(subtype, shape, typecode):
    """NumPy's first step of unpickling an array: an empty one, whose state comes next."""
    if subtype is not _NdarrayType:
        raise UnsafePickleError(f"refusing to reconstruct {subtype!r}: only numpy.ndarray")
    if shape != (0,):
        raise UnsafePickleError(
            f"_reconstruct: shape {shape!r}; NumPy starts every array empty, as (0,)"
        )
    return np.empty(0, np.int8)


def _dtype(obj, align=False, copy=False):
    return _numeric_dtype(obj, "numpy.dtype")


def _frombuffer(buf, dtype, shape, order):
    dtype = _numeric_dtype(dtype, "_frombuffer")
    count = _count(shape, "_frombuffer")
    data = memoryview(buf).cast("B")
    if data.nbytes != count * dtype.itemsize or order not in ("C", "F"):
        raise UnsafePickleError(
            f"_frombuffer: {data.nbytes} bytes do not hold an array of shape {shape} and {dtype}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


def _encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(
            "_codecs.encode: only the latin1 bytes of protocol 0-2 pickles are accepted"
        )
    return text.encode("latin1")


class _ArrayUnpickler(
    pickle._Unpickler
):  # the Python implementation: its BUILD step can be checked
    """Admits only what a pickled dict of NumPy arrays needs (protocols 0-5), each step guarded."""

    GLOBALS = {
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): _dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("_codecs", "encode"): _encode,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = self.elements = 0

    def find_class(self, module, name):
        try:
            return self.GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: this file asks for code, not just arrays "
                f"(only NumPy arrays in a dict are accepted)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle with persistent references")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.ndarray):
            self._add(_check_array_state(state))
        elif isinstance(inst, np.dtype):
            if not (
                isinstance(state, tuple)
                and len(state) in (8, 9)
                and state[2:7] == (None, None, None, -1, -1)
            ):
                raise UnsafePickleError(
                    "a dtype state with fields or sub-arrays is not a plain numeric dtype"
                )
        else:
            raise UnsafePickleError(f"refusing to set the state of {type(inst).__name__}")
        inst.__setstate__(state)

    def load_reduce(self):
        pickle._Unpickler.load_reduce(self)
        if isinstance(self.stack[-1], np.ndarray):
            self._add(self.stack[-1].size)

    def _add(self, elements):
        """Count an array's elements against :data:`MAX_ELEMENTS` for the whole file."""
        self.elements += elements
        if self.elements > MAX_ELEMENTS:
            raise UnsafePickleError(
                f"its arrays hold more than {MAX_ELEMENTS:,} elements in all, the limit"
            )


def _counted(step):
    def run(unpickler):
        unpickler.steps += 1
        if unpickler.steps > MAX_STEPS:
            raise UnsafePickleError(f"more than {MAX_STEPS:,} steps: not a file of a few arrays")
        step(unpickler)

    return run


_ArrayUnpickler.dispatch = {
    code: _counted(
        {
            pickle.BUILD[0]: _ArrayUnpickler.load_build,
            pickle.REDUCE[0]: _ArrayUnpickler.load_reduce,
        }.get(code, step)
    )
    for code, step in pickle._Unpickler.dispatch.items()
}


def _check_array_state(state):
    if not (isinstance(state, tuple) and len(state) == 5):
        raise UnsafePickleError(
            "an ndarray state that is not (version, shape, dtype, fortran, data)"
        )
    _, shape, dtype, _, data = state
    dtype = _numeric_dtype(dtype, "ndarray")
    count = _count(shape, "ndarray")
    if not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
        raise UnsafePickleError(f"ndarray data do not match shape {shape} and dtype {dtype}")
    return count


def read_pickled_arrays(path) -> dict:
    """A pickled dict of numeric NumPy arrays (the book's parameter files), read without running
    any of the file's code; anything else is :class:`UnsafePickleError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such file" if not path.exists() else f"{path}: not a file"
        )
    data = read_bounded(path, 8 * MAX_ELEMENTS, UnsafePickleError)
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        OverflowError,
        RecursionError,
        UnicodeError,
    ) as exc:
        raise UnsafePickleError(
            f"{path}: not a readable pickle of arrays ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(loaded, dict) or not loaded:
        raise UnsafePickleError(f"{path}: expected a dict of arrays, found {type(loaded).__name__}")
    for key, value in loaded.items():
        if (
            not isinstance(key, str)
            or not isinstance(value, np.ndarray)
            or value.dtype.kind not in "fiu"
        ):
            raise UnsafePickleError(
                f"{path}: entry {key!r} is not a numeric array ({type(value).__name__})"
            )
    return loaded


def write_pickled_arrays(path, arrays: dict, *, overwrite=False) -> Path:
    """Pickle a dict of NumPy arrays as the book's ``save_params`` does (its code reads the file)."""
    path = Path(path)
    check_writable(path, overwrite)
    write_atomic(
        path, lambda f: pickle.dump({k: np.asarray(v) for k, v in arrays.items()}, f, protocol=3)
    )
    return path


def load_book_weights(path) -> dict:
    """The book's pickled weights as a dict of arrays of the active backend (ch. 3.6.2)."""
    from .. import backend

    b = backend.active()
    return {k: b.xp.asarray(v, device=b.device) for k, v in read_pickled_arrays(path).items()}
