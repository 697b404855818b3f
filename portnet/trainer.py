"""The book's Trainer (common/trainer.py): mini-batch training with per-epoch accuracy.

Any object with ``params``, ``gradient``, ``loss`` and ``accuracy`` can be trained, as in the
book; portnet's networks are also asked for ``loss_and_gradient`` (one pass for both). A step
moves no data between host and device: the dataset stays on its device, each epoch's shuffle is
drawn there, and the losses stay there until they are read back together every ``loss_every``
steps. A loss that is NaN or infinite, or that stays near the softmax guard's ceiling (a run that
has blown up without overflowing), stops training with :class:`TrainingDiverged`, the parameters
restored to the last state known good.
"""

from __future__ import annotations

import math
import time

import array_api_compat

from .arrays import is_array, library_name, namespace_of, to_numpy, writeable
from .checks import integer
from .errors import ArrayTypeError, InputError, MissingDependencyError, TrainingDiverged
from .functions import DELTA, check_labels, labels_of
from .layers import SoftmaxWithLoss
from .optimizers import make_optimizer
from .randomness import Random
from .step import PureStep, compile_steps
from .threads import ThreadChoice

__all__ = ["Trainer", "TrainingDiverged"]

#: A softmax cross-entropy above this (half of -log(1e-7), the guard's ceiling) for
#: :data:`STUCK_STEPS` steps in a row means the run has blown up: a network that guesses scores
#: log(10) = 2.3.
STUCK_LOSS = -0.5 * math.log(DELTA)
STUCK_STEPS = 50


