"""Where portnet keeps files for its user: downloads, parsed datasets, JAX's compiled steps."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DatasetError


def cache_dir() -> Path:
    """Where downloads and parsed arrays go: ``PORTNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/portnet``
    (if absolute: the XDG rules ignore a relative one), else ``~/.cache/portnet``; a
    :class:`DatasetError` when there is no home directory to find (no ``$HOME``, and a user id
    without a passwd entry, as a container's)."""
    explicit = os.environ.get("PORTNET_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "portnet"
    home = os.path.expanduser("~")  # left as it is when no home directory is known
    if not os.path.isabs(home):
        raise DatasetError(
            f"no cache directory: $HOME is not set and user {os.getuid()} has no home directory "
            f"in the passwd database; set PORTNET_CACHE_DIR (or XDG_CACHE_HOME), or point "
            f"PORTNET_DATA_DIR at the data"
        )
    return Path(home) / ".cache" / "portnet"
