"""Nothing lost under signals, races, full disks and odd environments; every size bounded before
it is allocated; no traceback for a user's mistake. Bounded in time, loopback only; the tests that
need root (a small tmpfs, a user id without a passwd entry) skip without it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import portnet as pn
from portnet import cli, datasets
from portnet.arrays import dtype_name
from portnet.persistence import files, pickles
from tests.test_hostile_input import GOOD_META, LABELS, _checkpoint, _params, one_line_error, run

TINY = ("--limit", "100", "--epochs", "1", "--hidden", "10", "--no-progress")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, setpriv)")


def cli_run(capsys, *args):
    """``portnet ARGS`` in this process: (exit status, stdout, stderr); usage errors included.
    The backend it chooses is this test's only."""
    try:
        with pn.use_backend("numpy"):
            status = cli.main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def _same_params(a, b):
    return all(np.array_equal(pn.to_numpy(a.params[k]), pn.to_numpy(b.params[k])) for k in a.params)


# --------------------------------------------------------------------------- two writers
@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_two_writers_racing_for_one_name_never_both_succeed(tmp_path, monkeypatch, links):
    """Both pass every check, then both write: the second is refused, the first's file kept."""
    if not links:  # FAT, some network file systems: the name is claimed with O_EXCL instead

        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    barrier, savez = threading.Barrier(2, timeout=30), np.savez

    def racing_savez(f, **arrays):
        barrier.wait()
        savez(f, **arrays)

    monkeypatch.setattr(np, "savez", racing_savez)
    nets = [pn.TwoLayerNet(4, 3, 2, seed=seed) for seed in (1, 2)]
    path, outcome = tmp_path / "net.npz", [None, None]

    def save(i):
        try:
            pn.save_checkpoint(nets[i], path)
            outcome[i] = "saved"
        except FileExistsError as exc:
            outcome[i] = str(exc)

    writers = [threading.Thread(target=save, args=(i,)) for i in (0, 1)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert outcome.count("saved") == 1, outcome
    winner = outcome.index("saved")
    assert "created by another writer meanwhile" in outcome[1 - winner]
    assert _same_params(pn.load_checkpoint(path), nets[winner])
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]


RACER = """
import os, random, sys, time
from portnet.persistence import files
directory, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(me)
def write(f):
    time.sleep(rng.uniform(0, 0.003))  # the other writer may check the name meanwhile
    f.write(me.encode())
print("ready", flush=True)
while not os.path.exists(os.path.join(directory, "go")):
    time.sleep(0.001)
won = []
for i in range(rounds):
    path = os.path.join(directory, f"r{i}")
    try:
        files.check_writable(path)
        files.write_atomic(path, write, overwrite=False)
        won.append(i)
    except FileExistsError:
        pass
print(" ".join(map(str, won)), flush=True)
"""


def test_two_processes_racing_for_the_same_names(tmp_path):
    """Two processes create 150 names in the same order, each only if it does not exist yet: no
    name is won twice, and each holds what its winner wrote."""
    rounds = 150
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), me, str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for me in "ab"
    ]
    for racer in racers:
        assert racer.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    won = [set(map(int, r.communicate(timeout=120)[0].split())) for r in racers]
    assert not won[0] & won[1]
    assert won[0] | won[1] == set(range(rounds))
    for i in range(rounds):
        assert (tmp_path / f"r{i}").read_text() == ("a" if i in won[0] else "b")
    assert not list(tmp_path.glob(".*.part"))


# --------------------------------------------------------------------------- abandoned parts
def test_a_part_is_removed_only_when_provably_abandoned(tmp_path):
    """Unlocked and a day old: removed. Locked (a live writer, in any PID namespace), or recent
    (a writer on another host, where locks may not reach): kept, whatever process id it names."""
    target = tmp_path / "net.npz"
    prefix = files._part_prefix(target)
    old = time.time() - files.STALE_AFTER - 60

    def part(name, age):
        p = tmp_path / f"{prefix}{name}.part"
        p.write_bytes(b"half a file")
        os.utime(p, None if age is None else (age, age))
        return p

    abandoned, live, recent = part("abandone", old), part("livelive", old), part("recent00", None)
    holder = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a writer holds its temporary file
        files.write_atomic(target, lambda f: f.write(b"data"))
        assert not abandoned.exists() and live.exists() and recent.exists()
    finally:
        os.close(holder)
    assert target.read_bytes() == b"data"


