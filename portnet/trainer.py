"""The book's Trainer (common/trainer.py): mini-batch training with per-epoch accuracy.

A step draws no data across the host-device boundary: the dataset stays on its device, each
epoch's shuffle is drawn there (the backend's own generator), and the losses stay on the device
until they are read back together every ``loss_every`` steps. A non-finite loss stops training
with :class:`TrainingDiverged`, the network's parameters restored to the last step known good.
"""

from __future__ import annotations

import math
import time

import array_api_compat

from .backend import Random, namespace_of, to_numpy
from .functions import check_labels, labels_of
from .optimizers import make_optimizer


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the parameters were restored to the last good step."""


class Trainer:
    """Train ``network`` on ``(x_train, t_train)``, evaluating on both sets after each epoch.

    The book's arguments, plus: ``progress`` (a tqdm bar; None means 'if tqdm is installed and
    verbose'), ``loss_every`` (steps between read-backs of the loss), ``seed`` and
    ``random_source`` (the shuffle's generator: 'native' on the device, or 'host' for parity).
    After :meth:`train`: ``train_loss_list`` (one float a step), ``train_acc_list``,
    ``test_acc_list`` and ``epoch_times`` (one per epoch).
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
        progress=None,
        loss_every=50,
        seed=None,
        random_source="native",
    ):
        self.network = network
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, **({"lr": 0.01} if optimizer_param is None else optimizer_param))
        self.optimizer = optimizer
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.progress = progress
        self.loss_every = max(1, int(loss_every))
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size // self.batch_size, 1)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list, self.train_acc_list, self.test_acc_list, self.epoch_times = [], [], [], []
        xp = namespace_of(x_train, t_train, x_test, t_test)
        self._xp = xp
        self._rng = Random(xp, array_api_compat.device(x_train), seed=seed, source=random_source)
        self._validate()
        self._pending = []  # (step, loss on the device), not yet read back
        self._checked_params = dict(network.params)  # the params of the first unchecked step
        self._checked_step = 0
        self._good = None  # (step, params) known to give a finite loss

    # ------------------------------------------------------------------ the loop
    def train(self):
        """Run every epoch, evaluating after each; returns self.

        Raises TrainingDiverged on a NaN or infinite loss."""
        bar = self._progress_bar()
        try:
            for _ in range(self.epochs):
                self.train_epoch(bar)
                self._evaluate(bar)
        finally:
            if bar is not None:
                bar.close()
        return self

    def train_epoch(self, bar=None) -> float:
        """One epoch of training steps (no evaluation); returns its duration in seconds.

        The duration includes reading the epoch's losses back, which waits for the device."""
        start = time.perf_counter()
        self._epoch(bar)
        self._flush()
        self.epoch_times.append(time.perf_counter() - start)
        return self.epoch_times[-1]

    def _epoch(self, bar):
        xp, b = self._xp, self.batch_size
        order = self._rng.permutation(self.train_size)
        for i in range(self.iter_per_epoch):
            idx = order[i * b : (i + 1) * b]
            x = xp.take(self.x_train, idx, axis=0)
            t = xp.take(self.t_train, idx, axis=0)
            loss, grads = self.network.loss_and_gradient(x, t, check=False)
            self.optimizer.update(self.network.params, grads)
            self._pending.append((self.current_iter, loss))
            self.current_iter += 1
            if len(self._pending) >= self.loss_every:
                self._flush()
            if bar is not None:
                bar.update(1)
        self.current_epoch += 1

    def _flush(self):
        """Read the pending losses back in one transfer; stop on the first non-finite one."""
        if not self._pending:
            return
        xp = self._xp
        values = to_numpy(xp.stack([loss for _, loss in self._pending])).tolist()
        steps = [step for step, _ in self._pending]
        self._pending = []
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                self._diverged(step, value)
            self.train_loss_list.append(value)
        self._good = (self._checked_step, self._checked_params)
        self._checked_params = dict(self.network.params)
        self._checked_step = self.current_iter

    def _diverged(self, step, value):
        if step > self._checked_step:
            restored = (self._checked_step, self._checked_params)
        else:
            restored = self._good
        where = f"the loss is {value} at step {step} (epoch {step // self.iter_per_epoch + 1})"
        if restored is None:
            raise TrainingDiverged(f"{where}: the initial parameters already give it; nothing to restore")
        self.network.params.clear()
        self.network.params.update(restored[1])
        raise TrainingDiverged(
            f"{where}; training stopped, parameters restored to those of step {restored[0]} "
            f"(its loss was finite); try a smaller learning rate"
        )

    # ------------------------------------------------------------------ reporting
    def _evaluate(self, bar):
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
            epoch_losses = self.train_loss_list[-self.iter_per_epoch :]
            line = (
                f"epoch {self.current_epoch:>3}/{self.epochs}: train acc {train_acc:.4f}, test acc {test_acc:.4f}, "
                f"loss {sum(epoch_losses) / len(epoch_losses):.4f}, {self.epoch_times[-1]:.2f} s"
            )
            bar.write(line) if bar is not None else print(line, flush=True)

    def _progress_bar(self):
        if self.progress is False or (self.progress is None and not self.verbose):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if self.progress:
                raise ImportError("progress=True needs tqdm: pip install 'portnet[progress]'") from None
            return None
        return tqdm(total=self.max_iter, unit="step", desc="training", leave=False, dynamic_ncols=True)

    def _validate(self):
        """Shapes and labels, checked once for the whole dataset (so no step needs to)."""
        xp = self._xp
        for name, x, t in (("train", self.x_train, self.t_train), ("test", self.x_test, self.t_test)):
            if x.shape[0] != t.shape[0]:
                raise ValueError(f"{name} set: {x.shape[0]} samples in x but {t.shape[0]} in t")
            classes = self.network.sizes[-1]
            check_labels(xp, labels_of(xp, (t.shape[0], classes), t, f"{name} set"), classes)
        if self.train_size < self.batch_size:
            raise ValueError(f"mini_batch_size {self.batch_size} is larger than the training set ({self.train_size})")
