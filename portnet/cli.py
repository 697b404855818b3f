"""The ``portnet`` command: train on MNIST (CPU or GPU, the same code), evaluate, report backends.

    portnet train [--model deep-conv] [--backend cupy] [--epochs 10] [--save net.npz] [--plot curve.png]
    portnet train --resume net.npz
    portnet evaluate net.npz [--backend torch] [--plot-misclassified m.png] [--plot-confusion c.png]
    portnet summary --model deep-conv
    portnet info

Usage errors exit 2 and problems with the user's input, files or machine exit 1, each in one
line; anything else is a bug in portnet and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, figures, progress, report, resume
from . import backend as _backend
from .callbacks import Callback, CSVLogger, TensorBoard, TrainingCheckpoint
from .checks import check_memory
from .datasets import cache_dir, load_fashion_mnist, load_mnist, load_split
from .errors import CheckpointError, DatasetError, InputError, PortnetError
from .persistence import (
    check_writable,
    checkpoint_path,
    read_pickled_arrays,
    read_training_checkpoint,
)
from .precision import is_half
from .networks import (
    DeepConvNet,
    MultiLayerNet,
    SimpleConvNet,
    TwoLayerNet,
    load_checkpoint,
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
    if not sizes or min(sizes) < 1 or max(sizes) > LARGEST:
        raise argparse.ArgumentTypeError(
            f"--hidden {_shown(text)}: sizes must be positive integers (at most {LARGEST})"
        )
    return sizes


def _threads(text: str):
    if text == "auto":
        return text
    return _positive(int)(text)


#: The largest integer an option takes: what the array libraries can hold as a size (int64).
LARGEST = 2**63 - 1


def _positive(kind, least=None):
    """A parser of positive numbers of ``kind`` (int, at most :data:`LARGEST`, or float); of ints
    of at least ``least`` if given."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number") from None
        if kind is int and value > LARGEST:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is too large (at most {LARGEST})")
        if kind is int and least is not None:
            if value < least:
                raise argparse.ArgumentTypeError(f"{_shown(text)} must be at least {least}")
        elif not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{_shown(text)} must be positive")
        return value

    return parse


def _shown(text: str) -> str:
    """``text`` quoted, cut to a readable length (a number of 400 digits)."""
    return repr(text) if len(text) <= 40 else repr(text[:20] + "..." + text[-8:])