def test_a_name_near_the_file_systems_limit_is_written(tmp_path):
    """The temporary name is cut to fit: a 255-byte name is saved (checked first, as written)."""
    target = tmp_path / ("n" * 251 + ".npz")
    files.check_writable(target)
    pn.save_checkpoint(pn.TwoLayerNet(4, 3, 2, seed=0), target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_path_whose_temporary_name_is_too_long_is_refused_up_front(tmp_path):
    directory = tmp_path
    path_max = os.pathconf(tmp_path, "PC_PATH_MAX")
    while len(os.fsencode(directory)) < path_max - 250:
        directory = directory / ("d" * 200)
    directory = directory / ("d" * (path_max - 21 - len(os.fsencode(directory))))
    directory.mkdir(parents=True)
    target = directory / "net.npz"  # fits, 12 bytes short of the limit: its temporary name not
    assert len(os.fsencode(target)) < path_max
    with pytest.raises(OSError, match="with its temporary name"):
        files.check_writable(target)


# --------------------------------------------------------------------------- signals
def test_a_signal_during_a_write_is_honoured_once_the_file_is_in_place(tmp_path):
    """SIGINT, then SIGTERM, arriving inside the write: the file is finished, no .part is
    left, and the signals are handled after (KeyboardInterrupt, then the SIGTERM handler)."""
    terminated = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))

    def write(f):
        f.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the signals have arrived: nothing was interrupted
        f.write(b"second half")

    try:
        with pytest.raises(KeyboardInterrupt):
            files.write_atomic(tmp_path / "net.npz", write)
        assert (tmp_path / "net.npz").read_bytes() == b"first half second half"
        assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]
        assert terminated == [signal.SIGTERM]
        signal.raise_signal(signal.SIGTERM)  # and its handler is back
        assert terminated == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


SAVER = """
import os, signal, sys
SIGNALS = {signal.SIGINT, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # every thread started later inherits this
import portnet as pn
from portnet import cli
directory = sys.argv[1]
signal.signal(signal.SIGTERM, cli._stopper([]))  # as the command: SystemExit(143)
net = pn.MultiLayerNet(784, [300, 100], 10, seed=0)
print("ready", flush=True)
saves = stops = 0
while not os.path.exists(os.path.join(directory, "stop")):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the command ignores a second one
    signal.signal(signal.SIGTERM, cli._stopper([]))
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # signals reach it during saves only
        pn.save_checkpoint(net, os.path.join(directory, f"net{saves}.npz"))
    except (KeyboardInterrupt, SystemExit):
        stops += 1
    finally:
        while True:
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
                break
            except (KeyboardInterrupt, SystemExit):  # one pending as the mask was set
                stops += 1
    saves += 1
print(saves, stops, flush=True)
"""


def test_signals_at_random_moments_during_saves_lose_nothing(tmp_path):
    """A process saves in a loop while SIGINT and SIGTERM arrive at random moments, often a
    second one a few milliseconds after the first (for 3 s): every file is whole, no .part is
    left, every signal stops the save it hit, and nothing is printed (no traceback, no
    "Exception ignored")."""
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert saver.stdout.readline().strip() == "ready"
    rng, end, sent = random.Random(20), time.monotonic() + 3, 0
    while time.monotonic() < end:
        time.sleep(rng.uniform(0, 0.02))
        saver.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
        sent += 1
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.006))
            saver.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
            sent += 1
    (tmp_path / "stop").touch()
    out, err = saver.communicate(timeout=60)
    saves, stops = map(int, out.split())
    assert err == ""
    assert stops > 20, f"{stops} of {sent} signals reached a save"  # it was exercised
    assert not list(tmp_path.glob(".*"))
    reference = pn.MultiLayerNet(784, [300, 100], 10, seed=0)
    written = sorted(tmp_path.glob("net*.npz"))
    assert len(written) >= saves - stops - 1
    for path in written:
        assert _same_params(pn.load_checkpoint(path), reference), path


