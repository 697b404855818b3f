"""The book's random hyperparameter search (ch. 6.5, ``ch06/hyperparameter_optimization.py``), as
tasks on a Dask cluster.

Each trial draws ``weight_decay = 10 ** uniform(-8, -4)`` and ``lr = 10 ** uniform(-6, -2)``
(log-uniform in ``--decay-range`` and ``--lr-range``), trains ``MultiLayerNet(784, [100] * 6, 10,
weight_decay_lambda=weight_decay)`` with SGD for 50 epochs on 400 shuffled training images and
scores it on 100 more split off them (the validation set; the test set is never seen). The best 20
are printed and drawn as the book's 5 x 4 grid of accuracy curves.

Trial k's hyperparameters and seeds come from ``numpy.random.default_rng([seed, k])``, so its
result does not depend on where or when it runs: on one backend, one BLAS thread a trial, the
serial run (``--workers 0``) and a cluster give the same table. Trials are Dask tasks: a
``LocalCluster`` of worker processes on this machine, or ``--scheduler`` for a cluster of
``dask worker`` processes, each training on its own ``PORTNET_BACKEND`` / ``PORTNET_DEVICE`` and
loading the data once. A worker that dies has its trial rerun by Dask. Each finished trial is
appended at once to ``--results`` (JSON lines, one fsync'd line a trial, after a header line with
the search's settings); ``--resume`` runs only the trials that file lacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import checks
from .backend import BACKENDS
from .errors import InputError, MissingDependencyError, PortnetError, TrainingDiverged
from .optimizers import OPTIMIZERS
from . import backends, figures
from .persistence import check_writable

try:
    import fcntl
except ImportError:  # Windows: no lock on the results file
    fcntl = None

#: The networks a search trains: the book's MultiLayerNet (the one with weight decay).
MODELS = ("multi-layer",)
#: The book draws the best 20 on a grid of 5 columns.
BEST, COLUMNS = 20, 5
#: The first line of a results file says what it is.
FORMAT = "portnet-search/1"
_INSTALL = 'pip install "portnet[distributed]"'
#: Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which stops glibc from adapting its
#: mmap threshold: every array of a training step is then mapped and unmapped afresh, and a trial
#: runs 1.7 times as long. The LocalCluster's workers keep glibc's default.
_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@dataclass(frozen=True)
class Search:
    """What defines a search (the book's protocol by default); a results file records it."""

    trials: int = 100
    epochs: int = 50
    train_size: int = 500
    validation: float = 0.2
    lr_range: tuple = (1e-6, 1e-2)
    decay_range: tuple = (1e-8, 1e-4)
    model: str = "multi-layer"
    hidden: tuple = (100,) * 6
    optimizer: str = "sgd"
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        for name in ("trials", "epochs", "train_size", "batch_size"):
            set_(name, checks.integer(_option(name), getattr(self, name)))
        set_("seed", checks.integer("--seed", self.seed, least=0))
        try:
            share = float(self.validation)
        except (TypeError, ValueError):
            share = math.nan
        if not 0 < share < 1:
            raise InputError(
                f"--validation must lie strictly between 0 and 1 (the share of --train-size held out), "
                f"got {self.validation!r}"
            )
        set_("validation", share)
        for name in ("lr_range", "decay_range"):
            set_(name, _range(_option(name), getattr(self, name)))
        set_("hidden", tuple(checks.integers("--hidden", self.hidden)))
        if not self.hidden:
            raise InputError("--hidden needs at least one layer size")
        if self.model not in MODELS:
            raise InputError(f"--model {self.model!r}: expected one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(
                f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
            )
        if self.train_count < self.batch_size:
            raise InputError(
                f"--train-size {self.train_size} with --validation {self.validation} leaves "
                f"{self.train_count} training images, fewer than --batch-size {self.batch_size}"
            )

    @property
    def validation_count(self) -> int:
        """Images held out for scoring: the book's ``int(500 * 0.2)``, at least one."""
        return max(int(self.train_size * self.validation), 1)

    @property
    def train_count(self) -> int:
        return self.train_size - self.validation_count

    def draw(self, k: int) -> tuple[float, float, int]:
        """Trial k's learning rate, weight decay and seed, from (``seed``, k) alone."""
        rng = np.random.default_rng([self.seed, k])
        weight_decay = 10 ** rng.uniform(
            *map(math.log10, self.decay_range)
        )  # the book draws it first
        lr = 10 ** rng.uniform(*map(math.log10, self.lr_range))
        return float(lr), float(weight_decay), int(rng.integers(2**31))

    def describe(self) -> str:
        sizes = "-".join(map(str, (784, *self.hidden, 10)))
        return (
            f"{_trials(self.trials)} of MultiLayerNet({sizes}), {self.optimizer}, batch {self.batch_size}, "
            f"{self.epochs} epochs on {self.train_count} training images, scored on {self.validation_count} "
            f"validation images (the first {self.train_size} of MNIST's training set, shuffled); "
            f"lr {self.lr_range[0]:g}..{self.lr_range[1]:g}, weight decay {self.decay_range[0]:g}.."
            f"{self.decay_range[1]:g}, log-uniform; seed {self.seed}"
        )


def _trials(n: int) -> str:
    return f"{n} trial{'s' if n != 1 else ''}"


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def _range(name, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} takes two numbers, LOW HIGH; got {value!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in (low, high)):
        raise InputError(f"{name} {low:g} {high:g}: both ends must be finite positive numbers")
    if low > high:
        raise InputError(f"{name} {low:g} {high:g} is inverted: LOW must not exceed HIGH")
    return low, high


# --------------------------------------------------------------------------- one trial
def run_trial(search: Search, k: int, data_dir=None, threads: int = 1) -> dict:
    """Train trial k on the active backend (a worker's: its ``PORTNET_BACKEND`` / ``PORTNET_DEVICE``)
    and return its record; a trial whose training diverges is recorded as such, not raised."""
    import portnet as pn

    lr, weight_decay, seed = search.draw(k)
    start = time.perf_counter()
    x_train, t_train, x_val, t_val = _data(
        search.train_size,
        search.validation_count,
        search.seed,
        None if data_dir is None else str(data_dir),
        _backend_key(),
    )
    net = pn.MultiLayerNet(
        784,
        list(search.hidden),
        10,
        weight_decay_lambda=weight_decay,
        seed=seed,
        random_source="host",
    )
    trainer = pn.Trainer(
        net,
        x_train,
        t_train,
        x_val,
        t_val,
        epochs=search.epochs,
        mini_batch_size=search.batch_size,
        optimizer=search.optimizer,
        optimizer_param={"lr": lr},
        verbose=False,
        seed=seed,
        random_source="host",
    )
    record = {"trial": k, "lr": lr, "weight_decay": weight_decay, "seed": seed}
    try:
        with (
            _thread_limit(threads),
            np.errstate(over="ignore", invalid="ignore"),
        ):  # divergence is the Trainer's to tell
            trainer.train()
    except TrainingDiverged as exc:
        record.update(status="diverged", val_acc=None, train_acc=None, error=str(exc))
    else:
        record.update(
            status="ok", val_acc=trainer.test_acc_list[-1], train_acc=trainer.train_acc_list[-1]
        )
    info = pn.backend_info()
    record.update(
        val_acc_list=trainer.test_acc_list,
        train_acc_list=trainer.train_acc_list,
        backend=info["backend"],
        device=info["device"],
        worker=f"{socket.gethostname()}:{os.getpid()}",
        seconds=round(time.perf_counter() - start, 3),
    )
    return record


def _backend_key() -> tuple:
    import portnet as pn

    info = pn.backend_info()
    return info["backend"], info["device"], info["dtype"]


@functools.lru_cache(maxsize=1)
def _data(train_size, validation_count, seed, data_dir, backend_key):
    """The book's split, loaded once per process (a Dask worker keeps it for all its trials):
    the first ``train_size`` MNIST training images shuffled with ``seed``, the first
    ``validation_count`` of them for validation, on the active backend."""
    import portnet as pn

    with pn.use_backend("numpy"):
        (x, t), _ = pn.load_mnist(data_dir=data_dir)
    if train_size > x.shape[0]:
        raise InputError(f"--train-size {train_size} exceeds MNIST's {x.shape[0]} training images")
    order = np.random.default_rng(seed).permutation(train_size)
    x, t = (
        pn.asarray(x[:train_size][order], dtype=backend_key[2]),
        pn.asarray(t[:train_size][order]),
    )
    v = validation_count
    return x[v:, ...], t[v:], x[:v, ...], t[:v]


@contextlib.contextmanager
def _thread_limit(threads):
    """At most ``threads`` BLAS/OpenMP threads (and PyTorch's, if loaded): the same sums in the
    same order wherever the trial runs."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise MissingDependencyError(
            "portnet search needs threadpoolctl: pip install threadpoolctl"
        ) from None
    # the library's own pool too (PyTorch's), where it is loaded already
    loaded = [backends.get(name) for name in backends.NAMES if name in sys.modules]
    previous = [(a, a.thread_count()) for a in loaded if a.thread_count() is not None]
    try:
        for adapter, _ in previous:
            adapter.limit_threads(threads)
        with threadpool_limits(limits=threads):
            yield
    finally:
        for adapter, count in previous:
            adapter.limit_threads(count)


# --------------------------------------------------------------------------- the results file
class Results:
    """A JSON-lines results file: a header line with the search, then one line per finished trial,
    each written whole, flushed and fsync'd before the next; held under an exclusive lock."""

    def __init__(self, fd: int, path: Path, search: Search | None):
        self.fd, self.path, self.search, self.records = fd, path, search, {}
        self.cut = 0  # bytes of an unfinished last line, dropped on resuming

    @classmethod
    def create(cls, path, search: Search) -> Results:
        """A new file; an existing one is never overwritten."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            _check_new(path)
            raise
        results = cls(fd, path, search)
        results._lock()
        results._write({"format": FORMAT, "search": asdict(search)})
        return results

    @classmethod
    def resume(cls, path, given: dict) -> Results:
        """An existing file, its search's settings checked against those ``given``; a last line
        cut short by a crash is removed (that trial runs again)."""
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            results = cls(fd, path, None)
            results._lock()
            results._read(given)
        except BaseException:
            os.close(fd)
            raise
        return results

    def _lock(self):
        if fcntl is None:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{self.path} is in use by another portnet search") from None

    def _read(self, given):
        with open(self.fd, "rb", closefd=False) as f:
            data = f.read()
        complete = data.rfind(b"\n") + 1
        self.cut = len(data) - complete
        lines = data[:complete].splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if (
            not isinstance(header, dict)
            or header.get("format") != FORMAT
            or not isinstance(header.get("search"), dict)
        ):
            raise InputError(
                f"{self.path} is not a results file of portnet search (its first line is no search header)"
            )
        recorded = header["search"]
        for name, value in given.items():
            if _comparable(value) != _comparable(recorded.get(name)):
                raise InputError(
                    f"{self.path} records a search with {_option(name)} {_shown(recorded.get(name))}; "
                    f"resume it with the same settings (or leave them out), not {_shown(value)}"
                )
        try:
            self.search = Search(**{f.name: recorded[f.name] for f in fields(Search)})
        except (KeyError, TypeError):
            raise InputError(
                f"{self.path}: its search header lacks settings of this portnet"
            ) from None
        for number, line in enumerate(lines[1:], start=2):
            record = self._record(line, number)
            self.records[record["trial"]] = record
        if self.cut:
            os.ftruncate(self.fd, complete)
            os.fsync(self.fd)

    def _record(self, line, number) -> dict:
        try:
            record = json.loads(line)
            k = record["trial"]
            drawn = (
                self.search.draw(k) if isinstance(k, int) and 0 <= k < self.search.trials else None
            )
            sound = drawn == (record["lr"], record["weight_decay"], record["seed"]) and record[
                "status"
            ] in ("ok", "diverged")
        except (ValueError, KeyError, TypeError):
            sound = False
        if not sound:
            raise InputError(
                f"{self.path} line {number} is not a trial of the search its header records"
            )
        if k in self.records:
            raise InputError(f"{self.path} line {number}: trial {k} is recorded twice")
        return record

    def append(self, record: dict) -> None:
        self._write(record)
        self.records[record["trial"]] = record

    def _write(self, obj) -> None:
        line = memoryview((json.dumps(obj, allow_nan=False) + "\n").encode())
        while line:
            line = line[os.write(self.fd, line) :]
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _check_new(path: Path) -> None:
    """Raise now if a new results file cannot be made at ``path``."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            f"{path} exists; continue that search with --resume {path}, or name another file"
        )
    check_writable(path)


