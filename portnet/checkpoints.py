"""Saved networks: portnet's checkpoints (a network's parameters, batch-norm statistics and
architecture in one ``.npz``) and the book's pickled weights, loaded onto the active backend.

Saving converts to NumPy on the host; loading validates the file against a schema (member names,
dtypes, sizes, metadata types, the architecture's own parameter and buffer shapes) before it
builds the network, on the active backend and device.
"""

from __future__ import annotations

from pathlib import Path

from . import backend as _backend
from .arrays import dtype_name, from_numpy
from .errors import CheckpointError, InputError
from .io import checkpoint_path, read_checkpoint, read_pickled_arrays
from .networks import DeepConvNet, MultiLayerNet, SimpleConvNet, TwoLayerNet

#: The classes a checkpoint may name.
ARCHITECTURES = {cls.__name__: cls for cls in (TwoLayerNet, MultiLayerNet, SimpleConvNet, DeepConvNet)}


def save_checkpoint(network, path, *, overwrite=False) -> Path:
    """Save ``network`` to ``path`` (``.npz`` added if missing), atomically; an existing file is
    replaced only with ``overwrite=True``."""
    return network.save_params(checkpoint_path(path), overwrite=overwrite)


def load_checkpoint(path, *, dtype=None):
    """Rebuild the saved network on the active backend and device, with the saved parameters, in
    ``dtype`` ('float32', 'float64'; default: the dtype it was saved in)."""
    meta, params, buffers = read_checkpoint(path)
    dtype = meta["dtype"] if dtype is None else dtype
    arch = dict(meta["architecture"])
    cls = ARCHITECTURES.get(arch.pop("class", None))
    if cls is None:
        raise CheckpointError(f"{path}: unknown architecture {meta['architecture'].get('class')!r}; "
                              f"expected one of {', '.join(ARCHITECTURES)}")
    try:
        network = cls(**arch, dtype=dtype, seed=0)
    except (InputError, TypeError) as exc:
        raise CheckpointError(f"{path}: its architecture cannot be built ({exc})") from None
    network.set_params(params, source=str(path))
    try:
        network.load_buffers({k: from_numpy(v.astype(dtype_name(network.dtype)), network.xp, network.device)
                              for k, v in buffers.items()})
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return network


def load_book_weights(path) -> dict:
    """The book's pickled weights (``sample_weight.pkl``, ch. 3.6.2, or its ConvNets' parameter
    files) as a dict of arrays of the active backend, read without running any of the file's code."""
    b = _backend.active()
    return {k: from_numpy(v, b.xp, b.device) for k, v in read_pickled_arrays(path).items()}
