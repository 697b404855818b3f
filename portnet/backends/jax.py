"""JAX: immutable arrays, tracers, keys instead of a generator's state, and a compiler."""

from __future__ import annotations

import importlib

from ..errors import BackendUnavailableError
from . import Adapter


class Jax(Adapter):
    name = "jax"
    native_random = True
    install = "pip install jax, or from portnet's source directory pip install '.[jax]'"

    def namespace(self, lib):
        # float64 must stay float64: portnet promises the book's digits on every backend.
        lib.config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy")

    def resolve_device(self, lib, spec):
        if spec is None or not isinstance(spec, (str, int)):
            return spec if spec is not None else lib.devices()[0]
        platform, _, index = str(spec).partition(":")
        if platform.isdigit():
            platform, index = "", platform
        try:
            return lib.devices(platform or None)[int(index or 0)]
        except (RuntimeError, IndexError, ValueError):
            raise BackendUnavailableError(
                f"jax device {spec!r} is not available; jax sees {lib.devices()}"
            ) from None

    def writeable(self, x):
        return False

    def is_tracer(self, x):
        import jax

        return isinstance(x, jax.core.Tracer)

    def generator(self, seed, device):
        return _JaxGenerator(seed, device)

    def step_compiler(self):
        return compile_steps


class _JaxGenerator:
    """A key split at every draw; ``state`` is the key (a pure step carries it)."""

    def __init__(self, seed, device):
        import jax

        self.jax, self.device = jax, device
        self.state = jax.random.key(seed)

    def _next(self):
        self.state, key = self.jax.random.split(self.state)
        return key

    def uniform(self, shape, dtype):
        return self.jax.device_put(
            self.jax.random.uniform(self._next(), shape, dtype=dtype), self.device
        )

    def permutation(self, n):
        return self.jax.device_put(self.jax.random.permutation(self._next(), n), self.device)

    def integers(self, low, high, size):
        return self.jax.device_put(
            self.jax.random.randint(self._next(), (size,), low, high), self.device
        )

    def get_state(self):
        """The key's data as a NumPy array of uint32."""
        import numpy as np

        return np.asarray(self.jax.random.key_data(self.state)).copy()

    def set_state(self, state):
        import numpy as np

        data = np.ascontiguousarray(state, dtype=np.uint32)
        self.state = self.jax.random.wrap_key_data(self.jax.device_put(data, self.device))


def compile_steps(step):
    """``jax.jit`` of a run of pure steps, ``(state, idx of shape (steps, batch)) -> (state,
    losses)``: one dispatch for the whole run (``jax.lax.scan``), not one per step."""
    import jax

    return jax.jit(lambda state, idx: jax.lax.scan(step, state, idx))


ADAPTER = Jax()
