"""``portnet train --resume FILE``: a run continued from its training checkpoint, with the settings
it was started with (Keras's BackupAndRestore, Chainer's snapshot and ``--resume``).

The options the command line states must match the checkpoint's settings, each mismatch a
one-line error naming it; the options it leaves out are taken from the checkpoint, so
``portnet train --resume run.npz`` alone continues a run, its ``--log`` and ``--tensorboard`` logs
included. ``--epochs`` may differ (a run can be extended), and ``--threads`` is no setting: the same backend with ``--threads N`` gives the
parameters of an uninterrupted run, to the bit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import CheckpointError
from .persistence import checkpoint_path, read_training_checkpoint

#: The settings of a run: the ``args`` attribute, and the option that states it.
SETTINGS = {
    "model": "--model",
    "hidden": "--hidden",
    "weight_decay": "--weight-decay",
    "optimizer": "--optimizer",
    "lr": "--lr",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "limit": "--limit",
    "random_source": "--random-source",
    "dataset": "--dataset",
    "backend": "--backend",
    "device": "--device",
    "dtype": "--dtype",
}
#: The run's logs, kept with its settings (not compared: a resumed run may log elsewhere).
_OUTPUTS = ("log", "tensorboard")
#: The environment variables that state a setting as an option would.
_ENVIRONMENT = {"backend": "PORTNET_BACKEND", "dtype": "PORTNET_DTYPE"}


def stated(parser: argparse.ArgumentParser, argv) -> set:
    """The ``args`` attributes that ``argv`` states (parsed again with no defaults)."""
    for action in _actions(parser):
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _actions(parser):
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


def prepare(args, given: set):
    """Read ``args.resume``'s training checkpoint (an error if it is not one) and take the settings
    the command line does not state from it; ``--save`` defaults to the same file. Returns
    ``(settings, state)``."""
    meta, state = read_training_checkpoint(checkpoint_path(args.resume))
    saved = meta["training"]["settings"]
    missing = [key for key in (*SETTINGS, "epochs") if key not in saved]
    if missing:
        raise CheckpointError(
            f"{args.resume}: its settings lack {', '.join(missing)}: it was not written by "
            f"portnet train --save"
        )
    for key in SETTINGS:
        env = _ENVIRONMENT.get(key)
        if key in given and key not in ("backend", "device", "dtype"):
            _same(args.resume, key, saved[key], getattr(args, key))  # in the order of --help
        elif key not in given and not (env and os.environ.get(env)) and key != "device":
            setattr(args, key, saved[key])
    if "epochs" not in given:
        args.epochs = saved["epochs"]
    for key in _OUTPUTS:  # the run's logs go on where they were, unless told otherwise
        if key not in given and saved.get(key) is not None:
            setattr(args, key, Path(saved[key]))
    if args.save is None:
        args.save = args.resume
    return saved, state


def check(path, saved: dict, now: dict, done: int) -> None:
    """Every setting of the run now as the checkpoint's; ``--epochs`` at least its ``done``."""
    for key in SETTINGS:
        _same(path, key, saved[key], now[key])
    if now["epochs"] < done:
        raise CheckpointError(
            f"{path} holds {done} epochs already; --epochs {now['epochs']} would end before them"
        )


def _same(path, key, saved, now) -> None:
    if saved != now:
        raise CheckpointError(
            f"{path} was trained with {SETTINGS[key]} {_text(saved)}, not {_text(now)}: resume "
            f"it with its own settings (or start a new run with --save elsewhere)"
        )


def _text(value) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
