"""Files, downloads and arguments that cannot hurt: each class of hostile or careless input gets
a bounded, clear refusal, and nothing the user owns is lost (loopback servers, bounded in time)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import pickle
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import portnet as pn
from portnet import cli, datasets
from portnet.persistence import files as pio
from portnet.persistence import pickles

LABELS = "t10k-labels-idx1-ubyte"


def run(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "portnet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def one_line_error(out, expected):
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert expected in out.stderr, out.stderr


# --------------------------------------------------------------------------- the user's work
@pytest.mark.parametrize("save, plot", [("out.npz", "out.npz"), ("out", "out.npz")])
def test_save_and_plot_naming_one_file_is_refused_before_training(tmp_path, save, plot):
    pytest.importorskip("matplotlib")
    out = run(
        "train",
        "--save",
        str(tmp_path / save),
        "--plot",
        str(tmp_path / plot),
        "--data-dir",
        str(tmp_path),
    )
    one_line_error(out, "--save and --plot both name")
    assert list(tmp_path.iterdir()) == []


def test_existing_checkpoint_is_found_after_its_suffix_is_added(tmp_path):
    (tmp_path / "mynet.npz").write_bytes(b"my trained model")
    out = run("train", "--save", str(tmp_path / "mynet"), "--data-dir", str(tmp_path / "nowhere"))
    one_line_error(out, "mynet.npz exists; pass --overwrite")
    assert (tmp_path / "mynet.npz").read_bytes() == b"my trained model"


def test_unwritable_or_impossible_places_are_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = run("train", "--save", str(blocker / "net.npz"), "--data-dir", str(tmp_path / "nowhere"))
    one_line_error(out, "is not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        one_line_error(
            run("train", "--save", str(locked / "net.npz"), "--data-dir", str(tmp_path)),
            "no permission to write",
        )


def test_atomic_writes_leave_no_part_and_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        pio.write_atomic(tmp_path / "net.npz", lambda f: f.write(b"data"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "net.npz").stat().st_mode) == 0o640
    with pytest.raises(KeyboardInterrupt):
        pio.write_atomic(
            tmp_path / "other.npz",
            lambda f: (f.write(b"half"), (_ for _ in ()).throw(KeyboardInterrupt())),
        )
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]


# --------------------------------------------------------------------------- downloads
class _Server:
    """A loopback HTTP server whose every response is ``respond(conn)`` (raw bytes, any pace)."""

    def __init__(self, respond):
        self.respond = respond
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with contextlib.suppress(OSError):
            conn.recv(65536)
            self.respond(conn, self.stop)
        conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@contextlib.contextmanager
def serving(respond):
    server = _Server(respond)
    try:
        yield server.url
    finally:
        server.close()


def _good_labels(mnist_dir):
    return (mnist_dir / f"{LABELS}.gz").read_bytes()


def _ok(body, headers=b""):
    def respond(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + headers + b"Connection: close\r\n\r\n" + body)

    return respond


def _trickle(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10008\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"\x1f")
        time.sleep(0.2)


def _trickled_headers(conn, stop):
    """Headers that never end: one byte every 0.2 s (each read returns before the timeout)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.is_set():
        conn.sendall(b"X")
        time.sleep(0.2)


def _endless(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"\x00" * 65536)


def _bomb(megabytes=200) -> bytes:
    return gzip.compress(b"\x00" * (megabytes << 20), compresslevel=9)  # about 1 KB per MB


@pytest.fixture
def only_mirrors(monkeypatch, tmp_path):
    """Downloads go to a throwaway cache from the given mirrors only, with short time limits."""
    monkeypatch.delenv("PORTNET_DATA_DIR", raising=False)
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "DOWNLOAD_DEADLINE", 2.0)
    monkeypatch.setattr(datasets, "DOWNLOAD_TIMEOUT", 1.0)

    def use(*urls):
        monkeypatch.setenv("PORTNET_MNIST_MIRRORS", ",".join(urls))
        spec = datasets.MNIST.__class__(**{**datasets.MNIST.__dict__, "mirrors": ()})
        monkeypatch.setattr(datasets, "MNIST", spec)
        return spec

    return use


@pytest.mark.parametrize(
    "bad, reason",
    [
        (_trickle, "no complete file within 2 s"),
        (_trickled_headers, "no complete file within 2 s"),
        (_endless, "more than the"),
        (_ok(b"x", b"Content-Length: abc\r\n"), "a malformed Content-Length 'abc'"),
        (
            lambda conn, stop: conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"
            ),
            "more than the file can be",
        ),
        (lambda conn, stop: conn.sendall(b"NOT HTTP AT ALL\r\n\r\n"), "BadStatusLine"),
        (_ok(_bomb(10)), "decompresses to more than"),
    ],
    ids=[
        "trickle",
        "trickled-headers",
        "endless",
        "bad-length",
        "huge-length",
        "bad-status",
        "gzip-bomb",
    ],
)
def test_a_misbehaving_mirror_is_abandoned_and_the_next_tried(
    bad, reason, mnist_dir, only_mirrors, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="portnet")  # each mirror's failure is a detail
    spec = only_mirrors()
    with serving(bad) as bad_url, serving(_ok(_good_labels(mnist_dir))) as good_url:
        only_mirrors(bad_url, good_url)
        start = time.monotonic()
        path = datasets._download(spec, LABELS, tmp_path / "cache" / "mnist", "here")
        elapsed = time.monotonic() - start
    assert path.read_bytes() == _good_labels(mnist_dir)
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert any(
        reason in record.getMessage() and bad_url in record.getMessage()
        for record in caplog.records
    ), caplog.text


