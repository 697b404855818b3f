"""portnet's checkpoints: one ``.npz`` (no pickle) of ``param/*`` and ``buffer/*`` arrays and a JSON
``meta`` member (format, architecture, dtype), every member checked against a schema before it
is read: names, dtypes, sizes against :data:`~portnet.persistence.pickles.MAX_ELEMENTS`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, UnsafePickleError
from .files import check_writable, read_npy_header, write_atomic
from .pickles import MAX_ELEMENTS, _count, _plain

CHECKPOINT_FORMAT = 1


def write_checkpoint(path, meta: dict, params: dict, buffers: dict, *, overwrite=False) -> Path:
    """An ``.npz`` of ``param/*`` and ``buffer/*`` arrays and a JSON ``meta`` member, atomically."""
    path = checkpoint_path(path)
    check_writable(path, overwrite)
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"buffer/{k}": np.asarray(v) for k, v in buffers.items()})
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))
    return path


def read_checkpoint(path) -> tuple[dict, dict, dict]:
    """``(meta, params, buffers)`` of a portnet checkpoint, every member checked before it is read:
    names, dtypes, and sizes against :data:`MAX_ELEMENTS`; no pickle is ever loaded."""
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
    params, buffers = {}, {}
    for name, value in members.items():
        kind, _, key = name.removesuffix(".npy").partition("/")
        if (
            kind not in ("param", "buffer")
            or not key
            or not name.endswith(".npy")
            or value.dtype.kind != "f"
        ):
            raise CheckpointError(
                f"{path}: unexpected member {name!r} ({value.dtype}); a checkpoint holds float "
                f"param/* and buffer/* arrays"
            )
        (params if kind == "param" else buffers)[key] = value
    return meta, params, buffers


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
        expected = count * dtype.itemsize
        data = f.read(expected + 1)
    if len(data) != expected:
        raise CheckpointError(
            f"{where}: {len(data)} bytes of data for shape {shape} and {dtype} ({expected} expected)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


_META_TYPES = {"format": int, "architecture": dict, "dtype": str}


def _meta(raw: np.ndarray, path) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is {type(meta).__name__}, expected an object")
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(
                f"{path}: metadata {key!r} is {meta.get(key)!r}, expected {kind.__name__}"
            )
    if meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format']}, this portnet reads {CHECKPOINT_FORMAT}"
        )
    if meta["dtype"] not in ("float32", "float64"):
        raise CheckpointError(
            f"{path}: metadata dtype {meta['dtype']!r}, expected 'float32' or 'float64'"
        )
    return meta


def checkpoint_path(path) -> Path:
    """``path`` with the ``.npz`` suffix a checkpoint is saved under."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
