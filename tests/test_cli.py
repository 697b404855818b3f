"""The ``portnet`` command: train, evaluate, info, and one-line errors with the right exit status."""

import os
import subprocess
import sys

import pytest

from portnet import cli


def run(*args, env_extra=None):
    """``python -m portnet ARGS`` in a subprocess, as a user would run it."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "portnet", *args], capture_output=True, text=True, env=env
    )


def test_train_save_plot_evaluate(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    ckpt, png = tmp_path / "net.npz", tmp_path / "curve.png"
    out = run(
        "train",
        "--model",
        "two-layer",
        "--hidden",
        "30",
        "--optimizer",
        "sgd",
        "--epochs",
        "2",
        "--data-dir",
        str(mnist_dir),
        "--save",
        str(ckpt),
        "--plot",
        str(png),
        "--threads",
        "1",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(
        "portnet: TwoLayerNet(784-30-10, float32, device=cpu) on mnist (60000 train, 10000 test), sgd lr=0.1"
    )
    assert lines[1].startswith("epoch   1/2: train acc") and lines[2].startswith("epoch   2/2")
    accuracy = float(lines[3].split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluated = run(
        "evaluate", str(ckpt), "--backend", "array_api_strict", "--data-dir", str(mnist_dir)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {accuracy:.4f}" in evaluated.stdout


@pytest.mark.parametrize("backend_name", ["numpy", "torch", "array_api_strict"])
def test_train_a_convnet_and_evaluate_it(mnist_dir, tmp_path, backend_name):
    pytest.importorskip(backend_name)
    ckpt = tmp_path / "conv.npz"
    out = run(
        "train",
        "--model",
        "simple-conv",
        "--epochs",
        "1",
        "--limit",
        "500",
        "--backend",
        backend_name,
        "--data-dir",
        str(mnist_dir),
        "--save",
        str(ckpt),
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.startswith("portnet: SimpleConvNet(1x28x28, float32, device=")
        and "1 epoch of 5 steps" in out.stdout
    )
    assert "epoch   1/1" in out.stdout and "test acc 0." in out.stdout
    # --limit: a quick check evaluates the first N images of each set too, and says so
    assert out.stdout.count("(first 500 test images)") == 2, out.stdout
    accuracy = float(out.stdout.split("test accuracy ")[1].split(" ")[0])
    evaluated = run("evaluate", str(ckpt), "--data-dir", str(mnist_dir), "--limit", "500")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {accuracy:.4f} on mnist (500 images)" in evaluated.stdout


def test_existing_files_are_not_overwritten(mnist_dir, tmp_path):
    existing = tmp_path / "keep.npz"
    existing.write_bytes(b"mine")
    out = run("train", "--save", str(existing), "--data-dir", str(mnist_dir))
    assert out.returncode == 1
    assert (
        out.stderr.strip() == f"portnet: error: {existing} exists; pass --overwrite to replace it"
    )
    assert existing.read_bytes() == b"mine"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--backend", "tensorflow"], "argument --backend: invalid choice: 'tensorflow'"),
        (["train", "--hidden", "100,x"], "--hidden '100,x': expected sizes separated by commas"),
        (["train", "--epochs", "0"], "argument --epochs: '0' must be positive"),
        (["train", "--optimizer", "adamw"], "argument --optimizer: invalid choice: 'adamw'"),
        (["train", "--threads", "many"], "argument --threads: 'many' is not a number"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_two_layer_takes_one_hidden_size(capsys, mnist_dir):
    assert (
        cli.main(
            ["train", "--model", "two-layer", "--hidden", "50,50", "--data-dir", str(mnist_dir)]
        )
        == 1
    )
    assert "--model two-layer takes one hidden size" in capsys.readouterr().err


def test_missing_backend_is_one_line_exit_1(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    assert cli.main(["train", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("portnet: error: backend 'cupy' needs the library 'cupy'")
        and len(err.splitlines()) == 1
    )


def test_damaged_dataset_is_one_line_exit_1(mnist_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in mnist_dir.glob("*.gz"):
        (data / f.name).write_bytes(f.read_bytes())
    labels = data / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:100])
    out = run(
        "train", "--data-dir", str(data), env_extra={"PORTNET_CACHE_DIR": str(tmp_path / "c")}
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(
        f"portnet: error: {labels}: the gzip stream is corrupted or truncated"
    )
    missing = run("evaluate", str(tmp_path / "missing.npz"))
    assert missing.returncode == 1 and "no checkpoint at" in missing.stderr


def test_info_lists_every_backend():
    out = run("info")
    assert out.returncode == 0
    for name in ("numpy", "cupy", "torch", "jax", "array_api_strict"):
        assert f"\n  {name}" in out.stdout
    assert "active: numpy on cpu, float32" in out.stdout or "PORTNET_BACKEND" in out.stdout


def test_version():
    out = run("--version")
    assert (
        out.returncode == 0 and out.stdout.strip() == f"portnet {__import__('portnet').__version__}"
    )


def test_evaluate_reads_the_books_weights_in_the_dtype_asked(
    book_dir, mnist_dir, monkeypatch, capsys
):
    """The book's pickles with their network named; --dtype honoured; only the test set read."""
    from portnet import datasets

    read = []
    original = datasets._array
    monkeypatch.setattr(
        datasets, "_array", lambda spec, base, *a: read.append(base) or original(spec, base, *a)
    )
    assert (
        cli.main(
            [
                "evaluate",
                str(book_dir / "simple_convnet_params.pkl"),
                "--model",
                "simple-conv",
                "--dtype",
                "float64",
                "--data-dir",
                str(mnist_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "SimpleConvNet(1x28x28, float64," in out
        and "test accuracy 0.9890 on mnist (10000 images)" in out
    )
    assert read == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    assert (
        cli.main(
            [
                "evaluate",
                str(book_dir / "sample_weight.pkl"),
                "--model",
                "multi-layer",
                "--activation",
                "sigmoid",
                "--dtype",
                "float64",
                "--data-dir",
                str(mnist_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "MultiLayerNet(784-50-100-10, float64," in out and "test accuracy 0.9352" in out


def test_evaluate_a_pickle_without_its_model_says_what_to_add(book_dir, capsys):
    assert cli.main(["evaluate", str(book_dir / "simple_convnet_params.pkl")]) == 1
    err = capsys.readouterr().err
    assert "name the network they belong to with --model" in err and len(err.splitlines()) == 1


def test_evaluate_honours_dtype_for_a_checkpoint(tmp_path, mnist_dir, capsys):
    import portnet as pn

    with pn.use_backend("numpy"):
        path = pn.save_checkpoint(pn.TwoLayerNet(784, 5, 10, seed=0), tmp_path / "net.npz")
    assert (
        cli.main(
            [
                "evaluate",
                str(path),
                "--dtype",
                "float64",
                "--limit",
                "100",
                "--data-dir",
                str(mnist_dir),
            ]
        )
        == 0
    )
    assert "TwoLayerNet(784-5-10, float64," in capsys.readouterr().out


def test_host_draws_give_the_same_run_on_every_backend(mnist_dir):
    """--random-source host: the same shuffle on numpy and torch, so the same accuracies (float64, one thread)."""
    pytest.importorskip("torch")
    lines = []
    for name in ("numpy", "torch"):
        out = run(
            "train",
            "--backend",
            name,
            "--model",
            "two-layer",
            "--hidden",
            "20",
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--random-source",
            "host",
            "--dtype",
            "float64",
            "--threads",
            "1",
            "--data-dir",
            str(mnist_dir),
        )
        assert out.returncode == 0, out.stderr
        lines.append(
            out.stdout.splitlines()[1].rsplit(",", 1)[0]
        )  # the epoch line without its time
    assert lines[0] == lines[1]


def test_no_gpu_driver_says_so_and_names_the_cpu_backends(monkeypatch, capsys):
    import types

    def no_driver():
        raise RuntimeError(
            "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"
        )

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert cli.main(["train", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert (
        "no usable GPU and driver are visible here" in err
        and "the CPU backends are numpy, torch" in err
    )
    assert len(err.splitlines()) == 1


def test_a_missing_data_directory_is_named_not_downloaded_into(tmp_path, capsys):
    missing = tmp_path / "typo"
    assert cli.main(["train", "--data-dir", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"the data directory {missing} (data_dir) does not exist" in err and "mirror" not in err
    assert not missing.exists()


def test_a_blown_up_run_prints_one_line_and_no_warning(mnist_dir):
    """NumPy's overflow warnings would come before the divergence error."""
    out = run(
        "train",
        "--optimizer",
        "sgd",
        "--lr",
        "1e3",
        "--limit",
        "2000",
        "--epochs",
        "1",
        "--data-dir",
        str(mnist_dir),
    )
    assert out.returncode == 1 and out.stderr.startswith("portnet: error: the loss is nan at step")
    assert len(out.stderr.strip().splitlines()) == 1 and "RuntimeWarning" not in out.stderr


def test_progress_bar_only_on_a_terminal_unless_asked(mnist_dir):
    pytest.importorskip("tqdm")
    args = (
        "train",
        "--model",
        "two-layer",
        "--hidden",
        "5",
        "--epochs",
        "1",
        "--limit",
        "500",
        "--data-dir",
        str(mnist_dir),
    )
    quiet = run(*args)
    assert quiet.returncode == 0 and "\r" not in quiet.stderr and "training" not in quiet.stderr
    shown = run(*args, "--progress")
    assert shown.returncode == 0 and "training" in shown.stderr


def test_weight_decay_reaches_the_network(monkeypatch, capsys, mnist_dir):
    """--weight-decay is the book's weight_decay_lambda (ch. 6.4.2), of the fully connected net only."""
    built = []
    original = cli._network
    monkeypatch.setattr(cli, "_network", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    args = ["train", "--epochs", "1", "--limit", "200", "--data-dir", str(mnist_dir), "--weight-decay", "0.01"]
    assert cli.main(args) == 0
    assert built[0].weight_decay_lambda == 0.01
    assert cli.main(["train", "--model", "simple-conv", "--weight-decay", "0.01"]) == 1
    assert "--weight-decay applies to --model multi-layer" in capsys.readouterr().err
