"""The backend matrix: every test that takes ``backend`` (or ``xp``) runs once per backend.

Backends: numpy; array_api_strict on its default device and on ``Device("device1")`` (an array
made on the wrong device fails there, without a GPU); torch on the CPU and on CUDA; jax; cupy.
Select with ``pytest --backend NAME`` (repeatable; a library name or an id such as ``torch-cpu``)
or ``PORTNET_BACKEND=NAME``. A backend that cannot run here is skipped with its reason; a GPU one
fails instead when ``PORTNET_REQUIRE_GPU=1``, and so does any backend named explicitly.

For ``benchmarks/gpu_check.py``: ``--gpu-subset`` runs the matrix's tests only (the others, CPU-only,
skip saying so) and ``--time-share SECONDS`` starts no test once that much time has passed (the
rest skip saying so), so that a run bounded by a GPU lease ends by itself and reports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import portnet
from portnet import backend as backends
from tests.matrix import MATRIX

ROOT = Path(__file__).resolve().parent
#: The shared data: beside the checkout (../shared/data), or carried into it (shared/data) on a
#: machine where ../shared does not exist.
SHARED = next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data") if p.is_dir()),
    ROOT.parent / "shared" / "data",
)


def _missing(reason):
    """Data a test needs is not here: a skip, or a failure on a GPU runner (PORTNET_REQUIRE_GPU=1),
    where a skip would hide that the GPU was never exercised."""
    if os.environ.get("PORTNET_REQUIRE_GPU") == "1":
        pytest.fail(f"{reason} (PORTNET_REQUIRE_GPU=1: missing data is a failure)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str
    device: object
    gpu: bool = False


CANDIDATES = tuple(Candidate(*row) for row in MATRIX)


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        help="run the backend matrix on this backend only (repeatable): "
        + ", ".join(sorted({c.name for c in CANDIDATES} | {c.id for c in CANDIDATES})),
    )
    parser.addoption(
        "--gpu-subset",
        action="store_true",
        help="only the backend matrix's tests run; every other test (CPU-only) skips, saying so",
    )
    parser.addoption(
        "--time-share",
        type=float,
        metavar="SECONDS",
        help="start no test after SECONDS from the session's start; the rest skip, saying so",
    )


#: The user's backend settings, read once and then removed from the environment: they choose the
#: matrix, and must not leak into tests that do not take the ``backend`` fixture, nor into the
#: ``portnet`` processes the CLI tests start.
_ENVIRONMENT = ("PORTNET_BACKEND", "PORTNET_DEVICE", "PORTNET_DTYPE")


def _selected(config) -> tuple[list[Candidate], bool]:
    chosen = config._portnet_env
    names = config.getoption("--backend") or (
        [chosen["PORTNET_BACKEND"]] if chosen.get("PORTNET_BACKEND") else []
    )
    if not names:
        return list(CANDIDATES), False
    known = {c.name for c in CANDIDATES} | {c.id for c in CANDIDATES}
    for n in names:
        if n not in known:
            raise pytest.UsageError(
                f"unknown backend {n!r} for --backend; expected one of {sorted(known)}"
            )
    device = chosen.get("PORTNET_DEVICE")
    if device and not config.getoption(
        "--backend"
    ):  # PORTNET_BACKEND=x PORTNET_DEVICE=y: that one device
        name = names[0]
        return [
            Candidate(f"{name}-{device}", name, device, gpu=name == "cupy" or "cuda" in device)
        ], True
    return [c for c in CANDIDATES if c.id in names or c.name in names], True


_probes: dict[str, object] = {}


def _probe(candidate: Candidate):
    """The Backend, or the reason it cannot run here (probed once per session)."""
    if candidate.id not in _probes:
        try:
            _probes[candidate.id] = backends.make_backend(
                candidate.name, candidate.device, "float64"
            )
        except (backends.BackendUnavailableError, ValueError) as exc:
            _probes[candidate.id] = str(exc)
    return _probes[candidate.id]


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        chosen, explicit = _selected(metafunc.config)
        params = [pytest.param((c, explicit), id=c.id) for c in chosen]
        metafunc.parametrize("backend", params, indirect=True, scope="function")


def pytest_report_header(config):
    chosen, _ = _selected(config)
    rows = []
    for c in chosen:
        found = _probe(c)
        rows.append(
            f"  {c.id}: "
            + (f"{found.device}" if isinstance(found, backends.Backend) else f"skipped ({found})")
        )
    return ["portnet backend matrix:", *rows]


#: Skip reasons that benchmarks/gpu_check.py's report tells apart (by the option they name).
CPU_ONLY = "CPU-only (takes no backend): outside the GPU check's subset (--gpu-subset)"
SHARE_SPENT = "not run: the time share of this run was spent (--time-share)"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--gpu-subset"):
        for item in items:
            if "backend" not in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.skip(reason=CPU_ONLY))


def pytest_runtest_setup(item):
    share = item.config.getoption("--time-share")
    if share is not None and time.monotonic() - item.config._portnet_start >= share:
        pytest.skip(SHARE_SPENT)


@pytest.fixture
def backend(request):
    """The Backend under test, active for the test's duration (arrays it creates land on it)."""
    candidate, explicit = request.param
    _skip_by_marker(request.node, candidate)
    found = _probe(candidate)
    if not isinstance(found, backends.Backend):
        must_run = explicit and not candidate.gpu
        if candidate.gpu and os.environ.get("PORTNET_REQUIRE_GPU") == "1":
            must_run = True
        if must_run:
            pytest.fail(f"{candidate.id} cannot run here: {found}")
        pytest.skip(f"{candidate.id}: {found}")
    with backends.use_backend(candidate.name, found.device) as active:
        yield active


