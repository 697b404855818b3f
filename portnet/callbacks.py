"""What the Trainer's loop does besides training, each a callback (Keras's callbacks are the model).

A callback overrides the hooks it needs; the Trainer calls them in its list's order:

- ``on_train_begin(trainer)``, ``on_epoch_begin(trainer)``;
- ``on_step_begin(trainer, step)``, ``on_step_end(trainer, step)`` around each eager step (``step``
  counts the epoch's steps from 0);
- ``on_losses(trainer, first_step, losses)`` when losses have been read back (Python floats, one
  a step from ``first_step`` on; every ``loss_every`` steps and at the end of an epoch);
- ``on_epoch_end(trainer)``, ``on_train_end(trainer)`` (after the last epoch), and ``close(trainer)``
  once training stops, however it stops.

:class:`DivergenceGuard` and :class:`Evaluation` are always on (in that order); :class:`BookLines` (``verbose``),
:class:`ProgressBar` (``progress``) and :class:`ThreadTuner` (``tune_threads``) when asked for.
Given in ``callbacks``: :class:`TrainingCheckpoint` (the run's state after every epoch, to resume
from), :class:`CSVLogger` and :class:`TensorBoard` (the figures of every epoch, for later).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path

from .arrays import dtype_name, is_array, namespace_of
from . import progress
from .errors import InputError, MissingDependencyError, PortnetError, TrainingDiverged
from .functions import DELTA
from .parameters import assign, snapshot, storage
from .persistence import (
    check_writable,
    read_bounded,
    read_training_checkpoint,
    write_atomic,
    write_training_checkpoint,
)


class Callback:
    """Hooks that do nothing; subclasses override what they need."""

    def on_train_begin(self, trainer): ...
    def on_epoch_begin(self, trainer): ...
    def on_step_begin(self, trainer, step): ...
    def on_step_end(self, trainer, step): ...
    def on_losses(self, trainer, first_step, losses): ...
    def on_epoch_end(self, trainer): ...
    def on_train_end(self, trainer): ...
    def close(self, trainer): ...


class Evaluation(Callback):
    """After each epoch, accuracy on the training and test sets (their first ``samples`` images,
    if given), appended to ``train_acc_list`` and ``test_acc_list``."""

    def __init__(self, samples=None):
        self.samples = samples

    def on_epoch_end(self, trainer):
        trainer.evaluate()

    def evaluate(self, trainer) -> tuple[float, float]:
        n = self.samples
        x_train, t_train, x_test, t_test = (
            trainer.x_train,
            trainer.t_train,
            trainer.x_test,
            trainer.t_test,
        )
        if n is not None:
            x_train, t_train = (
                x_train[: min(n, x_train.shape[0]), ...],
                t_train[: min(n, t_train.shape[0]), ...],
            )
            x_test, t_test = (
                x_test[: min(n, x_test.shape[0]), ...],
                t_test[: min(n, t_test.shape[0]), ...],
            )
        accuracies = (
            trainer.network.accuracy(x_train, t_train),
            trainer.network.accuracy(x_test, t_test),
        )
        trainer.train_acc_list.append(accuracies[0])
        trainer.test_acc_list.append(accuracies[1])
        return accuracies


#: A softmax cross-entropy above this (half of -log(1e-7), the guard's ceiling) for
#: :data:`STUCK_STEPS` steps in a row means the run has blown up: a network that guesses scores
#: log(10) = 2.3.
STUCK_LOSS = -0.5 * math.log(DELTA)
STUCK_STEPS = 50


class DivergenceGuard(Callback):
    """Stops training with :class:`TrainingDiverged` on a NaN or infinite loss, or one stuck near
    the softmax guard's ceiling (a run that has blown up without overflowing), the parameters
    restored to the last ones known sound.

    Losses are read every ``loss_every`` steps, so it keeps a copy of the parameters where the
    unread losses begin (the window) and one whose losses were all sound."""

    def __init__(self, watch_ceiling=True):
        self.watch_ceiling = watch_ceiling
        self.stuck = 0

    def on_train_begin(self, trainer):
        self.window, self.good = (trainer.current_iter, _snapshot(trainer.network)), None

    def on_losses(self, trainer, first_step, losses):
        calm = True
        for step, value in enumerate(losses, start=first_step):
            epoch = step // trainer.iter_per_epoch + 1
            if not math.isfinite(value) or (
                self.watch_ceiling and value > STUCK_LOSS and self.stuck + 1 >= STUCK_STEPS
            ):
                # the history keeps the losses of the steps before this one
                del trainer.train_loss_list[
                    len(trainer.train_loss_list) - len(losses) + step - first_step :
                ]
            if not math.isfinite(value):
                where = f"the loss is {value} at step {step} (epoch {epoch})"
                if step > self.window[0] or self.good is not None:
                    self._stop(trainer, where, self.window if step > self.window[0] else self.good)
                # nothing sound is known: undo at least what the failing steps did (bad data, or
                # parameters that were already unsound), and say so
                self._stop(trainer, where, self.window, sound=False)
            self.stuck = self.stuck + 1 if self.watch_ceiling and value > STUCK_LOSS else 0
            calm = calm and self.stuck == 0
            if self.stuck >= STUCK_STEPS:
                self._stop(
                    trainer,
                    f"the loss has stayed above {STUCK_LOSS:.2f} for {self.stuck} steps (at step "
                    f"{step}, epoch {epoch}: {value:.4f}; a network that guesses scores about 2.3): "
                    f"training has blown up",
                    self.good,
                )
        if calm:
            self.good = self.window
        self.window = (trainer.current_iter, _snapshot(trainer.network))

    def on_epoch_end(self, trainer):
        """The last step's update has no loss read after it: the parameters themselves must be
        finite (one reduction each, once an epoch)."""
        held = storage(trainer.network.params)  # one buffer where the parameters are packed
        if not held:
            return
        xp = namespace_of(*held)
        finite = [xp.all(xp.isfinite(v)) for v in held]
        if bool(xp.all(xp.stack(finite))):  # one read back, not one an array
            return
        arrays = {k: v for k, v in trainer.network.params.items() if is_array(v)}
        bad = [k for k, v in arrays.items() if not bool(xp.all(xp.isfinite(v)))]
        if bad:
            self._stop(
                trainer,
                f"{', '.join(bad)} turned non-finite at step {trainer.current_iter - 1} (epoch "
                f"{trainer.current_epoch})",
                self.good,
            )

    @staticmethod
    def _stop(trainer, where, known, sound=True):
        if known is None:
            raise TrainingDiverged(
                f"{where}: training stopped; no earlier parameters are known to be sound, so the "
                f"network keeps those training left; try a smaller learning rate"
            )
        step, snapshot = known
        _restore(trainer.network, snapshot)
        if not sound:
            raise TrainingDiverged(
                f"{where}; training stopped, parameters restored to those before step {step}, "
                f"whose own loss was not finite: the data or those parameters are not sound"
            )
        raise TrainingDiverged(
            f"{where}; training stopped, parameters restored to those of step {step}; try a "
            f"smaller learning rate"
        )


def _snapshot(network) -> tuple[dict, dict]:
    """Copies of the parameters (an optimizer may update the arrays in place; one copy of their
    buffer where they are packed) and of the buffers (batch-norm statistics) of a network that
    has them."""
    buffers = network.buffers() if hasattr(network, "buffers") else {}
    return snapshot(network.params), snapshot(buffers)


def _restore(network, saved) -> None:
    """Put the snapshot back: the parameters in place where the arrays allow it (a layer may
    hold them), the buffers by :meth:`~portnet.networks.Network.load_buffers`."""
    params, buffers = saved
    assign(network.params, params)
    if buffers:
        network.load_buffers(buffers)


class BookLines(Callback):
    """The book's Trainer's printed lines: ``train loss:`` every step, ``=== epoch:... ===`` after
    each epoch, the final test accuracy."""

    def on_losses(self, trainer, first_step, losses):
        for value in losses:
            trainer.write("train loss:" + str(value))

    def on_epoch_end(self, trainer):
        trainer.write(
            f"=== epoch:{trainer.current_epoch}, train acc:{trainer.train_acc_list[-1]}, "
            f"test acc:{trainer.test_acc_list[-1]} ==="
        )

    def on_train_end(self, trainer):
        test_acc = trainer.network.accuracy(trainer.x_test, trainer.t_test)
        trainer.write("=============== Final Test Accuracy ===============")
        trainer.write("test acc:" + str(test_acc))


class ProgressBar(Callback):
    """A tqdm bar over the training steps, on stderr; the Trainer's lines are written through it."""

    def on_train_begin(self, trainer):
        self.bar = progress.bar(trainer.max_iter, "training", "step", initial=trainer.current_iter)
        trainer.writer = self.bar.write

    def on_losses(self, trainer, first_step, losses):
        self.bar.update(len(losses))

    def close(self, trainer):
        self.bar.close()
        trainer.writer = None


