"""The ``portnet`` command: train, evaluate, info, and one-line errors with the right exit status."""

import os
import subprocess
import sys

import pytest

from portnet import cli


def run(*args, env_extra=None):
    """``python -m portnet ARGS`` in a subprocess, as a user would run it."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "portnet", *args], capture_output=True, text=True, env=env)


def test_train_save_plot_evaluate(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    ckpt, png = tmp_path / "net.npz", tmp_path / "curve.png"
    out = run("train", "--model", "two-layer", "--hidden", "30", "--optimizer", "sgd", "--epochs", "2",
              "--data-dir", str(mnist_dir), "--save", str(ckpt), "--plot", str(png), "--no-progress")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("portnet: TwoLayerNet(784-30-10, float32, device=cpu) on mnist (60000 train, 10000 test), sgd lr=0.1")
    assert lines[1].startswith("epoch   1/2: train acc") and lines[2].startswith("epoch   2/2")
    accuracy = float(lines[3].split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluated = run("evaluate", str(ckpt), "--backend", "array_api_strict", "--data-dir", str(mnist_dir))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {accuracy:.4f}" in evaluated.stdout


@pytest.mark.parametrize("backend_name", ["numpy", "torch", "array_api_strict"])
def test_train_a_convnet_and_evaluate_it(mnist_dir, tmp_path, backend_name):
    pytest.importorskip(backend_name)
    ckpt = tmp_path / "conv.npz"
    out = run("train", "--model", "simple-conv", "--epochs", "1", "--limit", "500", "--backend", backend_name,
              "--data-dir", str(mnist_dir), "--save", str(ckpt), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"portnet: SimpleConvNet(1x28x28, float32, device=") and "epoch   1/1" in out.stdout
    accuracy = float(out.stdout.split("test accuracy ")[1].split(",")[0])
    evaluated = run("evaluate", str(ckpt), "--data-dir", str(mnist_dir))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {accuracy:.4f}" in evaluated.stdout


def test_existing_files_are_not_overwritten(mnist_dir, tmp_path):
    existing = tmp_path / "keep.npz"
    existing.write_bytes(b"mine")
    out = run("train", "--save", str(existing), "--data-dir", str(mnist_dir))
    assert out.returncode == 1
    assert out.stderr.strip() == f"portnet: error: {existing} exists; pass --overwrite to replace it"
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
    assert cli.main(["train", "--model", "two-layer", "--hidden", "50,50", "--data-dir", str(mnist_dir)]) == 1
    assert "--model two-layer takes one hidden size" in capsys.readouterr().err


def test_missing_backend_is_one_line_exit_1(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    assert cli.main(["train", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("portnet: error: backend 'cupy' needs the library 'cupy'") and len(err.splitlines()) == 1


def test_damaged_dataset_is_one_line_exit_1(mnist_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in mnist_dir.glob("*.gz"):
        (data / f.name).write_bytes(f.read_bytes())
    labels = data / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:100])
    out = run("train", "--data-dir", str(data), "--no-progress", env_extra={"PORTNET_CACHE_DIR": str(tmp_path / "c")})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"portnet: error: {labels}: the gzip stream is corrupted or truncated")
    missing = run("evaluate", str(tmp_path / "missing.npz"))
    assert missing.returncode == 1 and "no checkpoint at" in missing.stderr


def test_info_lists_every_backend():
    out = run("info")
    assert out.returncode == 0
    for name in ("numpy", "cupy", "torch", "jax", "array_api_strict"):
        assert f"\n  {name}" in out.stdout
    assert "active: numpy on cpu, float32" in out.stdout or "PORTNET_BACKEND" in out.stdout
