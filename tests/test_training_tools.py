"""What users expect of a training tool: a run killed or interrupted resumes to the parameters of
an uninterrupted one, per-epoch logs (CSV, TensorBoard), a model summary, an evaluation report
(per-class accuracy, confusion matrix, the book's ch. 8 picture of misclassified digits), and
half precision for inference (the book's ch. 8 half_float_network.py)."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys

import numpy as np
import pytest

import portnet as pn
from portnet import report
from portnet.callbacks import CSV_FIELDS, CSVLogger, TensorBoard, TrainingCheckpoint
from portnet.persistence import checkpoints, read_training_checkpoint
from portnet.summary import rows

#: The child process of the crash tests: ``portnet`` that sends itself signal SIG just before the
#: training step STEP of epoch EPOCH + 1 (0-based), so it dies mid-epoch after EPOCH were saved.
CHILD = """
import os, signal, sys
from portnet import cli, trainer
sig, epoch, step = (int(v) for v in sys.argv[1:4])
original = trainer.Trainer._step
def _step(self, *args):
    if self.current_iter == epoch * self.iter_per_epoch + step:
        os.kill(os.getpid(), sig)
    original(self, *args)
trainer.Trainer._step = _step
signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the parent ignores it
sys.exit(cli.main(sys.argv[4:]))
"""


def portnet(*args, signal_at=None):
    """``python -m portnet ARGS``; with ``signal_at=(signal, epoch, step)``, the run signals itself."""
    command = [sys.executable, "-m", "portnet"]
    if signal_at is not None:
        command = [sys.executable, "-c", CHILD, *(str(int(v)) for v in signal_at)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def training(tmp_path, mnist_dir, name, backend="numpy", epochs=4):
    """A small run's options: MultiLayerNet 784-30-20-10, Adam, 1000 images, --threads 1."""
    return [
        "train",
        "--backend",
        backend,
        "--hidden",
        "30,20",
        "--epochs",
        str(epochs),
        "--limit",
        "1000",
        "--threads",
        "1",
        "--data-dir",
        str(mnist_dir),
        "--save",
        str(tmp_path / f"{name}.npz"),
        "--log",
        str(tmp_path / f"{name}.csv"),
    ]


def log_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_run(a, b):
    """Two training checkpoints hold the same parameters, buffers, optimizer state, generators'
    states and history, to the bit (epoch times aside)."""
    (meta_a, state_a), (meta_b, state_b) = read_training_checkpoint(a), read_training_checkpoint(b)
    assert meta_a["architecture"] == meta_b["architecture"]
    assert state_a["epoch"] == state_b["epoch"] and state_a["step"] == state_b["step"]
    for part in ("params", "buffers"):
        assert set(state_a[part]) == set(state_b[part])
        for key, value in state_a[part].items():
            np.testing.assert_array_equal(value, state_b[part][key], err_msg=f"{part} {key}")
    opt_a, opt_b = state_a["optimizer"], state_b["optimizer"]
    assert opt_a["step"] == opt_b["step"]
    for slot, arrays in opt_a["slots"].items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, opt_b["slots"][slot][key])
    assert state_a["generators"]["shuffle"]["host"] == state_b["generators"]["shuffle"]["host"]
    native_a, native_b = (s["generators"]["shuffle"]["native"] for s in (state_a, state_b))
    assert (native_a is None) == (native_b is None)
    if native_a is not None:
        np.testing.assert_array_equal(native_a, native_b)
    for name in ("train_loss", "train_acc", "test_acc"):
        assert state_a["history"][name] == state_b["history"][name], name


