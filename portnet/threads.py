"""How many CPU threads BLAS and OpenMP may use while training: whichever steps fastest now.

With every core free, a matmul is fastest on all of them; with another program busy on one
core, BLAS threads spin waiting for the busy one and a step takes 3x as long as on one thread.
So at the start of each epoch the Trainer times a few steps under each choice (alternating, in
total: a busy core shows as occasional steps several times as long, which a median would hide)
and keeps the faster for the rest of the epoch, through ``threadpoolctl``; a choice that stalls
is dropped after two steps. Only NumPy's computations are tuned (PyTorch keeps its own thread
pool, JAX's is out of threadpoolctl's reach, a GPU has none); without ``threadpoolctl``, none.
"""

from __future__ import annotations

import contextlib
import os
import time

import array_api_compat

#: Steps timed under each choice at the start of an epoch (they are real training steps).
PROBE_STEPS = 10


class ThreadChoice:
    """Chooses, epoch by epoch, between the libraries' own thread counts and one thread."""

    def __init__(self, x, enabled=True):
        self.enabled = enabled and _on_cpu(x) and (os.cpu_count() or 1) > 1 and _threadpoolctl() is not None
        self.choice = None  # None: the libraries' defaults; 1: one thread
        self.history = []
        self._controller = _threadpoolctl().ThreadpoolController() if self.enabled else None

    def run(self, step, n):
        """Run ``step(i)`` for i in range(n): the first steps timed under each choice, the rest
        under the faster one."""
        if not self.enabled or n < 4 * PROBE_STEPS:
            for i in range(n):
                step(i)
            return
        totals = {None: 0.0, 1: 0.0}
        i = 0
        while i < 2 * PROBE_STEPS:
            for choice in (None, 1):
                with self._limit(choice):
                    start = time.perf_counter()
                    step(i)
                    totals[choice] += time.perf_counter() - start
                i += 1
            slow, fast = max(totals.values()), min(totals.values())
            if i >= 4 and slow > 1.5 * fast:  # a stalling choice shows at once: stop paying for it
                break
        self.choice = min(totals, key=totals.get)
        self.history.append(self.choice)
        with self._limit(self.choice):
            for i in range(i, n):
                step(i)

    def _limit(self, choice):
        if choice is None:
            return contextlib.nullcontext()
        return self._controller.limit(limits=choice)


def _on_cpu(x) -> bool:
    """Computed by NumPy on the CPU (array-api-strict wraps NumPy): its BLAS is what stalls. PyTorch
    keeps its own thread pool, which resizing on every epoch would slow; JAX's threadpoolctl
    does not reach; a GPU has none of this."""
    return array_api_compat.is_numpy_array(x) or array_api_compat.is_array_api_strict_namespace(
        array_api_compat.array_namespace(x))


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl
