"""Files written so that a crash never leaves half of one, and read with their size bounded first.

Writing goes through a temporary file in the same directory and a rename: an existing file is
replaced only when the caller says so, and new files honour the umask. Reading refuses a file
larger than its limit before reading it, and an ``.npy`` array whose header is not the one
expected before its data are read.
"""

from __future__ import annotations

import glob
import math
import os
import stat
import struct
import tempfile
from pathlib import Path

import numpy as np


def read_npy_header(f) -> tuple:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` stream ``f`` (versions 1
    and 2), which is left at the start of the data; ValueError if it is not one."""
    version = np.lib.format.read_magic(f)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f".npy version {version} is not 1.0 or 2.0")
    try:
        return readers[version](f)
    except (SyntaxError, KeyError, struct.error) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def read_npy_expecting(path, shape, dtype):
    """The ``.npy`` array at ``path`` if its header says exactly ``shape`` and ``dtype`` (checked
    before its data are read, so a tampered header allocates nothing); else None."""
    try:
        with open(path, "rb") as f:
            found_shape, fortran, found_dtype = read_npy_header(f)
            if tuple(found_shape) != tuple(shape) or found_dtype != np.dtype(dtype) or fortran:
                return None
            count = math.prod(shape)
            array = np.fromfile(f, dtype=found_dtype, count=count)
    except (OSError, ValueError):
        return None
    return array.reshape(shape) if array.size == count else None


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
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".part"
    )
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
