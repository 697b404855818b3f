"""Random numbers: seeded draws on the host (the same on every backend), or drawn on the device
by the library's own generator (its adapter's, :mod:`portnet.backends`).

``seed=None`` means NumPy's global generator, as in the book: ``np.random.seed(0)`` before
building a network reproduces the book's initial weights, dropout masks and mini-batches on NumPy.
"""

from __future__ import annotations

import numpy as np

from . import backends
from .arrays import from_numpy
from .errors import CheckpointError, InputError
from .precision import to_device


class _GlobalNumpy:
    """NumPy's global generator (the one ``np.random.seed`` seeds), with the methods portnet uses."""

    def standard_normal(self, shape):
        return np.random.standard_normal(shape)

    def random(self, shape):
        return np.random.random_sample(shape)

    def permutation(self, n):
        return np.random.permutation(n)

    def integers(self, low, high, size=None):
        return np.random.randint(
            low, high, size
        )  # the stream of the book's np.random.choice(high, size)

    @property
    def state(self) -> dict:
        """The global generator's state as JSON data (MT19937's key as a list)."""
        state = np.random.get_state(legacy=False)
        return {**state, "state": {**state["state"], "key": state["state"]["key"].tolist()}}

    @state.setter
    def state(self, value):
        key = np.asarray(value["state"]["key"], dtype=np.uint32)
        np.random.set_state({**value, "state": {**value["state"], "key": key}})


def _host_state(rng) -> dict:
    return rng.state if isinstance(rng, _GlobalNumpy) else rng.bit_generator.state


def _set_host_state(rng, state) -> None:
    if isinstance(rng, _GlobalNumpy):
        rng.state = state
    else:
        rng.bit_generator.state = state


def host_rng(seed=None):
    """A NumPy generator seeded with ``seed``; ``None``: NumPy's global one (``np.random.seed``)."""
    return _GlobalNumpy() if seed is None else np.random.default_rng(seed)


def random_normal(rng, shape, scale, xp, device, dtype):
    """``scale`` times standard normal draws (float64 on the host), as ``dtype`` on ``device``.

    The book's ``weight_init_std * np.random.randn(*shape)``; the same generator state gives the
    same numbers on every backend.
    """
    return to_device(scale * rng.standard_normal(shape), xp, device, dtype)


class Random:
    """Random numbers made where the data lives.

    ``source='native'`` uses the backend's own generator (its adapter's: CuPy, PyTorch, JAX), so
    nothing crosses between host and device; NumPy's native generator is the host's. ``source='host'``
    draws with NumPy and transfers: the same draws on every backend, for parity tests.
    array-api-strict has no generator: host always. ``seed=None`` draws from NumPy's global
    generator on the host, and seeds a device generator from it.
    """

    def __init__(self, xp, device, seed=None, source="native"):
        if source not in ("native", "host"):
            raise InputError(f"unknown random source {source!r}; expected 'native' or 'host'")
        self.xp, self.device, self.source = xp, device, source
        self._host = host_rng(
            None if seed is None else int(np.random.SeedSequence(seed).generate_state(1)[0])
        )
        self.native = None
        if source == "native":
            adapter = backends.of_namespace(xp)
            if (
                adapter.native_random
            ):  # seeded from the host only then: NumPy's global stream stays the book's
                self.native = adapter.generator(int(self._host.integers(0, 2**63)), device)

    @property
    def state(self):
        """The native generator's state where a pure step carries it (JAX's key), else None."""
        return getattr(self.native, "state", None)

    @state.setter
    def state(self, value):
        self.native.state = value

    def state_dict(self) -> dict:
        """Where the draws stand, as host data: ``{"source", "host": the NumPy generator's state
        (JSON data) where draws come from it, "native": the library's generator's state (a NumPy
        array) where they come from that}``. CuPy's
        generator gives none (a run drawing from it cannot be resumed exactly)."""
        if self.native is not None:  # the host stream only seeded it: the user's, left alone
            return {"source": self.source, "host": None, "native": self.native.get_state()}
        return {"source": self.source, "host": _host_state(self._host), "native": None}

    def load_state_dict(self, state: dict, what="the generator") -> None:
        """Continue the draws from :meth:`state_dict`'s ``state`` (``what`` names it in errors)."""
        if state.get("source") != self.source:
            raise CheckpointError(
                f"{what} drew from the {state.get('source')!r} source, this one from "
                f"{self.source!r} (--random-source {self.source})"
            )
        if self.native is not None and state.get("native") is None:
            raise CheckpointError(
                f"{what}'s state was saved without that of the library's own generator (CuPy "
                f"gives none), so its draws cannot be repeated; runs that resume on CuPy draw "
                f"from the host (--random-source host)"
            )
        try:
            if self.native is not None:
                self.native.set_state(state["native"])
            else:
                _set_host_state(self._host, state["host"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{what}'s saved state does not fit this generator ({type(exc).__name__}: {exc})"
            ) from None

    def uniform(self, shape, dtype):
        """Uniform draws in [0, 1) of ``shape`` and float ``dtype``, on the device."""
        if self.native is not None:
            return self.native.uniform(tuple(shape), dtype)
        return to_device(self._host.random(tuple(shape)), self.xp, self.device, dtype)

    def keep_mask(self, shape, ratio):
        """True where a uniform draw exceeds ``ratio``: the book's dropout mask
        ``np.random.rand(*shape) > ratio`` (compared in float64 when drawn on the host)."""
        if self.native is None:
            return self._from_host(self._host.random(tuple(shape)) > ratio)
        return self.native.uniform(tuple(shape), self.xp.float32) > ratio

    def permutation(self, n: int):
        """A random permutation of ``range(n)`` as an int64 array on the device."""
        if self.native is not None:
            return self.native.permutation(n)
        return self._from_host(self._host.permutation(n))

    def integers(self, low: int, high: int, size: int):
        """``size`` integers drawn uniformly from [low, high), with replacement (NumPy's signature;
        the book's ``np.random.choice(high, size)`` is ``integers(0, high, size)``), as an int64
        array on the device."""
        if self.native is not None:
            return self.native.integers(low, high, size)
        return self._from_host(self._host.integers(low, high, size).astype(np.int64))

    def _from_host(self, a):
        return from_numpy(a, self.xp, self.device)
