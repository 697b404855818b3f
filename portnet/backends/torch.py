"""PyTorch: the CPU and CUDA devices, its own generator, its own intra-op thread pool."""

from __future__ import annotations

import time
import warnings

from ..errors import BackendUnavailableError, InputError
from . import CPU_BACKENDS, Adapter

#: Device types that hold data to compute with ('meta' holds none).
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


class Torch(Adapter):
    name = "torch"
    native_random = True
    install = "pip install torch, or from portnet's source directory pip install '.[torch]'"

    def resolve_device(self, lib, spec):
        try:
            dev = lib.device(spec if spec is not None else "cpu")
        except (RuntimeError, TypeError):
            raise InputError(
                f"unknown torch device {spec!r}; expected e.g. 'cpu', 'cuda', 'cuda:1'"
            ) from None
        if dev.type not in _DEVICE_TYPES:
            raise InputError(
                f"torch device {spec!r} cannot hold data to compute with; expected 'cpu' or 'cuda[:N]'"
            )
        if dev.type == "cuda":
            count = lib.cuda.device_count() if lib.cuda.is_available() else 0
            if (dev.index or 0) >= count:
                raise BackendUnavailableError(
                    f"torch device {str(dev)!r} is not visible: {count} usable NVIDIA GPU(s) found (torch "
                    f"{lib.__version__}, CUDA build: {lib.version.cuda or 'no'}); {CPU_BACKENDS}"
                )
        try:  # the device its own tensors report: 'cuda' -> 'cuda:0', 'cpu:0' -> 'cpu'
            return lib.empty(0, device=dev).device
        except RuntimeError as exc:
            raise BackendUnavailableError(
                f"torch device {str(dev)!r} is not usable: {exc}"
            ) from None

    def thread_pool(self, device):
        return "torch" if device.type == "cpu" else None

    def limit_threads(self, n):
        self.load().set_num_threads(n)

    def thread_count(self):
        return self.load().get_num_threads()

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def generator(self, seed, device):
        return _TorchGenerator(seed, device)

    def step_compiler(self):
        return compile_steps


class _TorchGenerator:
    """``torch.Generator`` on the device, with the methods :class:`portnet.randomness.Random` uses."""

    def __init__(self, seed, device):
        import torch

        self.torch, self.device = torch, device
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def uniform(self, shape, dtype):
        return self.torch.rand(shape, generator=self.gen, device=self.device, dtype=dtype)

    def permutation(self, n):
        return self.torch.randperm(n, generator=self.gen, device=self.device)

    def integers(self, low, high, size):
        return self.torch.randint(low, high, (size,), generator=self.gen, device=self.device)

    def get_state(self):
        """The generator's state as a NumPy array of bytes."""
        return self.gen.get_state().numpy().copy()

    def set_state(self, state):
        import numpy as np

        self.gen.set_state(self.torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8)))


def compile_steps(step):
    """``torch.compile`` of one pure step, run once per row of ``idx``: ``(state, idx of shape
        (steps, batch)) -> (state, losses)``. On a GPU in mode 'reduce-overhead': the step is
        captured as a CUDA graph and replayed, one launch a step; its outputs live in the graph's own
        memory, which the next replay writes, so the losses and the final state are copied out. The
    first call of each shape compiles; its time (with that one step) is in ``compile_seconds``."""
    import torch

    compiled, shapes = {}, set()

    def run(state, idx):
        graphs = idx.device.type == "cuda"
        fn = compiled.get(graphs)
        if fn is None:  # the compiler's own imports take seconds: counted as compiling
            start = time.perf_counter()
            mode = "reduce-overhead" if graphs else None
            fn = compiled[graphs] = torch.compile(step, mode=mode, dynamic=False)
            run.compile_seconds += time.perf_counter() - start
        losses = []
        for row in idx.unbind(0):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            if row.shape in shapes:
                state, loss = fn(state, row)
            else:  # traced and compiled in this call: timed, and Dynamo's notes on
                # array-api-compat's caches kept quiet
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", module=r"torch\._dynamo")
                    state, loss = fn(state, row)
                run.compile_seconds += time.perf_counter() - start
                shapes.add(row.shape)
            losses.append(loss.clone() if graphs else loss)
        if graphs:
            state = torch.utils._pytree.tree_map(
                lambda a: a.clone() if isinstance(a, torch.Tensor) else a, state
            )
        return state, torch.stack(losses)

    run.compile_seconds = 0.0
    return run


ADAPTER = Torch()
