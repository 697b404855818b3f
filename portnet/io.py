"""Files: the book's pickled parameters (read safely), portnet's ``.npz`` checkpoints (no pickle),
and atomic writes.

Reading treats every file as possibly hostile: a pickle may name only the few NumPy functions
that rebuild plain numeric arrays, each guarded, and no array (pickled or in an ``.npz``) may
claim more than :data:`MAX_ELEMENTS` elements, checked *before* anything is allocated. Writing
goes through a temporary file in the same directory and a rename: a crash never leaves half a file,
an existing file is replaced only when the caller says so, and new files honour the umask.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import pickle
import re
import stat
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, UnsafePickleError

#: The most elements a file may hold in all its arrays (4 GB of float64): checked before allocating.
MAX_ELEMENTS = 500_000_000
CHECKPOINT_FORMAT = 1
#: Simple numeric dtypes a file may use: bool, (unsigned) integers, floats, either byte order.
_DTYPE_CODE = re.compile(r"^[<>|=]?(b1|i[1248]|u[1248]|f[248])$")


# --------------------------------------------------------------------------- safe unpickling
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
        raise UnsafePickleError(f"{where}: an array of shape {shape} ({count:,} elements) exceeds the limit of {MAX_ELEMENTS:,}")
    return count


class _NdarrayType:
    """Stands for ``numpy.ndarray`` inside a pickle: usable only as ``_reconstruct``'s argument."""


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NdarrayType:
        raise UnsafePickleError(f"refusing to reconstruct {subtype!r}: only numpy.ndarray")
    _count(shape, "_reconstruct")
    return np.ndarray.__new__(np.ndarray, shape, np.dtype(typecode if isinstance(typecode, str) else "b"))


def _dtype(obj, align=False, copy=False):
    return _numeric_dtype(obj, "numpy.dtype")


def _frombuffer(buf, dtype, shape, order):
    dtype = _numeric_dtype(dtype, "_frombuffer")
    count = _count(shape, "_frombuffer")
    data = memoryview(buf).cast("B")
    if data.nbytes != count * dtype.itemsize or order not in ("C", "F"):
        raise UnsafePickleError(f"_frombuffer: {data.nbytes} bytes do not hold an array of shape {shape} and {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


def _encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("_codecs.encode: only the latin1 bytes of protocol 0-2 pickles are accepted")
    return text.encode("latin1")


class _ArrayUnpickler(pickle._Unpickler):  # the Python implementation: its BUILD step can be checked
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
    dispatch = dict(pickle._Unpickler.dispatch)

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
            _check_array_state(state)
        elif isinstance(inst, np.dtype):
            if not (isinstance(state, tuple) and len(state) in (8, 9) and state[2:7] == (None, None, None, -1, -1)):
                raise UnsafePickleError("a dtype state with fields or sub-arrays is not a plain numeric dtype")
        else:
            raise UnsafePickleError(f"refusing to set the state of {type(inst).__name__}")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build


def _check_array_state(state):
    if not (isinstance(state, tuple) and len(state) == 5):
        raise UnsafePickleError("an ndarray state that is not (version, shape, dtype, fortran, data)")
    _, shape, dtype, _, data = state
    dtype = _numeric_dtype(dtype, "ndarray")
    count = _count(shape, "ndarray")
    if not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
        raise UnsafePickleError(f"ndarray data do not match shape {shape} and dtype {dtype}")


def read_pickled_arrays(path) -> dict:
    """A pickled dict of numeric NumPy arrays (the book's parameter files), read without running
    any of the file's code; anything else is :class:`UnsafePickleError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    data = read_bounded(path, 8 * MAX_ELEMENTS, UnsafePickleError)
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, OverflowError, RecursionError, UnicodeError) as exc:
        raise UnsafePickleError(f"{path}: not a readable pickle of arrays ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise UnsafePickleError(f"{path}: expected a dict of arrays, found {type(loaded).__name__}")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise UnsafePickleError(f"{path}: entry {key!r} is not a numeric array ({type(value).__name__})")
    return loaded


def write_pickled_arrays(path, arrays: dict, *, overwrite=False) -> Path:
    """Pickle a dict of NumPy arrays as the book's ``save_params`` does (its code reads the file)."""
    path = Path(path)
    check_writable(path, overwrite)
    write_atomic(path, lambda f: pickle.dump({k: np.asarray(v) for k, v in arrays.items()}, f, protocol=3))
    return path


# --------------------------------------------------------------------------- checkpoints
def write_checkpoint(path, meta: dict, params: dict, buffers: dict, *, overwrite=False) -> Path:
    """An ``.npz`` of ``param/*`` and ``buffer/*`` arrays and a JSON ``meta`` member, atomically."""
    path = checkpoint_path(path)
    check_writable(path, overwrite)
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"buffer/{k}": np.asarray(v) for k, v in buffers.items()})
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))
    return path


