"""The ``portnet`` command: train on MNIST (CPU or GPU, the same code), evaluate, report backends.

    portnet train [--model deep-conv] [--backend cupy] [--epochs 10] [--save net.npz] [--plot curve.png]
    portnet evaluate net.npz [--backend torch]
    portnet info

Usage errors exit 2 and problems with the user's input, files or machine exit 1, each in one
line; anything else is a bug in portnet and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, progress
from . import backend as _backend
from .callbacks import Callback
from .datasets import cache_dir, load_fashion_mnist, load_mnist, load_split
from .errors import CheckpointError, InputError, MissingDependencyError, PortnetError
from .persistence import check_writable, checkpoint_path, read_pickled_arrays, write_atomic
from .networks import (
    DeepConvNet,
    MultiLayerNet,
    SimpleConvNet,
    TwoLayerNet,
    load_checkpoint,
    save_checkpoint,
)
from .optimizers import OPTIMIZERS, make_optimizer
from .threads import fit_threads
from .trainer import Trainer
from .util import smooth_curve

LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
#: Learning rates that train well with each optimizer (SGD: the book's ch. 5 value).
DEFAULT_LR = {
    "sgd": 0.1,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.01,
    "rmsprop": 0.001,
    "adam": 0.001,
}
#: model -> (hidden sizes, epochs) by default.
MODELS = {
    "two-layer": ("50", 10),
    "multi-layer": ("100,100", 10),
    "simple-conv": (None, 5),
    "deep-conv": (None, 8),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Bad usage: one line on stderr, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden {text!r}: expected sizes separated by commas, e.g. 100,100"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden {text!r}: sizes must be positive integers")
    return sizes


def _threads(text: str):
    if text == "auto":
        return text
    return _positive(int)(text)


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="portnet",
        description="Deep Learning from Scratch's networks on NumPy, CuPy, PyTorch, JAX.",
    )
    parser.add_argument("--version", action="version", version=f"portnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def backend_options(p):
        p.add_argument(
            "--backend",
            choices=_backend.BACKENDS,
            help="array library (default: $PORTNET_BACKEND or numpy)",
        )
        p.add_argument(
            "--device", help="device, e.g. cuda:1 (torch), 1 (cupy), device1 (array_api_strict)"
        )
        p.add_argument(
            "--dtype",
            choices=_backend.DTYPES,
            help="float dtype (default: $PORTNET_DTYPE or float32)",
        )
        p.add_argument("--dataset", choices=LOADERS, default="mnist")
        p.add_argument(
            "--data-dir",
            help="directory of the four IDX files (default: $PORTNET_DATA_DIR or the cache)",
        )

    train = commands.add_parser("train", help="train a network and report accuracy per epoch")
    backend_options(train)
    train.add_argument(
        "--model",
        choices=MODELS,
        default="multi-layer",
        help="multi-layer (784-100-100-10), two-layer, simple-conv (ch. 7) or deep-conv (ch. 8)",
    )
    train.add_argument(
        "--hidden",
        type=_hidden,
        help="hidden layer sizes of the fully connected models (default: 100,100; two-layer: 50)",
    )
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    train.add_argument(
        "--lr", type=_positive(float), help=f"learning rate (default per optimizer: {DEFAULT_LR})"
    )
    train.add_argument(
        "--weight-decay", type=_positive(float), metavar="LAMBDA",
        help="L2 weight decay of --model multi-layer (ch. 6.4.2; the book's weight_decay_lambda)",
    )
    train.add_argument(
        "--epochs", type=_positive(int), help="epochs (default: 10; simple-conv 5, deep-conv 8)"
    )
    train.add_argument("--batch-size", type=_positive(int), default=100)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--limit",
        type=_positive(int),
        metavar="N",
        help="a quick check: train on the first N training images, and evaluate each epoch on the "
        "first N of each set",
    )
    train.add_argument(
        "--random-source",
        choices=("native", "host"),
        default="native",
        help="where the shuffle and dropout draws come from: native (the backend's own generator, on its "
        "device) or host (NumPy's, then transferred: the same draws on every backend)",
    )
    train.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        metavar="auto|N",
        help="CPU threads (BLAS, OpenMP, PyTorch): auto (as many as cores are free, and on NumPy each "
        "epoch whichever steps faster, all of them or one: a busy core does not stall training) or "
        "N for runs that repeat to the last digit",
    )
    train.add_argument(
        "--save", type=Path, help="write the trained network to this .npz checkpoint"
    )
    train.add_argument(
        "--plot", type=Path, help="write the learning curves to this PNG (needs matplotlib)"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace existing --save/--plot files"
    )
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal and tqdm is installed)",
    )

    evaluate = commands.add_parser(
        "evaluate", help="test accuracy of a saved checkpoint or of the book's weights"
    )
    evaluate.add_argument(
        "checkpoint",
        type=Path,
        help="a portnet .npz checkpoint, or a book's params .pkl (with --model)",
    )
    evaluate.add_argument(
        "--model",
        choices=MODELS,
        help="the network a book .pkl holds (its hidden sizes are read from the file)",
    )
    evaluate.add_argument(
        "--activation",
        choices=("relu", "sigmoid"),
        default="relu",
        help="with --model multi-layer: the hidden activation (the book's ch. 3 network: sigmoid)",
    )
    evaluate.add_argument(
        "--limit", type=_positive(int), metavar="N", help="evaluate on the first N test images only"
    )
    backend_options(evaluate)

    commands.add_parser("info", help="backends usable here, devices and versions")

    from . import search

    search.add_arguments(
        commands.add_parser(
            "search",
            help="the book's random hyperparameter search (ch. 6.5), "
            "on this machine or a Dask cluster",
        )
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)  # so that partial files are removed
    try:
        if args.command == "info":
            return _info()
        if args.command == "search":  # chooses backends itself: each Dask worker has its own
            from . import search

            return search.main(args)
        name = args.backend or os.environ.get("PORTNET_BACKEND") or "numpy"
        device = args.device if args.device or args.backend else os.environ.get("PORTNET_DEVICE")
        chosen = _backend.set_backend(name, device or None, args.dtype)
        if getattr(args, "threads", "auto") != "auto":
            fit_threads("torch" if chosen.name == "torch" else "numpy", args.threads)
        return _train(args) if args.command == "train" else _evaluate(args)
    except (
        PortnetError,
        OSError,
    ) as exc:  # the user's input, files or machine; a bug keeps its traceback
        print(f"portnet: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("portnet: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _one_line(exc) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


def _train(args) -> int:
    hidden, epochs = MODELS[args.model]
    epochs = args.epochs or epochs
    conv = hidden is None
    if conv and args.hidden:
        raise InputError(
            f"--hidden applies to the fully connected models, not --model {args.model}"
        )
    hidden = args.hidden or (None if conv else _hidden(hidden))
    if args.model == "two-layer" and len(hidden) != 1:
        raise InputError(
            f"--model two-layer takes one hidden size, got --hidden {','.join(map(str, hidden))}"
        )
    save, plot = _outputs(args)
    net = _network(args.model, hidden, seed=args.seed, random_source=args.random_source,
                   weight_decay=args.weight_decay or 0)
    (x_train, t_train), (x_test, t_test) = LOADERS[args.dataset](
        flatten=not conv, data_dir=args.data_dir
    )
    if args.limit is not None:
        n = min(args.limit, x_train.shape[0])
        x_train, t_train = x_train[:n, ...], t_train[:n, ...]
    lr = args.lr or DEFAULT_LR[args.optimizer]
    sampled = (
        "" if args.limit is None else f" (first {min(args.limit, x_test.shape[0])} test images)"
    )
    trainer = Trainer(
        net,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=epochs,
        mini_batch_size=args.batch_size,
        optimizer=make_optimizer(args.optimizer, lr=lr),
        evaluate_sample_num_per_epoch=args.limit,
        verbose=False,
        callbacks=[EpochLine(sampled)],
        progress=progress.wanted(args.progress),
        seed=args.seed,
        random_source=args.random_source,
        tune_threads=args.threads == "auto",
    )
    print(
        f"portnet: {net} on {args.dataset} ({x_train.shape[0]} train, {x_test.shape[0]} test), "
        f"{args.optimizer} lr={lr}, batch {args.batch_size}, {_count(epochs, 'epoch')} of "
        f"{_count(trainer.iter_per_epoch, 'step')}",
        flush=True,
    )
    start = time.perf_counter()
    # NumPy's floating-point warnings would print before the divergence guard's one-line error
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        trainer.train()
    total = time.perf_counter() - start
    print(
        f"portnet: test accuracy {trainer.test_acc_list[-1]:.4f}{sampled}, train accuracy "
        f"{trainer.train_acc_list[-1]:.4f}; {_epoch_times(trainer.epoch_times)}, {total:.1f} s in all",
        flush=True,
    )
    if save is not None:
        print(f"portnet: saved {save_checkpoint(net, save, overwrite=args.overwrite)}")
    if plot is not None:
        limited = "" if args.limit is None else f", --limit {args.limit}"
        _plot(trainer, plot, f"{net} on {args.dataset}, {args.optimizer} lr={lr}{limited}")
        print(f"portnet: wrote {plot}")
    return 0


def _network(model, hidden, *, seed, random_source="native", activation="relu", dtype=None, weight_decay=0):
    """The network ``model`` names, with the command's options."""
    if activation != "relu" and model != "multi-layer":
        raise InputError(f"--activation {activation} applies to --model multi-layer, not {model}")
    if weight_decay and model != "multi-layer":
        raise InputError(f"--weight-decay applies to --model multi-layer, not {model}")
    if model == "two-layer":
        return TwoLayerNet(784, hidden[0], 10, dtype=dtype, seed=seed)
    if model == "multi-layer":
        return MultiLayerNet(
            784,
            hidden,
            10,
            activation=activation,
            weight_init_std=activation,
            weight_decay_lambda=weight_decay,
            dtype=dtype,
            seed=seed,
            random_source=random_source,
        )
    if model == "simple-conv":
        return SimpleConvNet(dtype=dtype, seed=seed)
    return DeepConvNet(dtype=dtype, seed=seed, random_source=random_source)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _epoch_times(times) -> str:
    """The first epoch apart from the rest: it includes compiling (JAX) and warming caches."""
    if len(times) == 1:
        return f"{times[0]:.2f} s for the epoch's training steps"
    rest = sorted(times[1:])[len(times[1:]) // 2]
    return f"epoch 1 {times[0]:.2f} s, then {rest:.2f} s per epoch (median; training steps only)"


def _outputs(args):
    """--save and --plot as they will be written, checked before any training."""
    save = checkpoint_path(args.save) if args.save is not None else None
    plot = args.plot
    if save is not None and plot is not None and save.resolve() == plot.resolve():
        raise InputError(f"--save and --plot both name {save}; give them different files")
    for path in (save, plot):
        if path is not None:
            try:
                check_writable(path, args.overwrite)
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass --overwrite to replace it") from None
    if plot is not None:
        _import_pyplot()  # fail before training, not after
    return save, plot


class EpochLine(Callback):
    """The command's line after each epoch: accuracies (``sampled`` says on which images), the
    epoch's mean loss, its time."""

    def __init__(self, sampled=""):
        self.sampled = sampled

    def on_epoch_end(self, trainer):
        losses = trainer.train_loss_list[-trainer.iter_per_epoch :]
        trainer.write(
            f"epoch {trainer.current_epoch:>3}/{trainer.epochs}: train acc {trainer.train_acc_list[-1]:.4f}, "
            f"test acc {trainer.test_acc_list[-1]:.4f}{self.sampled}, loss {sum(losses) / len(losses):.4f}, "
            f"{trainer.epoch_times[-1]:.2f} s"
        )


def _evaluate(args) -> int:
    path = args.checkpoint
    if path.suffix == ".pkl":
        if args.model is None:
            raise InputError(
                f"{path} holds only arrays (the book's pickled parameters); name the network they belong "
                f"to with --model ({', '.join(MODELS)})"
            )
        arrays = read_pickled_arrays(path)
        net = _network(
            args.model, _hidden_sizes(arrays, args.model), seed=0, activation=args.activation
        )
        net.set_params(arrays, source=str(path))
    else:
        if args.model is not None:
            raise InputError(
                f"--model applies to the book's .pkl files; the checkpoint {path} names its own network"
            )
        net = load_checkpoint(path, dtype=args.dtype)
    conv = isinstance(net, (SimpleConvNet, DeepConvNet))
    x_test, t_test = load_split(args.dataset, "test", flatten=not conv, data_dir=args.data_dir)
    if args.limit is not None:
        x_test, t_test = (
            x_test[: min(args.limit, x_test.shape[0]), ...],
            t_test[: min(args.limit, t_test.shape[0]), ...],
        )
    print(
        f"portnet: {net}: test accuracy {net.accuracy(x_test, t_test):.4f} on {args.dataset} ({x_test.shape[0]} images)"
    )
    return 0


def _hidden_sizes(arrays, model):
    """The hidden layer sizes of a fully connected network's W1, W2, ... (None for a ConvNet)."""
    if model in ("simple-conv", "deep-conv"):
        return None
    weights = []
    while f"W{len(weights) + 1}" in arrays:
        weights.append(arrays[f"W{len(weights) + 1}"])
    if len(weights) < 2 or any(w.ndim != 2 for w in weights):
        raise CheckpointError(
            f"the file's arrays {sorted(arrays)} are not a fully connected network's W1, W2, ..."
        )
    return [w.shape[1] for w in weights[:-1]]


def _info() -> int:
    import platform

    print(
        f"portnet {__import__('portnet').__version__}, Python {platform.python_version()} on {platform.machine()}"
    )
    try:
        info = _backend.backend_info()
        print(
            f"active: {info['backend']} on {info['device']}, {info['dtype']} ({info['namespace']})"
        )
    except PortnetError as exc:
        print(f"active: none ({_one_line(exc)})")
    for name, status in _backend.available_backends().items():
        print(f"  {name:<17} {status}")
    print(f"cache directory: {cache_dir()}")
    return 0


def _import_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def _plot(trainer, path: Path, title: str) -> None:
    """Accuracy per epoch and the loss, raw and smoothed (the book's smooth_curve, ch. 6.1.8),
    on the same axis of epochs: the book's figures 4-11 and 4-12 side by side."""
    plt = _import_pyplot()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = range(1, len(trainer.train_acc_list) + 1)
    acc.plot(epochs, trainer.train_acc_list, marker="o", label="train acc")
    acc.plot(epochs, trainer.test_acc_list, marker="s", linestyle="--", label="test acc")
    acc.set(
        xlabel="epochs",
        ylabel="accuracy",
        ylim=(min(0.8, *trainer.test_acc_list), 1.0),
        xticks=list(epochs),
    )
    acc.legend(loc="lower right")
    losses = trainer.train_loss_list
    at = [(i + 1) / trainer.iter_per_epoch for i in range(len(losses))]
    loss.plot(at, losses, linewidth=0.5, color="0.75", label="loss per step")
    if len(losses) >= 11:
        loss.plot(at, smooth_curve(losses).tolist(), linewidth=1.6, color="C0", label="smoothed")
    loss.set(
        xlabel="epochs", ylabel="loss", yscale="log", xlim=(0, max(at[-1], 1)), xticks=list(epochs)
    )
    loss.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
