"""Checks of the numbers a user passes in: each returns the value as a Python number, or raises
an :class:`~portnet.errors.InputError` that names the argument and what was expected; and of the
memory a request needs, against what the machine has (:func:`check_memory`)."""

from __future__ import annotations

import functools
import math
import operator
import os

from .errors import InputError


def integer(name, value, least=1) -> int:
    """``value`` as an int of at least ``least`` (1: positive, 0: non-negative); not a bool or float."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < least:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
            least, f"an integer of at least {least}"
        )
        raise InputError(f"{name} must be {kind}, got {value!r}")
    return number


def integers(name, values, least=1) -> list[int]:
    """Each of ``values`` checked by :func:`integer`."""
    return [integer(name, v, least) for v in values]


def rate(name, value) -> float:
    """``value`` as a finite positive float (a learning rate)."""
    number = _float(value)
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{name} must be a finite positive number, got {value!r}")
    return number


def non_negative(name, value) -> float:
    """``value`` as a finite float of at least 0 (a weight decay)."""
    number = _float(value)
    if not (math.isfinite(number) and number >= 0):
        raise InputError(f"{name} must be a finite non-negative number, got {value!r}")
    return number


def fraction(name, value) -> float:
    """``value`` as a float in [0, 1) (a momentum, a decay, a dropout ratio)."""
    number = _float(value)
    if not 0 <= number < 1:
        raise InputError(f"{name} must lie in [0, 1), got {value!r}")
    return number


def same_samples(what, x, t) -> int:
    """The number of samples of ``x`` and ``t`` (their first axis), which must agree."""
    nx, nt = (a.shape[0] if a.ndim else 0 for a in (x, t))
    if nx != nt or x.ndim == 0:
        raise InputError(
            f"{what}: {nx} samples in x but {nt} in t (shapes {tuple(x.shape)} and {tuple(t.shape)})"
        )
    return nx


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


#: Where a container's memory limit is read from: cgroup v2, then v1.
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def memory_limit() -> int | None:
    """The most bytes portnet plans for: ``PORTNET_MEMORY_LIMIT`` (bytes, or with a K, M, G or T
    suffix) if set, else the machine's memory, or its container's limit (cgroup) if lower; None
    where neither can be read."""
    setting = os.environ.get("PORTNET_MEMORY_LIMIT", "").strip()
    if setting:
        number, unit = setting.lower().rstrip("ib"), ""
        if number[-1:] in _UNITS:
            number, unit = number[:-1], number[-1]
        if not number.isdigit() or int(number) < 1:
            raise InputError(
                f"PORTNET_MEMORY_LIMIT={setting!r}: expected a number of bytes, e.g. 8G or 512M"
            )
        return int(number) * _UNITS[unit]
    return _machine_memory()


@functools.cache
def _machine_memory() -> int | None:
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        pass
    for path in CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits, default=None)


def check_memory(what, needed: int, hint="") -> None:
    """Refuse, before anything is allocated, what would need more than :func:`memory_limit`
    (``hint``: what would fit instead)."""
    limit = memory_limit()
    if limit is not None and needed > limit:
        raise InputError(
            f"{what} would need about {size_text(needed)} of memory, more than the "
            f"{size_text(limit)} here (PORTNET_MEMORY_LIMIT sets another limit){hint}"
        )


def size_text(n: int) -> str:
    """A number of bytes for people: '3.2 GiB' (any integer, however large)."""
    if n >= 2**70:
        return f"about 2^{n.bit_length() - 1} bytes"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
