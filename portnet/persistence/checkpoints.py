"""portnet's checkpoints: one ``.npz`` (no pickle) of ``param/*`` and ``buffer/*`` arrays and a JSON
``meta`` member (format, architecture, dtype), every member checked against a schema before it
is read: names, dtypes, sizes against :data:`~portnet.persistence.pickles.MAX_ELEMENTS`.

A training checkpoint (:func:`write_training_checkpoint`, written after every epoch) is one too,
so anything that reads a network reads it; it adds what the run depends on: ``optimizer/SLOT/KEY``
arrays (Adam's m and v, ...), the ``history/*`` of losses and accuracies, the random generators'
``generator/*`` states where they are arrays (PyTorch's, JAX's keys), and in ``meta['training']``
the epoch, the step count, the optimizer's class and count, the NumPy generators' states and the
settings of the run.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, UnsafePickleError
from .files import check_writable, read_npy_header, write_atomic
from .pickles import MAX_ELEMENTS, _count, _plain

CHECKPOINT_FORMAT = 1


#: The members a training checkpoint adds, by kind, and the dtype kind each holds.
_TRAINING_MEMBERS = {"optimizer": "f", "history": "f", "generator": "u"}
#: The history a training checkpoint keeps, one value a step (losses) or an epoch.
HISTORY = ("train_loss", "train_acc", "test_acc", "epoch_times")


def write_checkpoint(
    path, meta: dict, params: dict, buffers: dict, *, overwrite=False, extra=None
) -> Path:
    """An ``.npz`` of ``param/*`` and ``buffer/*`` arrays (and the ``extra`` members a training
    checkpoint adds, by name) and a JSON ``meta`` member, atomically."""
    path = checkpoint_path(path)
    check_writable(path, overwrite)
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"buffer/{k}": np.asarray(v) for k, v in buffers.items()})
    arrays.update({name: np.asarray(v) for name, v in (extra or {}).items()})
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays), overwrite=overwrite)
    return path


def write_training_checkpoint(path, meta: dict, state: dict, settings=None, *, overwrite=False):
    """A training checkpoint: ``state`` (:meth:`portnet.Trainer.state_dict`'s host data) and the
    run's ``settings`` (JSON) beside ``meta`` (architecture, dtype), atomically."""
    extra = {f"history/{name}": np.asarray(state["history"][name], np.float64) for name in HISTORY}
    optimizer = state["optimizer"]
    if optimizer is not None:
        for slot, arrays in optimizer["slots"].items():
            extra.update({f"optimizer/{slot}/{k}": v for k, v in arrays.items()})
    generators = {"shuffle": state["generators"]["shuffle"]}
    generators.update({f"network{i}": g for i, g in enumerate(state["generators"]["network"])})
    described = {}
    for name, g in generators.items():
        if g["native"] is not None:
            extra[f"generator/{name}"] = g["native"]
        described[name] = {
            "source": g["source"],
            "host": g["host"],
            "native": g["native"] is not None,
        }
    training = {
        "epoch": state["epoch"],
        "step": state["step"],
        "optimizer": None
        if optimizer is None
        else {
            "class": optimizer["class"],
            "step": optimizer["step"],
            "slots": list(optimizer["slots"]),
        },
        "generators": described,
        "settings": settings or {},
    }
    return write_checkpoint(
        path,
        {**meta, "training": training},
        state["params"],
        state["buffers"],
        overwrite=overwrite,
        extra=extra,
    )


def read_training_checkpoint(path) -> tuple[dict, dict]:
    """``(meta, state)`` of a training checkpoint, ``state`` as :meth:`portnet.Trainer.state_dict`
    gives it; a plain checkpoint (a network only) is an error that says so."""
    meta, members = _read_members(path)
    training = meta.get("training")
    if training is None:
        raise CheckpointError(
            f"{path}: not a training checkpoint (it holds a network's parameters only, as "
            f"save_checkpoint writes them): it cannot be resumed"
        )
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: metadata 'training' is {training!r}, expected an object")
    for key, kind in (("epoch", int), ("step", int), ("generators", dict), ("settings", dict)):
        if not isinstance(training.get(key), kind) or training.get(key) is True:
            raise CheckpointError(
                f"{path}: metadata training.{key} is {training.get(key)!r}, expected {kind.__name__}"
            )
    found = {kind: {} for kind in ("param", "buffer", *_TRAINING_MEMBERS)}
    for (kind, key), value in members.items():
        found[kind][key] = value
    missing = [name for name in HISTORY if name not in found["history"]]
    if missing:
        raise CheckpointError(f"{path}: no history/{missing[0]} member")
    optimizer = training.get("optimizer")
    if optimizer is not None:
        optimizer = _optimizer_state(optimizer, found["optimizer"], path)
    generators = {}
    for name, g in training["generators"].items():
        if not (isinstance(g, dict) and isinstance(g.get("native"), bool) and "host" in g):
            raise CheckpointError(f"{path}: metadata of generator {name!r} is {g!r}")
        native = found["generator"].get(name)
        if g["native"] != (native is not None):
            raise CheckpointError(f"{path}: generator {name!r} lacks its generator/{name} member")
        generators[name] = {"source": g.get("source"), "host": g["host"], "native": native}
    if "shuffle" not in generators:
        raise CheckpointError(f"{path}: no state of the shuffle generator")
    network = [generators[f"network{i}"] for i in range(len(generators) - 1)]
    state = {
        "epoch": training["epoch"],
        "step": training["step"],
        "params": found["param"],
        "buffers": found["buffer"],
        "optimizer": optimizer,
        "generators": {"shuffle": generators["shuffle"], "network": network},
        "history": {name: found["history"][name].tolist() for name in HISTORY},
    }
    return meta, state


def _optimizer_state(described, arrays, path) -> dict:
    if not (
        isinstance(described, dict)
        and isinstance(described.get("class"), str)
        and isinstance(described.get("step"), int)
        and isinstance(described.get("slots"), list)
    ):
        raise CheckpointError(f"{path}: metadata training.optimizer is {described!r}")
    slots = {slot: {} for slot in described["slots"]}
    for key, value in arrays.items():
        slot, _, name = key.partition("/")
        if slot not in slots or not name:
            raise CheckpointError(
                f"{path}: member optimizer/{key} names no slot of {sorted(slots)}"
            )
        slots[slot][name] = value
    return {"class": described["class"], "step": described["step"], "slots": slots}


def read_checkpoint(path) -> tuple[dict, dict, dict]:
    """``(meta, params, buffers)`` of a portnet checkpoint (a training checkpoint's too), every
    member checked before it is read: names, dtypes, and sizes against :data:`MAX_ELEMENTS`; no
    pickle is ever loaded."""
    meta, members = _read_members(path)
    params = {key: value for (kind, key), value in members.items() if kind == "param"}
    buffers = {key: value for (kind, key), value in members.items() if kind == "buffer"}
    return meta, params, buffers


def _read_members(path) -> tuple[dict, dict]:
    """``(meta, {(kind, key): array})``, each member's kind and dtype checked against the schema."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                members[info.filename] = _read_npy_member(archive, info, path)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(
            f"{path}: not a portnet checkpoint (not an .npz archive: {exc})"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if "meta.npy" not in members:
        raise CheckpointError(f"{path}: not a portnet checkpoint (it has no 'meta' member)")
    meta = _meta(members.pop("meta.npy"), path)
    kinds = {"param": "f", "buffer": "f", **(_TRAINING_MEMBERS if "training" in meta else {})}
    found = {}
    for name, value in members.items():
        kind, _, key = name.removesuffix(".npy").partition("/")
        if kinds.get(kind) != value.dtype.kind or not key or not name.endswith(".npy"):
            raise CheckpointError(
                f"{path}: unexpected member {name!r} ({value.dtype}); a checkpoint holds float "
                f"param/* and buffer/* arrays"
                + (
                    ", a training checkpoint also optimizer/*, history/*, generator/*"
                    if "training" in meta
                    else ""
                )
            )
        found[kind, key] = value
    return meta, found


def _read_npy_member(archive, info, path) -> np.ndarray:
    where = f"{path}: member {info.filename!r}"
    if info.file_size > 8 * MAX_ELEMENTS + 4096:
        raise CheckpointError(
            f"{where} unpacks to {info.file_size:,} bytes, more than a checkpoint may hold"
        )
    with archive.open(info) as f:
        try:
            shape, fortran, dtype = read_npy_header(f)
        except ValueError as exc:
            raise CheckpointError(f"{where} is not a .npy array ({exc})") from None
        if not _plain(dtype):
            raise CheckpointError(f"{where} holds {dtype} values; a checkpoint holds numbers only")
        try:
            count = _count(shape, where)
        except UnsafePickleError as exc:
            raise CheckpointError(str(exc)) from None
        if info.filename == "meta.npy" and count * dtype.itemsize > MAX_META_BYTES:
            raise CheckpointError(f"{where} holds more than the {MAX_META_BYTES:,} bytes allowed")
        expected = count * dtype.itemsize
        data = f.read(expected + 1)
    if len(data) != expected:
        raise CheckpointError(
            f"{where}: {len(data)} bytes of data for shape {shape} and {dtype} ({expected} expected)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


_META_TYPES = {"format": int, "architecture": dict, "dtype": str}
#: The most bytes of JSON a checkpoint's metadata may hold (checked before it is read).
MAX_META_BYTES = 1 << 20


def _meta(raw: np.ndarray, path) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode())
    except RecursionError:
        raise CheckpointError(f"{path}: its metadata is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSON, or an integer too long
        raise CheckpointError(f"{path}: its metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is {type(meta).__name__}, expected an object")
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise CheckpointError(
                f"{path}: metadata {key!r} is {_short(meta.get(key))}, expected {kind.__name__}"
            )
    _architecture(meta["architecture"], path)
    if meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format']}, this portnet reads {CHECKPOINT_FORMAT}"
        )
    if meta["dtype"] not in ("float32", "float64"):
        raise CheckpointError(
            f"{path}: metadata dtype {meta['dtype']!r}, expected 'float32' or 'float64'"
        )
    return meta


def _architecture(arch: dict, path) -> None:
    """Refuse architecture metadata that no constructor takes: a class that is not a name, values
    nested deeper than a layer's parameters, integers beyond 64 bits, NaN or infinite numbers."""
    if not isinstance(arch.get("class"), str):
        raise CheckpointError(
            f"{path}: metadata architecture.class is {_short(arch.get('class'))}, expected a name"
        )
    pending = [(f"architecture.{key}", value, 0) for key, value in arch.items()]
    while pending:
        where, value, depth = pending.pop()
        if isinstance(value, (list, dict)):
            if depth == 1:
                raise CheckpointError(f"{path}: metadata {where} is nested too deeply")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            pending += [(f"{where}[{key!r}]", item, depth + 1) for key, item in items]
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise CheckpointError(f"{path}: metadata {where} is an integer beyond 64 bits")
        elif isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{path}: metadata {where} is {value}, expected a finite number")


def _short(value) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def checkpoint_path(path) -> Path:
    """``path`` with the ``.npz`` suffix a checkpoint is saved under."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