def test_the_command_interrupted_at_random_moments_prints_one_line(tmp_path, mnist_dir):
    """``portnet train --save`` receiving SIGINT or SIGTERM (and often a second one a few ms
    later) somewhere in its training and saving: one line, no traceback, and a checkpoint that
    is either whole or absent."""
    rng = random.Random(7)
    for trial in range(4):
        save = tmp_path / f"run{trial}.npz"
        command = [sys.executable, "-m", "portnet", "train", *TINY[:4], "--hidden", "500"]
        command += ["--no-progress", "--data-dir", str(mnist_dir), "--save", str(save)]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().startswith("portnet: ")  # its handlers are in place
        time.sleep(rng.uniform(0, 0.3))
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
            time.sleep(rng.uniform(0, 0.01))
            process.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
        _, err = process.communicate(timeout=120)
        assert process.returncode in (0, 130, 143), (process.returncode, err)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert len(err.strip().splitlines()) <= 1, err
        assert not list(tmp_path.glob(".*.part"))
        if save.exists():
            pn.load_checkpoint(save)


# --------------------------------------------------------------------------- full disk
@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    place = tmp_path / "small"
    place.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(place)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield place
    finally:
        subprocess.run(["umount", str(place)], check=True)


def test_a_full_disk_loses_nothing(full_disk, capsys, mnist_dir):
    """Saving where it does not fit fails with ENOSPC, one line in the command; the file it would
    have replaced is intact and nothing is left behind."""
    small = full_disk / "small.npz"
    pn.save_checkpoint(pn.TwoLayerNet(4, 3, 2, seed=0), small)
    kept = small.read_bytes()
    big = pn.TwoLayerNet(784, 100, 10, seed=0)  # 318 KB
    for target, overwrite in ((small, True), (full_disk / "new.npz", False)):
        with pytest.raises(OSError) as raised:
            pn.save_checkpoint(big, target, overwrite=overwrite)
        assert raised.value.errno == errno.ENOSPC
        assert small.read_bytes() == kept
        assert sorted(p.name for p in full_disk.iterdir()) == ["small.npz"]
    status, _, err = cli_run(
        capsys, "train", *TINY[:4], "--hidden", "100", "--no-progress", "--data-dir", mnist_dir,
        "--save", full_disk / "run.npz",
    )  # fmt: skip
    assert status == 1 and "No space left on device" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in full_disk.iterdir()) == ["small.npz"]


def test_a_full_cache_disk_costs_only_the_parsed_cache(full_disk, mnist_dir, monkeypatch):
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(full_disk))
    monkeypatch.setattr(datasets, "_memo", {})
    (x, t) = datasets.load_split("mnist", "test", data_dir=mnist_dir)
    assert x.shape == (10000, 784)
    assert not list(full_disk.rglob("*.part"))