def _comparable(value):
    return [_comparable(v) for v in value] if isinstance(value, (list, tuple)) else value


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return (" " if len(value) == 2 and all(isinstance(v, float) for v in value) else ",").join(
            map(_shown, value)
        )
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- where trials run
def _in_process(search, pending, data_dir, threads, env):
    """The trials one after another in this process (``--workers 0``), on this machine's backend."""
    import portnet as pn

    merged = {**os.environ, **env}
    with pn.use_backend(
        merged.get("PORTNET_BACKEND") or "numpy",
        merged.get("PORTNET_DEVICE") or None,
        merged.get("PORTNET_DTYPE") or None,
    ):
        for k in pending:
            yield run_trial(search, k, data_dir, threads)


def _on_dask(client, search, pending, data_dir, threads):
    """The trials as Dask tasks, yielded as they finish. A task's key names its trial and search,
    so a rerun after a worker died (Dask's ``allowed-failures``) is the same task."""
    from dask.distributed import KilledWorker, as_completed

    token = hashlib.sha256(json.dumps([asdict(search), data_dir, threads]).encode()).hexdigest()[
        :16
    ]
    futures = {
        client.submit(
            run_trial, search, k, data_dir, threads, key=f"portnet-trial-{k}-{token}", pure=False
        ): k
        for k in pending
    }
    for future in as_completed(futures):
        try:
            yield future.result()
        except KilledWorker as exc:
            raise PortnetError(
                f"trial {futures[future]} killed its worker {exc.allowed_failures + 1} times (Dask's "
                f"distributed.scheduler.allowed-failures is {exc.allowed_failures}); the finished trials "
                f"are recorded"
            ) from None
        except ImportError as exc:
            raise MissingDependencyError(
                f"a Dask worker could not run portnet ({exc}); install portnet on every worker"
            ) from None