def _file(text: str) -> Path:
    """An output file's name: not empty, not a directory's."""
    if text.strip() in ("", ".", "..") or text.endswith(("/", os.sep)) or Path(text).name == "..":
        raise argparse.ArgumentTypeError(f"{text!r} names a directory, not a file")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="portnet",
        description="Deep Learning from Scratch's networks on NumPy, CuPy, PyTorch, JAX.",
    )
    parser.add_argument("--version", action="version", version=f"portnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def backend_options(p, data=True):
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
            help="float dtype (default: $PORTNET_DTYPE or float32; float16 and bfloat16 for "
            "evaluation: float16 on numpy, torch, jax, cupy, bfloat16 on torch, jax)",
        )
        if not data:
            return
        p.add_argument("--dataset", choices=LOADERS, default="mnist")
        p.add_argument(
            "--data-dir",
            help="directory of the four IDX files (default: $PORTNET_DATA_DIR or the cache)",
        )
        p.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            help="log the details on stderr (each mirror a download tried, and why it failed)",
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
        "--weight-decay",
        type=_positive(float),
        metavar="LAMBDA",
        help="L2 weight decay of --model multi-layer (ch. 6.4.2; the book's weight_decay_lambda)",
    )
    train.add_argument(
        "--epochs", type=_positive(int), help="epochs (default: 10; simple-conv 5, deep-conv 8)"
    )
    train.add_argument("--batch-size", type=_positive(int), default=100)
    train.add_argument(
        "--compile",
        action="store_true",
        help="compile the training step: torch.compile on PyTorch (CUDA graphs on a GPU); JAX "
        "always compiles",
    )
    train.add_argument("--seed", type=_positive(int, least=0), default=0)
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
        "--save",
        type=_file,
        help="write a training checkpoint to this .npz after every epoch (atomically): the "
        "network, the optimizer's and generators' states, the history, the settings; evaluate "
        "reads it, --resume continues it",
    )
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN.npz",
        help="continue the run of this training checkpoint, with its settings (options given must "
        "match them; --epochs may extend it), saving to the same file unless --save says otherwise",
    )
    train.add_argument(
        "--log", type=Path, metavar="FILE.csv", help="append each epoch's figures to this CSV file"
    )
    train.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="write TensorBoard event files to DIR (needs tensorboardX)",
    )
    train.add_argument(
        "--plot",
        type=_file,
        help="write the learning curves to this PNG, or to the format its suffix names (.pdf, "
        ".svg, ...; needs matplotlib)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace existing --save/--plot/--log files"
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
    evaluate.add_argument(
        "--plot-misclassified",
        type=Path,
        metavar="FILE.png",
        help="draw the first 20 misclassified test digits with their predicted and true labels "
        "(the book's ch. 8 figure)",
    )
    evaluate.add_argument(
        "--plot-confusion", type=Path, metavar="FILE.png", help="draw the confusion matrix"
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing PNG files")
    backend_options(evaluate)

    summary = commands.add_parser(
        "summary", help="a model's layers, output shapes and parameter counts (as Keras's)"
    )
    summary.add_argument("--model", choices=MODELS, default="multi-layer")
    summary.add_argument(
        "--hidden", type=_hidden, help="hidden layer sizes of the fully connected models"
    )
    backend_options(summary, data=False)

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
    """The command (``argv``: its arguments, default ``sys.argv[1:]``); returns its exit status.

    Its lines never fail (what a stream cannot encode is escaped, a closed stream is skipped: the
    run's result is kept). The first SIGINT or SIGTERM stops it (a file being written is finished
    first) and those that follow are ignored, as they are once the command is done when it runs
    as the process (``argv`` None); called with ``argv``, it puts the handlers back unless it
    was interrupted."""
    _open_closed_descriptors()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Stream(sys.stdout), _Stream(sys.stderr)
    details = logging.StreamHandler(sys.stderr)
    logger = logging.getLogger("portnet")
    logger.addHandler(details)
    try:
        return _main(argv)
    finally:
        logger.removeHandler(details)
        logger.setLevel(logging.NOTSET)
        sys.stdout, sys.stderr = streams


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        logging.getLogger("portnet").setLevel(logging.INFO)
    interrupted = []
    previous = {sig: signal.signal(sig, _stopper(interrupted)) for sig in _STOPPING}
    try:
        if args.command == "info":
            return _info()
        if args.command == "search":  # chooses backends itself: each Dask worker has its own
            from . import search

            return search.main(args)
        if getattr(args, "resume", None) is not None:  # its settings, before the backend's choice
            given = resume.stated(build_parser(), sys.argv[1:] if argv is None else argv)
            args.resumed = resume.prepare(args, given)
        name = args.backend or os.environ.get("PORTNET_BACKEND") or "numpy"
        device = args.device if args.device or args.backend else os.environ.get("PORTNET_DEVICE")
        chosen = _backend.set_backend(name, device or None, args.dtype)
        if getattr(args, "threads", "auto") != "auto":
            fit_threads("torch" if chosen.name == "torch" else "numpy", args.threads)
        return {"train": _train, "evaluate": _evaluate, "summary": _summary}[args.command](args)
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
        for sig, handler in previous.items():
            if argv is None or interrupted:  # the process ends: a late signal is ignored
                handler = signal.SIG_IGN
            signal.signal(sig, handler)


#: The signals that stop the command: SIGINT as KeyboardInterrupt, SIGTERM as SystemExit(143).
_STOPPING = (signal.SIGINT, signal.SIGTERM)


def _stopper(interrupted: list):
    def stop(signum, frame):
        for sig in _STOPPING:
            signal.signal(sig, signal.SIG_IGN)
        interrupted.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    return stop


def _open_closed_descriptors() -> None:
    """Open /dev/null on a standard descriptor the process started without, so that no file
    opened later takes its number (and what a library writes to stderr goes into the file)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


class _Stream:
    """A standard stream for the command's lines: what its encoding cannot write is escaped, and
    once writing fails (a closed pipe, a full disk) it is dropped (pointed at /dev/null)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        if self.stream is not None:
            encoding = getattr(self.stream, "encoding", None) or "utf-8"
            try:
                self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            except (OSError, ValueError):  # ValueError: a closed file
                self._drop()
        return len(text)

    def flush(self):
        if self.stream is not None:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._drop()

    def isatty(self):
        return self.stream is not None and self.stream.isatty()

    def __getattr__(self, name):  # encoding, fileno, ... of the stream
        return getattr(self.stream, name)

    def _drop(self):
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())  # the interpreter's last flush finds it
            os.close(null)
        except (OSError, ValueError):
            pass
        self.stream = None


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
    chosen, lr = _backend.active(), args.lr or DEFAULT_LR[args.optimizer]
    if is_half(chosen.dtype):
        half = _backend.dtype_name(chosen.dtype)
        raise InputError(
            f"--dtype {half} is for inference and evaluation (portnet evaluate --dtype {half}); "
            f"train in float32 or float64"
        )
    settings = {key: getattr(args, key) for key in resume.SETTINGS}
    settings.update(hidden=hidden, lr=lr, epochs=epochs, backend=chosen.name)
    settings.update(device=str(chosen.device), dtype=_backend.dtype_name(chosen.dtype))
    settings.update(
        {
            key: None if getattr(args, key) is None else str(getattr(args, key))
            for key in ("log", "tensorboard")
        }
    )
    saved, state = getattr(args, "resumed", (None, None))
    if saved is not None:
        resume.check(args.resume, saved, settings, state["epoch"])
    save, plot = _outputs(args)
    checkpoint = (
        None if save is None else TrainingCheckpoint(save, settings, overwrite=args.overwrite)
    )
    callbacks = [
        *([CSVLogger(args.log)] if args.log is not None else []),
        *([TensorBoard(args.tensorboard)] if args.tensorboard is not None else []),
        *([checkpoint] if checkpoint is not None else []),
    ]
    net = _network(
        args.model,
        hidden,
        seed=args.seed,
        random_source=args.random_source,
        weight_decay=args.weight_decay or 0,
    )
    _check_training_memory(net, args)
    (x_train, t_train), (x_test, t_test) = LOADERS[args.dataset](
        flatten=not conv, data_dir=args.data_dir
    )
    if args.limit is not None:
        n = min(args.limit, x_train.shape[0])
        x_train, t_train = x_train[:n, ...], t_train[:n, ...]
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
        callbacks=[*callbacks, EpochLine(sampled)],
        progress=progress.wanted(args.progress),
        seed=args.seed,
        random_source=args.random_source,
        tune_threads=args.threads == "auto",
        compile=True if args.compile else None,
    )
    if state is not None:
        trainer.load_state_dict(state)
    print(
        f"portnet: {net} on {args.dataset} ({x_train.shape[0]} train, {x_test.shape[0]} test), "
        f"{args.optimizer} lr={lr}, batch {args.batch_size}, {_count(epochs, 'epoch')} of "
        f"{_count(trainer.iter_per_epoch, 'step')}",
        flush=True,
    )
    if state is not None:
        print(f"portnet: resuming {args.resume} after epoch {trainer.current_epoch}", flush=True)
        if trainer.current_epoch >= epochs:
            print(f"portnet: {args.resume} holds all {epochs} epochs; --epochs N trains more")
            return 0
    start = time.perf_counter()
    try:
        # NumPy's floating-point warnings would print before the divergence guard's one-line error
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            trainer.train()
    except (KeyboardInterrupt, SystemExit) as exc:
        status = 130 if isinstance(exc, KeyboardInterrupt) else exc.code
        if status not in (130, 128 + signal.SIGTERM):
            raise
        what = "interrupted" if status == 130 else "terminated"
        print(
            f"portnet: {what} in epoch {trainer.current_epoch + 1}; {_kept(save)}", file=sys.stderr
        )
        return status
    total = time.perf_counter() - start
    print(
        f"portnet: test accuracy {trainer.test_acc_list[-1]:.4f}{sampled}, train accuracy "
        f"{trainer.train_acc_list[-1]:.4f}; {_epoch_times(trainer.epoch_times)}"
        f"{_compiled_in(trainer)}, {total:.1f} s in all",
        flush=True,
    )
    if save is not None:
        print(f"portnet: saved {save} (a training checkpoint: --resume {save} trains on)")
    if plot is not None:
        limited = "" if args.limit is None else f", --limit {args.limit}"
        _plot(
            trainer,
            plot,
            f"{net} on {args.dataset}, {args.optimizer} lr={lr}{limited}",
            overwrite=args.overwrite,
        )
        print(f"portnet: wrote {plot}")
    return 0


