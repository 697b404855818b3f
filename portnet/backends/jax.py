"""JAX: immutable arrays, tracers, keys instead of a generator's state, and a compiler."""

from __future__ import annotations

import importlib
import os
import time

from ..cachedir import cache_dir
from ..errors import BackendUnavailableError, DatasetError
from . import Adapter


class Jax(Adapter):
    name = "jax"
    native_random = True
    compiles_by_default = True
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
    losses)``: one dispatch for the whole run (``jax.lax.scan``), not one per step. Compiled ahead
    of its first call per shape, with the time it takes in ``compile_seconds``; the programs are
    kept in JAX's persistent cache in portnet's cache directory, so that the next process loads
    them instead of compiling them again."""
    import jax

    _use_persistent_cache(jax)
    jitted = jax.jit(lambda state, idx: jax.lax.scan(step, state, idx))
    programs = {}

    def run(state, idx):
        leaves, tree = jax.tree_util.tree_flatten((state, idx))
        key = (tree, tuple((a.shape, a.dtype, getattr(a, "weak_type", False)) for a in leaves))
        program = programs.get(key)
        if program is None:  # compiled for each form of the state (and run length) it meets
            start = time.perf_counter()
            program = programs[key] = jitted.lower(state, idx).compile()
            run.compile_seconds += time.perf_counter() - start
        return program(state, idx)

    run.compile_seconds = 0.0
    return run


def _use_persistent_cache(jax) -> None:
    """JAX's compilation cache in ``<portnet's cache directory>/jax``, unless the user chose one
    (``JAX_COMPILATION_CACHE_DIR``) or there is no cache directory."""
    if jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    try:
        directory = cache_dir() / "jax"
    except DatasetError:
        return  # no home directory: compile in every process
    jax.config.update("jax_compilation_cache_dir", str(directory))


ADAPTER = Jax()
