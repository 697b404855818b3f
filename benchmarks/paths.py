"""Where the checkout is, and the shared data as the tests find it: beside the checkout
(``../shared/data``) or carried into it (``shared/data``, on a machine without ``../shared``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data") if p.is_dir()),
    ROOT.parent / "shared" / "data",
)
