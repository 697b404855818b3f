"""One adapter per array library: all that portnet knows about a library lives in its module here.

An :class:`Adapter` says how to import the library and which array-API namespace it has, how a
user's device spec resolves to one of its devices, how its arrays reach the host, whether they can
be written in place, whether a value is a tracer, which random generator draws on its devices,
how a run of training steps is compiled (where it can be), and which CPU thread pool it computes
with. :mod:`portnet.backend` picks an adapter by name; an array finds its own with :func:`of`.
A new backend is one new module here and its name in :data:`NAMES`.

Everything outside this package, :mod:`portnet.delegation` (the fast paths) and the data and file
boundary (:mod:`portnet.datasets`, :mod:`portnet.persistence`) is written against the array API
only.
"""

from __future__ import annotations

import importlib

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError, InputError

#: The backends, by the name ``PORTNET_BACKEND`` and ``set_backend`` take.
NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict")
#: The CPU backends, named in errors where a GPU is missing.
CPU_BACKENDS = "the CPU backends are numpy, torch (device 'cpu'), jax and array_api_strict"


class Adapter:
    """What portnet needs of one array library; the defaults fit a library whose arrays follow the
    standard and live on the CPU."""

    name = ""
    #: The command that installs the library.
    install = ""
    #: Whether :meth:`generator` draws on the library's devices (else draws come from the host).
    native_random = False

    def load(self):
        """The library's module, or an error saying what to install."""
        try:
            return importlib.import_module(self.name)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"backend {self.name!r} needs the library {self.name!r}, which is not installed here ({exc}); "
                f"install it with: {self.install}"
            ) from None

    def namespace(self, lib):
        """The library's array-API namespace."""
        return importlib.import_module(f"array_api_compat.{self.name}")

    def resolve_device(self, lib, spec):
        """The library's device for a user's spec (None: the default); an error if it is not usable."""
        raise NotImplementedError

    def activate(self, device) -> None:
        """Make ``device`` where new arrays and kernels go while the backend is active (only CuPy
        keeps a current device)."""

    def current_device(self):
        """The device to restore when a ``use_backend`` block ends (only CuPy keeps a current one)."""
        return None

    def thread_pool(self, device):
        """Which CPU thread pool computes on ``device``: 'numpy' (BLAS/OpenMP), 'torch', or None."""
        return None

    def limit_threads(self, n: int) -> None:
        """Limit the library's own CPU thread pool to ``n`` (BLAS and OpenMP are threadpoolctl's)."""

    def thread_count(self):
        """The size of the library's own CPU thread pool, or None where it has none."""
        return None

    def to_numpy(self, x) -> np.ndarray:
        """``x`` on the host, as a NumPy array."""
        return np.asarray(x)

    def writeable(self, x) -> bool:
        """Whether ``x`` can be changed in place."""
        return array_api_compat.is_writeable_array(x)

    def is_tracer(self, x) -> bool:
        """Whether ``x`` stands for a value inside a trace (it has none to read back)."""
        return False

    def generator(self, seed: int, device):
        """The library's own random generator on ``device``, seeded with ``seed``, with the methods
        ``uniform(shape, dtype)``, ``permutation(n)`` and ``integers(low, high, size)`` (see
        :class:`portnet.randomness.Random`), and ``get_state()`` (a NumPy array, or None where the
        library gives none) and ``set_state(array)``; only where :attr:`native_random`."""
        raise NotImplementedError

    #: Whether training steps are compiled unless asked not to (JAX, whose arrays are made for
    #: it); elsewhere a compiler runs only on request (``Trainer(compile=True)``).
    compiles_by_default = False

    def step_compiler(self):
        """A function compiling a run of pure training steps, ``compile(step)(state, idx) ->
        (state, losses)`` (see :mod:`portnet.step`), whose result counts the seconds it spent
        compiling in ``compile_seconds``; or None where the library has none."""
        return None

    def version(self) -> str:
        return getattr(self.load(), "__version__", "unknown")


_adapters: dict[str, Adapter] = {}
_by_type: dict[type, Adapter] = {}


def get(name: str) -> Adapter:
    """The adapter of backend ``name``."""
    if name not in NAMES:
        raise InputError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
    if name not in _adapters:
        _adapters[name] = importlib.import_module(f"{__name__}.{name}").ADAPTER
    return _adapters[name]


def of(x) -> Adapter:
    """The adapter of the library ``x`` is an array of (by its type's top-level module; a subclass
    defined elsewhere, by its namespace)."""
    t = type(x)
    found = _by_type.get(t)
    if found is None:
        top = {"jaxlib": "jax"}.get(t.__module__.split(".", 1)[0], t.__module__.split(".", 1)[0])
        found = get(top) if top in NAMES else of_namespace(array_api_compat.array_namespace(x))
        _by_type[t] = found
    return found


def of_namespace(xp) -> Adapter:
    """The adapter of an array-API namespace."""
    return get(xp.__name__.removeprefix("array_api_compat.").split(".", 1)[0])
