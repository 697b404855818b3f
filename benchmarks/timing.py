"""How the benchmarks measure: runners interleaved round by round (one library's idle threads
spin after its last call and slow whatever runs next, so no runner always follows the same
other), medians, a device sync before every clock read, a busy core on demand, and the machine."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def interleaved(runners, rounds, unit):
    """``unit(runner)`` timed ``rounds`` times for each runner, the runners taking turns (each
    round in a rotated order); after one untimed warm-up unit each. Returns {label: [seconds]}."""
    for r in runners:
        unit(r)
        r.sync()
    times = {r.label: [] for r in runners}
    for k in range(rounds):
        order = runners[k % len(runners) :] + runners[: k % len(runners)]
        for r in order:
            gc.collect()
            start = time.perf_counter()
            unit(r)
            r.sync()
            times[r.label].append(time.perf_counter() - start)
    return times


def median(values):
    return statistics.median(values)


@contextlib.contextmanager
def busy_core():
    """Another program keeping one core busy for the duration (a CPU-bound Python loop)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let it take its core
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def sync_for(name, device=None):
    """A function that waits for the device's queued work (nothing on the CPU)."""
    if name == "cupy":
        import cupy

        return lambda: cupy.cuda.Device().synchronize()
    if name == "torch" and "cuda" in str(device):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def matmul_rate(device="cpu", repeats=5) -> float:
    """float32 matmul FLOP/s: 2048^3 with NumPy's BLAS on the CPU; 4096^3 on a GPU, through
    PyTorch (TF32 off) or CuPy (``device="cupy"``)."""
    if device == "cpu":
        a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
        matmul, sync, n = (lambda: a @ a), (lambda: None), 2048
    elif device == "cupy":
        import cupy

        n = 4096
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        matmul, sync = (lambda: a @ a), (lambda: cupy.cuda.Device().synchronize())
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        n = 4096
        a = torch.randn(n, n, device=device)
        matmul, sync = (lambda: a @ a), torch.cuda.synchronize
    matmul()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        sync()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    name = f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start"
    try:
        import torch

        if torch.cuda.is_available():
            name += f"; GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    except ImportError:
        pass
    return name


def versions() -> dict:
    out = {"python": platform.python_version()}
    for module in ("numpy", "array_api_compat", "array_api_extra", "torch", "jax", "cupy"):
        try:
            out[module] = __import__(module).__version__
        except ImportError:
            pass
    return out
