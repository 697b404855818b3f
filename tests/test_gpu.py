"""Checks that only a GPU backend can make: no host synchronisation inside a training step, and
full MNIST trained on the device. array_api_strict's ``device1`` stands in for a GPU in the
audit (no value may leave it for the host), so that the audit runs, and can fail, on a CPU; the
other CPU backends skip, saying so."""

import contextlib
import warnings

import numpy as np
import pytest

import portnet as pn


def _on_gpu(backend):
    return backend.name == "cupy" or (backend.name == "torch" and backend.device.type == "cuda")


def _gpu_only(backend):
    if not _on_gpu(backend):
        pytest.skip(
            f"{backend.name} on {backend.device}: a GPU check (the CPU has no host-device boundary)"
        )


class HostReadback(RuntimeError):
    """A value was read back to the host inside an audited block."""


#: How an array_api_strict array reaches the host: Python scalars, NumPy and DLPack exports.
_READBACKS = (
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "__complex__",
    "__array__",
    "__buffer__",
    "__dlpack__",
)


@contextlib.contextmanager
def no_host_readback():
    """array_api_strict's stand-in for a GPU sync audit: inside the block, reading any value of an
    array back to the host (``float(loss)``, ``bool(...)``, ``int(...)``, a NumPy or DLPack export,
    ``to_device`` onto the CPU) raises :class:`HostReadback`."""
    import array_api_strict

    array = type(array_api_strict.asarray(0))
    saved = {
        name: array.__dict__[name] for name in (*_READBACKS, "to_device") if name in array.__dict__
    }

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostReadback(
                f"{name} read an array on {self.device} back to the host inside an audited block"
            )

        return method

    def to_device(self, device, /, stream=None):
        if device == array_api_strict.Device() and self.device != device:
            raise HostReadback(
                f"to_device moved an array on {self.device} to the host inside an audited block"
            )
        return saved["to_device"](self, device, stream=stream)

    for name in saved:
        setattr(array, name, to_device if name == "to_device" else refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(array, name, method)


def _audited(backend):
    """Where the audit can look: a GPU, or array_api_strict off its CPU device."""
    if not (
        _on_gpu(backend)
        or (backend.name == "array_api_strict" and backend.device != backend.xp.Device())
    ):
        pytest.skip(
            f"{backend.name} on {backend.device}: no host-device boundary to audit "
            f"(array_api_strict's device1 stands in for a GPU)"
        )


@contextlib.contextmanager
def _no_sync(backend):
    """Any host synchronisation inside the block is an error: CuPy's ``allow_synchronize(False)``
    with every warning an error (it sees ``.get()`` and ``Device.synchronize`` only; the stream
    capture probe of ``benchmarks/gpu_probe.py`` sees the rest), PyTorch's sync debug mode, or
    the stand-in's :func:`no_host_readback`."""
    if backend.name == "array_api_strict":
        with no_host_readback():
            yield
        return
    if backend.name == "cupy":
        import cupyx

        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"cupyx\.allow_synchronize"
            )  # its deprecation notice
            with cupyx.allow_synchronize(False):
                warnings.simplefilter("error")  # e.g. a PerformanceWarning, an array on another GPU
                yield
        return
    import torch

    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_stand_in_audit_refuses_a_read_back():
    """The audit's stand-in can fail: a loss read back inside the block is refused, and the
    array's methods are whole again afterwards."""
    array_api_strict = pytest.importorskip("array_api_strict")

    loss = array_api_strict.asarray(1.5, device=array_api_strict.Device("device1"))
    with no_host_readback():
        for read in (float, bool, np.asarray, lambda a: a.to_device(array_api_strict.Device())):
            with pytest.raises(HostReadback):
                read(loss)
        assert (
            loss.to_device(loss.device).device == loss.device
        )  # staying on the device is no read-back
    assert float(loss) == 1.5


@pytest.mark.parametrize("model", ["multi-layer", "simple-conv"])
def test_no_host_sync_inside_an_epoch(backend, mnist, model):
    """A Trainer epoch (shuffle on the device, gathers, forward, backward, optimizer) with its losses
    read back only after the block: nothing inside may wait for the device."""
    _audited(backend)
    (x_train, t_train), _ = mnist
    n = 2000
    x = pn.asarray(x_train[:n], dtype="float32")
    if model == "simple-conv":
        x = backend.xp.reshape(x, (n, 1, 28, 28))
        net = pn.SimpleConvNet(seed=0)
    else:
        net = pn.MultiLayerNet(784, [100, 100], 10, seed=0)
    t = pn.asarray(t_train[:n])
    trainer = pn.Trainer(
        net,
        x,
        t,
        x[:200, ...],
        t[:200],
        epochs=1,
        optimizer="adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        loss_every=10**6,
        seed=0,
    )
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
    trainer = pn.Trainer(
        net,
        pn.asarray(x_train),
        pn.asarray(t_train),
        pn.asarray(x_test),
        pn.asarray(t_test),
        epochs=1,
        optimizer="adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        seed=0,
    )
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
        pytest.skip(
            f"a GPU is usable here ({', '.join(usable)}): run benchmarks/gpu_check.py itself"
        )
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert (
        out.stderr.startswith("gpu_check: no usable GPU here (cupy: ")
        and len(out.stderr.strip().splitlines()) == 1
    )
