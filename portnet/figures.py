"""Figures: matplotlib (an optional dependency) on its Agg backend, the one place that imports
it; each figure written atomically in the format its file's suffix names (``.png`` added to a
name without one, as matplotlib does), the format checked before any long work."""

from __future__ import annotations

import io
import os
from pathlib import Path

from .errors import InputError, MissingDependencyError
from .persistence import write_atomic


def pyplot(option: str = "--plot"):
    """``matplotlib.pyplot`` on Agg; an error saying what to install (or which ``MPLBACKEND`` is
    wrong) for ``option``, the command's option that asked for a figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(f"{option} needs matplotlib: pip install matplotlib") from None
    except ValueError:  # matplotlib's import refuses an unknown $MPLBACKEND
        if "MPLBACKEND" not in os.environ:
            raise
        raise InputError(
            f"MPLBACKEND={os.environ['MPLBACKEND']!r} names no matplotlib backend; unset it "
            f"(portnet draws its figures with Agg)"
        ) from None
    return plt


def figure_path(path) -> Path:
    """``path``, with the ``.png`` suffix matplotlib gives a name that has none."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name + ".png")


def check_format(path: Path, option: str = "--plot") -> None:
    """Refuse, before the work, a suffix matplotlib does not write, or cannot here (a format whose
    library is missing): an empty figure is drawn in it."""
    plt = pyplot(option)
    fmt, fig = path.suffix[1:].lower(), plt.figure(figsize=(1, 1))
    try:
        formats = fig.canvas.get_supported_filetypes()
        if fmt not in formats:
            raise InputError(
                f"{option} {path}: matplotlib does not write .{fmt} files; name one of "
                f"{', '.join('.' + f for f in sorted(formats))}"
            )
        try:
            fig.savefig(io.BytesIO(), format=fmt)
        except Exception as exc:  # the format's own library or tool (Pillow, LaTeX) is missing
            raise MissingDependencyError(
                f"{option} {path}: .{fmt} files cannot be written here "
                f"({' '.join(str(exc).split())})"
            ) from None
    finally:
        plt.close(fig)


def save(fig, path: Path, *, overwrite=False, dpi=100) -> None:
    """Write ``fig`` to ``path`` in its suffix's format, atomically (an existing file replaced only
    with ``overwrite``), and close it."""
    try:
        write_atomic(
            path,
            lambda f: fig.savefig(f, format=path.suffix[1:].lower(), dpi=dpi),
            overwrite=overwrite,
        )
    finally:
        pyplot().close(fig)
