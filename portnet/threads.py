"""How many CPU threads BLAS, OpenMP and PyTorch may use: as many as there are free cores.

With every core free, a matmul is fastest on all of them; with another program busy on one
core, BLAS threads spin waiting for the busy one and a step takes 3x as long as on one thread.
Two guards, both through ``threadpoolctl`` (and ``torch.set_num_threads``):

- when a CPU backend is first selected, :func:`fit_to_free_cores` counts the cores other programs
  keep busy and limits the thread pools to the rest (``PORTNET_THREADS=N`` fixes N instead, for
  runs that repeat to the digit); this covers loops written by hand, such as the book's;
- at the start of each epoch the Trainer (``tune_threads=True``, the callback
  :class:`portnet.callbacks.ThreadTuner`) times a few steps under the libraries' thread counts
  and under one thread (alternating, in total: a busy core shows as occasional steps several
  times as long, which a median would hide) and keeps the faster for the rest of the epoch.
  Only NumPy's computations are tuned so (resizing PyTorch's pool every epoch costs more than it
  saves).

JAX's threads are out of reach of both; a GPU has none of this.
"""

from __future__ import annotations

import os
import time

import array_api_compat

from . import backends
from .checks import integer
from .errors import InputError, MissingDependencyError

#: Seconds the processor's counters are watched to count busy cores.
SAMPLE_SECONDS = 0.05
#: Libraries whose thread pools have been fitted in this process: library -> threads (None: left as they were).
_fitted: dict[str, int | None] = {}


def fit_threads(library: str, setting=None):
    """Limit the CPU thread pools ``library`` computes with ('numpy' or 'torch': BLAS and OpenMP
    through threadpoolctl, and the library's own pool through its adapter) to ``setting``
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
            raise InputError(
                f"threads {setting!r}: expected 'auto' or a positive number of threads"
            ) from None
    if limit is not None:
        ctl = _threadpoolctl()
        if ctl is not None:
            ctl.threadpool_limits(limits=limit)
        elif setting != "auto":  # asked for, so not to be skipped silently
            raise MissingDependencyError(
                f"{limit} threads: limiting BLAS needs threadpoolctl: pip install threadpoolctl"
            )
        backends.get(library).limit_threads(limit)
    _fitted[library] = limit
    return limit


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy_cores() -> float:
    """How many of this process's cores (its affinity mask) other programs keep busy now: their
    counters in /proc/stat over :data:`SAMPLE_SECONDS` (Linux; this process sleeps meanwhile),
    elsewhere the 1-minute load average scaled to those cores."""
    try:
        before = _cpu_times()
        time.sleep(SAMPLE_SECONDS)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0] * usable_cores() / (os.cpu_count() or 1)
        except OSError:
            return 0.0
    busy = 0.0
    for cpu, now in after.items():
        if cpu in before:
            total = sum(now) - sum(before[cpu])
            idle = (now[3] + now[4]) - (before[cpu][3] + before[cpu][4])  # idle and iowait
            busy += (total - idle) / total if total > 0 else 0.0
    return busy


def _cpu_times() -> dict[int, list[int]]:
    """Each of this process's cores' time counters (user, nice, system, idle, iowait, ...)."""
    try:
        mine = os.sched_getaffinity(0)
    except AttributeError:
        mine = None
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if (
                name.startswith("cpu")
                and name[3:].isdigit()
                and (mine is None or int(name[3:]) in mine)
            ):
                times[int(name[3:])] = [int(v) for v in values[:8]]
    if not times:
        raise ValueError("no per-core counters in /proc/stat")
    return times


def thread_pool_of(x):
    """Which CPU thread pool computes with array ``x``: 'numpy', 'torch', or None (a GPU, JAX)."""
    return backends.of(x).thread_pool(array_api_compat.device(x))


def threadpool_controller():
    """threadpoolctl's controller of the loaded thread pools, or None without threadpoolctl."""
    ctl = _threadpoolctl()
    return None if ctl is None else ctl.ThreadpoolController()


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl
