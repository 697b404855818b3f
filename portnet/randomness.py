"""Random numbers: seeded draws on the host (the same on every backend), or drawn on the device.

``seed=None`` means NumPy's global generator, as in the book: ``np.random.seed(0)`` before
building a network reproduces the book's initial weights, dropout masks and mini-batches on NumPy.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .arrays import dtype_name, from_numpy


class _GlobalNumpy:
    """NumPy's global generator (the one ``np.random.seed`` seeds), with the methods portnet uses."""

    def standard_normal(self, shape):
        return np.random.standard_normal(shape)

    def random(self, shape):
        return np.random.random_sample(shape)

    def permutation(self, n):
        return np.random.permutation(n)

    def integers(self, low, high, size=None):
        return np.random.randint(low, high, size)  # the stream of the book's np.random.choice(high, size)


def host_rng(seed=None):
    """A NumPy generator seeded with ``seed``; ``None``: NumPy's global one (``np.random.seed``)."""
    return _GlobalNumpy() if seed is None else np.random.default_rng(seed)


def random_normal(rng, shape, scale, xp, device, dtype):
    """``scale`` times standard normal draws (float64 on the host), as ``dtype`` on ``device``.

    The book's ``weight_init_std * np.random.randn(*shape)``; the same generator state gives the
    same numbers on every backend.
    """
    draws = scale * rng.standard_normal(shape)
    return from_numpy(draws.astype(dtype_name(dtype)), xp, device)


class Random:
    """Random numbers made where the data lives.

    ``source='native'`` uses the backend's own generator (CuPy, PyTorch, JAX; NumPy's on the CPU), so
    nothing crosses between host and device. ``source='host'`` draws with NumPy and transfers: the
    same draws on every backend, for parity tests. array-api-strict has no generator: host always.
    ``seed=None`` draws from NumPy's global generator on the host, and seeds a device generator
    from it.
    """

    def __init__(self, xp, device, seed=None, source="native"):
        if source not in ("native", "host"):
            raise ValueError(f"unknown random source {source!r}; expected 'native' or 'host'")
        self.xp, self.device = xp, device
        self._host = host_rng(None if seed is None else int(np.random.SeedSequence(seed).generate_state(1)[0]))
        self._kind = "host"
        if source == "native":
            if array_api_compat.is_numpy_namespace(xp):
                self._kind = "numpy"
                return
            native_seed = int(self._host.integers(0, 2**63))
            if array_api_compat.is_torch_namespace(xp):
                import torch

                self._kind = "torch"
                self._gen = torch.Generator(device=device).manual_seed(native_seed)
            elif array_api_compat.is_cupy_namespace(xp):
                import cupy

                self._kind = "cupy"
                with device:
                    self._gen = cupy.random.RandomState(native_seed)
            elif array_api_compat.is_jax_namespace(xp):
                import jax

                self._kind = "jax"
                self._key = jax.random.key(native_seed)

    def uniform(self, shape, dtype):
        """Uniform draws in [0, 1) of ``shape`` and float ``dtype``, on the device."""
        shape = tuple(shape)
        if self._kind == "torch":
            import torch

            return torch.rand(shape, generator=self._gen, device=self.device, dtype=dtype)
        if self._kind == "cupy":
            with self.device:
                return self._gen.random_sample(shape, dtype=dtype)
        if self._kind == "jax":
            import jax

            return jax.device_put(jax.random.uniform(self._next_key(), shape, dtype=dtype), self.device)
        return self._from_host(self._host.random(shape).astype(dtype_name(dtype)))

    def keep_mask(self, shape, ratio):
        """True where a uniform draw exceeds ``ratio``: the book's dropout mask
        ``np.random.rand(*shape) > ratio`` (compared in float64 when drawn on the host)."""
        if self._kind in ("numpy", "host"):
            return self._from_host(self._host.random(tuple(shape)) > ratio)
        return self.uniform(shape, self.xp.float32) > ratio

    def permutation(self, n: int):
        """A random permutation of ``range(n)`` as an int64 array on the device."""
        if self._kind == "torch":
            import torch

            return torch.randperm(n, generator=self._gen, device=self.device)
        if self._kind == "cupy":
            with self.device:
                return self._gen.permutation(n)
        if self._kind == "jax":
            import jax

            return jax.device_put(jax.random.permutation(self._next_key(), n), self.device)
        return self._from_host(self._host.permutation(n))

    def integers(self, high: int, size: int):
        """``size`` integers drawn uniformly from [0, high), with replacement (the book's
        ``np.random.choice(high, size)``), as an int64 array on the device."""
        if self._kind == "torch":
            import torch

            return torch.randint(high, (size,), generator=self._gen, device=self.device)
        if self._kind == "cupy":
            with self.device:
                return self._gen.randint(0, high, size, dtype="int64")
        if self._kind == "jax":
            import jax

            return jax.device_put(jax.random.randint(self._next_key(), (size,), 0, high), self.device)
        return self._from_host(self._host.integers(0, high, size).astype(np.int64))

    def _next_key(self):
        import jax

        self._key, key = jax.random.split(self._key)
        return key

    def _from_host(self, a):
        return a if self._kind == "numpy" else from_numpy(a, self.xp, self.device)