class Trainer:
    """Train ``network`` on ``(x_train, t_train)``, evaluating on both sets after each epoch.

    The book's arguments, plus: ``progress`` (a tqdm bar), ``loss_every`` (steps between
    read-backs of the loss), ``seed`` and ``random_source`` (the shuffle's generator: 'native' on
    the device, or 'host' for the same draws on every backend; ``seed=None`` seeds from NumPy's
    global generator, as the book), ``tune_threads`` (on NumPy, time a few steps each epoch with
    all cores and with one and keep the faster, so that a busy core does not stall BLAS; needs
    ``threadpoolctl``; off by default because BLAS sums in another order on another thread count,
    so a run's last digits would depend on the machine's load), ``jit`` (None: on JAX, compile ``loss_every`` steps at a time into one
    program with ``jax.jit``; see :mod:`portnet.step`). With ``verbose`` it prints the book's lines.
    :meth:`train` runs epochs of shuffled mini-batches; :meth:`train_step` is the book's single
    step (a mini-batch drawn with replacement, an evaluation when an epoch begins). Afterwards:
    ``train_loss_list`` (one float a step), ``train_acc_list``, ``test_acc_list``, ``epoch_times``.
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
        progress=False,
        loss_every=50,
        seed=None,
        random_source="native",
        tune_threads=False,
        jit=None,
    ):
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs = integer("epochs", epochs)
        self.batch_size = integer("mini_batch_size", mini_batch_size)
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = integer("evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.loss_every = integer("loss_every", loss_every)
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, **({"lr": 0.01} if optimizer_param is None else optimizer_param))
        self.optimizer = optimizer
        self.verbose, self.progress = verbose, progress
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size // self.batch_size, 1)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list, self.train_acc_list, self.test_acc_list, self.epoch_times = [], [], [], []
        self._xp = namespace_of(x_train, t_train, x_test, t_test)
        self._rng = Random(self._xp, array_api_compat.device(x_train), seed=seed, source=random_source)
        self.threads = ThreadChoice(x_train, tune_threads)
        if jit is None:
            jit = array_api_compat.is_jax_namespace(self._xp) and PureStep.supports(network, self.optimizer)
        elif jit and not (array_api_compat.is_jax_namespace(self._xp) and PureStep.supports(network, self.optimizer)):
            raise InputError("jit=True needs JAX arrays, one of portnet's networks and optimizers, and dropout drawn "
                             "by JAX's generator (random_source='native')")
        self._pure = PureStep(network, self.optimizer, x_train, t_train) if jit else None
        self._compiled = None
        self._validate()
        self._watch_ceiling = isinstance(getattr(network, "last_layer", None), SoftmaxWithLoss)
        self._stuck = 0
        self._bar = None
        self._pending = []  # (step, loss on the device), not yet read back
        self._window = (0, self._snapshot())  # (step, params) where the unread losses begin
        self._good = None  # (step, params) whose loss was read and sound

    # ------------------------------------------------------------------ the loop
    def train(self, on_epoch=None):
        """Run every epoch, evaluating after each and then calling ``on_epoch(self)``; returns self.

        Raises TrainingDiverged when the loss blows up."""
        self._bar = self._progress_bar()
        try:
            for _ in range(self.epochs):
                self.train_epoch()
                self.evaluate()
                if on_epoch is not None:
                    on_epoch(self)
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        if self.verbose:
            test_acc = self.network.accuracy(self.x_test, self.t_test)
            self.write("=============== Final Test Accuracy ===============")
            self.write("test acc:" + str(test_acc))
        return self

    def write(self, line: str) -> None:
        """Print ``line`` (through the progress bar while one is shown)."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def train_epoch(self) -> float:
        """One epoch of training steps (no evaluation); returns its duration in seconds.

        The duration includes reading the epoch's losses back, which waits for the device."""
        start = time.perf_counter()
        b = self.batch_size
        order = self._rng.permutation(self.train_size)

        def step(i):
            self._step(order[i * b : (i + 1) * b])
            if self._bar is not None:
                self._bar.update(1)

        if self._pure is not None:
            self._compiled_epoch(order)
        else:
            self.threads.run(step, self.iter_per_epoch)
        self.current_epoch += 1
        self._flush()
        self.epoch_times.append(time.perf_counter() - start)
        return self.epoch_times[-1]

    def train_step(self):
        """The book's step: a mini-batch drawn with replacement, a gradient step, its loss (read
        back at once); at the start of each epoch, the accuracies on both sets."""
        idx = self._rng.integers(self.train_size, self.batch_size)
        x, t = self._xp.take(self.x_train, idx, axis=0), self._xp.take(self.t_train, idx, axis=0)
        self.optimizer.update(self.network.params, self.network.gradient(x, t))
        self._pending.append((self.current_iter, self.network.loss(x, t)))
        self._flush()
        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            self.evaluate()
        self.current_iter += 1

    def _step(self, idx):
        xp, net = self._xp, self.network
        x, t = xp.take(self.x_train, idx, axis=0), xp.take(self.t_train, idx, axis=0)
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

    def _compiled_epoch(self, order):
        """The epoch's steps ``loss_every`` at a time, each run one compiled call."""
        xp, b, n = self._xp, self.batch_size, self.iter_per_epoch
        self.optimizer.init(self.network.params)
        for start in range(0, n, self.loss_every):
            stop = min(start + self.loss_every, n)
            traced = self._compiled is None
            if traced:
                self._compiled = compile_steps(self._pure)
            state, losses = self._compiled(self._pure.state(), xp.reshape(order[start * b : stop * b], (stop - start, b)))
            if traced:
                self._pure.scrub()
            self._pure.install(state, concrete=True)
            self._pending.append((self.current_iter, losses))
            self.current_iter += stop - start
            if self._bar is not None:
                self._bar.update(stop - start)
            self._flush()

    def _flush(self):
        """Read the pending losses back in one transfer; stop on the first unsound one."""
        if not self._pending:
            return
        xp = self._xp
        losses = [xp.reshape(xp.asarray(loss), (-1,)) for _, loss in self._pending]
        values = to_numpy(xp.concat(losses)).tolist()
        steps = [first + k for (first, _), run in zip(self._pending, losses) for k in range(run.shape[0])]
        self._pending = []
        calm = True  # no loss of this window near the ceiling
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                where = f"the loss is {value} at step {step} (epoch {step // self.iter_per_epoch + 1})"
                self._diverged(where, self._window if step > self._window[0] else self._good)
            self._stuck = self._stuck + 1 if self._watch_ceiling and value > STUCK_LOSS else 0
            calm = calm and self._stuck == 0
            if self._stuck >= STUCK_STEPS:
                self._diverged(
                    f"the loss has stayed above {STUCK_LOSS:.2f} for {self._stuck} steps (at step {step}, epoch "
                    f"{step // self.iter_per_epoch + 1}: {value:.4f}; a network that guesses scores about 2.3): "
                    f"training has blown up",
                    self._good,
                )
            self.train_loss_list.append(value)
            if self.verbose:
                self.write("train loss:" + str(value))
        if calm:
            self._good = self._window
        self._window = (self.current_iter, self._snapshot())

    def _diverged(self, where, restore):
        if restore is None:
            raise TrainingDiverged(f"{where}: training stopped; no earlier parameters are known to be sound, so the "
                                   f"network keeps those training left; try a smaller learning rate")
        step, params = restore
        _restore(self.network.params, params)
        raise TrainingDiverged(
            f"{where}; training stopped, parameters restored to those of step {step} (its loss was sound); "
            f"try a smaller learning rate"
        )

    def _snapshot(self) -> dict:
        """Copies of the parameters (an optimizer may update the arrays in place)."""
        return {k: namespace_of(v).asarray(v, copy=True) for k, v in self.network.params.items()}

    # ------------------------------------------------------------------ reporting
    def evaluate(self) -> tuple[float, float]:
        """Accuracy on the training and test sets (their first ``evaluate_sample_num_per_epoch``
        samples, if set), appended to the lists; returns both."""
        n = self.evaluate_sample_num_per_epoch
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            n_train, n_test = min(n, x_train.shape[0]), min(n, x_test.shape[0])
            x_train, t_train = x_train[:n_train, ...], t_train[:n_train, ...]
            x_test, t_test = x_test[:n_test, ...], t_test[:n_test, ...]
        train_acc = self.network.accuracy(x_train, t_train)
        test_acc = self.network.accuracy(x_test, t_test)
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        if self.verbose:
            self.write(f"=== epoch:{self.current_epoch}, train acc:{train_acc}, test acc:{test_acc} ===")
        return train_acc, test_acc

    def _progress_bar(self):
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise MissingDependencyError("progress=True needs tqdm: pip install tqdm") from None
        return tqdm(total=self.max_iter, unit="step", desc="training", leave=False, dynamic_ncols=True)

    def _validate(self):
        """Libraries, shapes and labels, checked once for the whole dataset (so no step needs to)."""
        xp = self._xp
        arrays = [v for v in getattr(self.network, "params", {}).values() if is_array(v)]
        if arrays and namespace_of(arrays[0]) is not xp:
            mine, theirs = library_name(namespace_of(arrays[0])), library_name(xp)
            raise ArrayTypeError(f"the data are {theirs} arrays but the network's parameters {mine} ones; load or "
                                 f"convert the data (portnet.asarray) with the {mine} backend active")
        classes = getattr(self.network, "output_size", None)
        for name, x, t in (("train", self.x_train, self.t_train), ("test", self.x_test, self.t_test)):
            if x.ndim < 1 or t.ndim < 1 or x.shape[0] != t.shape[0]:
                raise InputError(f"{name} set: {x.shape[0] if x.ndim else 0} samples in x but "
                                 f"{t.shape[0] if t.ndim else 0} in t")
            if x.shape[0] == 0:
                raise InputError(f"{name} set: no samples")
            if classes is not None:
                check_labels(xp, labels_of(xp, (t.shape[0], classes), t, f"{name} set"), classes)
        if self.train_size < self.batch_size:
            raise InputError(f"mini_batch_size {self.batch_size} is larger than the training set ({self.train_size})")


def _restore(params: dict, snapshot: dict) -> None:
    """Put the snapshot back: in place where the arrays allow it (a layer may hold them)."""
    for key, value in snapshot.items():
        if writeable(params.get(key)):
            params[key][...] = value
        else:
            params[key] = value