# --------------------------------------------------------------------------- names and streams
def test_output_names_are_checked_as_they_will_be_written(capsys, tmp_path):
    for name in ("", ".", "..", "out/"):
        status, _, err = cli_run(capsys, "train", "--save", name, "--data-dir", tmp_path)
        assert status == 2 and "names a directory, not a file" in err and len(err.splitlines()) == 1
    long = tmp_path / ("a" * 252 + ".npz")  # 256 bytes
    status, _, err = cli_run(capsys, "train", "--save", long, "--data-dir", tmp_path / "x")
    assert status == 1 and "File name too long" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_name_the_terminal_cannot_encode_is_saved_and_printed_escaped(tmp_path, mnist_dir):
    name = os.fsdecode(b"\xff\xfe-net.npz")
    out = subprocess.run(
        [sys.executable, "-m", "portnet", "train", *TINY, "--data-dir", str(mnist_dir)]
        + ["--save", str(tmp_path / name)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},  # strict, as in a UTF-8 locale
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert b"\\udcff\\udcfe-net.npz" in out.stdout
    pn.load_checkpoint(tmp_path / name)


@pytest.mark.parametrize(
    "redirect", ["2>&-", ">&-", "| head -c 1 >/dev/null"], ids=["stderr", "stdout", "pipe"]
)
def test_closed_streams_do_not_cost_the_result(tmp_path, mnist_dir, redirect):
    """stderr or stdout closed, or a reader that went away: the run trains and saves."""
    save = tmp_path / "net.npz"
    command = shlex.join(
        [sys.executable, "-m", "portnet", "train", *TINY, "--data-dir", str(mnist_dir)]
        + ["--save", str(save), "--plot", str(tmp_path / "curve.png")]
    )
    out = subprocess.run(
        ["sh", "-c", f"{command} {redirect}; echo $?"], capture_output=True, text=True, timeout=300
    )
    if redirect != "| head -c 1 >/dev/null":
        assert out.stdout.strip().splitlines()[-1] == "0", out
    pn.load_checkpoint(save)
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_the_plot_is_written_in_the_format_its_suffix_names(capsys, tmp_path, mnist_dir):
    pytest.importorskip("matplotlib")
    status, _, err = cli_run(
        capsys, "train", *TINY, "--data-dir", mnist_dir, "--plot", tmp_path / "c.txt"
    )
    assert status == 1 and "matplotlib does not write .txt files" in err, err
    assert list(tmp_path.iterdir()) == []
    for name, magic in (("c.pdf", b"%PDF"), ("c.SVG", b"<?xml"), ("curve", b"\x89PNG")):
        status, out, err = cli_run(
            capsys, "train", *TINY, "--data-dir", mnist_dir, "--plot", tmp_path / name
        )
        assert status == 0, err
        written = tmp_path / (name if "." in name else name + ".png")
        assert written.read_bytes()[: len(magic)] == magic and f"wrote {written}" in out


# --------------------------------------------------------------------------- memory
def test_convolution_filters_are_counted_before_anything_is_allocated(monkeypatch):
    with pytest.raises(pn.InputError, match="parameters .* portnet allows at most"):
        pn.SimpleConvNet(conv_param={"filter_num": 10**9, "filter_size": 5, "pad": 0, "stride": 1})
    wide = {"filter_num": 30000, "filter_size": 3, "pad": 1, "stride": 1}
    monkeypatch.setenv("PORTNET_MEMORY_LIMIT", "512M")
    with pytest.raises(pn.InputError, match=r"DeepConvNet would need about .* than the 512\.0 MiB"):
        pn.DeepConvNet(conv_param_2=wide)
    monkeypatch.setenv("PORTNET_MEMORY_LIMIT", "64G")
    net = pn.DeepConvNet(conv_param_2=wide)  # its parameters fit; its training would not
    assert net.memory_needed(100, optimizer_slots=2) > 80 * 2**30
    x, t = np.zeros((100, 1, 28, 28), np.float32), np.zeros(100, np.int64)
    with pytest.raises(pn.InputError, match="a pass of 100 samples .*; fewer at a time would fit"):
        net.loss_and_gradient(x, t)


def test_a_batch_too_large_for_the_machine_is_refused_before_its_pass(monkeypatch):
    net = pn.DeepConvNet(seed=0)
    monkeypatch.setenv("PORTNET_MEMORY_LIMIT", "64M")
    x, t = np.zeros((100, 1, 28, 28), np.float32), np.zeros(100, np.int64)
    with pytest.raises(pn.InputError, match="a pass of 100 samples .* more than the 64.0 MiB"):
        net.predict(x)
    assert net.accuracy(x, t, batch_size=10) >= 0  # fewer at a time fit


def test_checkpoint_metadata_asking_for_huge_filters_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTNET_MEMORY_LIMIT", "512M")
    wide = {"filter_num": 30000, "filter_size": 3, "pad": 1, "stride": 1}
    meta = {**GOOD_META, "architecture": {"class": "DeepConvNet", "conv_param_2": wide}}
    with pytest.raises(pn.CheckpointError, match="cannot be built .* would need about"):
        pn.load_checkpoint(_checkpoint(tmp_path / "c.npz", meta, _params()))


@pytest.mark.parametrize(
    "hidden, message",
    [("20000,20000", "a 784-20000-20000-10 network"), ("8000,8000", "training MultiLayerNet")],
    ids=["network", "training"],
)
def test_memory_is_checked_before_the_data_are_read(capsys, tmp_path, monkeypatch, hidden, message):
    monkeypatch.setenv("PORTNET_MEMORY_LIMIT", "2G")
    status, _, err = cli_run(capsys, "train", "--hidden", hidden, "--data-dir", tmp_path / "none")
    assert status == 1 and len(err.splitlines()) == 1, err
    assert f"{message}" in err and "would need about" in err and "more than the 2.0 GiB" in err


def test_the_parsed_cache_keeps_one_entry_per_source_file(tmp_path, mnist_dir, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    shutil.copy(mnist_dir / f"{LABELS}.gz", data)
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(cache))
    old = cache / "parsed" / f"mnist-{LABELS}-0123456789abcdef.npy"  # as portnet 0.2 named them
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an entry of an older version")
    other = cache / "parsed" / f"mnist-{LABELS}-fedcba9876543210-0123456789abcdef.npy"
    other.write_bytes(b"the entry of another source file")
    for when in (1_000_000_000, 1_100_000_000, 1_200_000_000):
        os.utime(data / f"{LABELS}.gz", (when, when))
        monkeypatch.setattr(datasets, "_memo", {})
        labels = datasets._array(datasets.MNIST, LABELS, data, download=False)
        entries = sorted(p.name for p in (cache / "parsed").iterdir())
        assert len(entries) == 2 and other.name in entries, entries
    assert labels[:3].tolist() == [7, 2, 1]


# --------------------------------------------------------------------------- user mistakes
BIG = "1" + "0" * 400


@pytest.mark.parametrize(
    "args, message",
    [
        (("--epochs", BIG), "argument --epochs: '10000000000000000000...00000000' is too large"),
        (("--batch-size", BIG), "argument --batch-size: '1000"),
        (("--limit", BIG), "argument --limit: '1000"),
        (("--hidden", f"10,{BIG}"), "sizes must be positive integers"),
        (("--seed", "-1"), "argument --seed: '-1' must be at least 0"),
        (("--lr", "1e400"), "argument --lr: '1e400' must be positive"),
    ],
    ids=["epochs", "batch-size", "limit", "hidden", "seed", "lr"],
)
def test_numbers_out_of_range_are_usage_errors(capsys, args, message):
    status, _, err = cli_run(capsys, "train", *args)
    assert status == 2 and message in err and len(err.splitlines()) == 1, err


def test_an_unknown_mplbackend_is_one_line(tmp_path, mnist_dir):
    pytest.importorskip("matplotlib")
    out = run(
        "train", *TINY, "--data-dir", str(mnist_dir), "--plot", str(tmp_path / "c.png"),
        env_extra={"MPLBACKEND": "nope"},
    )  # fmt: skip
    one_line_error(out, "MPLBACKEND='nope' names no matplotlib backend")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "raw, message",
    [
        ('{"format": 1, "dtype": "float32", "architecture": ' + "[" * 100_000, "nested too"),
        ('{"format": 1, "dtype": "float32", "architecture": {"x": 1' + "0" * 5000 + "}}", "JSON"),
        (
            json.dumps({**GOOD_META, "architecture": {**GOOD_META["architecture"], "input_size": 10**30}}),
            "architecture.input_size is an integer beyond 64 bits",
        ),
        (
            json.dumps({**GOOD_META, "architecture": {"class": ["TwoLayerNet"]}}),
            r"architecture.class is \['TwoLayerNet'\], expected a name",
        ),
        (
            json.dumps({**GOOD_META, "architecture": {**GOOD_META["architecture"], "weight_init_std": float("nan")}}),
            "weight_init_std is nan, expected a finite number",
        ),
        (json.dumps({**GOOD_META, "architecture": {"class": "TwoLayerNet", "input_size": [[1]]}}), "nested too deeply"),
        (json.dumps({**GOOD_META, "format": True}), "metadata 'format' is True, expected int"),
        (json.dumps({**GOOD_META, "pad": "x" * (2 << 20)}), "more than the 1,048,576 bytes"),
    ],
    ids=["recursion", "long-integer", "huge-integer", "unhashable", "nan", "deep", "bool", "huge"],
)  # fmt: skip
def test_checkpoint_metadata_of_the_wrong_kind_is_one_line(tmp_path, capsys, raw, message):
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(raw.encode(), np.uint8), **_params())
    (tmp_path / "c.npz").write_bytes(buffer.getvalue())
    status, _, err = cli_run(capsys, "evaluate", tmp_path / "c.npz", "--data-dir", tmp_path)
    assert status == 1 and len(err.splitlines()) == 1, err
    assert "c.npz" in err and re.search(message, err), err


