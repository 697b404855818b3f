"""MNIST and Fashion-MNIST: find, download, verify, parse and cache the four IDX files.

``load_mnist(normalize, flatten, one_hot_label)`` is the book's (dataset/mnist.py), returning
arrays of the active backend on its device. The files are looked for in ``data_dir``, else in
``PORTNET_DATA_DIR`` (``PORTNET_FASHION_MNIST_DIR`` for Fashion-MNIST, then Debian's
/usr/share/datasets/fashion-mnist), else in the user cache directory (:func:`cache_dir`), where
missing files are downloaded; a directory the user names is never downloaded into. Every file is
checked: gzip stream, IDX header, size, and the SHA-256 of its content, and nothing is read or
decompressed past the size the IDX format says it has (a gzip bomb stops there). A file that
fails is reported and left as it is. Parsed arrays are cached (``.npy``, no pickle), one per
source file (the entry of an older version of it is removed), and a cached array is used only if
its own SHA-256 (with its IDX header) is the expected one: a tampered cache is parsed again.
Without a cache directory (no home directory) nothing is cached.

Downloads try each mirror in turn (``PORTNET_MNIST_MIRRORS`` / ``PORTNET_FASHION_MNIST_MIRRORS``:
comma-separated base URLs, tried first): each has an overall deadline, whatever the server does,
and a size cap, and a mirror that misbehaves in any way (an HTTP error, a malformed response, a
stall, too many bytes, a wrong file) is logged (at INFO: ``portnet train --verbose`` shows it)
and the next one tried.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import logging
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend as _backend
from . import progress
from .arrays import from_numpy
from .cachedir import cache_dir
from .errors import DatasetError
from .functions import one_hot
from .persistence.files import read_bounded, read_npy_expecting, write_atomic

log = logging.getLogger(__name__)
#: Seconds a download may take in all, from the first byte asked to the last received.
DOWNLOAD_DEADLINE = 300.0
#: Seconds a connection may stay silent.
DOWNLOAD_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Spec:
    name: str
    mirrors: tuple[str, ...]
    sha256: dict  # file base name -> SHA-256 of the decompressed content
    env: str
    mirrors_env: str
    system_dirs: tuple[str, ...] = ()


_FILES = {  # base name -> (IDX magic, shape)
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (10000,)),
}

MNIST = _Spec(
    "mnist",
    (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
    ),
    {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "PORTNET_DATA_DIR",
    "PORTNET_MNIST_MIRRORS",
)

FASHION_MNIST = _Spec(
    "fashion-mnist",
    (
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "PORTNET_FASHION_MNIST_DIR",
    "PORTNET_FASHION_MNIST_MIRRORS",
    ("/usr/share/datasets/fashion-mnist",),
)

_memo: dict[tuple, np.ndarray] = {}
#: The splits and the prefix of their files.
SPLITS = {"train": "train", "test": "t10k"}


def load_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None, download=True):
    """MNIST as ``((x_train, t_train), (x_test, t_test))`` on the active backend (the book's API).

    ``normalize``: float32 pixels in [0, 1] (else uint8 0-255). ``flatten``: images of shape
    (N, 784) (else (N, 1, 28, 28)). ``one_hot_label``: labels as float32 one-hot rows (else int64).
    """
    return tuple(
        _load(MNIST, split, normalize, flatten, one_hot_label, data_dir, download)
        for split in SPLITS
    )


def load_fashion_mnist(
    normalize=True, flatten=True, one_hot_label=False, *, data_dir=None, download=True
):
    """Fashion-MNIST (Zalando), with the interface of :func:`load_mnist`."""
    return tuple(
        _load(FASHION_MNIST, split, normalize, flatten, one_hot_label, data_dir, download)
        for split in SPLITS
    )


def load_split(
    dataset,
    split,
    normalize=True,
    flatten=True,
    one_hot_label=False,
    *,
    data_dir=None,
    download=True,
):
    """One split, ``(x, t)``, of ``dataset`` ('mnist' or 'fashion-mnist'; split 'train' or 'test'),
    as :func:`load_mnist` gives it, reading only that split's files."""
    specs = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
    if dataset not in specs or split not in SPLITS:
        raise DatasetError(
            f"unknown dataset split {dataset!r}/{split!r}; expected one of {sorted(specs)} and "
            f"{' or '.join(SPLITS)}"
        )
    return _load(specs[dataset], split, normalize, flatten, one_hot_label, data_dir, download)


# --------------------------------------------------------------------------- loading
def _load(spec, split, normalize, flatten, one_hot_label, data_dir, download):
    b = _backend.active()
    xp = b.xp
    prefix = SPLITS[split]
    # a copy: the parsed arrays are kept (read-only) for the next load, and are not the caller's
    images = from_numpy(
        _array(spec, f"{prefix}-images-idx3-ubyte", data_dir, download), xp, b.device, copy=True
    )
    labels = from_numpy(
        _array(spec, f"{prefix}-labels-idx1-ubyte", data_dir, download).astype(np.int64),
        xp,
        b.device,
    )
    if normalize:  # the book's float32 k / 255, held in the active dtype
        images = xp.astype(xp.astype(images, xp.float32) / 255.0, b.dtype)
    n = images.shape[0]
    images = xp.reshape(images, (n, 784) if flatten else (n, 1, 28, 28))
    if one_hot_label:
        labels = one_hot(xp, labels, 10, b.dtype)
    return images, labels


def _array(spec, base, data_dir, download) -> np.ndarray:
    """The parsed content of one file: from memory, from the parsed cache (if its hash is the
    expected one), or from the file (verified, then cached)."""
    path = _locate(spec, base, data_dir, download)
    try:
        stat = path.stat()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    magic, shape = _FILES[base]
    cached = _cache_entry(spec, base, key)
    array = None if cached is None else read_npy_expecting(cached, shape, np.uint8)
    if array is not None and _content_hash(magic, shape, array) != spec.sha256[base]:
        log.warning(
            "portnet: the parsed cache %s does not hold the expected data; parsing %s again",
            cached,
            path,
        )
        array = None
    if array is None:
        array = _parse(path, _read_verified(path, spec.sha256[base], magic, shape), shape)
        if cached is not None:
            try:
                write_atomic(cached, lambda f: np.save(f, array, allow_pickle=False))
                _remove_older_entries(cached)
            except OSError:
                pass  # a cache that cannot be written only costs the next load its parse
    array.setflags(write=False)
    _memo[key] = array
    return array


def _cache_entry(spec, base, key) -> Path | None:
    """The parsed cache of one source file, named by its path and then by its size and time
    (None without a cache directory)."""
    try:
        parsed = cache_dir() / "parsed"
    except DatasetError:
        return None
    source, version = (hashlib.sha256(repr(k).encode()).hexdigest()[:16] for k in (key[0], key[1:]))
    return parsed / f"{spec.name}-{base}-{source}-{version}.npy"


def _remove_older_entries(cached: Path) -> None:
    """Remove the cache entries of earlier versions of ``cached``'s source file (and those named
    as portnet 0.2 named them, by path, size and time together)."""
    stem, source, _ = cached.name.rsplit("-", 2)
    for entry in cached.parent.glob(glob.escape(stem) + "-*.npy"):
        parts = entry.name[len(stem) + 1 : -len(".npy")].split("-")
        if entry != cached and (parts[0] == source or len(parts) == 1):
            with contextlib.suppress(OSError):
                entry.unlink()


def _content_hash(magic, shape, array) -> str:
    """The SHA-256 of the IDX file that ``array`` was parsed from: its header, then its bytes."""
    digest = hashlib.sha256(struct.pack(f">{1 + len(shape)}i", magic, *shape))
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def _locate(spec, base, data_dir, download) -> Path:
    """The first directory holding the file (gzip or raw); else download it into the cache (never
    into a directory the user named)."""
    given = data_dir if data_dir is not None else os.environ.get(spec.env) or None
    if given is not None:
        given, origin = Path(given), "data_dir" if data_dir is not None else spec.env
        for name in (base + ".gz", base):
            if (given / name).is_file():
                return given / name
        problem = "does not exist" if not given.is_dir() else f"holds no {base}(.gz)"
        raise DatasetError(
            f"{spec.name}: the data directory {given} ({origin}) {problem}; point it at the "
            f"directory that holds {base}.gz and the other three files, or leave it unset to "
            f"download them into {_cache_text(spec)}"
        )
    dirs = [*map(Path, spec.system_dirs), cache_dir() / spec.name]
    for d in dirs:
        for name in (base + ".gz", base):
            if (d / name).is_file():
                return d / name
    target = dirs[-1]
    where = f"{target} (gzip-compressed or raw: {', '.join(n + '.gz' for n in _FILES)})"
    if not download:
        raise DatasetError(
            f"{spec.name}: {base}.gz is not in {', '.join(map(str, dirs))}; put the four files in {where}, or allow download=True"
        )
    return _download(spec, base, target, where)


def _cache_text(spec) -> str:
    try:
        return str(cache_dir() / spec.name)
    except DatasetError:
        return "the cache (PORTNET_CACHE_DIR: there is no home directory here)"


def _mirrors(spec) -> list[str]:
    configured = [m.strip() for m in os.environ.get(spec.mirrors_env, "").split(",") if m.strip()]
    return [m if m.endswith("/") else m + "/" for m in configured] + [
        m for m in spec.mirrors if m not in configured
    ]


def _download(spec, base, target: Path, where: str) -> Path:
    errors = []
    magic, shape = _FILES[base]
    dest = target / (base + ".gz")
    for mirror in _mirrors(spec):
        url = mirror + base + ".gz"
        try:
            data = _fetch(url, _max_file_size(shape))
            _read_verified(url, spec.sha256[base], magic, shape, data)
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        else:
            write_atomic(dest, lambda f: f.write(data))
            return dest
        log.info("portnet: %s: %s; trying the next mirror", url, reason)
        errors.append(f"{mirror}: {reason}")
    raise DatasetError(
        f"{spec.name}: could not download {base}.gz from any mirror ({'; '.join(errors)}); "
        f"without network access, put the four files in {where}, or point {spec.env} at them"
    )


def _fetch(url: str, limit: int) -> bytes:
    """The body at ``url``: at most ``limit`` bytes, within :data:`DOWNLOAD_DEADLINE` seconds in
    all whatever the server does (a name lookup, headers or a body that trickle), never silent
    for :data:`DOWNLOAD_TIMEOUT`. The transfer runs in a thread; at the deadline its connections
    are shut and it is left to end."""
    done, sockets = {}, []
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    worker = threading.Thread(
        target=_transfer, args=(url, limit, deadline, sockets, done), daemon=True
    )
    worker.start()
    late = True  # also when the wait is interrupted (Ctrl-C): its connections are shut
    try:
        worker.join(DOWNLOAD_DEADLINE)
        late = worker.is_alive()
    finally:
        if late:
            for sock in list(sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
    if late:  # whatever it read by then, cut short, is not the file
        raise DatasetError(f"no complete file within {DOWNLOAD_DEADLINE:.0f} s")
    if "error" in done:
        raise done["error"]
    return done["data"]


class _Recorded:
    """A urllib handler whose connections add their sockets to ``sockets`` once connected."""

    def __init__(self, sockets):
        super().__init__()
        self.sockets = sockets

    def do_open(self, http_class, req, **kwargs):
        sockets = self.sockets

        class Connection(http_class):
            def connect(self):
                super().connect()
                sockets.append(self.sock)

        return super().do_open(Connection, req, **kwargs)


class _RecordedHTTP(_Recorded, urllib.request.HTTPHandler):
    pass


class _RecordedHTTPS(_Recorded, urllib.request.HTTPSHandler):
    pass


def _transfer(url, limit, deadline, sockets, done) -> None:
    """:func:`_fetch`'s thread: the body into ``done['data']``, or the error into ``done['error']``."""
    try:
        done["data"] = _read_body(url, limit, deadline, sockets)
    except Exception as exc:  # handed to the caller, which raises it
        done["error"] = exc


def _read_body(url, limit, deadline, sockets) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "portnet"})
    opener = urllib.request.build_opener(_RecordedHTTP(sockets), _RecordedHTTPS(sockets))
    with opener.open(request, timeout=min(DOWNLOAD_TIMEOUT, DOWNLOAD_DEADLINE)) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise DatasetError(f"a malformed Content-Length {declared!r}")
            if int(declared) > limit:
                raise DatasetError(
                    f"it offers {int(declared):,} bytes, more than the file can be ({limit:,})"
                )
        bar = (
            progress.bar(
                int(declared) if declared else None,
                f"downloading {url.rsplit('/', 1)[-1]}",
                "B",
                unit_scale=True,
            )
            if progress.wanted()
            else None
        )
        chunks, size = [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise DatasetError(
                        f"no complete file within {DOWNLOAD_DEADLINE:.0f} s ({size:,} bytes received)"
                    )
                chunk = response.read1(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise DatasetError(f"more than the {limit:,} bytes the file can be")
                chunks.append(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return b"".join(chunks)


def _max_file_size(shape) -> int:
    """The most bytes a file of ``shape`` may take, compressed or not (gzip adds a little to
    incompressible data)."""
    raw = _header_size(shape) + int(np.prod(shape))
    return raw + raw // 100 + 4096


def _header_size(shape) -> int:
    """Bytes of an IDX header: the magic number and one 4-byte size per dimension."""
    return 4 * (1 + len(shape))


# --------------------------------------------------------------------------- verification
def _read_verified(source, sha256: str, magic: int, shape, data: bytes | None = None) -> bytes:
    """The decompressed content of an IDX file, after checking header, size and SHA-256; nothing
    is read or decompressed past the size the format gives."""
    source = str(source)
    header = _header_size(shape)
    expected_size = header + int(np.prod(shape))
    if data is None:
        data = read_bounded(Path(source), _max_file_size(shape), DatasetError)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(source, data, expected_size)
    if len(data) < header:
        raise DatasetError(f"{source}: truncated: {len(data)} bytes, shorter than its IDX header")
    found_magic, *dims = struct.unpack(f">{1 + len(shape)}i", data[:header])
    if found_magic != magic:
        raise DatasetError(
            f"{source}: not an IDX file of this kind: magic number {found_magic}, expected {magic}"
        )
    if tuple(dims) != tuple(shape):
        raise DatasetError(f"{source}: dimensions {tuple(dims)}, expected {tuple(shape)}")
    if len(data) != expected_size:
        raise DatasetError(
            f"{source}: truncated or padded: {len(data)} bytes, expected {expected_size}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DatasetError(
            f"{source}: the SHA-256 of its content is {digest}, expected {sha256}: a different or corrupted "
            f"file (left as it is; replace it)"
        )
    return data


def _gunzip(source, data: bytes, expected_size: int) -> bytes:
    """Decompress gzip ``data`` (one member or several), stopping one byte past ``expected_size``."""
    out, rest = [], data
    size = 0
    try:
        while rest:
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            part = stream.decompress(rest, expected_size + 1 - size)
            size += len(part)
            out.append(part)
            if size > expected_size:
                raise DatasetError(
                    f"{source}: decompresses to more than the {expected_size:,} bytes it should hold"
                )
            if not stream.eof:
                raise DatasetError(
                    f"{source}: the gzip stream is corrupted or truncated (it ends early)"
                )
            rest = stream.unused_data
    except zlib.error as exc:
        raise DatasetError(f"{source}: the gzip stream is corrupted or truncated ({exc})") from None
    return b"".join(out)


def _parse(path, data: bytes, shape) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8, offset=_header_size(shape)).reshape(shape).copy()
