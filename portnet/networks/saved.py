"""Saved networks rebuilt: a portnet checkpoint names its network's class and constructor
arguments, which are checked (and its parameters and buffers against the architecture's own
shapes) before the network is built, on the active backend and device. The files themselves are
:mod:`portnet.persistence`'s."""

from __future__ import annotations

from pathlib import Path

from ..arrays import dtype_name, from_numpy
from ..errors import CheckpointError, InputError
from ..persistence import checkpoint_path, read_checkpoint
from .convnets import DeepConvNet, SimpleConvNet
from .multi_layer_net import MultiLayerNet, TwoLayerNet

#: The classes a checkpoint may name.
ARCHITECTURES = {
    cls.__name__: cls for cls in (TwoLayerNet, MultiLayerNet, SimpleConvNet, DeepConvNet)
}


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
        raise CheckpointError(
            f"{path}: unknown architecture {meta['architecture'].get('class')!r}; "
            f"expected one of {', '.join(ARCHITECTURES)}"
        )
    try:
        network = cls(**arch, dtype=dtype, seed=0)
    except (InputError, TypeError) as exc:
        raise CheckpointError(f"{path}: its architecture cannot be built ({exc})") from None
    network.set_params(params, source=str(path))
    try:
        network.load_buffers(
            {
                k: from_numpy(v.astype(dtype_name(network.dtype)), network.xp, network.device)
                for k, v in buffers.items()
            }
        )
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return network