def test_no_home_and_no_passwd_entry_in_this_process(monkeypatch, capsys, mnist_dir, tmp_path):
    """As a container's arbitrary user id: info works, data from PORTNET_DATA_DIR load, nothing
    is cached, and a download says where to point instead."""
    import pwd

    def unknown(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "PORTNET_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown)
    monkeypatch.setattr(datasets, "_memo", {})
    with pytest.raises(pn.DatasetError, match="no cache directory: .HOME is not set"):
        datasets.cache_dir()
    status, out, _ = cli_run(capsys, "info")
    assert status == 0 and "cache directory: none (no cache directory" in out
    x, _ = datasets.load_split("mnist", "test", data_dir=mnist_dir)
    assert x.shape == (10000, 784)
    monkeypatch.delenv("PORTNET_DATA_DIR", raising=False)
    with pytest.raises(pn.DatasetError, match="set PORTNET_CACHE_DIR"):
        datasets.load_split("mnist", "test")


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.delenv("PORTNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert datasets.cache_dir() == tmp_path / ".cache" / "portnet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "portnet"


@root_only
def test_a_user_id_without_a_passwd_entry(tmp_path, mnist_dir):
    """A real one: uid 54321 without $HOME, in a private mount namespace where the interpreter
    is reachable (root's home, which holds it here, is opened to it there only)."""
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        shared = Path(shared)
        shared.chmod(0o755)
        pn.save_checkpoint(pn.TwoLayerNet(784, 10, 10, seed=0), shared / "net.npz")
        (shared / "net.npz").chmod(0o644)
        opened = shared / "home"
        opened.mkdir(mode=0o755)
        mounts = " && ".join(
            f"mkdir -p {opened / entry.name} && mount --rbind {entry} {opened / entry.name}"
            for entry in Path.home().iterdir()
            if entry.is_dir() and Path(sys.executable).resolve().is_relative_to(entry)
        )
        home = str(Path.home())
        script = (
            "mount --make-rprivate / && "
            + (mounts + f" && mount --rbind {opened} {home} && " if mounts else "")
            + f"cd {shared} && exec setpriv --reuid 54321 --regid 54321 --clear-groups "
            + "env -u HOME -u PORTNET_CACHE_DIR -u XDG_CACHE_HOME "
            + f"PORTNET_DATA_DIR={mnist_dir} {sys.executable} -m portnet"
        )
        for args, expected in (
            ("info", "cache directory: none"),
            ("evaluate net.npz", "test accuracy"),
        ):
            out = subprocess.run(
                ["unshare", "-m", "sh", "-c", f"{script} {args}"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if "unshare failed" in out.stderr or "Operation not permitted" in out.stderr:
                pytest.skip(f"no mount namespace here: {out.stderr.strip()}")
            assert out.returncode == 0 and expected in out.stdout, out.stderr
            assert "Traceback" not in out.stderr


def test_a_data_directory_without_the_files_is_named_not_downloaded_into(
    capsys, tmp_path, monkeypatch
):
    asked = []

    def server(conn, stop):
        asked.append(True)

    from tests.test_hostile_input import serving

    with serving(server) as url:
        monkeypatch.setenv("PORTNET_MNIST_MIRRORS", url)
        status, _, err = cli_run(capsys, "train", "--data-dir", tmp_path)
    assert status == 1 and f"the data directory {tmp_path} (data_dir) holds no" in err, err
    assert not asked and list(tmp_path.iterdir()) == []


def test_every_mirror_failing_is_one_line_and_verbose_tells_each(capsys, tmp_path, monkeypatch):
    refused = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    monkeypatch.setenv("PORTNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PORTNET_DATA_DIR", raising=False)
    monkeypatch.delenv("PORTNET_MNIST_MIRRORS", raising=False)
    spec = datasets.MNIST.__class__(
        **{**datasets.MNIST.__dict__, "mirrors": (refused, refused + "a/", refused + "b/")}
    )
    monkeypatch.setattr(datasets, "MNIST", spec)
    status, _, err = cli_run(capsys, "train", "--no-progress")
    assert status == 1 and len(err.splitlines()) == 1, err
    assert "could not download train-images-idx3-ubyte.gz from any mirror" in err
    status, _, err = cli_run(capsys, "train", "--no-progress", "--verbose")
    assert status == 1 and len(err.splitlines()) == 4, err
    assert err.count("trying the next mirror") == 3
    assert logging.getLogger("portnet").handlers == []


# --------------------------------------------------------------------------- the API
@pytest.mark.parametrize("kind", ["float64", "uint8", "int64", "list"])
def test_inputs_of_any_real_dtype_or_a_list_are_computed_in_the_networks_dtype(backend, kind):
    """As NumPy promotes, but the same on every backend: the result has the network's dtype."""
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 784))
    expected = pn.to_numpy(net.predict(pn.asarray(pixels.astype(np.float32))))
    given = pixels.tolist() if kind == "list" else pn.asarray(pixels.astype(kind))
    scores = net.predict(given)
    assert dtype_name(scores.dtype) == dtype_name(net.dtype)
    np.testing.assert_allclose(pn.to_numpy(scores), expected, rtol=1e-5, atol=1e-5)
    assert net.accuracy(given, [0, 1, 2]) in (0.0, 1 / 3, 2 / 3, 1.0)


def test_complex_input_and_ragged_lists_are_refused_clearly():
    net = pn.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(pn.ArrayTypeError, match="x holds complex128 values, not real numbers"):
        net.predict(np.zeros((1, 4), np.complex128))
    with pytest.raises(pn.ArrayTypeError, match="x: a list that is not an array of numbers"):
        net.predict([[1, 2, 3, 4], [1]])


def test_a_float64_checkpoint_evaluates_on_torch(capsys, tmp_path, mnist_dir):
    pytest.importorskip("torch")
    save = tmp_path / "net.npz"
    status, _, err = cli_run(
        capsys, "train", *TINY, "--dtype", "float64", "--data-dir", mnist_dir, "--save", save
    )
    assert status == 0, err
    status, out, err = cli_run(
        capsys, "evaluate", save, "--backend", "torch", "--data-dir", mnist_dir, "--limit", "100"
    )
    assert status == 0 and "float64" in out and "test accuracy" in out, err


def test_empty_batches_are_refused(backend):
    net = pn.TwoLayerNet(4, 3, 2, seed=0)
    x, t = pn.asarray(np.zeros((0, 4), np.float32)), pn.asarray(np.zeros(0, np.int64))
    for method in (net.gradient, net.loss, net.accuracy, net.numerical_gradient):
        with pytest.raises(pn.InputError, match=r"an empty batch \(x of shape \(0, 4\)\)"):
            method(x, t)


def test_nan_pixels_stop_training_with_the_weights_restored(backend):
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    before = {k: pn.to_numpy(v).copy() for k, v in net.params.items()}
    x = pn.asarray(np.full((200, 784), np.nan, np.float32))
    t = pn.asarray(np.arange(200) % 10)
    trainer = pn.Trainer(net, x, t, x, t, epochs=1, mini_batch_size=100, verbose=False)
    with pytest.raises(pn.TrainingDiverged, match="restored"):
        trainer.train()
    for key, value in net.params.items():
        assert np.array_equal(pn.to_numpy(value), before[key]), key


def test_a_divergence_restores_the_batch_norm_statistics_too(mnist):
    """The running mean and variance a NaN batch wrote are put back with the parameters."""
    (x_train, t_train), _ = mnist
    net = pn.MultiLayerNet(784, [20], 10, use_batchnorm=True, seed=0)
    before = {k: pn.to_numpy(v).copy() for k, v in net.buffers().items()}
    x = np.array(x_train[:200])
    x[100:] = np.nan  # the second batch of the shuffled epoch, or the first: either poisons them
    x, t = pn.asarray(x), pn.asarray(t_train[:200])
    trainer = pn.Trainer(net, x, t, x, t, epochs=1, mini_batch_size=100, verbose=False, loss_every=1, seed=0)
    with pytest.raises(pn.TrainingDiverged, match="restored"):
        trainer.train()
    for key, value in net.buffers().items():
        assert np.isfinite(pn.to_numpy(value)).all(), key
    assert before  # the network has statistics to restore


# --------------------------------------------------------------------------- pickles
def test_a_pickle_of_many_arrays_is_bounded_in_all(tmp_path, monkeypatch):
    monkeypatch.setattr(pickles, "MAX_ELEMENTS", 1000)
    path = tmp_path / "two.pkl"
    path.write_bytes(pickle.dumps({"W1": np.zeros(600, np.int8), "W2": np.zeros(600, np.int8)}))
    with pytest.raises(pn.UnsafePickleError, match="more than 1,000 elements in all"):
        pn.read_pickled_arrays(path)
    path.write_bytes(pickle.dumps({"W1": np.zeros(600, np.int8)}))
    assert pn.read_pickled_arrays(path)["W1"].shape == (600,)


def test_a_pickle_of_many_small_objects_is_bounded(tmp_path):
    path = tmp_path / "lists.pkl"
    path.write_bytes(pickle.dumps({"W": [[] for _ in range(pickles.MAX_STEPS)]}, protocol=2))
    start = time.monotonic()
    with pytest.raises(pn.UnsafePickleError, match="more than 100,000 steps"):
        pn.read_pickled_arrays(path)
    assert time.monotonic() - start < 30


def test_a_training_checkpoint_never_replaces_a_concurrent_runs_file(mnist, tmp_path):
    """Two runs saving to one name: the one whose first epoch ends second fails, the other's file
    stays as it was written (the first write creates the name exclusively)."""
    (x_train, t_train), _ = mnist
    path = tmp_path / "run.npz"
    x, t = pn.asarray(x_train[:200]), pn.asarray(t_train[:200])

    class OtherRun(pn.Callback):  # the other run saves its epoch while this one trains
        def on_epoch_begin(self, trainer):
            path.write_bytes(b"the other run's checkpoint")

    saving = pn.TrainingCheckpoint(path)
    trainer = pn.Trainer(pn.TwoLayerNet(784, 5, 10, seed=0), x, t, x, t, epochs=1, verbose=False,
                         callbacks=[OtherRun(), saving])
    with pytest.raises(FileExistsError):
        trainer.train()
    assert path.read_bytes() == b"the other run's checkpoint"


def test_the_trainer_counts_the_runs_memory_before_it_starts(mnist, monkeypatch):
    """The optimizer's state and the guard's copies on top of the network: refused up front."""
    (x_train, t_train), _ = mnist
    net = pn.MultiLayerNet(784, [1000, 1000], 10, seed=0)  # 1.8M parameters, 7 MB in float32
    x, t = pn.asarray(x_train[:200]), pn.asarray(t_train[:200])
    monkeypatch.setenv("PORTNET_MEMORY_LIMIT", "20M")
    with pytest.raises(pn.InputError, match=r"training MultiLayerNet\(784-1000-1000-10.*in batches of 100 would need"):
        pn.Trainer(net, x, t, x, t, optimizer="adam", verbose=False)
