"""Checks that only a GPU backend can make: no host synchronisation inside a training step, and
full MNIST trained on the device. On CPU backends they skip, saying so."""

import contextlib

import numpy as np
import pytest

import portnet as pn


def _gpu_only(backend):
    if not _on_gpu(backend):
        pytest.skip(f"{backend.name} on {backend.device}: a GPU check (the CPU has no host-device boundary)")


def _on_gpu(backend):
    return backend.name == "cupy" or (backend.name == "torch" and backend.device.type == "cuda")


@contextlib.contextmanager
def _no_sync(backend):
    """Any host synchronisation inside the block is an error (CuPy, PyTorch's sync debug mode)."""
    if backend.name == "cupy":
        import cupyx

        with cupyx.allow_synchronize(False):
            yield
        return
    import torch

    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("model", ["multi-layer", "simple-conv"])
def test_no_host_sync_inside_an_epoch(backend, mnist, model):
    """A Trainer epoch (shuffle on the device, gathers, forward, backward, optimizer) with its losses
    read back only after the block: nothing inside may wait for the device."""
    _gpu_only(backend)
    (x_train, t_train), _ = mnist
    n = 2000
    x = pn.asarray(x_train[:n], dtype="float32")
    if model == "simple-conv":
        x = backend.xp.reshape(x, (n, 1, 28, 28))
        net = pn.SimpleConvNet(seed=0)
    else:
        net = pn.MultiLayerNet(784, [100, 100], 10, seed=0)
    t = pn.asarray(t_train[:n])
    trainer = pn.Trainer(net, x, t, x[:200, ...], t[:200], epochs=1, optimizer="adam", optimizer_param={"lr": 0.001},
                         verbose=False, loss_every=10**6, seed=0)
    read_back = trainer._flush
    trainer._flush = lambda: None  # the one read-back, after the audited block
    with _no_sync(backend):
        trainer.train_epoch()
    read_back()
    assert len(trainer.train_loss_list) == n // 100 and all(np.isfinite(trainer.train_loss_list))


def test_full_mnist_on_the_device(backend, mnist):
    """The default model, one epoch of full MNIST with the device's own shuffle: at least 0.95."""
    _gpu_only(backend)
    (x_train, t_train), (x_test, t_test) = mnist
    net = pn.MultiLayerNet(784, [100, 100], 10, seed=0)
    trainer = pn.Trainer(net, pn.asarray(x_train), pn.asarray(t_train), pn.asarray(x_test), pn.asarray(t_test),
                         epochs=1, optimizer="adam", optimizer_param={"lr": 0.001}, verbose=False, seed=0)
    trainer.train()
    assert trainer.test_acc_list[-1] >= 0.95, trainer.test_acc_list


def test_the_gpu_check_says_in_one_line_when_there_is_no_gpu():
    """benchmarks/gpu_check.py on a machine without a usable GPU: one line, exit status 1."""
    import subprocess
    import sys
    from pathlib import Path

    from portnet import backend as backends

    usable = []
    for name, device in (("cupy", 0), ("torch", "cuda")):
        try:
            backends.make_backend(name, device)
            usable.append(name)
        except pn.PortnetError:
            pass
    if usable:
        pytest.skip(f"a GPU is usable here ({', '.join(usable)}): run benchmarks/gpu_check.py itself")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("gpu_check: no usable GPU here (cupy: ") and len(out.stderr.strip().splitlines()) == 1
