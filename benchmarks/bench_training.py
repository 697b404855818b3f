"""Training and inference speed of portnet against hand-written NumPy, PyTorch and the book's
own code, in one run; on a GPU machine also CuPy and torch-cuda against PyTorch-CUDA eager.

    python benchmarks/bench_training.py [--only mlp,book-loop,cnn,busy,jax,gradcheck,inference,memory]
                                        [--repeats 5] [--quick] [--slow-backends] [--gpu-only]
                                        [--backends cupy,torch-cuda] [--sizes all|default]
                                        [--conv-steps N] [--limit N]
                                        [--json benchmark-results.json] [--markdown results.md]

Runners take turns round by round (see timing.py) and each figure is the median of the rounds.
"/floor" divides by the step's arithmetic (6 x batch x weights FLOPs) at the float32 matmul rate
measured in the same run, on the runner's own device. ``--backends`` (``--gpu-only``: the GPU
ones usable here) times portnet on those backends only, against PyTorch on their devices. The
results are written after each job, so a run stopped part-way keeps what it measured. The
checkout's portnet is the one timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from paths import ROOT, SHARED

sys.path.insert(0, str(ROOT))  # the checkout's portnet, and tests.reference for the book's layers

import portnet as pn  # noqa: E402
import report  # noqa: E402
import timing  # noqa: E402
from runners_cnn import BookConvNet, CompiledConvNet, PortnetConvNet, TorchEagerConvNet  # noqa: E402
from runners_mlp import NumpyByHand, PortnetBookLoop, PortnetTrainer, TorchByHand, TorchEager  # noqa: E402
from tests.matrix import MATRIX  # noqa: E402

SIZES = {
    "all": [
        ("784-50-10", [50], 100),
        ("784-50-10", [50], 1000),
        ("784-1000-1000-10", [1000, 1000], 1000),
    ],
    "default": [("784-100-100-10", [100, 100], 100)],
}  # default: the model of `portnet train`
SLOW = ("jax", "array_api_strict")


def usable(include_slow=False, gpu_only=False):
    """(id, name, device, gpu) of the backends usable here (each skipped one said once)."""
    found = []
    for backend_id, name, device, gpu in MATRIX:
        if (
            (name in SLOW and not include_slow)
            or backend_id == "array_api_strict-device1"
            or (gpu_only and not gpu)
        ):
            continue
        try:
            pn.backend.make_backend(name, device)
        except pn.PortnetError as exc:
            print(f"  skipped portnet {backend_id}: {exc}", file=sys.stderr)
            continue
        found.append((backend_id, name, device, gpu))
    return found


def chosen(args, include_slow=False):
    """The portnet backends to time: ``--backends`` (each must run here), else those usable here."""
    if args.backends is None:
        return usable(include_slow)
    rows = {row[0]: row for row in MATRIX}
    for backend_id in args.backends:
        pn.backend.make_backend(*rows[backend_id][1:3])  # fails, saying why, where it cannot run
    return [rows[b] for b in args.backends]


def torch_devices(args):
    """The PyTorch baselines' devices: those of ``--backends``, else the CPU and CUDA if present."""
    try:
        import torch
    except ImportError:
        print("  skipped the PyTorch baselines: torch is not installed", file=sys.stderr)
        return []
    torch.set_num_threads(os.cpu_count() or 1)
    if args.backends is not None:
        return list(dict.fromkeys("cuda" if gpu else "cpu" for _, _, _, gpu in chosen(args)))
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def step_flops(hidden, samples) -> float:
    sizes = [784, *hidden, 10]
    return 6.0 * samples * sum(m * n for m, n in zip(sizes, sizes[1:]))