def read_checkpoint(path) -> tuple[dict, dict, dict]:
    """``(meta, params, buffers)`` of a portnet checkpoint, every member checked before it is read:
    names, dtypes, and sizes against :data:`MAX_ELEMENTS`; no pickle is ever loaded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                members[info.filename] = _read_npy_member(archive, info, path)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: not a portnet checkpoint (not an .npz archive: {exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if "meta.npy" not in members:
        raise CheckpointError(f"{path}: not a portnet checkpoint (it has no 'meta' member)")
    meta = _meta(members.pop("meta.npy"), path)
    params, buffers = {}, {}
    for name, value in members.items():
        kind, _, key = name.removesuffix(".npy").partition("/")
        if kind not in ("param", "buffer") or not key or not name.endswith(".npy") or value.dtype.kind != "f":
            raise CheckpointError(f"{path}: unexpected member {name!r} ({value.dtype}); a checkpoint holds float "
                                  f"param/* and buffer/* arrays")
        (params if kind == "param" else buffers)[key] = value
    return meta, params, buffers


def _read_npy_member(archive, info, path) -> np.ndarray:
    where = f"{path}: member {info.filename!r}"
    if info.file_size > 8 * MAX_ELEMENTS + 4096:
        raise CheckpointError(f"{where} unpacks to {info.file_size:,} bytes, more than a checkpoint may hold")
    with archive.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran, dtype = read_header[version](f)
        except (ValueError, SyntaxError, KeyError, struct.error) as exc:
            raise CheckpointError(f"{where} is not a .npy array ({type(exc).__name__}: {exc})") from None
        if not _plain(dtype):
            raise CheckpointError(f"{where} holds {dtype} values; a checkpoint holds numbers only")
        try:
            count = _count(shape, where)
        except UnsafePickleError as exc:
            raise CheckpointError(str(exc)) from None
        expected = count * dtype.itemsize
        data = f.read(expected + 1)
    if len(data) != expected:
        raise CheckpointError(f"{where}: {len(data)} bytes of data for shape {shape} and {dtype} ({expected} expected)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


_META_TYPES = {"format": int, "architecture": dict, "dtype": str}


def _meta(raw: np.ndarray, path) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is {type(meta).__name__}, expected an object")
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: metadata {key!r} is {meta.get(key)!r}, expected {kind.__name__}")
    if meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta['format']}, this portnet reads {CHECKPOINT_FORMAT}")
    if meta["dtype"] not in ("float32", "float64"):
        raise CheckpointError(f"{path}: metadata dtype {meta['dtype']!r}, expected 'float32' or 'float64'")
    return meta


def checkpoint_path(path) -> Path:
    """``path`` with the ``.npz`` suffix a checkpoint is saved under."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def read_npy_expecting(path, shape, dtype):
    """The ``.npy`` array at ``path`` if its header says exactly ``shape`` and ``dtype`` (checked
    before its data are read, so a tampered header allocates nothing); else None."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            found_shape, fortran, found_dtype = read_header[version](f)
            if tuple(found_shape) != tuple(shape) or found_dtype != np.dtype(dtype) or fortran:
                return None
            count = math.prod(shape)
            array = np.fromfile(f, dtype=found_dtype, count=count)
    except (OSError, ValueError, KeyError, SyntaxError):
        return None
    return array.reshape(shape) if array.size == count else None


# --------------------------------------------------------------------------- writing
def check_writable(path, overwrite=False) -> None:
    """Raise now, before any long work, if ``path`` cannot be written: it exists (and
    ``overwrite`` is false), it is a directory, or its directory cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise FileExistsError(f"{path} is a directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no permission to write in {parent}")


def write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: never a half file.

    The temporary file is removed on every exit Python sees; one left by a killed process (its
    name carries the process id) is removed by the next write beside it. The new file gets the
    permissions the umask gives, as ``open`` would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_parts(path: Path) -> None:
    for part in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        pid = part.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                part.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_bounded(path: Path, limit: int, error) -> bytes:
    """The file's bytes, refusing one larger than ``limit`` before reading it; ``error`` (a
    PortnetError class) for that and for a file that cannot be read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode) and size > limit:
                raise error(f"{path}: {size:,} bytes, more than the {limit:,} allowed")
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise error(f"{path}: more than the {limit:,} bytes allowed")
    return data
