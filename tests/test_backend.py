"""Backend selection: names, devices, errors, and moving arrays on and off a backend."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import portnet as pn
from portnet import backend as backends
from portnet.backends import cupy as cupy_adapter
from tests.helpers import assert_like


def test_unknown_backend_names_the_value_and_the_choices():
    with pytest.raises(
        ValueError, match=r"'tensorflow'.*numpy, cupy, torch, jax, array_api_strict"
    ):
        pn.set_backend("tensorflow")


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("PORTNET_BACKEND", "nupmy")
    monkeypatch.setattr(backends, "_active", None)
    with pytest.raises(ValueError, match=r"PORTNET_BACKEND='nupmy'.*expected one of numpy"):
        pn.get_namespace()


def test_environment_selects_backend_and_dtype(monkeypatch):
    monkeypatch.setenv("PORTNET_BACKEND", "array_api_strict")
    monkeypatch.setenv("PORTNET_DEVICE", "device1")
    monkeypatch.setenv("PORTNET_DTYPE", "float64")
    monkeypatch.setattr(backends, "_active", None)
    info = pn.backend_info()
    assert (info["backend"], info["device"], info["dtype"]) == (
        "array_api_strict",
        "array_api_strict.Device('device1')",
        "float64",
    )
    assert "array_api_strict" in info["versions"]


def test_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(
        pn.BackendUnavailableError,
        match=r"'cupy'.*not installed.*pip install 'cupy-cuda12x\[ctk\]'.*"
        r"from portnet's source directory pip install '\.\[cuda12\]'",
    ):
        pn.set_backend("cupy")


def test_invisible_cuda_device_is_an_error(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        pn.BackendUnavailableError,
        match=r"'cuda:0' is not visible: 0 usable NVIDIA GPU.*the CPU backends are numpy",
    ):
        pn.set_backend("torch", "cuda:0")


def test_torch_device_is_what_its_tensors_report():
    """'cpu:0' must behave exactly as 'cpu' (the CPU stand-in for 'cuda' resolving to 'cuda:0')."""
    torch = pytest.importorskip("torch")
    with pn.use_backend("torch", "cpu:0") as b:
        x = pn.asarray([1.0, 2.0])
        assert b.device == x.device == torch.device("cpu")
        assert (
            pn.asarray(x) is x or pn.asarray(x).data_ptr() == x.data_ptr()
        )  # the same-device fast path
        assert_like(x, b, "float64", (2,))


def test_torch_meta_device_is_refused():
    pytest.importorskip("torch")
    with pytest.raises(pn.InputError, match="torch device 'meta' cannot hold data"):
        pn.set_backend("torch", "meta")


def test_bad_device_names(monkeypatch):
    with pytest.raises(ValueError, match="'numpy' runs on 'cpu' only"):
        pn.set_backend("numpy", "cuda")
    pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="unknown array_api_strict device 'gpu7'"):
        pn.set_backend("array_api_strict", "gpu7")


def test_bad_dtype():
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        pn.set_backend("numpy", dtype="float8")
    with pytest.raises(ValueError, match="dtype 'bfloat16' is not available on numpy"):
        pn.set_backend("numpy", dtype="bfloat16")


def test_use_backend_restores_the_previous_one():
    before = pn.backend_info()
    with pn.use_backend("numpy", dtype="float64") as b:
        assert pn.backend_info()["dtype"] == "float64"
        assert b.xp is pn.get_namespace()
    assert pn.backend_info() == before


def test_import_prints_nothing_and_loads_no_backend():
    code = "import sys, portnet; print(sorted(m for m in ('torch', 'jax', 'cupy', 'array_api_strict') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n" and out.stderr == ""


def test_asarray_and_to_numpy_round_trip(backend):
    a = np.arange(6.0).reshape(2, 3)
    x = pn.asarray(a)
    assert_like(x, backend, "float64", (2, 3))
    assert_like(pn.asarray([[1, 2]]), backend, "int64", (1, 2))
    assert_like(pn.asarray(a, dtype="float32"), backend, "float32", (2, 3))
    back = pn.to_numpy(x)
    assert isinstance(back, np.ndarray) and np.array_equal(back, a)
    # an array of another library (or device) moves onto the active backend
    with pn.use_backend("numpy"):
        moved = pn.asarray(x)
    assert isinstance(moved, np.ndarray) and np.array_equal(moved, a)
    assert_like(pn.asarray(moved), backend, "float64", (2, 3))


def test_backend_info_reports_the_active_backend(backend):
    info = pn.backend_info()
    assert info["backend"] == backend.name
    assert info["device"] == str(backend.device)
    assert info["namespace"] == backend.xp.__name__


def test_random_is_seeded_and_on_device(backend):
    rng_a = backends.Random(backend.xp, backend.device, seed=3)
    rng_b = backends.Random(backend.xp, backend.device, seed=3)
    u = rng_a.uniform((4, 5), backend.xp.float32)
    assert_like(u, backend, "float32", (4, 5))
    assert np.array_equal(pn.to_numpy(u), pn.to_numpy(rng_b.uniform((4, 5), backend.xp.float32)))
    assert ((pn.to_numpy(u) >= 0) & (pn.to_numpy(u) < 1)).all()
    perm = pn.to_numpy(rng_a.permutation(50))
    assert sorted(perm.tolist()) == list(range(50))
    host = backends.Random(backend.xp, backend.device, seed=3, source="host")
    np_host = backends.Random(np, "cpu", seed=3, source="host")
    assert np.array_equal(pn.to_numpy(host.permutation(50)), np_host.permutation(50))


class _FakeGpu:
    """Stands in for ``cupy.cuda.Device``: which GPU is current."""

    current = 0

    def __init__(self, id=None):
        self.id = _FakeGpu.current if id is None else id

    def use(self):
        _FakeGpu.current = self.id

    def __enter__(self):
        self._previous, _FakeGpu.current = _FakeGpu.current, self.id

    def __exit__(self, *exc):
        _FakeGpu.current = self._previous


def test_cupy_device_is_current_while_its_backend_is_active(monkeypatch):
    """CuPy creates arrays and runs kernels on the *current* GPU: the chosen one must be current
    for as long as its backend is active, and the previous one current again afterwards."""
    fake = type(sys)("cupy")
    fake.cuda = type(sys)("cupy.cuda")
    fake.cuda.Device = _FakeGpu
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(
        backends,
        "make_backend",
        lambda name, device=None, dtype=None: backends.Backend(name, None, _FakeGpu(device), None),
    )
    monkeypatch.setattr(backends, "_active", None)
    _FakeGpu.current = 0
    with pn.use_backend("cupy", 1):
        assert _FakeGpu.current == 1
        with pn.use_backend("cupy", 2):
            assert _FakeGpu.current == 2
        assert _FakeGpu.current == 1
    assert _FakeGpu.current == 0
    pn.set_backend("cupy", 3)
    assert _FakeGpu.current == 3


def test_cupy_without_its_cuda_libraries_says_what_to_install():
    """A wheel without cuBLAS/cuRAND/NVRTC allocates fine but cannot compute: the probe runs a
    kernel, a matmul and a random draw, and names the [ctk] extra."""
    lib = type(sys)("cupy")

    def missing(*args, **kwargs):
        raise RuntimeError("CuPy failed to load libnvrtc.so.12: cannot open shared object file")

    lib.arange = missing
    lib.float32 = "float32"
    with pytest.raises(
        pn.BackendUnavailableError,
        match=r"cannot compute on GPU 1.*libnvrtc.*pip install 'cupy-cuda12x\[ctk\]'",
    ):
        cupy_adapter._probe(lib, _FakeGpu(1))


def _threads_after_selecting(backend_name, setup="", env=None):
    """In a fresh process: select ``backend_name`` (after ``setup``), then report the BLAS threads
    threadpoolctl sees and torch's intra-op threads."""
    code = (
        f"import json, portnet.threads as th; {setup}\nimport portnet as pn; pn.set_backend({backend_name!r}); "
        "from threadpoolctl import threadpool_info; import sys; t = sys.modules.get('torch'); "
        "print(json.dumps({'blas': [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'], "
        "'torch': t.get_num_threads() if t else None, 'fitted': th._fitted}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PORTNET_THREADS"} | (env or {})
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_selecting_a_cpu_backend_fits_the_threads_to_the_free_cores(name):
    """Another program busy on one of two cores: the thread pools shrink to the free one, so a
    loop written by hand (the book's) does not stall; every core free: the libraries' defaults."""
    pytest.importorskip("threadpoolctl")
    if name == "torch":
        pytest.importorskip("torch")
    busy = _threads_after_selecting(
        name, "th.usable_cores = lambda: 2; th.busy_cores = lambda: 1.0"
    )
    assert busy["fitted"] == {name: 1} and set(busy["blas"]) == {1}
    if name == "torch":
        assert busy["torch"] == 1
    quiet = _threads_after_selecting(
        name, "th.usable_cores = lambda: 2; th.busy_cores = lambda: 0.1"
    )
    assert quiet["fitted"] == {name: None}
    fixed = _threads_after_selecting(name, env={"PORTNET_THREADS": "1"})
    assert fixed["fitted"] == {name: 1} and set(fixed["blas"]) == {1}


def test_busy_cores_counts_another_program():
    """A process spinning on one core shows as one busy core (the processor's counters)."""
    from portnet import threads

    if not os.path.exists("/proc/stat") or threads.usable_cores() < 2:
        pytest.skip("needs Linux's /proc/stat and two cores")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        seen = max(threads.busy_cores() for _ in range(3))
    finally:
        spinner.kill()
    assert seen >= 0.8, seen


def test_portnet_threads_must_be_a_number():
    from portnet import threads

    with pytest.raises(
        pn.InputError, match=r"threads 'many': expected 'auto' or a positive number"
    ):
        threads.fit_threads("numpy", "many")


def test_busy_cores_counts_only_this_processs_cores(monkeypatch):
    """Under a cpuset (SLURM, a container, taskset) load on other cores is not this process's."""
    import io

    from portnet import threads

    reads = iter([
        "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\ncpu1 100 0 0 900 0 0 0 0\n",
        "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 1000 0 0 0 0\ncpu1 200 0 0 900 0 0 0 0\n",
    ])
    monkeypatch.setattr(threads, "open", lambda *a, **k: io.StringIO(next(reads)), raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.busy_cores() == 0.0  # cpu1, busy the whole time, is not ours
