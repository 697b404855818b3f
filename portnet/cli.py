"""The ``portnet`` command: train on MNIST (CPU or GPU, the same code), evaluate, report backends.

    portnet train [--backend cupy] [--epochs 10] [--save net.npz] [--plot curve.png]
    portnet evaluate net.npz [--backend torch]
    portnet info
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import backend as _backend
from .datasets import DatasetError, cache_dir, load_fashion_mnist, load_mnist
from .io import UnsafePickleError, load_checkpoint, save_checkpoint
from .networks import MultiLayerNet, TwoLayerNet
from .optimizers import OPTIMIZERS, make_optimizer
from .trainer import Trainer, TrainingDiverged

LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
#: Learning rates that train well with each optimizer (SGD: the book's ch. 5 value).
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001}
DEFAULT_HIDDEN = {"two-layer": "50", "multi-layer": "100,100"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Bad usage: one line on stderr, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden {text!r}: expected sizes separated by commas, e.g. 100,100") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden {text!r}: sizes must be positive integers")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portnet", description="Deep Learning from Scratch's networks on NumPy, CuPy, PyTorch, JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def backend_options(p):
        p.add_argument("--backend", choices=_backend.BACKENDS, help="array library (default: $PORTNET_BACKEND or numpy)")
        p.add_argument("--device", help="device, e.g. cuda:1 (torch), 1 (cupy), device1 (array_api_strict)")
        p.add_argument("--dtype", choices=_backend.DTYPES, help="float dtype (default: $PORTNET_DTYPE or float32)")
        p.add_argument("--dataset", choices=LOADERS, default="mnist")
        p.add_argument("--data-dir", help="directory of the four IDX files (default: $PORTNET_DATA_DIR or the cache)")

    train = commands.add_parser("train", help="train a network and report accuracy per epoch")
    backend_options(train)
    train.add_argument("--model", choices=DEFAULT_HIDDEN, default="multi-layer")
    train.add_argument("--hidden", type=_hidden, help="hidden layer sizes (default: 100,100; two-layer: 50)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    train.add_argument("--lr", type=_positive(float), help=f"learning rate (default per optimizer: {DEFAULT_LR})")
    train.add_argument("--epochs", type=_positive(int), default=10)
    train.add_argument("--batch-size", type=_positive(int), default=100)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", type=Path, help="write the trained network to this .npz checkpoint")
    train.add_argument("--plot", type=Path, help="write the learning curves to this PNG (needs matplotlib)")
    train.add_argument("--overwrite", action="store_true", help="replace existing --save/--plot files")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="test accuracy of a saved checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    backend_options(evaluate)

    commands.add_parser("info", help="backends usable here, devices and versions")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            return _info()
        name = args.backend or os.environ.get("PORTNET_BACKEND") or "numpy"
        device = args.device if args.device or args.backend else os.environ.get("PORTNET_DEVICE")
        _backend.set_backend(name, device or None, args.dtype)
        return _train(args) if args.command == "train" else _evaluate(args)
    except (_backend.BackendUnavailableError, DatasetError, UnsafePickleError, TrainingDiverged,
            FileExistsError, FileNotFoundError, ImportError, ValueError) as exc:
        print(f"portnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("portnet: interrupted", file=sys.stderr)
        return 130


def _train(args) -> int:
    for path in (args.save, args.plot):
        if path is not None and path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if args.plot is not None:
        _import_pyplot()  # fail before training, not after
    hidden = args.hidden or _hidden(DEFAULT_HIDDEN[args.model])
    if args.model == "two-layer" and len(hidden) != 1:
        raise ValueError(f"--model two-layer takes one hidden size, got --hidden {','.join(map(str, hidden))}")
    (x_train, t_train), (x_test, t_test) = LOADERS[args.dataset](data_dir=args.data_dir)
    if args.model == "two-layer":
        net = TwoLayerNet(784, hidden[0], 10, seed=args.seed)
    else:
        net = MultiLayerNet(784, hidden, 10, seed=args.seed)
    lr = args.lr or DEFAULT_LR[args.optimizer]
    trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=args.epochs, mini_batch_size=args.batch_size,
                      optimizer=make_optimizer(args.optimizer, lr=lr), progress=False if args.no_progress else None,
                      seed=args.seed)
    print(f"portnet: {net} on {args.dataset} ({x_train.shape[0]} train, {x_test.shape[0]} test), "
          f"{args.optimizer} lr={lr}, batch {args.batch_size}, {args.epochs} epochs of {trainer.iter_per_epoch} steps",
          flush=True)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    mean_epoch = sum(trainer.epoch_times) / len(trainer.epoch_times)
    print(f"portnet: test accuracy {trainer.test_acc_list[-1]:.4f}, train accuracy {trainer.train_acc_list[-1]:.4f}; "
          f"{mean_epoch:.2f} s per epoch (training steps), {total:.1f} s in all", flush=True)
    if args.save is not None:
        print(f"portnet: saved {save_checkpoint(net, args.save, overwrite=args.overwrite)}")
    if args.plot is not None:
        _plot(trainer, args.plot, f"{net} on {args.dataset}, {args.optimizer} lr={lr}")
        print(f"portnet: wrote {args.plot}")
    return 0


def _evaluate(args) -> int:
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {args.checkpoint}")
    net = load_checkpoint(args.checkpoint)
    _, (x_test, t_test) = LOADERS[args.dataset](data_dir=args.data_dir)
    print(f"portnet: {net}: test accuracy {net.accuracy(x_test, t_test):.4f} on {args.dataset} ({x_test.shape[0]} images)")
    return 0


def _info() -> int:
    import platform

    print(f"portnet {__import__('portnet').__version__}, Python {platform.python_version()} on {platform.machine()}")
    try:
        info = _backend.backend_info()
        print(f"active: {info['backend']} on {info['device']}, {info['dtype']} ({info['namespace']})")
    except (ValueError, _backend.BackendUnavailableError) as exc:
        print(f"active: none ({exc})")
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
        raise ImportError("--plot needs matplotlib: pip install 'portnet[plot]'") from None
    return plt


def _plot(trainer, path: Path, title: str) -> None:
    """Accuracy per epoch and loss per step, as the book's figures 4-11 and 4-12."""
    from .io import write_atomic

    plt = _import_pyplot()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = range(1, len(trainer.train_acc_list) + 1)
    acc.plot(epochs, trainer.train_acc_list, marker="o", label="train acc")
    acc.plot(epochs, trainer.test_acc_list, marker="s", linestyle="--", label="test acc")
    acc.set(xlabel="epochs", ylabel="accuracy", ylim=(min(0.8, *trainer.test_acc_list), 1.0), xticks=list(epochs))
    acc.legend(loc="lower right")
    loss.plot(range(1, len(trainer.train_loss_list) + 1), trainer.train_loss_list, linewidth=0.6)
    loss.set(xlabel="iteration", ylabel="loss", yscale="log")
    fig.suptitle(title)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