#: Steps timed under each choice at the start of an epoch (they are real training steps).
PROBE_STEPS = 10


class ThreadTuner(Callback):
    """At the start of each epoch, times steps under the libraries' own thread counts and under
    one thread, alternating, and keeps the faster for the rest of the epoch (see
    :mod:`portnet.threads`); a choice that stalls is dropped after two steps. Only where NumPy's
    BLAS computes (NumPy, array-api-strict) and ``threadpoolctl`` is installed."""

    def on_train_begin(self, trainer):
        from .threads import thread_pool_of, threadpool_controller

        self.controller = threadpool_controller()
        self.enabled = (
            self.controller is not None
            and thread_pool_of(trainer.x_train) == "numpy"
            and (os.cpu_count() or 1) > 1
            and trainer.iter_per_epoch >= 4 * PROBE_STEPS
        )
        self.choice, self.limit = None, None

    def on_epoch_begin(self, trainer):
        self.totals, self.probing = {None: 0.0, 1: 0.0}, self.enabled

    def on_step_begin(self, trainer, step):
        if self.probing:
            self.current = (None, 1)[step % 2]
            self._enter(self.current)
            self.start = time.perf_counter()

    def on_step_end(self, trainer, step):
        if not self.probing:
            return
        self.totals[self.current] += time.perf_counter() - self.start
        done = step + 1
        slow, fast = max(self.totals.values()), min(self.totals.values())
        if done >= 2 * PROBE_STEPS or (done >= 4 and done % 2 == 0 and slow > 1.5 * fast):
            self.probing = False
            self.choice = min(self.totals, key=self.totals.get)
            self._enter(self.choice)

    def on_epoch_end(self, trainer):
        self._enter(None)

    close = on_epoch_end

    def _enter(self, choice):
        if self.limit is not None:
            self.limit.__exit__(None, None, None)
        self.limit = None if choice is None else self.controller.limit(limits=choice)
        if self.limit is not None:
            self.limit.__enter__()