@contextlib.contextmanager
def _client(scheduler, workers, dashboard, env):
    """A Dask client of the cluster at ``scheduler``, or else of a LocalCluster of ``workers``
    single-threaded worker processes on 127.0.0.1 (their environment updated with ``env``)."""
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MissingDependencyError(
            f"portnet search runs its trials on Dask: {_INSTALL} "
            f"(or --workers 0 to run them in this process)"
        ) from None
    timeout = dask.utils.parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
    if scheduler:
        _probe(scheduler, timeout)
        with Client(scheduler, timeout=timeout) as client:
            yield client, f"the Dask scheduler at {scheduler}"
        return
    if dashboard is None:  # the scheduler's HTTP server (health, metrics) on a free port, not 8787
        http = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
    elif importlib.util.find_spec("bokeh") is None:
        raise MissingDependencyError("--dashboard needs bokeh: pip install bokeh")
    else:
        http = {"dashboard_address": f"127.0.0.1:{dashboard}"}
    with (
        _environment_kept(),
        dask.config.set({_TRIM: None}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            env=env,
            **http,
        ) as cluster,
        Client(cluster) as client,
    ):
        where = (
            f"a LocalCluster of {workers} worker process{'es' if workers > 1 else ''} on 127.0.0.1"
        )
        yield (
            client,
            where + (f", dashboard {cluster.dashboard_link}" if dashboard is not None else ""),
        )


