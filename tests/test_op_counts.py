"""The array operations of a training step, counted on the CPU, and no host read inside a step.

On a GPU every array operation is a kernel launch and every read of a value on the host a sync:
``Trainer.train_epoch`` (batch 100, Adam, float32, 500 synthetic samples: 5 steps) is counted on
PyTorch (device cpu, every ATen operation dispatched) and on NumPy (every operation on an ndarray
subclass), after a warm-up epoch, and divided by its steps (the shuffle, the loss read-back and the
divergence guard's snapshot amortised over them); :mod:`tests.counting` says exactly what counts.
The counts are per library, not per backend of the matrix: each runs once, when its library is
selected (``--backend``; all when none is named).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import portnet as pn
from portnet import backend as backends
from tests.counting import (
    Count,
    Counted,
    HostRead,
    counted,
    counted_network,
    no_host_reads_in_steps,
    numpy_ops,
    refusing_host_reads,
    torch_ops,
)

#: At most this many array operations a training step, by model and library. The default model
#: on NumPy is at its floor, 46 an epoch-long step (the asked-for 45 is missed by one): the
#: book's own formulas take 45 (no fused bias add or scatter there), plus the gradients' gather
#: into one vector; the shuffle and the read-backs add 0.8 spread over these 5 steps.
CAPS = {
    "MultiLayerNet": {"torch": 50, "numpy": 47},
    "SimpleConvNet": {"torch": 60, "numpy": 150},
    "DeepConvNet": {"torch": 150, "numpy": 400},
}

#: Each model and the shape of one sample (28x28 images for the ConvNets).
MODELS = {
    "MultiLayerNet": (lambda: pn.MultiLayerNet(784, [100, 100], 10, seed=0), (784,)),
    "SimpleConvNet": (lambda: pn.SimpleConvNet(seed=0), (1, 28, 28)),
    "DeepConvNet": (lambda: pn.DeepConvNet(seed=0), (1, 28, 28)),
}
SAMPLES, BATCH = 500, 100
#: The libraries counted, how portnet selects them, and the --backend names that select them.
LIBRARIES = {
    "torch": (("torch", "cpu"), {"torch", "torch-cpu"}),
    "numpy": (("numpy", None), {"numpy"}),
}


def _selected(config, library) -> bool:
    """Whether ``library`` is among the backends this session runs (all when none is named)."""
    names = config.getoption("--backend") or [
        n for n in [getattr(config, "_portnet_env", {}).get("PORTNET_BACKEND")] if n
    ]
    return not names or bool(set(names) & LIBRARIES[library][1])


def _use(request, library):
    """The library's backend, active in float32; a skip where it is not selected or missing."""
    if not _selected(request.config, library):
        pytest.skip(f"{library} is not among the selected backends (--backend)")
    if library == "torch":
        pytest.importorskip("torch")
    name, device = LIBRARIES[library][0]
    return backends.use_backend(name, device, "float32")


def _data(library, shape, n, seed):
    """``n`` random samples of ``shape`` and labels in [0, 10), float32 and int64, from their own
    generator (whatever ran before), as arrays of ``library``."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    t = rng.integers(0, 10, n)
    if library == "numpy":
        return counted(x), counted(t)
    return pn.asarray(x), pn.asarray(t)


@dataclass
class Run:
    """One model's counted epoch on one library: its ``count``, ``steps`` and the host ``reads``
    inside the steps of both epochs (warm-up included)."""

    library: str
    model: str
    count: Count
    steps: int
    reads: list

    @property
    def per_step(self) -> float:
        return self.count.total / self.steps


CASES = [(library, model) for model in MODELS for library in LIBRARIES]


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{lib}" for lib, m in CASES])
def run(request) -> Run:
    library, model = request.param
    make, shape = MODELS[model]
    with _use(request, library):
        net = make()
        if library == "numpy":
            counted_network(net)
        x, t = _data(library, shape, SAMPLES, seed=1)
        x_test, t_test = _data(library, shape, BATCH, seed=2)
        trainer = pn.Trainer(
            net,
            x,
            t,
            x_test,
            t_test,
            epochs=2,
            mini_batch_size=BATCH,
            optimizer="adam",
            verbose=False,
            loss_every=10**6,  # more than the steps run: no read-back inside a step
            seed=0,
        )
        reads = []
        with no_host_reads_in_steps(reads):
            trainer.train_epoch()  # warm-up: the optimizer's state, the first pass's checks
            with (numpy_ops if library == "numpy" else torch_ops)() as count:
                trainer.train_epoch()
    assert len(trainer.train_loss_list) == 2 * trainer.iter_per_epoch
    return Run(library, model, count, trainer.iter_per_epoch, reads)


def test_operations_per_step(run):
    """No more array operations a step than the model's cap on the library."""
    cap = CAPS[run.model][run.library]
    steps = run.steps
    assert not run.count.untracked, (
        "arrays escaped the count (computed by something not counted):\n"
        + "\n".join(sorted(set(run.count.untracked)))
    )
    assert run.per_step <= cap, (
        f"{run.model} on {run.library}: {run.per_step:.1f} array operations a training step "
        f"({run.count.total} in an epoch of {steps} steps), more than the cap of {cap}; per step:\n"
        + run.count.table(steps)
    )


