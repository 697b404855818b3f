"""The MNIST loader: the book's API, verification of every file, downloads, caches, errors."""

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import threading
import time

import numpy as np
import pytest

import portnet as pn
from portnet import datasets
from tests.helpers import assert_like

FILES = list(datasets._FILES)


def test_book_signature_and_shapes(backend, mnist_dir):
    (x_train, t_train), (x_test, t_test) = pn.load_mnist(data_dir=mnist_dir)
    assert_like(x_train, backend, "float32", (60000, 784))
    assert_like(t_train, backend, "int64", (60000,))
    assert_like(x_test, backend, "float32", (10000, 784))
    assert pn.to_numpy(t_train[:10]).tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    (x, t), _ = pn.load_mnist(
        normalize=False, flatten=False, one_hot_label=True, data_dir=mnist_dir
    )
    assert_like(x, backend, "uint8", (60000, 1, 28, 28))
    assert_like(t, backend, "float32", (60000, 10))
    assert pn.to_numpy(t[0, ...]).tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_pixel_statistics_match_the_data_readme(mnist_dir):
    with pn.use_backend("numpy"):
        (x_train, _), _ = pn.load_mnist(normalize=False, data_dir=mnist_dir)
    scaled = x_train / 255.0
    assert abs(float(scaled.mean()) - 0.1306604762738429) < 1e-12
    assert abs(float(scaled.std()) - 0.3081078038564622) < 1e-12


def test_second_load_is_fast_and_uses_the_parsed_cache(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_memo", {})
    with pn.use_backend("numpy"):
        first = pn.load_mnist(normalize=False, data_dir=mnist_dir)
        assert len(list((tmp_path / "parsed").glob("mnist-*.npy"))) == 4
        monkeypatch.setattr(datasets, "_memo", {})  # a new process: only the files remain
        monkeypatch.setattr(datasets, "_read_verified", lambda *a, **k: pytest.fail("parsed again"))
        start = time.perf_counter()
        second = pn.load_mnist(normalize=False, data_dir=mnist_dir)
        elapsed = time.perf_counter() - start
    assert np.array_equal(first[0][0], second[0][0])
    print(f"second load from the parsed cache: {elapsed:.3f} s")  # measured, not asserted


def _copy(mnist_dir, dest, gz=True):
    dest.mkdir(exist_ok=True)
    for base in FILES:
        data = (mnist_dir / (base + ".gz")).read_bytes()
        if gz:
            (dest / (base + ".gz")).write_bytes(data)
        else:
            (dest / base).write_bytes(gzip.decompress(data))
    return dest


def test_raw_uncompressed_files_are_read(mnist_dir, tmp_path):
    raw = _copy(mnist_dir, tmp_path / "raw", gz=False)
    with pn.use_backend("numpy"):
        (x, t), _ = pn.load_mnist(normalize=False, data_dir=raw)
        (x_ref, t_ref), _ = pn.load_mnist(normalize=False, data_dir=mnist_dir)
    assert np.array_equal(x, x_ref) and np.array_equal(t, t_ref)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "gzip stream is corrupted or truncated"),
        (lambda b: gzip.compress(gzip.decompress(b)[:-100]), "truncated or padded"),
        (
            lambda b: gzip.compress(b"\x00\x00\x08\x01" + gzip.decompress(b)[4:]),
            "magic number 2049, expected 2051",
        ),
        (
            lambda b: gzip.compress(_flip_last_pixel(gzip.decompress(b))),
            "SHA-256 of its content is",
        ),
    ],
    ids=["truncated-gzip", "truncated-payload", "wrong-magic", "one-pixel-changed"],
)
def test_damaged_files_are_named_and_left_alone(mnist_dir, tmp_path, monkeypatch, damage, message):
    monkeypatch.setattr(datasets, "_memo", {})
    data_dir = _copy(mnist_dir, tmp_path / "data")
    victim = data_dir / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(damage(victim.read_bytes()))
    before = victim.read_bytes()
    with pytest.raises(pn.DatasetError, match=message) as info:
        pn.load_mnist(data_dir=data_dir)
    assert str(victim) in str(info.value)
    assert victim.read_bytes() == before, "the user's file is never deleted or rewritten"


def _flip_last_pixel(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 0xFF])


def test_offline_with_nothing_cached_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTNET_DATA_DIR", raising=False)
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(tmp_path))
    with pytest.raises(
        pn.DatasetError, match=r"put the four files in .*mnist.*train-images-idx3-ubyte.gz"
    ):
        pn.load_mnist(download=False)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(directory):
    """An HTTP server on the loopback interface, serving ``directory``."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_tries_mirrors_verifies_and_writes_atomically(mnist_dir, tmp_path, monkeypatch):
    good = _copy(mnist_dir, tmp_path / "good")
    bad = tmp_path / "bad"  # a mirror that serves a corrupted copy of one file and lacks the rest
    bad.mkdir()
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file")
    cache = tmp_path / "cache"
    monkeypatch.delenv("PORTNET_DATA_DIR", raising=False)
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(cache))
    monkeypatch.setattr(datasets, "_memo", {})
    with _serve(bad) as bad_url, _serve(good) as good_url:
        spec = datasets.MNIST.__class__(
            **{**datasets.MNIST.__dict__, "mirrors": (bad_url, good_url)}
        )
        monkeypatch.setattr(datasets, "MNIST", spec)
        with pn.use_backend("numpy"):
            (x, t), _ = pn.load_mnist(normalize=False)
    for base in FILES:
        downloaded = cache / "mnist" / (base + ".gz")
        assert (
            hashlib.sha256(gzip.decompress(downloaded.read_bytes())).hexdigest()
            == spec.sha256[base]
        )
    assert not list((cache / "mnist").glob("*.part")), "no temporary file is left behind"
    assert t[:3].tolist() == [5, 0, 4]


def test_download_failure_lists_each_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTNET_DATA_DIR", raising=False)
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(tmp_path))
    with _serve(tmp_path) as empty_url:
        spec = datasets.MNIST.__class__(
            **{**datasets.MNIST.__dict__, "mirrors": (empty_url, empty_url + "other/")}
        )
        monkeypatch.setattr(datasets, "MNIST", spec)
        with pytest.raises(
            pn.DatasetError,
            match=r"could not download .* from any mirror .*HTTP 404.*other/.*HTTP 404.*put the four files in",
        ):
            pn.load_mnist()
    assert not list(tmp_path.rglob("*.gz")), "nothing half-written"


def test_fashion_mnist_from_debian_or_data_dir(tmp_path, monkeypatch):
    system = datasets.FASHION_MNIST.system_dirs[0]
    if not os.path.isdir(system):
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({system})")
    monkeypatch.delenv("PORTNET_FASHION_MNIST_DIR", raising=False)
    with pn.use_backend("numpy"):
        (x, t), (x_test, _) = pn.load_fashion_mnist(download=False)
        assert x.shape == (60000, 784) and x_test.shape == (10000, 784)
        assert sorted(set(t.tolist())) == list(range(10))
        shutil.copytree(system, tmp_path / "fashion")
        (x2, _), _ = pn.load_fashion_mnist(data_dir=tmp_path / "fashion")
    assert np.array_equal(x, x2)


def test_fashion_mnist_refuses_mnist_files(mnist_dir, monkeypatch):
    monkeypatch.setattr(datasets, "_memo", {})
    with pytest.raises(pn.DatasetError, match="SHA-256"):
        pn.load_fashion_mnist(data_dir=mnist_dir)
