"""MNIST and Fashion-MNIST: find, download, verify, parse and cache the four IDX files.

``load_mnist(normalize, flatten, one_hot_label)`` is the book's (dataset/mnist.py), returning
arrays of the active backend on its device. The files are looked for in ``data_dir``, else in
``PORTNET_DATA_DIR`` (``PORTNET_FASHION_MNIST_DIR`` for Fashion-MNIST, then Debian's
/usr/share/datasets/fashion-mnist), else in the user cache directory, where missing files are
downloaded. Every file is checked: gzip stream, IDX header, size, and the SHA-256 of its content.
A file that fails is reported and left as it is. Parsed arrays are cached (``.npy``, no pickle)
so that later loads skip the decompression and the hashing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend as _backend
from .arrays import from_numpy
from .errors import DatasetError
from .io import write_atomic


@dataclass(frozen=True)
class _Spec:
    name: str
    mirrors: tuple[str, ...]
    sha256: dict  # file base name -> SHA-256 of the decompressed content
    env: str
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
    ("/usr/share/datasets/fashion-mnist",),
)

_memo: dict[tuple, np.ndarray] = {}


def load_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None, download=True):
    """MNIST as ``((x_train, t_train), (x_test, t_test))`` on the active backend (the book's API).

    ``normalize``: float32 pixels in [0, 1] (else uint8 0-255). ``flatten``: images of shape
    (N, 784) (else (N, 1, 28, 28)). ``one_hot_label``: labels as float32 one-hot rows (else int64).
    """
    return _load(MNIST, normalize, flatten, one_hot_label, data_dir, download)


def load_fashion_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None, download=True):
    """Fashion-MNIST (Zalando), with the interface of :func:`load_mnist`."""
    return _load(FASHION_MNIST, normalize, flatten, one_hot_label, data_dir, download)


def cache_dir() -> Path:
    """Where downloads and parsed arrays go: ``PORTNET_CACHE_DIR``, else $XDG_CACHE_HOME/portnet."""
    explicit = os.environ.get("PORTNET_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "portnet"


# --------------------------------------------------------------------------- loading
def _load(spec, normalize, flatten, one_hot_label, data_dir, download):
    b = _backend.active()
    xp = b.xp
    raw = {base: _array(spec, base, data_dir, download) for base in _FILES}
    out = []
    for split in ("train", "t10k"):
        # a copy: the parsed arrays are kept (read-only) for the next load, and are not the caller's
        images = from_numpy(raw[f"{split}-images-idx3-ubyte"], xp, b.device, copy=True)
        labels = from_numpy(raw[f"{split}-labels-idx1-ubyte"].astype(np.int64), xp, b.device)
        if normalize:  # the book's float32 k / 255, held in the active dtype
            images = xp.astype(xp.astype(images, xp.float32) / 255.0, b.dtype)
        n = images.shape[0]
        images = xp.reshape(images, (n, 784) if flatten else (n, 1, 28, 28))
        if one_hot_label:
            labels = xp.astype(labels[:, None] == xp.arange(10, device=b.device), b.dtype)
        out.append((images, labels))
    return tuple(out)


def _array(spec, base, data_dir, download) -> np.ndarray:
    """The parsed content of one file: from memory, from the parsed cache, or from the file."""
    path = _locate(spec, base, data_dir, download)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    cached = cache_dir() / "parsed" / f"{spec.name}-{base}-{digest}.npy"
    magic, shape = _FILES[base]
    array = None
    if cached.is_file():
        try:
            array = np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            array = None
        if array is not None and (array.shape != shape or array.dtype != np.uint8):
            array = None
    if array is None:
        array = _parse(path, _read_verified(path, spec.sha256[base], magic, shape), shape)
        try:
            write_atomic(cached, lambda f: np.save(f, array, allow_pickle=False))
        except OSError:
            pass  # a cache that cannot be written only costs the next load its parse
    array.setflags(write=False)
    _memo[key] = array
    return array


def _locate(spec, base, data_dir, download) -> Path:
    """The first directory holding the file (gzip or raw); else download it into one."""
    if data_dir is not None:
        dirs = [Path(data_dir)]
    elif os.environ.get(spec.env):
        dirs = [Path(os.environ[spec.env])]
    else:
        dirs = [*map(Path, spec.system_dirs), cache_dir() / spec.name]
    for d in dirs:
        for name in (base + ".gz", base):
            if (d / name).is_file():
                return d / name
    target = dirs[-1]
    where = f"{target} (gzip-compressed or raw: {', '.join(n + '.gz' for n in _FILES)})"
    if not download:
        raise DatasetError(f"{spec.name}: {base}.gz is not in {', '.join(map(str, dirs))}; put the four files in {where}, or allow download=True")
    return _download(spec, base, target, where)


def _download(spec, base, target: Path, where: str) -> Path:
    errors = []
    magic, shape = _FILES[base]
    dest = target / (base + ".gz")
    for mirror in spec.mirrors:
        url = mirror + base + ".gz"
        try:
            data = _fetch(url)
            _read_verified(url, spec.sha256[base], magic, shape, data)
        except urllib.error.HTTPError as exc:
            errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except (urllib.error.URLError, OSError, DatasetError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        write_atomic(dest, lambda f: f.write(data))
        return dest
    raise DatasetError(
        f"{spec.name}: could not download {base}.gz from any mirror ({'; '.join(errors)}). "
        f"Without network access, put the four files in {where}, or point {spec.env} at them"
    )


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "portnet"})
    with urllib.request.urlopen(request, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = _bar(total, url.rsplit("/", 1)[-1])
        chunks = []
        while chunk := response.read(1 << 16):
            chunks.append(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return b"".join(chunks)


def _bar(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {desc}", leave=False)


# --------------------------------------------------------------------------- verification
def _read_verified(source, sha256: str, magic: int, shape, data: bytes | None = None) -> bytes:
    """The decompressed content of an IDX file, after checking header, size and SHA-256."""
    source = str(source)
    if data is None:
        data = Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{source}: the gzip stream is corrupted or truncated ({exc})") from None
    header = 8 + 4 * (len(shape) - 1)
    if len(data) < header:
        raise DatasetError(f"{source}: truncated: {len(data)} bytes, shorter than its IDX header")
    found_magic, *dims = struct.unpack(f">{1 + len(shape)}i", data[: 4 * (1 + len(shape))])
    if found_magic != magic:
        raise DatasetError(f"{source}: not an IDX file of this kind: magic number {found_magic}, expected {magic}")
    if tuple(dims) != tuple(shape):
        raise DatasetError(f"{source}: dimensions {tuple(dims)}, expected {tuple(shape)}")
    expected_size = header + int(np.prod(shape))
    if len(data) != expected_size:
        raise DatasetError(f"{source}: truncated or padded: {len(data)} bytes, expected {expected_size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DatasetError(
            f"{source}: the SHA-256 of its content is {digest}, expected {sha256}: a different or corrupted "
            f"file (left as it is; replace it)"
        )
    return data


def _parse(path, data: bytes, shape) -> np.ndarray:
    header = 8 + 4 * (len(shape) - 1)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