def no_parts(directory):
    """Nothing half-written: no temporary file of an atomic write is left."""
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".part")]


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
def test_a_run_killed_after_epoch_2_resumes_to_the_uninterrupted_parameters(
    mnist_dir, tmp_path, backend_name
):
    """SIGKILL mid-epoch 3: the checkpoint and the CSV hold epochs 1-2; --resume (with no other
    option: the backend and settings come from the checkpoint) ends where the whole run ends."""
    pytest.importorskip(backend_name)
    whole = portnet(*training(tmp_path, mnist_dir, "whole", backend_name))
    assert whole.returncode == 0, whole.stderr
    killed = portnet(
        *training(tmp_path, mnist_dir, "run", backend_name), signal_at=(signal.SIGKILL, 2, 3)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert read_training_checkpoint(tmp_path / "run.npz")[1]["epoch"] == 2
    assert [r["epoch"] for r in log_rows(tmp_path / "run.csv")] == ["1", "2"]
    no_parts(tmp_path)
    resumed = portnet(
        "train",
        "--resume",
        str(tmp_path / "run.npz"),
        "--threads",
        "1",
        "--data-dir",
        str(mnist_dir),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "epoch   3/4" in resumed.stdout
    assert_same_run(tmp_path / "whole.npz", tmp_path / "run.npz")
    rows_whole, rows_run = log_rows(tmp_path / "whole.csv"), log_rows(tmp_path / "run.csv")
    assert [r["epoch"] for r in rows_run] == ["1", "2", "3", "4"]
    for a, b in zip(rows_whole, rows_run):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }


@pytest.mark.parametrize(
    "sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_sigint_and_sigterm_stop_at_once_leaving_a_valid_checkpoint(
    mnist_dir, tmp_path, sig, status, word
):
    out = portnet(*training(tmp_path, mnist_dir, "run"), signal_at=(sig, 2, 3))
    assert out.returncode == status, out.stderr
    path = tmp_path / "run.npz"
    assert out.stderr.splitlines() == [
        f"portnet: {word} in epoch 3; epoch 2 is saved in {path}; continue with: "
        f"portnet train --resume {path}"
    ]
    assert "epoch   3/4" not in out.stdout  # stopped at once, in epoch 3
    no_parts(tmp_path)
    net = pn.load_checkpoint(path)  # a training checkpoint is a checkpoint
    assert isinstance(net, pn.MultiLayerNet) and net.sizes == [784, 30, 20, 10]
    assert read_training_checkpoint(path)[1]["epoch"] == 2
    evaluated = portnet("evaluate", str(path), "--limit", "200", "--data-dir", str(mnist_dir))
    assert evaluated.returncode == 0, evaluated.stderr


def test_an_interrupted_checkpoint_write_leaves_the_previous_epoch(tmp_path, monkeypatch):
    """A Ctrl-C while an epoch is being written: the file still holds the epoch before."""
    x = pn.asarray(np.random.default_rng(0).random((200, 6)), dtype="float32")
    t = pn.asarray(np.arange(200) % 3)
    path = tmp_path / "run.npz"
    trainer = pn.Trainer(
        pn.TwoLayerNet(6, 4, 3, seed=0), x, t, x, t, epochs=3, mini_batch_size=50, verbose=False,
        seed=0, callbacks=[TrainingCheckpoint(path)],
    )  # fmt: skip
    savez = np.savez

    def interrupted(f, **arrays):
        if trainer.current_epoch == 2:
            savez(f, **{k: arrays[k] for k in list(arrays)[:2]})  # half of the members
            raise KeyboardInterrupt
        savez(f, **arrays)

    monkeypatch.setattr(checkpoints.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert read_training_checkpoint(path)[1]["epoch"] == 1
    no_parts(tmp_path)


def _resumable_run(epochs, callbacks=()):
    """A MultiLayerNet with batch norm and dropout (buffers and a generator of its own), Adam."""
    rng = np.random.default_rng(7)
    x, t = rng.random((400, 12)), rng.integers(0, 4, 400)
    net = pn.MultiLayerNet(
        12, [10, 8], 4, use_batchnorm=True, use_dropout=True, dropout_ratio=0.2, seed=3
    )
    data = [pn.asarray(x, dtype="float32"), pn.asarray(t)] * 2
    return pn.Trainer(
        net, *data, epochs=epochs, mini_batch_size=40, optimizer="adam",
        optimizer_param={"lr": 0.01}, verbose=False, seed=5, loss_every=7, callbacks=callbacks,
    )  # fmt: skip


def test_trainer_state_dict_resumes_exactly(backend, tmp_path):
    """Trainer.state_dict / load_state_dict, through a training checkpoint: 2 epochs, then a new
    trainer resumes to epoch 3 with the parameters, statistics and history of 3 epochs in one."""
    whole = _resumable_run(3).train()
    first = _resumable_run(2, [TrainingCheckpoint(tmp_path / "run.npz")]).train()
    meta, state = read_training_checkpoint(tmp_path / "run.npz")
    assert state["epoch"] == 2 and meta["architecture"]["class"] == "MultiLayerNet"
    assert state["history"]["train_loss"] == first.train_loss_list
    resumed = _resumable_run(3, [TrainingCheckpoint(tmp_path / "run.npz")])
    resumed.load_state_dict(state)
    resumed.train()  # on the file it resumed from: replaced, as its own
    assert read_training_checkpoint(tmp_path / "run.npz")[1]["epoch"] == 3
    with pytest.raises(FileExistsError):  # a fresh run does not replace it
        _resumable_run(1, [TrainingCheckpoint(tmp_path / "run.npz")]).train()
    for ours, theirs in ((resumed.network, whole.network),):
        for part in ("params", "buffers"):
            got, want = getattr(ours, part), getattr(theirs, part)
            got, want = (got() if callable(got) else got), (want() if callable(want) else want)
            for key in want:
                np.testing.assert_array_equal(pn.to_numpy(got[key]), pn.to_numpy(want[key]), key)
    assert resumed.train_loss_list == whole.train_loss_list
    assert resumed.test_acc_list == whole.test_acc_list and len(resumed.epoch_times) == 3


def test_a_state_that_does_not_fit_is_refused():
    state = _resumable_run(1).train().state_dict()
    other = _resumable_run(3)
    other.optimizer = pn.SGD(lr=0.1)
    with pytest.raises(
        pn.CheckpointError, match="the optimizer's state is Adam's, this one is SGD"
    ):
        other.load_state_dict(state)
    with pytest.raises(pn.CheckpointError, match="this trainer takes 10 an epoch"):
        _resumable_run(3).load_state_dict({**state, "step": 7})


def test_bad_resume_inputs_are_one_line_errors_and_overwrite_nothing(mnist_dir, tmp_path):
    out = portnet(*training(tmp_path, mnist_dir, "run", epochs=1))
    assert out.returncode == 0, out.stderr
    path = tmp_path / "run.npz"
    plain = pn.save_checkpoint(pn.TwoLayerNet(784, 5, 10, seed=0), tmp_path / "plain.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (path, plain, junk)}
    cases = [
        ((plain,), "not a training checkpoint"),
        ((junk,), "not a portnet checkpoint"),
        ((path, "--model", "two-layer"), "was trained with --model multi-layer, not two-layer"),
        ((path, "--hidden", "30,30"), "was trained with --hidden 30,20, not 30,30"),
        ((path, "--lr", "0.5"), "was trained with --lr 0.001, not 0.5"),
        ((path, "--dtype", "float64"), "was trained with --dtype float32, not float64"),
        ((path, "--backend", "array_api_strict"), "was trained with --backend numpy"),
        ((path, "--epochs", "2", "--seed", "1"), "was trained with --seed 0, not 1"),
    ]
    for (target, *options), message in cases:
        out = portnet("train", "--resume", str(target), *options, "--data-dir", str(mnist_dir))
        assert out.returncode == 1, (options, out.stdout, out.stderr)
        assert len(out.stderr.splitlines()) == 1 and message in out.stderr, out.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in digests} == digests
    assert len(log_rows(tmp_path / "run.csv")) == 1


def test_training_in_half_precision_is_refused(tmp_path):
    out = portnet("train", "--dtype", "float16", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "--dtype float16 is for inference and evaluation" in out.stderr


# --------------------------------------------------------------------------- logs
def _tensorboard_scalars(directory) -> dict:
    """The scalars of the event files in ``directory`` (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in sorted(directory.iterdir()):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def test_csv_and_tensorboard_logs_have_one_entry_per_epoch(tmp_path):
    pytest.importorskip("tensorboardX")
    log, events = tmp_path / "log.csv", tmp_path / "tb"
    trainer = _resumable_run(2, [CSVLogger(log), TensorBoard(events)]).train()
    rows_ = log_rows(log)
    assert tuple(rows_[0]) == CSV_FIELDS and [r["epoch"] for r in rows_] == ["1", "2"]
    assert [float(r["test_acc"]) for r in rows_] == trainer.test_acc_list
    assert float(rows_[1]["train_loss"]) == pytest.approx(np.mean(trainer.train_loss_list[10:]))
    assert rows_[1]["step"] == "20" and float(rows_[1]["lr"]) == 0.01
    scalars = _tensorboard_scalars(events)
    assert len(scalars["train/loss"]) == 20
    assert scalars["test/accuracy"] == pytest.approx(
        {10: trainer.test_acc_list[0], 20: trainer.test_acc_list[1]}
    )
    assert set(scalars) >= {"train/accuracy", "time/epoch_seconds", "train/lr"}


def test_a_resumed_log_keeps_the_saved_epochs_only(tmp_path):
    """A crash between the log's row and the checkpoint: the row of the unsaved epoch goes."""
    log = tmp_path / "log.csv"
    _resumable_run(2, [CSVLogger(log)]).train()
    resumed = _resumable_run(3, [CSVLogger(log)])
    state = _resumable_run(1).train().state_dict()
    resumed.load_state_dict(state)
    resumed.train()
    assert [r["epoch"] for r in log_rows(log)] == ["1", "2", "3"]
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    resumed = _resumable_run(2, [CSVLogger(other)])
    resumed.load_state_dict(state)
    with pytest.raises(pn.InputError, match="is not a portnet log"):
        resumed.train()
    assert other.read_text() == "a,b\n1,2\n"
    _resumable_run(1, [CSVLogger(other)]).train()  # a new run starts its log afresh
    assert [r["epoch"] for r in log_rows(other)] == ["1"]


# --------------------------------------------------------------------------- summary
@pytest.mark.parametrize(
    "make",
    [
        lambda: pn.TwoLayerNet(784, 50, 10, seed=0),
        lambda: pn.MultiLayerNet(784, [100, 60], 10, use_batchnorm=True, use_dropout=True),
        lambda: pn.SimpleConvNet(seed=0),
        lambda: pn.DeepConvNet(seed=0),
    ],
    ids=["TwoLayerNet", "MultiLayerNet", "SimpleConvNet", "DeepConvNet"],
)
def test_summary_counts_are_the_parameters_sizes(backend, make):
    net = make()
    table = rows(net)
    sizes = {k: int(np.prod(v.shape)) for k, v in net.params.items()}
    assert [r.name for r in table][-1] == "last_layer" and len(table) == len(net.layer_list()) + 1
    keys = [k for r in table for k in r.keys]
    assert sorted(keys) == sorted(sizes)  # each parameter in exactly one layer
    for r in table:
        assert r.count == sum(sizes[k] for k in r.keys)
    lines = []
    net.summary(print_fn=lines.append)
    fixed = sum(int(np.prod(v.shape)) for v in net.buffers().values())
    assert lines[-5].startswith(f" Total params: {sum(sizes.values()) + fixed:,} (")
    assert f" Trainable params: {sum(sizes.values()):,}" in lines
    assert table[-2].shape == (10,) and "(None, 10)" in lines[-7]


def test_the_summary_command(tmp_path):
    out = portnet("summary", "--model", "deep-conv")
    assert out.returncode == 0, out.stderr
    assert re.search(r"layers\[0\] \(Convolution\) +\(None, 16, 28, 28\) +160 +W1, b1", out.stdout)
    assert " Total params: 123,552 (482.62 KB)" in out.stdout
    out = portnet("summary", "--model", "simple-conv", "--hidden", "10")
    assert out.returncode == 1 and "--hidden applies to the fully connected models" in out.stderr


# --------------------------------------------------------------------------- evaluation report
def test_confusion_matrix_sums_to_the_test_set_and_its_diagonal_to_the_accuracy(
    mnist, book_weights_path
):
    _, (x_test, t_test) = mnist
    net = pn.MultiLayerNet(784, [50, 100], 10, activation="sigmoid", seed=0)
    net.set_params(pn.read_pickled_arrays(book_weights_path))
    x, t = pn.asarray(x_test), pn.asarray(t_test)
    result = report.evaluate(net, x, t)
    assert result.confusion.sum() == 10000 and result.confusion.shape == (10, 10)
    assert np.array_equal(result.confusion.sum(axis=1), np.bincount(t_test, minlength=10))
    assert np.trace(result.confusion) / 10000 == result.accuracy == net.accuracy(x, t) == 0.9352
    assert result.misclassified.size == 10000 - np.trace(result.confusion)


def test_evaluate_prints_the_report_and_draws_both_pictures(mnist_dir, book_weights_path, tmp_path):
    pytest.importorskip("matplotlib")
    mis, conf = tmp_path / "mis.png", tmp_path / "conf.png"
    args = ["evaluate", str(book_weights_path), "--model", "multi-layer", "--activation", "sigmoid"]
    out = portnet(
        *args,
        "--data-dir",
        str(mnist_dir),
        "--plot-misclassified",
        str(mis),
        "--plot-confusion",
        str(conf),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "test accuracy 0.9352 on mnist (10000 images)" in lines[0]
    assert lines[1] == "per-class accuracy:" and lines[2].startswith("  0: 0.9")
    at = lines.index("confusion matrix (rows: true label, columns: predicted label):")
    matrix = np.array([[int(v) for v in line.split()[1:]] for line in lines[at + 2 : at + 12]])
    assert matrix.sum() == 10000 and np.trace(matrix) == 9352
    for png in (mis, conf):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {mis} (20 misclassified digits)" in out.stdout
    again = portnet(*args, "--data-dir", str(mnist_dir), "--plot-confusion", str(conf))
    assert again.returncode == 1 and "exists; pass --overwrite" in again.stderr


# --------------------------------------------------------------------------- half precision
def test_half_precision_sums_in_float32(backend):
    """The softmax's denominator and the cross-entropy's mean of float16 values are float32 sums:
    summed in float16 they would overflow (above 65,504) and give zeros or an infinite loss."""
    xp = backend.xp
    if not hasattr(xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")
    wide = xp.zeros((2, 70000), dtype=xp.float16, device=backend.device)
    y = pn.softmax(wide)
    assert y.dtype == xp.float16
    np.testing.assert_allclose(pn.to_numpy(y).astype(np.float64), 1 / 70000, rtol=5e-3)
    labels = xp.asarray(np.arange(6000) % 2, device=backend.device)
    unsure = xp.full((6000, 2), 2e-7, dtype=xp.float16, device=backend.device)
    loss = pn.cross_entropy_error(unsure, labels)  # -log(3e-7) = 15 each: 90,000 in all
    assert loss.dtype == xp.float16
    assert float(loss) == pytest.approx(
        -np.log(float(np.float16(2e-7)) + float(np.float16(1e-7))), rel=1e-3
    )


BOOK_ACCURACY = 0.9935  # the book's ch. 8 DeepConvNet (half_float_network.py prints it twice)


def test_float16_deep_convnet_keeps_the_books_accuracy(backend, mnist_images, book_dir):
    """The book's trained DeepConvNet computing in float16 end to end (weights, images, every
    layer; softmax sums in float32) on the 10,000 test images: within 0.002 of 0.9935."""
    x_test, t_test = mnist_images
    if not hasattr(backend.xp, "float16"):
        with pytest.raises(pn.InputError, match="dtype 'float16' is not available"):
            pn.set_backend(backend.name, backend.device, "float16")
        return
    with pn.use_backend(backend.name, backend.device, "float16"):
        net = pn.DeepConvNet(seed=0)
        net.load_params(book_dir / "deep_convnet_params.pkl")
        x, t = pn.asarray(x_test, dtype="float16"), pn.asarray(t_test)
    assert net.params["W1"].dtype == backend.xp.float16 and x.dtype == backend.xp.float16
    assert net.predict(x[:2, ...]).dtype == backend.xp.float16
    accuracy = net.accuracy(x, t)
    assert abs(accuracy - BOOK_ACCURACY) <= 0.002, accuracy


@pytest.mark.only_backends("torch", "jax", reason="the libraries that have bfloat16")
def test_bfloat16_inference(backend, mnist_images, book_dir):
    x_test, t_test = (a[:1000] for a in mnist_images)
    with pn.use_backend(backend.name, backend.device, "bfloat16"):
        net = pn.DeepConvNet(seed=0)
        net.load_params(book_dir / "deep_convnet_params.pkl")
        x, t = pn.asarray(x_test.astype(np.float32), dtype="bfloat16"), pn.asarray(t_test)
    assert pn.backend.dtype_name(net.predict(x[:2, ...]).dtype) == "bfloat16"
    assert net.accuracy(x, t) >= 0.98


def test_evaluate_in_float16(mnist_dir, tmp_path):
    """portnet evaluate --dtype float16 and PORTNET_DTYPE=float16 of a float32 checkpoint."""
    train = portnet(*training(tmp_path, mnist_dir, "run", epochs=1))
    assert train.returncode == 0, train.stderr
    base = ["evaluate", str(tmp_path / "run.npz"), "--data-dir", str(mnist_dir), "--limit", "2000"]
    full = portnet(*base)
    half = portnet(*base, "--dtype", "float16")
    env = subprocess.run(
        [sys.executable, "-m", "portnet", *base],
        capture_output=True,
        text=True,
        env={**os.environ, "PORTNET_DTYPE": "float16"},
    )
    assert full.returncode == half.returncode == env.returncode == 0, half.stderr + env.stderr
    assert "float16" in half.stdout.splitlines()[0] and half.stdout == env.stdout
    accuracy = [float(o.stdout.split("test accuracy ")[1].split()[0]) for o in (full, half)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.002, accuracy
    strict = portnet(*base, "--dtype", "float16", "--backend", "array_api_strict")
    assert strict.returncode == 1
    assert "dtype 'float16' is not available on array_api_strict" in strict.stderr


def test_a_native_generators_state_leaves_numpys_global_stream_alone():
    """With the library's own generator, NumPy's global stream only seeded it: saving and loading
    the state must not touch the user's ``np.random``."""
    pytest.importorskip("torch")
    import numpy as np

    from portnet.randomness import Random

    with pn.use_backend("torch") as b:
        rng = Random(b.xp, b.device)
        state = rng.state_dict()
        np.random.seed(42)
        expected = np.random.random()
        np.random.seed(42)
        rng.load_state_dict(state)
        assert np.random.random() == expected
