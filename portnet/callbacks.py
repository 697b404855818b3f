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
"""

from __future__ import annotations

import math
import os
import time

from .arrays import is_array, namespace_of, writeable
from . import progress
from .errors import TrainingDiverged
from .functions import DELTA


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
        self.window, self.good = (trainer.current_iter, _snapshot(trainer.network.params)), None

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
                known = self.window if step > self.window[0] or self.good is None else self.good
                self._stop(trainer, f"the loss is {value} at step {step} (epoch {epoch})", known)
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
        self.window = (trainer.current_iter, _snapshot(trainer.network.params))

    def on_epoch_end(self, trainer):
        """The last step's update has no loss read after it: the parameters themselves must be
        finite (one reduction each, once an epoch)."""
        bad = [
            k
            for k, v in trainer.network.params.items()
            if is_array(v) and not bool(namespace_of(v).all(namespace_of(v).isfinite(v)))
        ]
        if bad:
            self._stop(
                trainer,
                f"{', '.join(bad)} turned non-finite at step {trainer.current_iter - 1} (epoch "
                f"{trainer.current_epoch})",
                self.good,
            )

    @staticmethod
    def _stop(trainer, where, known):
        if known is None:
            raise TrainingDiverged(
                f"{where}: training stopped; no earlier parameters are known to be sound, so the "
                f"network keeps those training left; try a smaller learning rate"
            )
        step, params = known
        _restore(trainer.network.params, params)
        raise TrainingDiverged(
            f"{where}; training stopped, parameters restored to those of step {step}; try a "
            f"smaller learning rate"
        )


def _snapshot(params) -> dict:
    """Copies of the parameters (an optimizer may update the arrays in place)."""
    return {k: namespace_of(v).asarray(v, copy=True) for k, v in params.items()}


def _restore(params: dict, snapshot: dict) -> None:
    """Put the snapshot back: in place where the arrays allow it (a layer may hold them)."""
    for key, value in snapshot.items():
        if writeable(params.get(key)):
            params[key][...] = value
        else:
            params[key] = value


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
        self.bar = progress.bar(trainer.max_iter, "training", "step")
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