def test_every_mirror_failing_is_one_error_naming_each(only_mirrors, tmp_path):
    spec = only_mirrors()
    with serving(_endless) as a, serving(lambda conn, stop: conn.sendall(b"garbage\r\n\r\n")) as b:
        only_mirrors(a, b)
        with pytest.raises(
            pn.DatasetError,
            match=r"could not download .* from any mirror .*127\.0\.0\.1.*more than.*BadStatusLine",
        ):
            datasets._download(spec, LABELS, tmp_path / "cache" / "mnist", "here")


def test_a_gzip_bomb_in_the_data_directory_stops_at_the_expected_size(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_memo", {})
    (tmp_path / f"{LABELS}.gz").write_bytes(_bomb())
    start = time.monotonic()
    with pytest.raises(pn.DatasetError, match="more than the .* allowed|decompresses to more than"):
        datasets._array(datasets.MNIST, LABELS, tmp_path, download=False)
    assert time.monotonic() - start < 5


def test_a_poisoned_parsed_cache_is_parsed_again(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_memo", {})
    good = datasets._array(datasets.MNIST, LABELS, mnist_dir, download=False).copy()
    (cached,) = (tmp_path / "parsed").glob(f"mnist-{LABELS}-*.npy")
    poisoned = (good + 1) % 10  # same shape and dtype, every label wrong
    np.save(cached, poisoned)
    monkeypatch.setattr(datasets, "_memo", {})
    again = datasets._array(datasets.MNIST, LABELS, mnist_dir, download=False)
    assert np.array_equal(again, good)
    np.save(cached, np.zeros(10**7, np.uint8))  # a header claiming another shape: not even read
    monkeypatch.setattr(datasets, "_memo", {})
    assert np.array_equal(datasets._array(datasets.MNIST, LABELS, mnist_dir, download=False), good)


# --------------------------------------------------------------------------- pickles and checkpoints
class _Huge:
    """Pickles as NumPy's own array reconstruction, asking for 10^12 elements: a few dozen bytes."""

    def __init__(self, in_state):
        self.in_state = in_state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        if self.in_state:  # a small array whose state then claims the huge shape
            return (
                _reconstruct,
                (np.ndarray, (0,), b"b"),
                (1, (10**12,), np.dtype("f8"), False, b""),
            )
        return _reconstruct, (np.ndarray, (10**12,), b"b")


@pytest.mark.parametrize("in_state", [False, True], ids=["reconstruct", "state"])
def test_a_tiny_pickle_cannot_ask_for_a_huge_array(tmp_path, in_state):
    """Refused before anything is allocated (as it would be by plain pickle.load)."""
    path = tmp_path / "tiny.pkl"
    path.write_bytes(pickle.dumps({"W": _Huge(in_state)}, protocol=4))
    assert path.stat().st_size < 300
    with pytest.raises(
        pn.UnsafePickleError,
        match=r"shape \(1000000000000,\); NumPy starts|exceeds the limit",
    ):
        pn.read_pickled_arrays(path)


@pytest.mark.parametrize(
    "value",
    [np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]), np.dtype(("f8", (1000, 1000)))],
    ids=["fields", "sub-array"],
)
def test_dtypes_with_fields_or_sub_arrays_are_refused(tmp_path, value):
    path = tmp_path / "dtype.pkl"
    path.write_bytes(pickle.dumps({"W": value}))
    with pytest.raises(
        pn.UnsafePickleError, match="fields or sub-arrays|not a plain numeric dtype"
    ):
        pn.read_pickled_arrays(path)


def _checkpoint(path, meta, arrays):
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    path.write_bytes(buffer.getvalue())
    return path


GOOD_META = {
    "format": 1,
    "dtype": "float32",
    "architecture": {
        "class": "TwoLayerNet",
        "input_size": 4,
        "hidden_size": 3,
        "output_size": 2,
        "weight_init_std": 0.01,
    },
}


def _params():
    return {
        "param/W1": np.zeros((4, 3), np.float32),
        "param/b1": np.zeros(3, np.float32),
        "param/W2": np.zeros((3, 2), np.float32),
        "param/b2": np.zeros(2, np.float32),
    }


