"""The book's Trainer (common/trainer.py): mini-batch training with per-epoch accuracy, as a loop
plus callbacks (:mod:`portnet.callbacks`).

Any object with ``params``, ``gradient``, ``loss`` and ``accuracy`` can be trained, as in the
book; portnet's networks are also asked for ``loss_and_gradient`` (one pass for both). A step
moves no data between host and device: the dataset stays on its device, each epoch's shuffle is
drawn there, and the losses stay there until they are read back together every ``loss_every``
steps. Where the library compiles (its adapter's ``step_compiler``: JAX), ``loss_every`` steps
are one compiled call of the pure step (:mod:`portnet.step`); PyTorch's ``torch.compile`` on
request (``compile=True``).
"""

from __future__ import annotations

import math
import time

import array_api_compat

from . import backends
from .arrays import is_array, library_name, namespace_of, to_numpy
from .callbacks import (
    BookLines,
    Callback,
    DivergenceGuard,
    Evaluation,
    ProgressBar,
    ThreadTuner,
    _restore,
)
from .checks import check_memory, integer, same_samples
from .delegation import take_rows
from .errors import ArrayTypeError, CheckpointError, InputError, TrainingDiverged
from .functions import check_labels, labels_of
from .layers import SoftmaxWithLoss
from .optimizers import make_optimizer
from .precision import host_copy, host_like
from .randomness import Random
from .step import PureStep

__all__ = ["Trainer", "TrainingDiverged"]


