"""Progress bars on stderr, through tqdm (an optional dependency): the one place that imports it."""

from __future__ import annotations

import importlib.util
import sys

from .errors import MissingDependencyError


def wanted(choice=None) -> bool:
    """Whether to show a bar: ``choice`` if given, else only when stderr is a terminal (a log gets
    no ``\\r`` frames) and tqdm is installed."""
    if choice is not None:
        return bool(choice)
    stream = sys.stderr  # None when the process started with it closed
    return stream is not None and stream.isatty() and importlib.util.find_spec("tqdm") is not None


def bar(total, desc: str, unit: str, **options):
    """A tqdm bar of ``total`` units on stderr; an error saying what to install without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise MissingDependencyError("a progress bar needs tqdm: pip install tqdm") from None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, **options)
