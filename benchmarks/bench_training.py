"""Training and inference speed of portnet against hand-written NumPy and PyTorch, in one run.

    python benchmarks/bench_training.py [--repeats 5] [--json benchmark-results.json] [--quick]

Every runner trains the same MLP (float32, SGD lr 0.1, MNIST, one epoch = 60000 samples) and is
timed epoch by epoch, the runners interleaved (a warm-up epoch each, excluded; the median of the
repeats reported). Runners: portnet's Trainer on every backend usable here; the book's algorithm
written in plain NumPy; PyTorch eager (nn.Linear + autograd + optim.SGD); the same step as
portnet's written directly in PyTorch; on a GPU also CuPy and PyTorch-CUDA. The floor is the
step's arithmetic (6 x batch x weights FLOPs) at the float32 matmul rate measured in this run.
"""

from __future__ import annotations

import argparse
import functools
import gc
import subprocess
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

import portnet as pn
from portnet import backend as backends

SIZES = [("784-50-10", [50], 100), ("784-50-10", [50], 1000), ("784-1000-1000-10", [1000, 1000], 1000)]
LR = 0.1


# --------------------------------------------------------------------------- runners
class PortnetRunner:
    """portnet's Trainer, one epoch per call."""

    def __init__(self, backend_id, name, device, hidden, batch, data):
        self.label = f"portnet {backend_id}"
        self.sync = _sync_for(name)
        with pn.use_backend(name, device):
            (x, t), (xt, tt) = data
            x, t, xt, tt = (pn.asarray(a) for a in (x, t, xt, tt))
            net = pn.MultiLayerNet(784, hidden, 10, seed=0)
            self.trainer = pn.Trainer(net, x, t, xt, tt, epochs=1, mini_batch_size=batch, optimizer="sgd",
                                      optimizer_param={"lr": LR}, verbose=False, progress=False, seed=0)

    def epoch(self):
        self.trainer.train_epoch()
        self.sync()

    def loss(self):
        return float(np.mean(self.trainer.train_loss_list[-50:]))