@contextlib.contextmanager
def _environment_kept():
    """This process's environment as it was: Dask's Nanny writes its workers' pre-spawn variables
    (OMP_NUM_THREADS=1, ...) into it."""
    saved = os.environ.copy()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _probe(address, timeout):
    """A Dask handshake with ``address`` within ``timeout`` seconds (Dask's own connect waits for
    the peer's handshake without a limit)."""
    from distributed.comm import connect

    async def handshake():
        comm = await connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), timeout))
    except ValueError as exc:
        raise InputError(f"--scheduler {address}: {exc}") from None
    except Exception as exc:  # refused, silent, or not speaking Dask: the address is the problem
        reason = (
            "no answer" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        )
        raise PortnetError(
            f"--scheduler {address}: no Dask scheduler answered within {timeout:g} s ({reason}); "
            f"start one with 'dask scheduler'"
        ) from None


# --------------------------------------------------------------------------- the command
def add_arguments(parser) -> None:
    """The options of ``portnet search`` (the book's protocol by default)."""
    space = parser.add_argument_group("the search (default: the book's, ch. 6.5)")
    space.add_argument("--trials", type=int, help="trials (default: 100)")
    space.add_argument("--epochs", type=int, help="epochs a trial (default: 50)")
    space.add_argument(
        "--train-size",
        type=int,
        metavar="N",
        help="the first N MNIST training images, shuffled; --validation of them are held out for "
        "scoring (default: 500: 400 to train on, 100 to score)",
    )
    space.add_argument(
        "--validation",
        type=float,
        metavar="SHARE",
        help="share of --train-size held out (default: 0.2)",
    )
    space.add_argument(
        "--lr-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="learning rates, drawn log-uniformly (default: 1e-6 1e-2)",
    )
    space.add_argument(
        "--decay-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="weight decays (L2, ch. 6.4.2), drawn log-uniformly (default: 1e-8 1e-4)",
    )
    space.add_argument(
        "--model", choices=MODELS, help="the network: the book's MultiLayerNet (default)"
    )
    space.add_argument(
        "--hidden",
        type=_sizes,
        metavar="SIZES",
        help="hidden layer sizes (default: 100,100,100,100,100,100)",
    )
    space.add_argument("--optimizer", choices=OPTIMIZERS, help="default: sgd")
    space.add_argument("--batch-size", type=int, help="default: 100")
    space.add_argument("--seed", type=int, help="trial k's draws come from (seed, k) (default: 0)")
    out = parser.add_argument_group("results")
    files = out.add_mutually_exclusive_group()
    files.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="append each finished trial to this new JSON-lines file",
    )
    files.add_argument(
        "--resume",
        type=Path,
        metavar="FILE",
        help="continue the search in FILE: run the trials it lacks",
    )
    out.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="the best 20 trials' accuracy curves, the book's 5 x 4 grid",
    )
    out.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar over trials on stderr (default: when stderr is a terminal and tqdm is installed)",
    )
    where = parser.add_argument_group("where the trials run")
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster on this machine)",
    )
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the LocalCluster (default: one per "
        "core); 0 runs the trials in this process, without Dask",
    )
    where.add_argument(
        "--dashboard",
        type=int,
        metavar="PORT",
        help="serve the LocalCluster's Dask dashboard on 127.0.0.1:PORT (needs bokeh)",
    )
    where.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads a trial (default: 1, which makes a trial's "
        "result the same on every worker)",
    )
    where.add_argument(
        "--backend",
        choices=BACKENDS,
        help="this machine's backend (default: $PORTNET_BACKEND or numpy); a --scheduler's workers "
        "use their own PORTNET_BACKEND / PORTNET_DEVICE",
    )
    where.add_argument("--device", help="this machine's device, e.g. cuda:1 (torch), 1 (cupy)")
    where.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="float dtype (default: $PORTNET_DTYPE or float32)",
    )
    where.add_argument(
        "--data-dir",
        help="the MNIST files, on every worker's machine (default: each worker's "
        "$PORTNET_DATA_DIR or cache, downloading if missing)",
    )


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected sizes separated by commas, e.g. 100,100"
        ) from None