def _kept(save) -> str:
    """Where the last complete epoch is, for the line an interrupted run ends with."""
    if save is None:
        return "nothing was saved (--save FILE keeps every epoch)"
    try:
        epoch = read_training_checkpoint(save)[1]["epoch"]
    except PortnetError:
        return f"no epoch is saved in {save}"
    return f"epoch {epoch} is saved in {save}; continue with: portnet train --resume {save}"


def _check_training_memory(net, args) -> None:
    """Refuse, before the data are loaded, a run this machine cannot hold: the network's training
    with the optimizer's state, and the dataset (its pixels, and as floats)."""
    check_memory(
        f"training {net!r} in batches of {args.batch_size} with {args.optimizer}",
        net.memory_needed(args.batch_size, len(OPTIMIZERS[args.optimizer].slots))
        + 70_000 * 784 * (1 + 8),
    )


def _network(
    model, hidden, *, seed, random_source="native", activation="relu", dtype=None, weight_decay=0
):
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


def _compiling(trainer) -> str:
    """The epoch's compile time, where it compiled (JAX, --compile): apart from its steps'."""
    seconds = trainer.compile_times[-1] if trainer.compile_times else 0.0
    return f" (and {seconds:.2f} s compiling)" if seconds else ""


def _compiled_in(trainer) -> str:
    seconds = sum(trainer.compile_times)
    return f", compiling {seconds:.2f} s" if seconds else ""


