"""Checks of the numbers a user passes in: each returns the value as a Python number, or raises
an :class:`~portnet.errors.InputError` that names the argument and what was expected."""

from __future__ import annotations

import math
import operator

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