def main(args) -> int:
    """``portnet search``: run the trials a results file lacks, print the book's lines, plot."""
    given = {
        f.name: getattr(args, f.name) for f in fields(Search) if getattr(args, f.name) is not None
    }
    env = _where(args)
    threads = checks.integer("--threads", args.threads)
    if args.plot is not None:
        args.plot = figures.figure_path(args.plot)
        if args.plot.resolve() == (args.results or args.resume or Path(os.devnull)).resolve():
            raise InputError(f"--plot and the results file both name {args.plot}")
        check_writable(args.plot, args.overwrite)
        figures.check_format(args.plot)  # before the search, not after
    with contextlib.ExitStack() as stack:
        if args.resume is not None:
            results = Results.resume(args.resume, given)
            stack.callback(results.close)
            search = results.search
        else:
            search, results = Search(**given), None
            if args.results is not None:
                _check_new(args.results)
        print(f"portnet: search: {search.describe()}", flush=True)
        records = dict(results.records) if results is not None else {}
        pending = [k for k in range(search.trials) if k not in records]
        if args.resume is not None:
            cut = (
                " (an unfinished last line was dropped: that trial runs again)"
                if results.cut
                else ""
            )
            print(
                f"portnet: {args.resume}: {len(records)} of {search.trials} trials recorded{cut}, "
                f"{len(pending)} to run",
                flush=True,
            )
        if pending:
            start = time.perf_counter()
            with (
                contextlib.ExitStack() as run
            ):  # the cluster and the bar, gone before the time is told
                workers = _default_workers() if args.workers is None else args.workers
                if args.scheduler or workers:
                    client, where = run.enter_context(
                        _client(args.scheduler, min(workers, len(pending)), args.dashboard, env)
                    )
                    trials = _on_dask(client, search, pending, args.data_dir, threads)
                else:
                    where, trials = (
                        "this process",
                        _in_process(search, pending, args.data_dir, threads, env),
                    )
                if (
                    results is None and args.results is not None
                ):  # once the trials have somewhere to run
                    results = Results.create(args.results, search)
                    stack.callback(results.close)
                print(f"portnet: {_trials(len(pending))} on {where}", flush=True)
                bar = run.enter_context(_progress(len(pending), args.progress))
                for record in trials:
                    if results is not None:
                        results.append(record)
                    records[record["trial"]] = record
                    _say(bar, f"{_line(record)}  (trial {record['trial']})")
                    if bar is not None:
                        bar.update(1)
            print(
                f"portnet: {_trials(len(pending))} in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
    _report(search, records, args.plot, args.overwrite)
    return 0


def _where(args) -> dict:
    """Where the trials run, checked; PORTNET_* for this machine's trials from --backend/--device/
    --dtype (a new backend drops an inherited device)."""
    if args.workers is not None:
        checks.integer("--workers", args.workers, least=0)
    if args.dashboard is not None:
        checks.integer("--dashboard", args.dashboard)
    chosen = {
        "PORTNET_BACKEND": args.backend,
        "PORTNET_DEVICE": args.device,
        "PORTNET_DTYPE": args.dtype,
    }
    env = {k: v for k, v in chosen.items() if v is not None}
    if args.scheduler and env:
        raise InputError(
            "--backend, --device and --dtype choose this machine's backend; a --scheduler's workers "
            "take theirs from their PORTNET_BACKEND / PORTNET_DEVICE / PORTNET_DTYPE"
        )
    if args.scheduler and args.workers is not None:
        raise InputError(
            "--workers sizes a LocalCluster on this machine; a --scheduler has its own workers"
        )
    if args.backend and not args.device:
        env["PORTNET_DEVICE"] = ""
    name = {**os.environ, **env}.get("PORTNET_BACKEND")
    if not args.scheduler and name and name not in BACKENDS:  # before any worker starts
        raise InputError(
            f"PORTNET_BACKEND={name!r} is not a backend; expected one of {', '.join(BACKENDS)}"
        )
    return env


def _default_workers() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


@contextlib.contextmanager
def _progress(total, wanted):
    """A tqdm bar over trials: if ``wanted`` (None: if stderr is a terminal and tqdm is installed)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if wanted:
            raise MissingDependencyError("--progress needs tqdm: pip install tqdm") from None
        wanted = False
    if not (sys.stderr.isatty() if wanted is None else wanted):
        yield None
        return
    bar = tqdm(total=total, unit="trial", desc="search", leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _say(bar, line):
    if bar is not None:
        bar.write(line)
    else:
        print(line, flush=True)


def _line(record) -> str:
    """The book's line for a trial."""
    val = record["val_acc"] if record["status"] == "ok" else "diverged"
    return f"val acc:{val} | lr:{record['lr']}, weight decay:{record['weight_decay']}"


def _ranked(records: dict) -> list[dict]:
    """The trials that trained, best validation accuracy first (ties: the lower trial number)."""
    return sorted(
        (r for r in records.values() if r["status"] == "ok"),
        key=lambda r: (-r["val_acc"], r["trial"]),
    )


def _report(search, records, plot, overwrite=False) -> None:
    """The book's result lines, the best as a ``portnet train`` command, and the figure."""
    ranked = _ranked(records)
    print("=========== Hyper-Parameter Optimization Result ===========")
    for i, r in enumerate(ranked[:BEST]):
        print(
            f"Best-{i + 1}(val acc:{r['val_acc']}) | lr:{r['lr']}, weight decay:{r['weight_decay']}  (trial {r['trial']})"
        )
    diverged = sorted(k for k, r in records.items() if r["status"] == "diverged")
    if diverged:
        print(
            f"portnet: {len(diverged)} of {len(records)} trials diverged: trial {', '.join(map(str, diverged))}"
        )
    if not ranked:
        print("portnet: no trial trained to the end; nothing to rank (try a lower --lr-range)")
        return
    best = ranked[0]
    print(f"portnet: the best, trial {best['trial']}, as a portnet train run:")
    print(
        f"  portnet train --model multi-layer --hidden {','.join(map(str, search.hidden))} --optimizer "
        f"{search.optimizer} --lr {best['lr']:.6g} --weight-decay {best['weight_decay']:.6g} --epochs "
        f"{search.epochs} --batch-size {search.batch_size}"
    )
    if plot is not None:
        _draw(ranked[:BEST], plot, overwrite)
        print(f"portnet: wrote {plot}")


def _draw(best: list[dict], path: Path, overwrite=False) -> None:
    """The book's figure: a grid of 5 columns, validation accuracy solid, training dashed."""
    plt = figures.pyplot()
    rows = math.ceil(len(best) / COLUMNS)
    fig = plt.figure(figsize=(12, 2.2 * rows + 0.6))
    for i, r in enumerate(best):
        ax = fig.add_subplot(rows, COLUMNS, i + 1)
        ax.set_title(f"Best-{i + 1}", fontsize=10)
        ax.set_ylim(0.0, 1.0)
        if i % COLUMNS:
            ax.set_yticks([])
        ax.set_xticks([])
        epochs = range(len(r["val_acc_list"]))
        ax.plot(epochs, r["val_acc_list"])
        ax.plot(epochs, r["train_acc_list"], "--")
    fig.suptitle("validation (solid) and training (dashed) accuracy per epoch, best first")
    fig.tight_layout()
    figures.save(fig, path, overwrite=overwrite)