def test_no_host_read_inside_a_step(run):
    """Nothing inside a training step reads a value back to the host (the loss stays on the
    device until the epoch's flush)."""
    found = sorted(set(run.reads))
    assert not found, (
        f"{run.model} on {run.library}: {len(run.reads)} host reads inside training steps:\n"
        + "\n".join(found)
    )


# ------------------------------------------------------------------------- the counters themselves
def _tiny_trainer(library):
    net = pn.MultiLayerNet(4, [3], 2, seed=0)
    x, t = _data(library, (4,), 20, seed=3)
    t = t % 2
    if library == "numpy":
        counted_network(net)
    return pn.Trainer(
        net,
        x,
        t,
        x,
        t,
        epochs=1,
        mini_batch_size=10,
        optimizer="adam",
        verbose=False,
        loss_every=10**6,
        seed=0,
    )


def test_the_torch_counter_counts_computations_only(request):
    with _use(request, "torch"):
        import torch

        a, b = torch.ones(3, 4), torch.ones(3, 4)
        with torch_ops() as count:
            a + b
        assert count.total == 1, count.ops
        with torch_ops() as count:  # views, an alias and an allocation: no kernel computes
            a.reshape(12), a.T, a[1:], a.detach(), torch.empty(5)
        assert count.total == 0, count.ops
        with torch_ops() as count:  # a reshape that copies, a fill
            a.T.reshape(12), torch.zeros(5)
        assert count.total == 2, count.ops
        with torch_ops() as count:  # the add; not the assignment of the view onto itself
            a[1:] += b[1:]
        assert dict(count.ops) == {"aten.add_.Tensor": 1}, count.ops


def test_the_numpy_counter_counts_computations_only(request):
    with _use(request, "numpy") as active:
        xp = active.xp
        a, b = counted(np.ones((3, 4), np.float32)), counted(np.ones((3, 4), np.float32))
        with numpy_ops() as count:
            c = a + b
        assert count.total == 1 and type(c) is Counted, count.ops
        with numpy_ops() as count:  # views, a cast that copies nothing, an allocation
            xp.reshape(a, (12,)), a.T, a[1:, ...], xp.permute_dims(a, (1, 0))
            xp.astype(a, xp.float32, copy=False), xp.empty((5,))
        assert count.total == 0, count.ops
        rows = counted(np.asarray([0, 2]))
        with numpy_ops() as count:  # one each: a reshape that copies, a reduction (not its
            # ufunc again), a gather, a cast, an in-place update, a fill, a list made an array
            xp.reshape(a.T, (12,)), xp.sum(a), a[rows, ...]
            xp.astype(a, xp.float64)
            a += b
            zeros = xp.zeros((5,))
            xp.asarray([1.0, 2.0])
        assert count.total == 7, count.ops
        with numpy_ops() as count:  # the add; not the assignment of the view onto itself
            a[1:, ...] += b[1:, ...]
            a[rows, ...] = b[:2, ...]  # an assignment that copies
        assert dict(count.ops) == {"np.add": 1, "ndarray.__setitem__": 1}, count.ops
        assert type(zeros) is Counted and type(xp.sum(a)) is Counted  # 0-d, not a numpy scalar
        assert not count.untracked
        with numpy_ops() as count:
            a * np.ones((3, 4), np.float32)  # a plain array computed outside the count
        assert count.total == 1 and len(count.untracked) == 1, count.untracked


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_a_host_read_inside_a_step_raises(request, library):
    """bool(), float() and a NumPy export inside the guarded block raise; outside they do not;
    inside a Trainer's step (wrapped whatever its signature) a bool() of the loss raises, and the
    epoch's own read-back, outside the steps, is allowed."""
    with _use(request, library) as active:
        xp = active.xp
        x = counted(np.ones(3, np.float32)) if library == "numpy" else xp.ones(3)
        total = xp.sum(x)
        reads = [bool, float, int, lambda a: a.tolist(), lambda a: a.item()]
        if library == "torch":
            reads.append(lambda a: a.numpy())
        for read in reads:
            with refusing_host_reads(), pytest.raises(HostRead):
                read(total)
        recorded = []
        with refusing_host_reads(recorded):
            bool(total)
        assert len(recorded) == 1 and "test_op_counts.py" in recorded[0], recorded
        assert float(total) == 3.0 and bool(total) and total.tolist() == 3.0

        trainer = _tiny_trainer(library)
        with no_host_reads_in_steps():
            trainer.train_epoch()  # the flush after the steps reads the losses back
        assert len(trainer.train_loss_list) == 2
        net = trainer.network
        step = net.loss_and_gradient

        def reading(*args, **kwargs):
            loss, grads = step(*args, **kwargs)
            bool(loss > 0)
            return loss, grads

        net.loss_and_gradient = reading
        with no_host_reads_in_steps(), pytest.raises(HostRead, match="inside a training step"):
            trainer.train_epoch()
