"""``portnet search`` (the book's random search, ch. 6.5): a Dask cluster on 127.0.0.1 gives the
serial run's table, a killed worker loses no trial, a results file resumes, bad input is one line."""

import contextlib
import io
import json
import os
import re
import shutil
import socket
import sys
import time

import pytest

from portnet import cli
from portnet.search import _environment_kept

#: A small search: 6 trials of 2 epochs on 200 images (160 to train, 40 to score).
SMALL = ["--trials", "6", "--train-size", "200", "--epochs", "2", "--no-progress"]
#: Fields that say where and how fast a trial ran, not what it found.
WHERE = ("worker", "seconds")


def search(mnist_dir, *args) -> tuple[int, str]:
    """``portnet search SMALL ARGS`` in this process: its exit status and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["search", *SMALL, "--data-dir", str(mnist_dir), *args])
    return status, out.getvalue()


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def table(path) -> list[dict]:
    """The trials of a results file by trial number, without where they ran; each trial once."""
    records = lines(path)[1:]
    trials = sorted(r["trial"] for r in records)
    assert trials == sorted(set(trials)), f"a trial recorded twice in {path}: {trials}"
    return sorted(
        ({k: v for k, v in r.items() if k not in WHERE} for r in records), key=lambda r: r["trial"]
    )


def local_cluster(distributed, workers):
    """A cluster of worker processes on 127.0.0.1, its HTTP server on a free port."""
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


def best_lines(stdout) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("Best-")]


@pytest.fixture(scope="module")
def serial(mnist_dir, tmp_path_factory):
    """The small search run in this process, without Dask: (results file, stdout)."""
    path = tmp_path_factory.mktemp("serial") / "serial.jsonl"
    status, stdout = search(mnist_dir, "--workers", "0", "--results", str(path))
    assert status == 0
    return path, stdout


def test_serial_run_prints_and_records_the_book_protocol(serial):
    path, stdout = serial
    header, *records = lines(path)
    assert header["search"]["trials"] == 6 and header["search"]["hidden"] == [100] * 6
    assert [r["trial"] for r in records] == list(range(6))
    for r in records:
        assert r["status"] == "ok" and len(r["val_acc_list"]) == len(r["train_acc_list"]) == 2
        assert (
            r["val_acc"] == r["val_acc_list"][-1]
            and 1e-6 <= r["lr"] <= 1e-2
            and 1e-8 <= r["weight_decay"] <= 1e-4
        )
        assert (
            f"val acc:{r['val_acc']} | lr:{r['lr']}, weight decay:{r['weight_decay']}  (trial {r['trial']})"
            in stdout
        )
    ranked = sorted(records, key=lambda r: (-r["val_acc"], r["trial"]))
    assert best_lines(stdout) == [
        f"Best-{i + 1}(val acc:{r['val_acc']}) | lr:{r['lr']}, weight decay:{r['weight_decay']}"
        f"  (trial {r['trial']})"
        for i, r in enumerate(ranked)
    ]
    assert (
        f"portnet train --model multi-layer --hidden 100,100,100,100,100,100 --optimizer sgd --lr {ranked[0]['lr']:.6g}"
        f" --weight-decay {ranked[0]['weight_decay']:.6g} --epochs 2 --batch-size 100" in stdout
    )


def test_a_local_cluster_gives_the_serial_table(serial, mnist_dir, tmp_path, recwarn):
    pytest.importorskip("distributed")
    path = tmp_path / "cluster.jsonl"
    environment = os.environ.copy()
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(
            OSError
        ):  # Dask's default HTTP port taken: the cluster must not want it
            stack.enter_context(socket.create_server(("127.0.0.1", 8787)))
        status, stdout = search(mnist_dir, "--workers", "2", "--results", str(path))
    assert status == 0
    assert (
        os.environ == environment
    )  # Dask's workers' variables (OMP_NUM_THREADS=1, ...) stay theirs
    assert not [w for w in recwarn if "already in use" in str(w.message)]
    assert "6 trials on a LocalCluster of 2 worker processes on 127.0.0.1" in stdout
    assert table(path) == table(serial[0])
    assert best_lines(stdout) == best_lines(serial[1])


def test_a_killed_worker_has_its_trial_rerun(serial, mnist_dir, tmp_path):
    distributed = pytest.importorskip("distributed")
    marker = tmp_path / "killed"
    path = tmp_path / "results.jsonl"

    class KillOnce(distributed.WorkerPlugin):
        """The worker dies (os._exit) as it starts trial 2, the first time only; the marker holds its pid."""

        def transition(self, key, start, finish, **kwargs):
            if (
                finish == "executing"
                and str(key).startswith("portnet-trial-2-")
                and not marker.exists()
            ):
                marker.write_text(str(os.getpid()))
                os._exit(1)

    with (
        _environment_kept(),
        local_cluster(distributed, 2) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(KillOnce())
        status = search(
            mnist_dir, "--scheduler", cluster.scheduler_address, "--results", str(path)
        )[0]
        loads = client.run(lambda: sys.modules["portnet.search"]._data.cache_info().misses)
    assert status == 0
    killed = int(marker.read_text())  # the worker that died running trial 2
    assert table(path) == table(serial[0])
    assert len(lines(path)) == 7
    assert next(r for r in lines(path)[1:] if r["trial"] == 2)["worker"].split(":")[1] != str(
        killed
    )
    assert all(n <= 1 for n in loads.values()), (
        f"the data loaded more than once in a worker: {loads}"
    )


def test_a_trial_that_keeps_killing_workers_stops_the_search_in_one_line(
    mnist_dir, tmp_path, capsys
):
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    path = tmp_path / "results.jsonl"

    class KillAlways(distributed.WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith("portnet-trial-2-"):
                os._exit(1)

    with (
        _environment_kept(),
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster(distributed, 1) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(KillAlways())
        status = search(
            mnist_dir, "--scheduler", cluster.scheduler_address, "--results", str(path)
        )[0]
    assert status == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after Dask's own log lines
    failed = re.fullmatch(
        r"portnet: error: trial (\d) killed its worker 1 times \(Dask's distributed\.scheduler\."
        r"allowed-failures is 0\); the finished trials are recorded",
        err,
    )
    assert failed, err  # trial 2, or a trial queued on the worker that died with it
    recorded = [r["trial"] for r in lines(path)[1:]]
    assert (
        2 not in recorded and int(failed[1]) not in recorded and len(recorded) == len(set(recorded))
    )


def test_resume_runs_only_the_missing_trials(serial, mnist_dir, tmp_path):
    path = tmp_path / "results.jsonl"
    kept = serial[0].read_bytes().splitlines(keepends=True)[:5]  # the header and trials 0-3
    path.write_bytes(
        b"".join(kept[:4]) + kept[4][: len(kept[4]) // 2]
    )  # trial 3 cut short mid-write
    status, stdout = search(mnist_dir, "--workers", "0", "--resume", str(path))
    assert status == 0
    assert (
        f"{path}: 3 of 6 trials recorded (an unfinished last line was dropped: that trial runs again), 3 to run"
        in stdout
    )
    ran = [
        line.rsplit("(trial ", 1)[1] for line in stdout.splitlines() if line.startswith("val acc:")
    ]
    assert ran == ["3)", "4)", "5)"]
    assert table(path) == table(serial[0])
    assert best_lines(stdout) == best_lines(serial[1])
    status, stdout = search(mnist_dir, "--workers", "0", "--resume", str(path))
    assert status == 0 and "6 of 6 trials recorded, 0 to run" in stdout
    assert not [line for line in stdout.splitlines() if line.startswith("val acc:")]
    assert best_lines(stdout) == best_lines(serial[1])


def test_resume_keeps_the_recorded_settings(serial, mnist_dir, tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    shutil.copy(serial[0], path)
    before = path.read_bytes()
    assert search(mnist_dir, "--workers", "0", "--resume", str(path), "--epochs", "3")[0] == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"portnet: error: {path} records a search with --epochs 2; resume it with the same settings (or leave "
        f"them out), not 3\n"
    )
    assert path.read_bytes() == before
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    assert search(mnist_dir, "--workers", "0", "--resume", str(other))[0] == 1
    assert "is not a results file of portnet search" in capsys.readouterr().err
    assert other.read_text() == "my notes\n"


def test_an_existing_results_file_is_not_overwritten(mnist_dir, tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("mine\n")
    assert search(mnist_dir, "--workers", "0", "--results", str(path))[0] == 1
    assert (
        capsys.readouterr().err
        == f"portnet: error: {path} exists; continue that search with --resume {path}, or "
        f"name another file\n"
    )
    assert path.read_text() == "mine\n"


def test_a_diverging_trial_is_recorded_not_fatal(mnist_dir, tmp_path):
    path = tmp_path / "results.jsonl"
    status, stdout = search(
        mnist_dir,
        "--workers",
        "0",
        "--trials",
        "2",
        "--epochs",
        "4",
        "--lr-range",
        "1e3",
        "1e4",
        "--results",
        str(path),
    )
    assert status == 0
    records = lines(path)[1:]
    assert [r["status"] for r in records] == ["diverged", "diverged"]
    assert all(r["val_acc"] is None and "training stopped" in r["error"] for r in records)
    assert (
        stdout.count("val acc:diverged | lr:") == 2
        and "2 of 2 trials diverged: trial 0, 1" in stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "0"], "--trials must be a positive integer, got 0"),
        (
            ["--lr-range", "1e-2", "1e-6"],
            "--lr-range 0.01 1e-06 is inverted: LOW must not exceed HIGH",
        ),
        (
            ["--decay-range", "nan", "1e-4"],
            "--decay-range nan 0.0001: both ends must be finite positive numbers",
        ),
        (
            ["--lr-range", "1e-6", "inf"],
            "--lr-range 1e-06 inf: both ends must be finite positive numbers",
        ),
        (
            ["--lr-range", "0", "1e-2"],
            "--lr-range 0 0.01: both ends must be finite positive numbers",
        ),
        (["--validation", "0"], "--validation must lie strictly between 0 and 1"),
        (["--validation", "1"], "--validation must lie strictly between 0 and 1"),
        (["--validation", "nan"], "--validation must lie strictly between 0 and 1"),
        (["--train-size", "100"], "leaves 80 training images, fewer than --batch-size 100"),
        (["--workers", "-1"], "--workers must be a non-negative integer, got -1"),
        (
            ["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
            "--workers sizes a LocalCluster on this machine",
        ),
        (
            ["--scheduler", "tcp://127.0.0.1:1", "--backend", "torch"],
            "a --scheduler's workers take theirs",
        ),
    ],
)
def test_bad_input_is_one_line(args, message, mnist_dir, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    assert search(mnist_dir, *args, "--results", str(results))[0] == 1
    err = capsys.readouterr().err
    assert err.startswith("portnet: error: ") and len(err.splitlines()) == 1 and message in err
    assert not results.exists()


@pytest.mark.parametrize("args", [["--trials", "x"], ["--lr-range", "1e-6"], ["--validation"]])
def test_bad_usage_exits_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", *args])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize("peer", ["closed", "silent", "not dask"])
def test_a_scheduler_that_does_not_answer_is_one_line_within_the_timeout(
    peer, mnist_dir, tmp_path, capsys
):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    results = tmp_path / "results.jsonl"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        port = server.getsockname()[1]
        if peer == "closed":
            server.close()
        elif peer == "not dask":  # answers in another protocol
            stack.enter_context(
                _answering(server, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            )
        # "silent": the kernel completes the TCP connection; nobody reads or writes
        stack.enter_context(dask.config.set({"distributed.comm.timeouts.connect": "1s"}))
        start = time.monotonic()
        status = search(
            mnist_dir, "--scheduler", f"tcp://127.0.0.1:{port}", "--results", str(results)
        )[0]
        elapsed = time.monotonic() - start
    assert status == 1 and elapsed < 20
    err = capsys.readouterr().err
    assert err.startswith(
        f"portnet: error: --scheduler tcp://127.0.0.1:{port}: no Dask scheduler answered within 1 s"
    )
    assert len(err.splitlines()) == 1 and not results.exists()


@contextlib.contextmanager
def _answering(server, reply):
    """Each connection to ``server`` gets ``reply``, in a thread, until the block ends."""
    import threading

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.close()


def test_without_dask_the_error_says_what_to_install(mnist_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    assert search(mnist_dir, "--workers", "2")[0] == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and 'pip install "portnet[distributed]"' in err
    assert (
        search(mnist_dir, "--workers", "0", "--trials", "1")[0] == 0
    )  # in this process: no Dask needed


def test_plot_draws_the_best_trials(serial, mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    path, png = tmp_path / "results.jsonl", tmp_path / "best.png"
    shutil.copy(serial[0], path)
    status, stdout = search(mnist_dir, "--resume", str(path), "--plot", str(png))
    assert status == 0 and f"portnet: wrote {png}" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_is_written_in_its_suffixs_format(mnist_dir, tmp_path):
    """--plot c.pdf writes a PDF (not PNG bytes); an unknown suffix is refused before the search."""
    from portnet import cli

    args = ["search", "--workers", "0", "--trials", "2", "--epochs", "1", "--train-size", "250",
            "--data-dir", str(mnist_dir)]
    pdf = tmp_path / "best.pdf"
    assert cli.main([*args, "--results", str(tmp_path / "a.jsonl"), "--plot", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert cli.main([*args, "--results", str(tmp_path / "b.jsonl"), "--plot", str(tmp_path / "c.xyz")]) == 1
    assert not (tmp_path / "b.jsonl").exists()
