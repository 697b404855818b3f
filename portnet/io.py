"""Files: the book's pickled weights (read safely), and checkpoints as ``.npz`` (no pickle).

Writes go through a temporary file and a rename, so a crash never leaves half a file, and an
existing file is replaced only when the caller says so.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import backend as _backend

CHECKPOINT_FORMAT = 1


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than NumPy arrays; nothing of it was run."""


# --------------------------------------------------------------------------- the book's weights
class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a pickled dict of NumPy arrays needs; refuses every other global."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: this file asks for code, not just arrays "
                f"(only NumPy arrays in a dict are accepted)"
            )
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle with persistent references")


def load_book_weights(path) -> dict:
    """The book's ``sample_weight.pkl`` (ch. 3.6.2) as a dict of arrays of the active backend.

    Read with a restricted unpickler: a file that holds anything but a dict of numeric NumPy
    arrays is refused with :class:`UnsafePickleError`, and none of its content is executed.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            weights = _ArrayUnpickler(f, encoding="latin1").load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise UnsafePickleError(f"{path}: not a readable pickle of arrays ({exc})") from None
    if not isinstance(weights, dict) or not weights:
        raise UnsafePickleError(f"{path}: expected a dict of arrays, found {type(weights).__name__}")
    b = _backend.active()
    out = {}
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise UnsafePickleError(f"{path}: entry {key!r} is not a numeric array ({type(value).__name__})")
        out[key] = _backend.from_numpy(value, b.xp, b.device)
    return out


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(network, path, *, overwrite=False) -> Path:
    """Save parameters, batch-norm statistics and architecture to ``path`` (.npz), atomically.

    An existing file is replaced only with ``overwrite=True``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    arrays = {f"param/{k}": _backend.to_numpy(v) for k, v in network.params.items()}
    arrays.update({f"buffer/{k}": _backend.to_numpy(v) for k, v in network.buffers().items()})
    meta = {"format": CHECKPOINT_FORMAT, "architecture": network.architecture(),
            "dtype": _backend.dtype_name(network.dtype)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))
    return path


def load_checkpoint(path):
    """Rebuild the saved network on the active backend and device, with the saved parameters."""
    from .networks import MultiLayerNet, TwoLayerNet

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a portnet checkpoint ({exc})") from None
    try:
        meta = json.loads(bytes(arrays.pop("meta")).decode())
        arch = dict(meta["architecture"])
        cls = {"TwoLayerNet": TwoLayerNet, "MultiLayerNet": MultiLayerNet}[arch.pop("class")]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a portnet checkpoint (no readable architecture: {exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')}, this portnet reads {CHECKPOINT_FORMAT}")
    network = cls(**arch, dtype=meta["dtype"], seed=0)
    b = _backend.active()
    params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("param/")}
    if set(params) != set(network.params):
        raise ValueError(f"{path}: parameters {sorted(params)} do not match the architecture's {sorted(network.params)}")
    for key, value in params.items():
        if value.shape != tuple(network.params[key].shape):
            raise ValueError(f"{path}: {key} has shape {value.shape}, the architecture needs {tuple(network.params[key].shape)}")
        network.params[key] = _backend.from_numpy(value, b.xp, b.device)
    network.load_buffers({k.split("/", 1)[1]: _backend.from_numpy(v, b.xp, b.device)
                          for k, v in arrays.items() if k.startswith("buffer/")})
    return network


def write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