class NumpyBookRunner:
    """The book's algorithm (Affine/ReLU/SoftmaxWithLoss, backprop, SGD) written in plain NumPy."""

    label = "numpy (book, by hand)"

    def __init__(self, hidden, batch, data):
        (self.x, self.t), _ = data
        rng = np.random.default_rng(0)
        sizes = [784, *hidden, 10]
        self.W = [(np.sqrt(2.0 / m) * rng.standard_normal((m, n))).astype(np.float32) for m, n in zip(sizes, sizes[1:])]
        self.b = [np.zeros(n, np.float32) for n in sizes[1:]]
        self.batch, self.rng, self.losses = batch, rng, []

    def epoch(self):
        order = self.rng.permutation(self.x.shape[0])
        for i in range(self.x.shape[0] // self.batch):
            idx = order[i * self.batch : (i + 1) * self.batch]
            x, t = self.x[idx], self.t[idx]
            acts, masks = [x], []
            for W, b in zip(self.W[:-1], self.b[:-1]):
                a = acts[-1] @ W + b
                masks.append(a <= 0)
                a[masks[-1]] = 0
                acts.append(a)
            scores = acts[-1] @ self.W[-1] + self.b[-1]
            y = np.exp(scores - scores.max(axis=1, keepdims=True))
            y /= y.sum(axis=1, keepdims=True)
            n = t.shape[0]
            self.losses.append(-np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n)
            dout = y
            dout[np.arange(n), t] -= 1
            dout /= n
            for k in range(len(self.W) - 1, -1, -1):
                dW, db = acts[k].T @ dout, dout.sum(axis=0)
                dout = dout @ self.W[k].T  # the book computes dx for every layer, the first too
                if k:
                    dout[masks[k - 1]] = 0
                self.W[k] -= LR * dW
                self.b[k] -= LR * db

    def loss(self):
        return float(np.mean(self.losses[-50:]))


class _TorchRunner:
    """The dataset as tensors on ``device``, and what the PyTorch runners share."""

    kind = ""

    def __init__(self, device, batch, data):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.label = f"torch {self.kind} ({self.device.type})"
        (x, t), _ = data
        self.x = torch.as_tensor(x, device=self.device)
        self.t = torch.as_tensor(t, device=self.device)
        self.batch, self.losses = batch, []
        self.sync = _sync_for("torch" if self.device.type == "cuda" else "numpy")

    def loss(self):
        return float(self.torch.stack(self.losses[-50:]).mean())


class TorchEagerRunner(_TorchRunner):
    """PyTorch as people write it: nn.Linear layers, autograd, optim.SGD."""

    kind = "eager"

    def __init__(self, device, hidden, batch, data):
        super().__init__(device, batch, data)
        torch = self.torch
        torch.manual_seed(0)
        sizes = [784, *hidden, 10]
        layers = []
        for m, n in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(m, n), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)

    def epoch(self):
        torch = self.torch
        order = torch.randperm(self.x.shape[0], device=self.device)
        for i in range(self.x.shape[0] // self.batch):
            idx = order[i * self.batch : (i + 1) * self.batch]
            loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.t[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.losses.append(loss.detach())
        self.sync()


class TorchManualRunner(_TorchRunner):
    """portnet's step written directly in PyTorch: the same math, no array-API layer in between."""

    kind = "by hand"

    def __init__(self, device, hidden, batch, data):
        super().__init__(device, batch, data)
        torch = self.torch
        rng = np.random.default_rng(0)
        sizes = [784, *hidden, 10]
        self.W = [torch.as_tensor((np.sqrt(2.0 / m) * rng.standard_normal((m, n))).astype(np.float32), device=self.device)
                  for m, n in zip(sizes, sizes[1:])]
        self.b = [torch.zeros(n, device=self.device) for n in sizes[1:]]
        self.classes = torch.arange(10, device=self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(0)

    def epoch(self):
        torch = self.torch
        order = torch.randperm(self.x.shape[0], generator=self.gen, device=self.device)
        for i in range(self.x.shape[0] // self.batch):
            idx = order[i * self.batch : (i + 1) * self.batch]
            x, t = self.x[idx], self.t[idx]
            acts, masks = [x], []
            for W, b in zip(self.W[:-1], self.b[:-1]):
                a = acts[-1] @ W + b
                masks.append(a <= 0)
                acts.append(torch.where(masks[-1], 0.0, a))
            scores = acts[-1] @ self.W[-1] + self.b[-1]
            e = torch.exp(scores - torch.amax(scores, dim=1, keepdim=True))
            y = e / torch.sum(e, dim=1, keepdim=True)
            onehot = (t[:, None] == self.classes).to(y.dtype)
            n = t.shape[0]
            self.losses.append(-torch.sum(torch.log(torch.sum(y * onehot, dim=1) + 1e-7)) / n)
            dout = (y - onehot) / n
            for k in range(len(self.W) - 1, -1, -1):
                dW, db = acts[k].T @ dout, torch.sum(dout, dim=0)
                if k:
                    dout = torch.where(masks[k - 1], 0.0, dout @ self.W[k].T)
                self.W[k] = self.W[k] - LR * dW
                self.b[k] = self.b[k] - LR * db
        self.sync()


def _sync_for(name):
    if name == "cupy":
        import cupy

        return lambda: cupy.cuda.Device().synchronize()
    if name == "torch":
        import torch

        return (lambda: torch.cuda.synchronize()) if torch.cuda.is_available() else (lambda: None)
    return lambda: None


# --------------------------------------------------------------------------- measuring
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def matmul_rate(repeats=5) -> float:
    """float32 matmul FLOP/s of NumPy's BLAS on this machine (2048^3)."""
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / min(times)


def step_flops(hidden, samples) -> float:
    sizes = [784, *hidden, 10]
    return 6.0 * samples * sum(m * n for m, n in zip(sizes, sizes[1:]))


BACKEND_IDS = {"numpy": ("numpy", None), "torch-cpu": ("torch", "cpu"), "jax": ("jax", None),
               "array_api_strict": ("array_api_strict", None), "cupy": ("cupy", 0), "torch-cuda": ("torch", "cuda")}


@functools.lru_cache(maxsize=None)
def available_backends(include_slow):
    """(id, name, device) of every portnet backend usable here (the skipped ones said once)."""
    found = []
    for backend_id, (name, device) in BACKEND_IDS.items():
        if name in ("jax", "array_api_strict") and not include_slow:
            continue
        try:
            backends.make_backend(name, device)
        except (backends.BackendUnavailableError, ValueError) as exc:
            print(f"  skipped portnet {backend_id}: {exc}", file=sys.stderr)
            continue
        found.append((backend_id, name, device))
    return found


def bench_training(data, repeats, include_slow):
    results = []
    torch_devices = []
    try:
        import torch

        torch_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    except ImportError:
        print("  skipped the PyTorch baselines: torch is not installed", file=sys.stderr)
    rate = matmul_rate()
    for size, hidden, batch in SIZES:
        runners = [NumpyBookRunner(hidden, batch, data)]
        for device in torch_devices:
            runners += [TorchEagerRunner(device, hidden, batch, data), TorchManualRunner(device, hidden, batch, data)]
        for backend_id, name, device in available_backends(include_slow):
            runners.append(PortnetRunner(backend_id, name, device, hidden, batch, data))
        times = {r.label: [] for r in runners}
        for r in runners:  # warm-up
            r.epoch()
        for _ in range(repeats):
            for r in runners:
                gc.collect()
                start = time.perf_counter()
                r.epoch()
                times[r.label].append(time.perf_counter() - start)
        floor = step_flops(hidden, data[0][0].shape[0] // batch * batch) / rate
        for r in runners:
            t = statistics.median(times[r.label])
            results.append({
                "size": size, "batch": batch, "runner": r.label, "s_per_epoch": t,
                "samples_per_s": data[0][0].shape[0] / t, "floor_s": floor, "final_loss": r.loss(),
                "epochs_timed": repeats,
            })
        del runners
    return results, rate


def bench_inference(data, weights_path, repeats):
    """The book's 3-layer net (sigmoid, sigmoid, softmax) with its trained weights, over the test set."""
    results = []
    _, (x_test, t_test) = data
    with pn.use_backend("numpy"):
        book = pn.load_book_weights(weights_path)

    def book_numpy(x):
        z1 = 1 / (1 + np.exp(-(x @ book["W1"] + book["b1"])))
        z2 = 1 / (1 + np.exp(-(z1 @ book["W2"] + book["b2"])))
        a3 = z2 @ book["W3"] + book["b3"]
        e = np.exp(a3 - a3.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    candidates = [("numpy (book, by hand)", "numpy", None, book_numpy)]
    for backend_id, name, device in available_backends(include_slow=False):
        candidates.append((f"portnet {backend_id}", name, device, None))
    for batch in (100, 10000):
        for label, name, device, fn in candidates:
            with pn.use_backend(name, device):
                weights = {k: pn.asarray(v) for k, v in book.items()}
                x = pn.asarray(x_test)
                xp = pn.get_namespace()
                sync = _sync_for(name)

                def predict(xb):
                    if fn is not None:
                        return fn(xb)
                    z1 = pn.sigmoid(xb @ weights["W1"] + weights["b1"])
                    z2 = pn.sigmoid(z1 @ weights["W2"] + weights["b2"])
                    return pn.softmax(z2 @ weights["W3"] + weights["b3"])

                def run():
                    correct = 0
                    for i in range(0, x.shape[0], batch):
                        correct = correct + xp.count_nonzero(xp.argmax(predict(x[i : i + batch, ...]), axis=1) == pn.asarray(t_test[i : i + batch]))
                    result = int(correct)
                    sync()
                    return result

                run()
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    correct = run()
                    times.append(time.perf_counter() - start)
                t = statistics.median(times)
                results.append({"batch": batch, "runner": label, "s": t, "samples_per_s": x.shape[0] / t,
                                "accuracy": correct / x.shape[0]})
    return results


def make_runner(label, size_index, data):
    """The runner called ``label`` for ``SIZES[size_index]`` (for a memory child process)."""
    _, hidden, batch = SIZES[size_index]
    if label.startswith("numpy"):
        return NumpyBookRunner(hidden, batch, data)
    if label.startswith("torch eager"):
        return TorchEagerRunner(label.split("(")[1].rstrip(")"), hidden, batch, data)
    backend_id = label.removeprefix("portnet ")
    return PortnetRunner(backend_id, *BACKEND_IDS[backend_id], hidden, batch, data)


def memory_child(label, size_index, epochs, data_dir):
    """In a fresh process: RSS after loading data, after setup, and after each epoch (MB).

    The runner's library is imported first, so that 'setup' counts the runner's own arrays."""
    if label.startswith("portnet "):
        backends.make_backend(*BACKEND_IDS[label.removeprefix("portnet ")])
    with pn.use_backend("numpy"):
        data = pn.load_mnist(data_dir=data_dir)
    loaded = rss_mb()
    runner = make_runner(label, size_index, data)
    setup = rss_mb()
    after = []
    for _ in range(epochs):
        runner.epoch()
        gc.collect()
        after.append(rss_mb())
    print(json.dumps({"runner": label, "size": SIZES[size_index][0], "batch": SIZES[size_index][2],
                      "rss_data_mb": loaded, "setup_mb": setup - loaded, "rss_per_epoch_mb": after,
                      "growth_after_first_epoch_mb": after[-1] - after[0], "device_memory": device_memory()}))


def device_memory():
    """Bytes held by the GPU memory pools, where there is a GPU."""
    out = {}
    try:
        import cupy

        out["cupy_pool_bytes"] = cupy.get_default_memory_pool().used_bytes()
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            out["torch_cuda_allocated_bytes"] = torch.cuda.memory_allocated()
    except ImportError:
        pass
    return out


def bench_memory(labels, size_index, epochs, data_dir):
    rows = []
    for label in labels:
        cmd = [sys.executable, __file__, "--memory-child", label, str(size_index), str(epochs)]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  memory of {label}: failed ({out.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


# --------------------------------------------------------------------------- report
def report(training, inference, memory, rate, machine):
    print(f"\n{machine}; float32 matmul {rate / 1e9:.0f} GFLOP/s (NumPy BLAS, measured in this run)\n")
    print(f"{'size':<17} {'batch':>5}  {'runner':<26} {'s/epoch':>8} {'samples/s':>10} "
          f"{'/numpy':>7} {'/torch':>7} {'/floor':>7}")
    for row in training:
        same = [r for r in training if r["size"] == row["size"] and r["batch"] == row["batch"]]
        base_np = next(r["s_per_epoch"] for r in same if r["runner"].startswith("numpy"))
        eager = [r["s_per_epoch"] for r in same if r["runner"] == "torch eager (cpu)"]
        print(f"{row['size']:<17} {row['batch']:>5}  {row['runner']:<26} {row['s_per_epoch']:>8.3f} "
              f"{row['samples_per_s']:>10.0f} {row['s_per_epoch'] / base_np:>7.2f} "
              f"{(row['s_per_epoch'] / eager[0]) if eager else float('nan'):>7.2f} "
              f"{row['s_per_epoch'] / row['floor_s']:>7.2f}")
    by_hand = {(r["size"], r["batch"]): r["s_per_epoch"] for r in training if r["runner"] == "torch by hand (cpu)"}
    for r in training:
        if r["runner"] == "portnet torch-cpu" and (r["size"], r["batch"]) in by_hand:
            print(f"portnet torch-cpu / torch by hand, {r['size']} batch {r['batch']}: "
                  f"{r['s_per_epoch'] / by_hand[(r['size'], r['batch'])]:.2f}")
    print("\ninference, the book's 3-layer net over the 10000 test images")
    print(f"{'batch':>6}  {'runner':<26} {'s':>8} {'samples/s':>10} {'accuracy':>9}")
    for row in inference:
        print(f"{row['batch']:>6}  {row['runner']:<26} {row['s']:>8.4f} {row['samples_per_s']:>10.0f} {row['accuracy']:>9.4f}")
    if memory:
        print("\nmemory, each runner alone in a fresh process (RSS, MB; MNIST as float32 is 188 MB)")
        print(f"{'size':<17} {'batch':>5}  {'runner':<26} {'data':>6} {'setup':>6} {'epochs':>24} {'growth':>7}")
        for m in memory:
            per_epoch = " ".join(f"{v:.0f}" for v in m["rss_per_epoch_mb"])
            print(f"{m['size']:<17} {m['batch']:>5}  {m['runner']:<26} {m['rss_data_mb']:>6.0f} {m['setup_mb']:>+6.0f} "
                  f"{per_epoch:>24} {m['growth_after_first_epoch_mb']:>+7.1f}")
    print(f"\npeak RSS of the timing process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    name = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            name += f"; GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per runner (median reported)")
    parser.add_argument("--json", default="benchmark-results.json", help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="784-50-10 only, 3 repeats")
    parser.add_argument("--slow-backends", action="store_true", help="also time jax and array_api_strict")
    parser.add_argument("--data-dir", help="MNIST directory (default: $PORTNET_DATA_DIR or the cache)")
    parser.add_argument("--weights", help="the book's sample_weight.pkl (default: ../shared/data/book/)")
    parser.add_argument("--memory-child", nargs=3, metavar=("RUNNER", "SIZE", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        label, size_index, epochs = args.memory_child
        return memory_child(label, int(size_index), int(epochs), args.data_dir)
    if args.quick:
        SIZES[:] = SIZES[:2]
        args.repeats = min(args.repeats, 3)
    with pn.use_backend("numpy"):
        data = pn.load_mnist(data_dir=args.data_dir)
    machine = machine_name()
    training, rate = bench_training(data, args.repeats, args.slow_backends)
    weights = args.weights or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "book", "sample_weight.pkl")
    inference = []
    if os.path.isfile(weights):
        inference = bench_inference(data, weights, args.repeats)
    else:
        print(f"  skipped inference: the book's sample_weight.pkl is not at {weights} (pass --weights)", file=sys.stderr)
    labels = ["numpy (book, by hand)", *(f"portnet {b[0]}" for b in available_backends(args.slow_backends))]
    memory = bench_memory(labels, 0, 4, args.data_dir)
    if not args.quick:
        memory += bench_memory(["portnet numpy", "portnet torch-cpu"], 2, 5, args.data_dir)
    report(training, inference, memory, rate, machine)
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "matmul_flops": rate, "training": training, "inference": inference, "memory": memory,
                   "versions": pn.backend_info()["versions"], "argv": sys.argv}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
