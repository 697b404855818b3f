"""A network's summary, as Keras's ``model.summary()`` prints it: the layers in order (the book's
ch. 5.7, 7.5, 8.1 networks) with their output shapes and parameter counts, the total, the dtype
and the device. The output shapes come from one forward pass of a zero image in test mode."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arrays import dtype_name


@dataclass(frozen=True)
class Row:
    """One layer: its name (as ``network.layers`` holds it), type, output shape (without the
    batch), parameter count and the keys of its parameters in ``network.params``."""

    name: str
    kind: str
    shape: tuple
    count: int
    keys: tuple


def rows(network) -> list[Row]:
    """The layers of ``network`` in order, then its last layer (softmax with loss)."""
    xp = network.xp
    shape = tuple(network.input_dim) if hasattr(network, "input_dim") else (network.sizes[0],)
    x = xp.zeros((1, *shape), dtype=network.dtype, device=network.device)
    named = (
        network.layers.items()
        if isinstance(network.layers, dict)
        else ((f"layers[{i}]", layer) for i, layer in enumerate(network.layers))
    )
    found = []
    for name, layer in named:
        x = layer.forward(x, train_flg=False)
        keys = tuple(getattr(layer, "keys", {}).values())
        count = sum(math.prod(network.params[k].shape) for k in keys)
        found.append(Row(name, type(layer).__name__, tuple(x.shape[1:]), count, keys))
    last = network.last_layer
    found.append(Row("last_layer", type(last).__name__, tuple(x.shape[1:]), 0, ()))
    return found


def lines(network) -> list[str]:
    """The summary as lines of text."""
    table = rows(network)
    total = sum(r.count for r in table)
    fixed = sum(math.prod(v.shape) for v in network.buffers().values())
    cells = [
        (
            f"{r.name} ({r.kind})",
            str(("None", *r.shape)).replace("'", ""),
            f"{r.count:,}",
            ", ".join(r.keys),
        )
        for r in table
    ]
    head = ("Layer (type)", "Output shape", "Param #", "Parameters")
    widths = [max(len(row[i]) for row in [head, *cells]) for i in range(4)]

    def line(row):
        return (
            f" {row[0]:<{widths[0]}}   {row[1]:<{widths[1]}}   {row[2]:>{widths[2]}}   {row[3]}"
        ).rstrip()

    width = max(len(line(row)) for row in [head, *cells]) + 1
    size = (total + fixed) * _itemsize(network.dtype)
    return [
        f'Model: "{network!r}"',
        "_" * width,
        line(head),
        "=" * width,
        *map(line, cells),
        "=" * width,
        f" Total params: {total + fixed:,} ({_bytes(size)})",
        f" Trainable params: {total:,}",
        f" Non-trainable params: {fixed:,}" + (" (batch-norm statistics)" if fixed else ""),
        f" dtype: {dtype_name(network.dtype)}, device: {network.device}",
        "_" * width,
    ]


def _itemsize(dtype) -> int:
    return {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[dtype_name(dtype)]


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
