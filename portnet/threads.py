"""How many CPU threads BLAS, OpenMP and PyTorch may use: as many as there are free cores.

With every core free, a matmul is fastest on all of them; with another program busy on one
core, BLAS threads spin waiting for the busy one and a step takes 3x as long as on one thread.
Two guards, both through ``threadpoolctl`` (and ``torch.set_num_threads``):

- when a CPU backend is first selected, :func:`fit_to_free_cores` counts the cores other programs
  keep busy and limits the thread pools to the rest (``PORTNET_THREADS=N`` fixes N instead, for
  runs that repeat to the digit); this covers loops written by hand, such as the book's;
- at the start of each epoch the Trainer (``tune_threads=True``) times a few steps under the
  libraries' thread counts and under one thread (alternating, in total: a busy core shows as
  occasional steps several times as long, which a median would hide) and keeps the faster for
  the rest of the epoch; a choice that stalls is dropped after two steps. Only NumPy's
  computations are tuned so (resizing PyTorch's pool every epoch costs more than it saves).

JAX's threads are out of reach of both; a GPU has none of this.
"""

from __future__ import annotations

import contextlib
import os
import time

import array_api_compat

from .checks import integer
from .errors import InputError, MissingDependencyError

#: Steps timed under each choice at the start of an epoch (they are real training steps).
PROBE_STEPS = 10
#: Seconds the processor's counters are watched to count busy cores.
SAMPLE_SECONDS = 0.05
#: Libraries whose thread pools have been fitted in this process: library -> threads (None: left as they were).
_fitted: dict[str, int | None] = {}


def fit_threads(library: str, setting=None):
    """Limit the CPU thread pools ``library`` computes with ('numpy' or 'torch') to ``setting``
    threads, or for 'auto' to the cores free now; returns the limit, or None when every core is
    free (the libraries' defaults are kept). Without ``setting``: ``PORTNET_THREADS`` ('auto' by
    default), once per process."""
    if setting is None:
        if library in _fitted:
            return _fitted[library]
        setting = os.environ.get("PORTNET_THREADS") or "auto"
    if setting == "auto":
        cores = usable_cores()
        free = max(1, round(cores - busy_cores()))
        limit = None if free >= cores else free
    else:
        try:
            limit = integer("threads", int(setting))
        except (ValueError, OverflowError):
            raise InputError(f"threads {setting!r}: expected 'auto' or a positive number of threads") from None
    if limit is not None:
        ctl = _threadpoolctl()
        if ctl is not None:
            ctl.threadpool_limits(limits=limit)
        elif setting != "auto":  # asked for, so not to be skipped silently
            raise MissingDependencyError(f"{limit} threads: limiting BLAS needs threadpoolctl: pip install threadpoolctl")
        if library == "torch":
            import torch

            torch.set_num_threads(limit)
    _fitted[library] = limit
    return limit


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy_cores() -> float:
    """How many cores other programs keep busy now: the processor's counters in /proc/stat over
    :data:`SAMPLE_SECONDS` (Linux; this process sleeps meanwhile), elsewhere the 1-minute load
    average."""
    try:
        before = _cpu_times()
        time.sleep(SAMPLE_SECONDS)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle and iowait
    return (os.cpu_count() or 1) * (total - idle) / total if total > 0 else 0.0


def _cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


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