class TrainingCheckpoint(Callback):
    """After every epoch, the trainer's state (:meth:`~portnet.Trainer.state_dict`) and the run's
    ``settings`` written to the training checkpoint ``path`` atomically, replacing the previous
    epoch's (Keras's BackupAndRestore, Chainer's snapshot): a crash or a kill loses at most the
    epoch under way. The file is a checkpoint too (:func:`portnet.load_checkpoint` reads it).
    An existing file is replaced only with ``overwrite``, or when it holds the state the trainer
    resumed from (its own run's); ``saved`` is the last epoch this run wrote (None before)."""

    def __init__(self, path, settings=None, *, overwrite=False):
        self.path, self.settings, self.overwrite = Path(path), settings or {}, overwrite
        self.saved = None

    def on_train_begin(self, trainer):
        self.replace = self.overwrite or self._resumed_from(trainer)
        check_writable(self.path, self.replace)

    def _resumed_from(self, trainer) -> bool:
        if not trainer.current_epoch or not self.path.is_file():
            return False
        try:
            state = read_training_checkpoint(self.path)[1]
        except PortnetError:
            return False
        return (state["epoch"], state["step"]) == (trainer.current_epoch, trainer.current_iter)

    def on_epoch_end(self, trainer):
        net = trainer.network
        meta = {"architecture": net.architecture(), "dtype": dtype_name(net.dtype)}
        # the first write creates the file exclusively unless told to replace it: a concurrent
        # run saving to the same name fails then, rather than replacing this one's
        write_training_checkpoint(
            self.path,
            meta,
            trainer.state_dict(),
            self.settings,
            overwrite=self.replace or self.saved is not None,
        )
        self.saved = trainer.current_epoch


#: The columns of :class:`CSVLogger`'s file.
CSV_FIELDS = ("epoch", "step", "train_loss", "train_acc", "test_acc", "seconds", "lr")


class CSVLogger(Callback):
    """One row per epoch appended to the CSV file ``path`` (Keras's CSVLogger, Chainer's
    LogReport), written through to the disk at once so that a crash keeps every finished epoch:
    :data:`CSV_FIELDS`, the loss being the epoch's mean, ``seconds`` its training steps' time and
    ``lr`` the optimizer's learning rate. When training begins, the rows of epochs after the
    trainer's are dropped: a new run starts the file afresh, a resumed one keeps the rows of the
    epochs it resumes from (and drops one of an epoch whose state was never saved)."""

    def __init__(self, path):
        self.path = Path(path)

    def on_train_begin(self, trainer):
        epoch = trainer.current_epoch
        kept = [r for r in self._rows() if int(r["epoch"]) <= epoch] if epoch else []
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_atomic(self.path, lambda f: f.write(text.getvalue().encode()))

    def on_epoch_end(self, trainer):
        losses = trainer.train_loss_list[-trainer.iter_per_epoch :]
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.current_iter,
            "train_loss": sum(losses) / len(losses),
            "train_acc": trainer.train_acc_list[-1],
            "test_acc": trainer.test_acc_list[-1],
            "seconds": trainer.epoch_times[-1],
            "lr": getattr(trainer.optimizer, "lr", ""),
        }
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, lineterminator="\n").writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def _rows(self) -> list[dict]:
        """The rows already in the file (none if there is none); a file that is not such a log
        is an error rather than something to overwrite."""
        if not self.path.exists():
            return []
        text = read_bounded(self.path, 64 * 2**20, InputError).decode(errors="replace")
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is not None and tuple(reader.fieldnames) != CSV_FIELDS:
            raise InputError(
                f"{self.path} is not a portnet log: its columns are {reader.fieldnames}, a log's "
                f"are {list(CSV_FIELDS)}"
            )
        rows = list(reader)
        if any(not (r.get("epoch") or "").isdigit() for r in rows):
            raise InputError(f"{self.path}: a row without an epoch number; not a portnet log")
        return rows


class TensorBoard(Callback):
    """Scalars for TensorBoard (Keras's TensorBoard callback) in ``log_dir``, written by
    tensorboardX (``pip install tensorboardX``): ``train/loss`` at every step, and after each
    epoch ``train/accuracy``, ``test/accuracy``, ``time/epoch_seconds`` and ``train/lr``. A resumed
    run purges the events after its step, so a crash leaves no duplicates."""

    def __init__(self, log_dir):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise MissingDependencyError(
                "TensorBoard logs need tensorboardX: pip install tensorboardX (or portnet's "
                "extra: pip install 'portnet[tensorboard]')"
            ) from None
        self.log_dir, self._writer_class, self.writer = Path(log_dir), SummaryWriter, None

    def on_train_begin(self, trainer):
        purge = trainer.current_iter if trainer.current_iter else None
        self.writer = self._writer_class(str(self.log_dir), purge_step=purge)

    def on_losses(self, trainer, first_step, losses):
        for step, value in enumerate(losses, start=first_step + 1):
            self.writer.add_scalar("train/loss", value, step)

    def on_epoch_end(self, trainer):
        step, w = trainer.current_iter, self.writer
        w.add_scalar("train/accuracy", trainer.train_acc_list[-1], step)
        w.add_scalar("test/accuracy", trainer.test_acc_list[-1], step)
        w.add_scalar("time/epoch_seconds", trainer.epoch_times[-1], step)
        if isinstance(getattr(trainer.optimizer, "lr", None), (int, float)):
            w.add_scalar("train/lr", trainer.optimizer.lr, step)
        w.flush()

    def close(self, trainer):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