@pytest.mark.parametrize(
    "meta, arrays, message",
    [
        ({**GOOD_META, "format": "1"}, None, "metadata 'format' is '1', expected int"),
        (
            {**GOOD_META, "architecture": []},
            None,
            "metadata 'architecture' is \\[\\], expected dict",
        ),
        ({**GOOD_META, "dtype": "complex128"}, None, "metadata dtype 'complex128'"),
        (
            {**GOOD_META, "architecture": {**GOOD_META["architecture"], "class": "os.system"}},
            None,
            "unknown architecture",
        ),
        (
            {
                **GOOD_META,
                "architecture": {
                    "class": "MultiLayerNet",
                    "input_size": 784,
                    "hidden_size_list": [2_000_000] * 10,
                    "output_size": 10,
                },
            },
            None,
            "parameters .* portnet allows at most",
        ),
        (
            {**GOOD_META, "architecture": {**GOOD_META["architecture"], "hidden_size": "three"}},
            None,
            "cannot be built",
        ),
        (
            GOOD_META,
            {"param/W1": np.zeros((4, 3), np.complex64)},
            "holds complex64 values|unexpected member",
        ),
        (GOOD_META, {"param/W1": np.array(["a", "b"])}, "holds <U1 values"),
        (
            GOOD_META,
            {"buffer/Affine1.W": np.zeros((4, 3), np.float32)},
            "buffer 'Affine1.W' is not one this network defines",
        ),
        (
            GOOD_META,
            {"param/W1": np.zeros((5, 3), np.float32)},
            r"W1 has shape \(5, 3\), the network needs \(4, 3\)",
        ),
    ],
    ids=[
        "format-type",
        "architecture-type",
        "dtype",
        "class",
        "58-GiB",
        "size-type",
        "complex",
        "strings",
        "buffer-name",
        "shape",
    ],
)
def test_checkpoints_are_validated_before_anything_is_built(tmp_path, meta, arrays, message):
    path = _checkpoint(tmp_path / "c.npz", meta, {**_params(), **(arrays or {})})
    with pytest.raises(pn.CheckpointError, match=message):
        pn.load_checkpoint(path)


def test_batch_norm_statistics_of_the_wrong_shape_are_refused(tmp_path):
    meta = {
        **GOOD_META,
        "architecture": {
            "class": "MultiLayerNet",
            "input_size": 4,
            "hidden_size_list": [3],
            "output_size": 2,
            "use_batchnorm": True,
        },
    }
    arrays = {
        **_params(),
        "param/gamma1": np.ones(3, np.float32),
        "param/beta1": np.zeros(3, np.float32),
        "buffer/BatchNorm1.running_mean": np.zeros(1, np.float32),
        "buffer/BatchNorm1.running_var": np.ones(3, np.float32),
    }
    with pytest.raises(
        pn.CheckpointError, match=r"BatchNorm1.running_mean' has shape \(1,\), expected \(3,\)"
    ):
        pn.load_checkpoint(_checkpoint(tmp_path / "bn.npz", meta, arrays))


def test_a_huge_npz_member_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(pickles, "MAX_ELEMENTS", 1000)
    path = _checkpoint(
        tmp_path / "big.npz", GOOD_META, {**_params(), "param/W1": np.zeros((100, 100), np.float32)}
    )
    with pytest.raises(pn.CheckpointError, match="exceeds the limit of 1,000|unpacks to"):
        pn.load_checkpoint(path)


# --------------------------------------------------------------------------- one line, not a traceback
def test_not_checkpoints_are_one_line_errors(tmp_path, mnist_dir):
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "notes.npz").write_text("these are my notes")
    for name in ("empty.npz", "notes.npz"):
        out = run("evaluate", str(tmp_path / name), "--data-dir", str(mnist_dir))
        one_line_error(out, "not a portnet checkpoint")
        assert "pickle" not in out.stderr


def test_arguments_that_would_exhaust_memory_or_name_no_device(tmp_path):
    one_line_error(
        run("train", "--hidden", "10000000", "--data-dir", str(tmp_path)), "portnet allows at most"
    )
    pytest.importorskip("torch")
    one_line_error(
        run("train", "--backend", "torch", "--device", "meta", "--data-dir", str(tmp_path)),
        "torch device 'meta' cannot hold data",
    )


def test_a_learning_rate_that_blows_up_is_an_error_not_a_result(mnist_dir):
    out = run(
        "train",
        "--lr",
        "1e6",
        "--limit",
        "6000",
        "--epochs",
        "1",
        "--no-progress",
        "--data-dir",
        str(mnist_dir),
    )
    one_line_error(out, "training has blown up")


def test_an_unreadable_data_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "_memo", {})
    for base in datasets._FILES:
        (tmp_path / f"{base}.gz").write_bytes(b"")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pio, "open", refuse, raising=False)
    assert cli.main(["train", "--data-dir", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot be read (Permission denied)" in err and len(err.strip().splitlines()) == 1


def test_a_bug_in_portnet_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_train", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["train"])