@pytest.fixture
def xp(backend):
    """The array-API namespace of the backend under test."""
    return backend.xp


# --------------------------------------------------------------------------- data
def _skip_by_marker(node, candidate):
    """A test marked ``skip_backends(*names, reason=...)`` skips those backends (a library name or
    an id), one marked ``only_backends(...)`` all others, saying why (SciPy's skip_xp_backends)."""
    named = {candidate.name, candidate.id}
    for mark in node.iter_markers("skip_backends"):
        if named & set(mark.args):
            pytest.skip(f"{candidate.id}: {mark.kwargs['reason']}")
    for mark in node.iter_markers("only_backends"):
        if not named & set(mark.args):
            pytest.skip(f"{candidate.id}: only {', '.join(mark.args)}: {mark.kwargs['reason']}")


def pytest_configure(config):
    """The session's clock starts (``--time-share``); the backend settings move from the
    environment into the matrix; tests write parsed-data caches into a throwaway directory, never
    the user's cache."""
    config._portnet_start = time.monotonic()
    config.addinivalue_line(
        "markers", "skip_backends(*names, reason): skip these backends of the matrix"
    )
    config.addinivalue_line(
        "markers", "only_backends(*names, reason): run only these backends of the matrix"
    )
    config._portnet_env = {
        name: os.environ.pop(name) for name in _ENVIRONMENT if name in os.environ
    }
    backends._active = None
    if not os.environ.get("PORTNET_CACHE_DIR"):
        config._portnet_cache = tempfile.mkdtemp(prefix="portnet-test-cache-")
        os.environ["PORTNET_CACHE_DIR"] = config._portnet_cache


def pytest_unconfigure(config):
    os.environ.update(getattr(config, "_portnet_env", {}))
    cache = getattr(config, "_portnet_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("PORTNET_CACHE_DIR", None)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files: PORTNET_DATA_DIR, else ../shared/data/mnist (tests never download)."""
    found = Path(os.environ.get("PORTNET_DATA_DIR") or SHARED / "mnist")
    if not found.is_dir():
        _missing(f"no MNIST files at {found}; set PORTNET_DATA_DIR to the four IDX files")
    return found


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """MNIST as NumPy arrays (normalized, flattened, integer labels), loaded once per session."""
    with backends.use_backend("numpy"):
        return portnet.load_mnist(data_dir=mnist_dir, download=False)


@pytest.fixture(scope="session")
def mnist_images(mnist_dir):
    """The MNIST test set as (N, 1, 28, 28) float32 images and integer labels, NumPy."""
    with backends.use_backend("numpy"):
        _, test = portnet.load_mnist(flatten=False, data_dir=mnist_dir, download=False)
    return test


@pytest.fixture(scope="session")
def book_dir() -> Path:
    """The book's trained weights: PORTNET_BOOK_DIR, else ../shared/data/book."""
    found = Path(os.environ.get("PORTNET_BOOK_DIR") or SHARED / "book")
    if not (found / "sample_weight.pkl").is_file():
        _missing(f"the book's weights are not in {found}; set PORTNET_BOOK_DIR")
    return found


@pytest.fixture(scope="session")
def book_weights_path(book_dir) -> Path:
    return book_dir / "sample_weight.pkl"