class Trainer:
    """Train ``network`` on ``(x_train, t_train)``, evaluating on both sets after each epoch.

    The book's arguments, plus: ``callbacks`` (more :class:`~portnet.callbacks.Callback` objects,
    called after portnet's own), ``progress`` (a tqdm bar), ``tune_threads`` (the per-epoch thread
    choice on NumPy; off by default because BLAS sums in another order on another thread count,
    so a run's last digits would depend on the machine's load), ``loss_every`` (steps between
    read-backs of the loss), ``seed`` and ``random_source`` (the shuffle's generator: 'native' on
    the device, or 'host' for the same draws on every backend; ``seed=None`` seeds from NumPy's
    global generator, as the book), ``compile`` (None: compile the steps where the library does
    by default, JAX; True: insist, JAX or ``torch.compile``; False: never). With ``verbose`` it
    prints the book's lines. :meth:`train` runs epochs of
    shuffled mini-batches; :meth:`train_step` is the book's single step (a mini-batch drawn with
    replacement, an evaluation when an epoch begins). Afterwards: ``train_loss_list`` (one float a
    step), ``train_acc_list``, ``test_acc_list``, ``epoch_times`` (the training steps' seconds,
    compiling excluded) and ``compile_times`` (each epoch's seconds compiling).
    """

    def __init__(
        self,
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=20,
        mini_batch_size=100,
        optimizer="SGD",
        optimizer_param=None,
        evaluate_sample_num_per_epoch=None,
        verbose=True,
        *,
        callbacks=(),
        progress=False,
        tune_threads=False,
        loss_every=50,
        seed=None,
        random_source="native",
        compile=None,  # noqa: A002  (torch.compile's and Keras's name)
    ):
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs = integer("epochs", epochs)
        self.batch_size = integer("mini_batch_size", mini_batch_size)
        samples = (
            None
            if evaluate_sample_num_per_epoch is None
            else integer("evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch)
        )
        self.loss_every = integer("loss_every", loss_every)
        if isinstance(optimizer, str):
            optimizer = make_optimizer(
                optimizer, **({"lr": 0.01} if optimizer_param is None else optimizer_param)
            )
        self.optimizer = optimizer
        if hasattr(network, "memory_needed"):  # portnet's networks: the whole run, before it starts
            slots = len(getattr(optimizer, "slots", ()))
            shuffled = _bytes(x_train) + _bytes(t_train)  # an epoch's shuffled copy
            check_memory(
                f"training {network!r} in batches of {self.batch_size}",
                network.memory_needed(self.batch_size, slots) + shuffled,
            )
            network.check_pass(self.batch_size)
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size // self.batch_size, 1)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.current_iter = self.current_epoch = 0
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []
        self.epoch_times, self.compile_times = [], []
        self._xp = namespace_of(x_train, t_train, x_test, t_test)
        self._validate()
        self._rng = Random(
            self._xp, array_api_compat.device(x_train), seed=seed, source=random_source
        )
        self._step_compiler, self._compiled = self._choose_compiler(compile), None
        self._pending = []  # (first step, losses on the device), not yet read back
        self._shuffled = (None, None)  # the last epoch's shuffled copy, written over by the next
        self.writer = None  # where lines go instead of print (a progress bar's write)
        self._begun = False
        self._evaluation = Evaluation(samples)
        watch = isinstance(getattr(network, "last_layer", None), SoftmaxWithLoss)
        self.callbacks = [
            DivergenceGuard(watch),
            self._evaluation,
            *([BookLines()] if verbose else []),
            *([ProgressBar()] if progress else []),
            *([ThreadTuner()] if tune_threads else []),
            *callbacks,
        ]
        self._around_steps = [
            c for c in self.callbacks if _overrides(c, "on_step_begin", "on_step_end")
        ]

    # ------------------------------------------------------------------ the loop
    def train(self):
        """Run the epochs not run yet (all of them, unless a state was loaded), each followed by
        the callbacks' ``on_epoch_end`` (the evaluation first); returns self. Raises
        TrainingDiverged when the loss blows up."""
        self._begin()
        try:
            for _ in range(self.current_epoch, self.epochs):
                self.train_epoch()
                self._emit("on_epoch_end")
            self._emit("on_train_end")
        finally:
            self._emit("close")
            self._begun = False
            self._shuffled = (None, None)  # the epoch's copy of the training set, let go
        return self

    def train_epoch(self) -> float:
        """One epoch of training steps (no evaluation); returns its duration in seconds,
        reading the epoch's losses back (which waits for the device) included, compiling the
        steps not (it is in :attr:`compile_times`)."""
        start = time.perf_counter()
        self._begin()
        self._emit("on_epoch_begin")
        order, b = self._rng.permutation(self.train_size), self.batch_size
        compiling = 0.0
        if self._step_compiler is not None:
            compiling = self._compiled_epoch(order)
        else:  # the epoch's shuffled copy, one gather each; every mini-batch is then a slice
            x, t = self._shuffled = tuple(
                take_rows(a, order, out=kept)
                for a, kept in zip((self.x_train, self.t_train), self._shuffled)
            )
            for i in range(self.iter_per_epoch):
                for c in self._around_steps:
                    c.on_step_begin(self, i)
                self._step(x[i * b : (i + 1) * b, ...], t[i * b : (i + 1) * b, ...])
                for c in self._around_steps:
                    c.on_step_end(self, i)
        self.current_epoch += 1
        self._flush()
        self.compile_times.append(compiling)
        self.epoch_times.append(time.perf_counter() - start - compiling)
        return self.epoch_times[-1]

    def _step(self, x, t):
        net = self.network
        if hasattr(net, "loss_and_gradient"):
            loss, grads = net.loss_and_gradient(x, t, check=False)  # labels were checked once
        else:
            grads = net.gradient(x, t)
            loss = net.loss(x, t)
        self.optimizer.update(net.params, grads)
        self._pending.append((self.current_iter, loss))
        self.current_iter += 1
        if len(self._pending) >= self.loss_every:
            self._flush()

    def _compiled_epoch(self, order) -> float:
        """The epoch's steps ``loss_every`` at a time, each run one compiled call; returns the
        seconds spent compiling."""
        xp, b, n = self._xp, self.batch_size, self.iter_per_epoch
        settings = _traced_settings(self.optimizer, self.network)
        if self._compiled is None or settings != self._compiled_for:  # a trace bakes them in
            self._pure = PureStep(self.network, self.optimizer, self.x_train, self.t_train)
            self._compiled, self._compiled_for = self._step_compiler(self._pure), settings
        before = getattr(self._compiled, "compile_seconds", 0.0)
        for start in range(0, n, self.loss_every):
            stop = min(start + self.loss_every, n)
            state, losses = self._compiled(
                self._pure.state(), xp.reshape(order[start * b : stop * b], (stop - start, b))
            )
            self._pure.install(state)
            self._pending.append((self.current_iter, losses))
            self.current_iter += stop - start
            self._flush()
        return getattr(self._compiled, "compile_seconds", 0.0) - before

    def _flush(self):
        """Read the pending losses back in one transfer, then hand them to the callbacks."""
        if not self._pending:
            return
        xp = self._xp
        runs = [xp.reshape(xp.asarray(loss), (-1,)) for _, loss in self._pending]
        first = self._pending[0][0]
        self._pending = []
        values = to_numpy(xp.concat(runs)).tolist()
        self.train_loss_list.extend(values)
        self._emit("on_losses", first, values)

    # ------------------------------------------------------------------ the book's extras
    def train_step(self):
        """The book's step: a mini-batch drawn with replacement, a gradient step, its loss (read
        back at once); at the start of each epoch, the accuracies on both sets."""
        self._begin()
        idx = self._rng.integers(0, self.train_size, self.batch_size)
        x, t = take_rows(self.x_train, idx), take_rows(self.t_train, idx)
        self.optimizer.update(self.network.params, self.network.gradient(x, t))
        self._pending.append((self.current_iter, self.network.loss(x, t)))
        self._flush()
        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            self._emit("on_epoch_end")
        self.current_iter += 1

    def evaluate(self) -> tuple[float, float]:
        """Accuracy on the training and test sets (their first ``evaluate_sample_num_per_epoch``
        samples, if set), appended to the lists; returns both."""
        return self._evaluation.evaluate(self)

    def state_dict(self) -> dict:
        """Everything the run depends on, as host data (NumPy arrays, Python numbers), taken
        between epochs: ``epoch``, ``step``, ``params``, ``buffers`` (batch-norm statistics), the
        ``optimizer``'s state and step count, the ``generators``' states (the shuffle's and the
        network's dropout), the ``history`` (losses, accuracies, epoch times). A trainer that
        :meth:`load_state_dict` it and trains on ends with the parameters of an uninterrupted run
        (Keras's BackupAndRestore, Chainer's snapshot); :class:`~portnet.callbacks.TrainingCheckpoint`
        writes it to a file after every epoch."""
        net = self.network
        if not hasattr(self.optimizer, "state_dict"):
            raise InputError(
                f"state_dict() needs one of portnet's optimizers (their state is data), not "
                f"{type(self.optimizer).__name__}"
            )
        return {
            "epoch": self.current_epoch,
            "step": self.current_iter,
            "params": {k: host_copy(v) for k, v in net.params.items()},
            "buffers": {k: host_copy(v) for k, v in _buffers(net).items()},
            "optimizer": self.optimizer.state_dict(),
            "generators": {
                "shuffle": self._rng.state_dict(),
                "network": [g.state_dict() for g in _generators(net)],
            },
            "history": {
                "train_loss": list(self.train_loss_list),
                "train_acc": list(self.train_acc_list),
                "test_acc": list(self.test_acc_list),
                "epoch_times": list(self.epoch_times),
                "compile_times": list(self.compile_times),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s ``state``, checked first against this trainer (its
        epochs and steps, its network's parameters and generators, its optimizer); then
        :meth:`train` runs the epochs left."""
        net, epoch, step = self.network, state["epoch"], state["step"]
        if epoch > self.epochs:
            raise CheckpointError(f"the state is of epoch {epoch}, past this run's {self.epochs}")
        if step != epoch * self.iter_per_epoch:
            raise CheckpointError(
                f"the state has {step} steps in {epoch} epochs; this trainer takes "
                f"{self.iter_per_epoch} an epoch (another batch size or training set)"
            )
        if set(state["params"]) != set(net.params):
            raise CheckpointError(
                f"the state's parameters {sorted(state['params'])} are not the network's "
                f"{sorted(net.params)}"
            )
        generators = _generators(net)
        if len(state["generators"]["network"]) != len(generators):
            raise CheckpointError(
                f"the state has {len(state['generators']['network'])} generators of the network, "
                f"the network {len(generators)}"
            )
        params = {k: host_like(a, net.params[k], k) for k, a in state["params"].items()}
        buffers = _buffers(net)
        if set(state["buffers"]) != set(buffers):
            raise CheckpointError(
                f"the state's buffers {sorted(state['buffers'])} are not the network's "
                f"{sorted(buffers)}"
            )
        buffers = {k: host_like(a, buffers[k], k) for k, a in state["buffers"].items()}
        self.optimizer.load_state_dict(state["optimizer"], net.params)
        self._rng.load_state_dict(state["generators"]["shuffle"], "the shuffle generator")
        for g, saved in zip(generators, state["generators"]["network"]):
            g.load_state_dict(saved, "the network's generator")
        _restore(net, (params, buffers))
        self.current_epoch, self.current_iter = epoch, step
        history = state["history"]
        self.train_loss_list, self.train_acc_list = (
            list(history["train_loss"]),
            list(history["train_acc"]),
        )
        self.test_acc_list, self.epoch_times = (
            list(history["test_acc"]),
            list(history["epoch_times"]),
        )
        self.compile_times = list(history.get("compile_times", [0.0] * len(self.epoch_times)))

    def write(self, line: str) -> None:
        """Print ``line`` (through the progress bar while one is shown)."""
        if self.writer is not None:
            self.writer(line)
        else:
            print(line, flush=True)

    # ------------------------------------------------------------------ setup
    def _begin(self):
        """The callbacks' ``on_train_begin``, once, before the first step however it is taken."""
        if not self._begun:
            self._begun = True
            self._emit("on_train_begin")

    def _emit(self, hook, *args):
        for c in self.callbacks:
            getattr(c, hook)(self, *args)

    def _choose_compiler(self, wanted):
        """The library's step compiler, where the step can be made pure and ``compile`` asks for
        it (None: where the library compiles by default, JAX)."""
        adapter = backends.of_namespace(self._xp)
        compiler = adapter.step_compiler()
        can = compiler is not None and PureStep.supports(self.network, self.optimizer)
        if wanted and not can:
            raise InputError(
                "compile=True needs a library that compiles (JAX, PyTorch), one of portnet's networks and "
                "optimizers, and dropout drawn by a generator whose state is data: JAX's keys "
                "(random_source='native'); with PyTorch, a network without dropout"
            )
        if wanted is None:
            wanted = adapter.compiles_by_default
        return compiler if can and wanted else None

    def _validate(self):
        """Libraries, shapes and labels, checked once for the whole dataset (so no step needs to)."""
        xp = self._xp
        arrays = [v for v in getattr(self.network, "params", {}).values() if is_array(v)]
        if arrays and namespace_of(arrays[0]) is not xp:
            mine, theirs = library_name(namespace_of(arrays[0])), library_name(xp)
            raise ArrayTypeError(
                f"the data are {theirs} arrays but the network's parameters {mine} ones; load or "
                f"convert the data (portnet.asarray) with the {mine} backend active"
            )
        classes = getattr(self.network, "output_size", None)
        for name, x, t in (
            ("train", self.x_train, self.t_train),
            ("test", self.x_test, self.t_test),
        ):
            if same_samples(f"{name} set", x, t) == 0:
                raise InputError(f"{name} set: no samples")
            if classes is not None:
                check_labels(xp, labels_of(xp, (t.shape[0], classes), t, f"{name} set"), classes)
        if self.train_size < self.batch_size:
            raise InputError(
                f"mini_batch_size {self.batch_size} is larger than the training set ({self.train_size})"
            )


def _bytes(x) -> int:
    xp = namespace_of(x)
    info = xp.finfo if xp.isdtype(x.dtype, "real floating") else xp.iinfo
    return math.prod(x.shape) * (1 if x.dtype == xp.bool else info(x.dtype).bits // 8)


def _buffers(network) -> dict:
    return network.buffers() if hasattr(network, "buffers") else {}


def _generators(network) -> list:
    return network.generators() if hasattr(network, "generators") else []


def _traced_settings(optimizer, network) -> tuple:
    """The Python numbers a compiled step bakes in (learning rate, momenta, weight decay, dropout
    ratios, ...), of the optimizer, the network and its layers: when one changes (a callback's
    schedule), the step is compiled again."""
    objects = [
        optimizer,
        network,
        *getattr(network, "layer_list", list)(),
        getattr(network, "last_layer", None),
    ]
    return tuple(
        tuple(sorted((k, v) for k, v in vars(o).items() if isinstance(v, (bool, int, float))))
        for o in objects
        if o is not None
    )


def _overrides(callback, *hooks) -> bool:
    return any(getattr(type(callback), h) is not getattr(Callback, h) for h in hooks)