def _epoch_times(times) -> str:
    """The first epoch apart from the rest: it warms caches (compiling is counted apart)."""
    if len(times) == 1:
        return f"{times[0]:.2f} s for the epoch's training steps"
    rest = statistics.median(times[1:])
    return f"epoch 1 {times[0]:.2f} s, then {rest:.2f} s per epoch (median; training steps only)"


def _outputs(args):
    """--save and --plot as they will be written, checked before any training."""
    save = checkpoint_path(args.save) if args.save is not None else None
    plot = None if args.plot is None else figures.figure_path(args.plot)
    if save is not None and plot is not None and save.resolve() == plot.resolve():
        raise InputError(f"--save and --plot both name {save}; give them different files")
    if args.log is not None and args.log.resolve() in {p.resolve() for p in (save, plot) if p}:
        raise InputError(f"--log names {args.log}, which --save or --plot writes too")
    resumed = None if args.resume is None else checkpoint_path(args.resume).resolve()
    for path in (save, plot, args.log):
        if path is not None:
            # a resumed run replaces its own checkpoint and appends to its own log
            own = resumed is not None and (path is args.log or path.resolve() == resumed)
            try:
                check_writable(path, args.overwrite or own)
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass --overwrite to replace it") from None
    if plot is not None:
        figures.check_format(plot)  # fail before training, not after
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
            f"{trainer.epoch_times[-1]:.2f} s{_compiling(trainer)}"
        )


def _evaluate(args) -> int:
    path = args.checkpoint
    args.plot_misclassified, args.plot_confusion = (
        None if p is None else figures.figure_path(p)
        for p in (args.plot_misclassified, args.plot_confusion)
    )
    pictures = {
        "--plot-misclassified": args.plot_misclassified,
        "--plot-confusion": args.plot_confusion,
    }
    for option, png in pictures.items():
        if png is not None:
            try:
                check_writable(png, args.overwrite)
            except FileExistsError:
                raise FileExistsError(f"{png} exists; pass --overwrite to replace it") from None
            figures.check_format(png, option)
    if None not in pictures.values() and len({p.resolve() for p in pictures.values()}) == 1:
        raise InputError(
            f"--plot-misclassified and --plot-confusion both name {args.plot_confusion}"
        )
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
        net = load_checkpoint(path, dtype=args.dtype or os.environ.get("PORTNET_DTYPE") or None)
    conv = isinstance(net, (SimpleConvNet, DeepConvNet))
    x_test, t_test = load_split(args.dataset, "test", flatten=not conv, data_dir=args.data_dir)
    if args.limit is not None:
        x_test, t_test = (
            x_test[: min(args.limit, x_test.shape[0]), ...],
            t_test[: min(args.limit, t_test.shape[0]), ...],
        )
    result = report.evaluate(net, x_test, t_test)
    print(
        f"portnet: {net}: test accuracy {result.accuracy:.4f} on {args.dataset} ({x_test.shape[0]} images)"
    )
    print("\n".join(result.lines()))
    title = f"{net!r} on {args.dataset}"
    if args.plot_misclassified is not None:
        drawn = report.plot_misclassified(
            result, x_test, args.plot_misclassified, title, overwrite=args.overwrite
        )
        print(f"portnet: wrote {args.plot_misclassified} ({drawn} misclassified digits)")
    if args.plot_confusion is not None:
        report.plot_confusion(result, args.plot_confusion, title, overwrite=args.overwrite)
        print(f"portnet: wrote {args.plot_confusion}")
    return 0


def _summary(args) -> int:
    hidden, _ = MODELS[args.model]
    if hidden is None and args.hidden:
        raise InputError(
            f"--hidden applies to the fully connected models, not --model {args.model}"
        )
    _network(args.model, args.hidden or (hidden and _hidden(hidden)), seed=0).summary()
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
    try:
        print(f"cache directory: {cache_dir()}")
    except DatasetError as exc:
        print(f"cache directory: none ({_one_line(exc)})")
    return 0


def _plot(trainer, path: Path, title: str, overwrite=False) -> None:
    """Accuracy per epoch and the loss, raw and smoothed (the book's smooth_curve, ch. 6.1.8),
    on the same axis of epochs: the book's figures 4-11 and 4-12 side by side."""
    plt = figures.pyplot()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = range(1, len(trainer.train_acc_list) + 1)
    acc.plot(epochs, trainer.train_acc_list, marker="o", label="train acc")
    acc.plot(epochs, trainer.test_acc_list, marker="s", linestyle="--", label="test acc")
    acc.set(
        xlabel="epochs",
        ylabel="accuracy",
        ylim=(min(0.8, *trainer.test_acc_list) - 0.02, 1.0),  # room for the lowest marker
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
    figures.save(fig, path, overwrite=overwrite, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
