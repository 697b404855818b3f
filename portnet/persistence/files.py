"""Files written so that nothing is lost, and read with their size bounded first.

Writing goes through a temporary file in the same directory (its name never longer than the file
system allows), then a rename: an existing file is replaced only when the caller says so, and
then a concurrent writer cannot be replaced either, because the final name is created
exclusively (a hard link, which fails if the name exists). Signals that would stop the process
(SIGINT, SIGTERM, SIGHUP) are held while a file is written and honoured once it is in place, so a
save is never cut in half. New files honour the umask. A temporary file left by a killed writer
is removed by a later write beside it only once it is provably abandoned: no process holds the
lock every writer keeps on its file, and it is older than :data:`STALE_AFTER`.

Reading refuses a file larger than its limit before reading it, and an ``.npy`` array whose
header is not the one expected before its data are read.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import math
import os
import signal
import stat
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no locks, so no temporary file is ever judged abandoned
    fcntl = None

#: Signals held while a file is written, then honoured.
HELD_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: Seconds a temporary file must stay unchanged (and unlocked) before it counts as abandoned.
STALE_AFTER = 24 * 3600
#: What a temporary name adds to its prefix: tempfile's 8 random characters and the suffix.
_PART_TAIL = 8 + len(".part")


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
    """Raise now, before any long work, if ``path`` cannot be written: its name cannot be (not
    encodable, or too long for the file system, its temporary name included), it exists (and
    ``overwrite`` is false), it is a directory, or its directory cannot be created or written."""
    path = Path(path)
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        raise InputError(f"{str(path)!r}: a name this file system cannot encode") from None
    if b"\0" in encoded or path.name in ("", ".", ".."):
        raise InputError(f"{str(path)!r} is not a file name")
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
    # the name itself is checked by exists(); its temporary name, cut to fit, may be longer
    part = os.fsencode(os.path.join(path.parent, _part_prefix(path, _limit(parent, "PC_NAME_MAX"))))
    path_max = _limit(parent, "PC_PATH_MAX")
    if len(part) + _PART_TAIL >= path_max:
        raise OSError(
            errno.ENAMETOOLONG,
            f"with its temporary name, a path of {len(part) + _PART_TAIL} bytes; this system "
            f"allows {path_max - 1}",
            str(path),
        )


def write_atomic(path, write, *, overwrite=True) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then give it that name: never a half
    file, whatever signal arrives meanwhile (it is honoured once the file is in place).

    ``overwrite=False`` creates the name exclusively: FileExistsError if it exists, even if
    another process created it while this one wrote. The new file gets the permissions the umask
    gives, as ``open`` would; the temporary file is removed on every exit Python sees."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_parts(path)
    with _signals_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_part_prefix(path), suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                _lock(f.fileno())  # held until closed: a sweep beside it sees a live writer
                write(f)
                f.flush()
                os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
                if overwrite:
                    os.replace(tmp, path)
                else:
                    _create(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _create(tmp, path) -> None:
    """Give the file ``tmp`` the name ``path``, which must not exist, in one step."""
    try:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # no hard links here (FAT, some network file systems): claim the name, then rename
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.replace(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            f"{path} was created by another writer meanwhile and is left as it is; pass "
            f"overwrite=True (--overwrite) to replace it"
        ) from None


@contextlib.contextmanager
def _signals_held():
    """Hold :data:`HELD_SIGNALS` (record them instead of handling them), then put the handlers
    back and raise the recorded signals again. Python handles signals in the main thread only,
    so another thread is never interrupted and holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught, previous, holding = [], {}, [True]

    def hold(signum, frame):
        if holding[0]:
            caught.append(signum)
        else:  # arrived while the handlers were being put back: as the previous one would
            _handle(previous[signum], signum, frame)

    try:
        for sig in HELD_SIGNALS:
            if signal.getsignal(sig) is not None:  # None: a handler Python did not install
                previous[sig] = signal.signal(sig, hold)
        yield
    finally:
        holding[0] = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _raise(list(dict.fromkeys(caught)))


def _raise(signals) -> None:
    """Raise each of ``signals`` in turn, even if the handler of one raises an exception."""
    if signals:
        try:
            signal.raise_signal(signals[0])
        finally:
            _raise(signals[1:])


def _handle(handler, signum, frame) -> None:
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _limit(directory, name) -> int:
    """The file system's NAME_MAX or PATH_MAX there (POSIX's minimums where it does not say)."""
    try:
        return os.pathconf(directory, name)
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return {"PC_NAME_MAX": 255, "PC_PATH_MAX": 4096}[name]


def _part_prefix(path: Path, name_max=None) -> str:
    """The start of ``path``'s temporary names: ``.NAME.``, NAME cut so that the whole name fits
    the file system."""
    if name_max is None:
        name_max = _limit(path.parent, "PC_NAME_MAX")
    name = os.fsencode(path.name)[: name_max - _PART_TAIL - 2]
    return f".{os.fsdecode(name)}."


def _lock(fd) -> bool:
    """Take the lock of the file ``fd`` without waiting; False if another holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _remove_abandoned_parts(path: Path) -> None:
    """Remove the temporary files of writes to ``path`` that no process holds the lock of and
    that have not changed for :data:`STALE_AFTER` seconds; anything else is left alone."""
    if fcntl is None:
        return
    pattern = glob.escape(_part_prefix(path)) + "?" * (_PART_TAIL - len(".part")) + ".part"
    for part in path.parent.glob(pattern):
        try:
            fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            found = os.fstat(fd)
            if (
                stat.S_ISREG(found.st_mode)
                and time.time() - found.st_mtime > STALE_AFTER
                and _lock(fd)
                and os.stat(part, follow_symlinks=False).st_ino == found.st_ino
            ):
                os.unlink(part)
        except OSError:
            pass
        finally:
            os.close(fd)


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