# --------------------------------------------------------------------------- the jobs
def bench_mlp(data, args, rates):
    rows = []
    for size, hidden, batch in SIZES[args.sizes]:
        runners = [] if args.backends is not None else [NumpyByHand(hidden, batch, data)]
        for device in torch_devices(args):
            runners += [
                TorchEager(device, hidden, batch, data),
                TorchByHand(device, hidden, batch, data),
            ]
        for backend_id, name, device, gpu in chosen(args, args.slow_backends):
            runners.append(PortnetTrainer(backend_id, name, device, hidden, batch, data))
            if backend_id == "torch-cpu":  # torch.compile of the pure step (compiles in warm-up)
                runners.append(
                    PortnetTrainer(backend_id, name, device, hidden, batch, data, compile=True)
                )
                runners[-1].label = "portnet torch-cpu compile"
        times = timing.interleaved(runners, args.repeats, lambda r: r.epoch())
        for r in runners:
            on_gpu = "cuda" in r.label or "cupy" in r.label
            floor = (
                step_flops(hidden, data[0][0].shape[0] // batch * batch)
                / rates["gpu" if on_gpu else "cpu"]
            )
            t = timing.median(times[r.label])
            rows.append(
                {
                    "size": size,
                    "batch": batch,
                    "runner": r.label,
                    "s_per_epoch": t,
                    "vs_floor": t / floor,
                    "final_loss": r.loss(),
                    "device": "gpu" if on_gpu else "cpu",
                }
            )
        print(f"  timed {size} batch {batch}", file=sys.stderr)
    for device in ("cpu", "gpu"):
        part = [r for r in rows if r["device"] == device]
        eager = "torch eager (cuda)" if device == "gpu" else "torch eager (cpu)"
        report.with_ratios(
            part, ("size", "batch"), {"vs_numpy": "numpy by hand", "vs_eager": eager}
        )
    return rows


def bench_book_loop(data, args):
    """The book's loop (784-50-10, batch 100, SGD, one-hot labels) against the same by hand."""
    runners = [PortnetBookLoop([50], 100, data), NumpyByHand([50], 100, data, book_loop=True)]
    times = timing.interleaved(runners, args.repeats, lambda r: r.epoch())
    p, h = (timing.median(times[r.label]) for r in runners)
    return [
        {
            "what": "the book's loop, 784-50-10 batch 100",
            "runner": runners[0].label,
            "s": p,
            "ratio": p / h,
        },
        {"what": "", "runner": runners[1].label, "s": h, "ratio": 1.0},
    ]


def bench_cnn(data, args):
    rows = []
    conv_data = ((data[0][0].reshape(-1, 1, 28, 28), data[0][1]), data[1])
    epoch = data[0][0].shape[0] // 100
    for kind, steps, book_steps in (
        ("simple", args.conv_steps or 20, 4),
        ("deep", args.conv_steps or 5, 1),
    ):
        model = {"simple": "SimpleConvNet", "deep": "DeepConvNet"}[kind]
        runners = []
        if args.backends is None and not (args.quick and kind == "deep"):
            runners.append(BookConvNet(kind, conv_data))
        runners += [TorchEagerConvNet(device, kind, conv_data) for device in torch_devices(args)]
        runners += [
            PortnetConvNet(b, name, device, kind, conv_data) for b, name, device, _ in chosen(args)
        ]
        if args.backends is None:  # compiled steps: JAX's (its default), torch.compile's (CPU)
            runners += [
                CompiledConvNet(b, name, device, kind, conv_data, steps)
                for b, name, device, _ in usable(True)
                if b == "jax" or (b == "torch-cpu" and kind == "simple")  # Deep's dropout: eager
            ]
        block = {r.label: book_steps if isinstance(r, BookConvNet) else steps for r in runners}
        times = timing.interleaved(runners, args.repeats, lambda r: r.steps(block[r.label]))
        part = []
        for r in runners:
            per_step = timing.median(times[r.label]) / block[r.label]
            part.append(
                {
                    "model": model,
                    "runner": r.label,
                    "s_per_epoch": epoch * per_step,
                    "final_loss": r.loss(),
                }
            )
        for row in part:
            device = "cuda" if ("cuda" in row["runner"] or "cupy" in row["runner"]) else "cpu"
            eager = next(
                (r["s_per_epoch"] for r in part if r["runner"] == f"torch eager ({device})"), None
            )
            book = next((r["s_per_epoch"] for r in part if r["runner"].startswith("book")), None)
            row["vs_eager"] = row["s_per_epoch"] / eager if eager else None
            row["vs_book"] = book / row["s_per_epoch"] if book else None
        rows += part
        print(f"  timed {model}", file=sys.stderr)
    return rows


def bench_busy(data, args):
    """The default `portnet train` model (784-100-100-10, Adam, batch 100) on NumPy, epoch by
    epoch, with the machine quiet and with another program keeping one core busy."""
    rows = []
    for tune in (True, False):
        label = "portnet numpy" + (" (threads tuned, as portnet train)" if tune else "")
        times = {"quiet": [], "busy": []}
        for _ in range(args.repeats):
            for state in ("quiet", "busy"):
                runner = PortnetTrainer(
                    "numpy",
                    "numpy",
                    None,
                    [100, 100],
                    100,
                    data,
                    optimizer="adam",
                    lr=0.001,
                    tune_threads=tune,
                )
                runner.epoch()
                context = timing.busy_core() if state == "busy" else _nothing()
                with context:
                    start = time.perf_counter()
                    runner.epoch()
                    times[state].append(time.perf_counter() - start)
        quiet, busy = timing.median(times["quiet"]), timing.median(times["busy"])
        rows += [
            {
                "what": "default model, one core busy" if tune else "",
                "runner": label + ", quiet",
                "s": quiet,
                "ratio": 1.0,
            },
            {"what": "", "runner": label + ", one core busy", "s": busy, "ratio": busy / quiet},
        ]
    return rows


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def bench_jax(data, args):
    """The default model on JAX, compiled (the Trainer's default) and eager, against NumPy."""
    runners = [
        PortnetTrainer("numpy", "numpy", None, [100, 100], 100, data, optimizer="adam", lr=0.001)
    ]
    for b, name, device, _ in usable(True):
        if name == "jax":
            runners += [
                PortnetTrainer(
                    b, name, device, [100, 100], 100, data, optimizer="adam", lr=0.001, compile=True
                ),
                PortnetTrainer(
                    b, name, device, [100, 100], 100, data, optimizer="adam", lr=0.001, compile=False
                ),
            ]
    if len(runners) == 1:
        return []
    times = timing.interleaved(runners, args.repeats, lambda r: r.epoch())
    base = timing.median(times[runners[0].label])
    return [
        {
            "what": "default model, JAX" if i == 0 else "",
            "runner": r.label,
            "s": timing.median(times[r.label]),
            "ratio": timing.median(times[r.label]) / base,
        }
        for i, r in enumerate(runners)
    ]


def bench_gradcheck(data, args):
    """The book's ch. 5 gradient check: TwoLayerNet 784-50-10, numerical gradient on 3 images."""
    from runners_gradcheck import book_gradient_check, portnet_gradient_check

    (x, t), _ = data
    x, t = x[:3], np.eye(10)[t[:3]]
    runs = {"portnet numpy": portnet_gradient_check, "book's code (numpy)": book_gradient_check}
    times = {label: [] for label in runs}
    for _ in range(max(1, args.repeats // 2)):  # taking turns, like every other comparison
        for label, fn in runs.items():
            start = time.perf_counter()
            worst = fn(x, t)
            assert worst < 1e-6, f"{label}: the gradient check failed ({worst})"
            times[label].append(time.perf_counter() - start)
    book = timing.median(times["book's code (numpy)"])
    return [
        {
            "what": "the book's 3-image gradient check" if i == 0 else "",
            "runner": label,
            "s": timing.median(times[label]),
            "ratio": timing.median(times[label]) / book,
        }
        for i, label in enumerate(runs)
    ]


def bench_inference(data, weights_path, args):
    """The book's 3-layer net (sigmoid, sigmoid, softmax) with its trained weights, over the test set."""
    results = []
    _, (x_test, t_test) = data
    book = pn.read_pickled_arrays(weights_path)
    for batch in (100, 10000):
        for backend_id, name, device, _ in chosen(args):
            with pn.use_backend(name, device):
                w = {k: pn.asarray(v) for k, v in book.items()}
                x, t, xp, sync = (
                    pn.asarray(x_test),
                    pn.asarray(t_test),
                    pn.get_namespace(),
                    timing.sync_for(name, device),
                )

                def run():
                    correct = 0
                    for i in range(0, x.shape[0], batch):
                        z1 = pn.sigmoid(x[i : i + batch, ...] @ w["W1"] + w["b1"])
                        z2 = pn.sigmoid(z1 @ w["W2"] + w["b2"])
                        y = pn.softmax(z2 @ w["W3"] + w["b3"])
                        correct = correct + xp.count_nonzero(
                            xp.argmax(y, axis=1) == t[i : i + batch]
                        )
                    sync()
                    return int(correct)

                run()
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    correct = run()
                    times.append(time.perf_counter() - start)
            results.append(
                {
                    "batch": batch,
                    "runner": f"portnet {backend_id}",
                    "s": timing.median(times),
                    "accuracy": correct / x.shape[0],
                }
            )
    return results


def memory_child(label, epochs, data_dir):
    """In a fresh process: RSS after loading MNIST, after setup, after each epoch (MB)."""
    backend_id = label.removeprefix("portnet ")
    row = next(r for r in MATRIX if r[0] == backend_id) if label.startswith("portnet") else None
    if row:
        pn.backend.make_backend(row[1], row[2])
    with pn.use_backend("numpy"):
        data = pn.load_mnist(data_dir=data_dir)
    loaded = timing.rss_mb()
    runner = (
        PortnetTrainer(backend_id, row[1], row[2], [50], 100, data)
        if row
        else NumpyByHand([50], 100, data)
    )
    setup = timing.rss_mb()
    after = []
    for _ in range(epochs):
        runner.epoch()
        after.append(timing.rss_mb())
    print(
        json.dumps(
            {
                "runner": label,
                "data": round(loaded),
                "setup": round(setup - loaded),
                "per_epoch": " ".join(f"{v:.0f}" for v in after),
                "growth": round(after[-1] - after[0], 1),
            }
        )
    )


def bench_memory(args):
    rows = []
    for label in ["numpy by hand", *(f"portnet {b[0]}" for b in chosen(args, args.slow_backends))]:
        cmd = [sys.executable, __file__, "--memory-child", label, "4"] + (
            ["--data-dir", args.data_dir] if args.data_dir else []
        )
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(
                f"  memory of {label}: failed ({out.stderr.strip().splitlines()[-1:]})",
                file=sys.stderr,
            )
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


JOBS = ("mlp", "book-loop", "cnn", "busy", "jax", "gradcheck", "inference", "memory")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(JOBS), help=f"comma-separated jobs: {', '.join(JOBS)}"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds per runner (the median is reported)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer sizes and rounds; no book DeepConvNet"
    )
    parser.add_argument(
        "--slow-backends",
        action="store_true",
        help="also time jax and array_api_strict in the MLP table",
    )
    parser.add_argument(
        "--gpu-only", action="store_true", help="--backends: the GPU backends usable here"
    )
    parser.add_argument(
        "--backends",
        type=lambda text: [b for b in text.split(",") if b],
        metavar="IDS",
        help="portnet on these backends only (ids of tests/matrix.py), against PyTorch on "
        "their devices; no NumPy or book's-code runners",
    )
    parser.add_argument(
        "--sizes",
        choices=SIZES,
        default="all",
        help="the MLP table's networks: all, or the default model of `portnet train` only",
    )
    parser.add_argument(
        "--conv-steps",
        type=int,
        metavar="N",
        help="ConvNet steps per timed block (default 20 and 5)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="train on the first N training images only"
    )
    parser.add_argument(
        "--json", default="benchmark-results.json", help="where to write the results"
    )
    parser.add_argument("--markdown", help="also write the tables as Markdown here")
    parser.add_argument(
        "--data-dir", help="MNIST directory (default: $PORTNET_DATA_DIR or the cache)"
    )
    parser.add_argument(
        "--weights", help=f"the book's sample_weight.pkl (default: {SHARED / 'book'})"
    )
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("RUNNER", "EPOCHS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child[0], int(args.memory_child[1]), args.data_dir)
    jobs = [j for j in args.only.split(",") if j]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown jobs {unknown}; expected some of {', '.join(JOBS)}")
    known = {row[0] for row in MATRIX}
    if args.backends is not None and (not args.backends or set(args.backends) - known):
        parser.error(
            f"--backends {','.join(args.backends)}: expected ids among {', '.join(sorted(known))}"
        )
    if args.weights and not os.path.isfile(args.weights):
        parser.error(f"--weights {args.weights}: no such file")
    if args.gpu_only:
        args.backends = [b[0] for b in usable(gpu_only=True)]
        if not args.backends:
            parser.error("--gpu-only: no GPU backend is usable here")
    if args.quick:
        SIZES[args.sizes] = SIZES[args.sizes][:2]
        args.repeats = min(args.repeats, 3)
    with pn.use_backend("numpy"):
        (x, t), test = pn.load_mnist(data_dir=args.data_dir)
    data = ((x[: args.limit], t[: args.limit]), test)
    results = {
        "machine": timing.machine_name(),
        "versions": timing.versions(),
        "argv": sys.argv,
        "train_images": x[: args.limit].shape[0],
        "skipped": [],
    }
    rates = {"cpu": timing.matmul_rate("cpu")}
    gpu_backends = [
        b[0] for b in (chosen(args) if args.backends is not None else usable(gpu_only=True)) if b[3]
    ]
    if "torch-cuda" in gpu_backends:
        rates["gpu"] = timing.matmul_rate("cuda")
    elif "cupy" in gpu_backends:
        rates["gpu"] = timing.matmul_rate("cupy")
    results["matmul_flops"] = rates
    results["machine"] += f"; float32 matmul {rates['cpu'] / 1e9:.0f} GFLOP/s (CPU)" + (
        f", {rates['gpu'] / 1e12:.1f} TFLOP/s (GPU, TF32 off)" if "gpu" in rates else ""
    )
    results["pairs"] = []
    weights = args.weights or str(SHARED / "book" / "sample_weight.pkl")
    cpu_jobs = {
        "book-loop": bench_book_loop,
        "busy": bench_busy,
        "jax": bench_jax,
        "gradcheck": bench_gradcheck,
    }
    for job in jobs:
        if job == "mlp":
            results["training"] = bench_mlp(data, args, rates)
        elif job == "cnn":
            results["conv"] = bench_cnn(data, args)
        elif job == "inference" and not os.path.isfile(weights):
            results["skipped"].append(
                f"inference: the book's sample_weight.pkl is not at {weights} (pass --weights)"
            )
        elif job == "inference":
            results["inference"] = bench_inference(data, weights, args)
        elif job == "memory":
            results["memory"] = bench_memory(args)
        elif args.backends is not None:
            results["skipped"].append(f"{job}: CPU comparisons, not run with --backends/--gpu-only")
        else:
            results["pairs"] += cpu_jobs[job](data, args)
        save(results, args)  # after each job: a run stopped part-way keeps what it measured
    print(report.render(results))
    print(f"wrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""))


def save(results, args):
    """The results so far, each file replaced whole (a run stopped while writing leaves the last)."""
    files = [(args.json, json.dumps(results, indent=1, default=str))]
    if args.markdown:
        files.append((args.markdown, report.render(results, markdown=True)))
    for path, text in files:
        with open(f"{path}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)


if __name__ == "__main__":
    main()
