"""What a user's run costs when another program keeps one core busy: the README's own training
loop (the book's ch. 5 loop, no Trainer) and ``portnet train``, on NumPy and on torch, each in a
fresh process (so that selecting the backend sees the machine as it is), quiet and busy in turn.

    python benchmarks/bench_busy_loop.py [--rounds 3] [--steps 2000] [--data-dir DIR]

Prints, per runner, the median seconds quiet and busy and their ratio (target: <= 1.3x).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from timing import busy_core, machine_name  # noqa: E402

#: The README's "same code on NumPy and on CuPy" example, timed around its loop.
README_LOOP = """
import time
import numpy as np
import portnet as pn

(x_train, t_train), (x_test, t_test) = pn.load_mnist(normalize=True, one_hot_label=False)
xp = pn.get_namespace()
network = pn.TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=0)
optimizer = pn.SGD(lr=0.1)
rng = np.random.default_rng(0)
start = time.perf_counter()
for i in range({steps}):
    batch_mask = pn.asarray(rng.choice(x_train.shape[0], 100))
    x_batch = xp.take(x_train, batch_mask, axis=0)
    t_batch = xp.take(t_train, batch_mask, axis=0)
    grad = network.gradient(x_batch, t_batch)
    optimizer.update(network.params, grad)
print("loop", time.perf_counter() - start)
"""


def run_readme(backend, steps, env):
    out = _run(
        [sys.executable, "-c", README_LOOP.format(steps=steps)], {**env, "PORTNET_BACKEND": backend}
    )
    return float(re.search(r"^loop ([0-9.]+)$", out, re.M).group(1))


def run_train(backend, env):
    """``portnet train --epochs 1`` (the default model, 600 steps): the epoch's training time."""
    out = _run(
        [
            sys.executable,
            "-m",
            "portnet",
            "train",
            "--epochs",
            "1",
            "--backend",
            backend,
            "--no-progress",
        ],
        env,
    )
    return float(re.search(r"^epoch +1/1: .*, ([0-9.]+) s$", out, re.M).group(1))


def _run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}: {out.stderr.strip()[-500:]}")
    return out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000, help="steps of the README loop")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("PORTNET_DATA_DIR") or str(ROOT.parent / "shared/data/mnist"),
    )
    args = parser.parse_args()
    env = {**os.environ, "PORTNET_DATA_DIR": args.data_dir, "PYTHONPATH": str(ROOT)}
    env.pop("PORTNET_THREADS", None)
    runners = {
        f"README loop, {b}": (lambda b=b: run_readme(b, args.steps, env))
        for b in ("numpy", "torch")
    }
    runners |= {f"portnet train, {b}": (lambda b=b: run_train(b, env)) for b in ("numpy", "torch")}
    print(f"machine: {machine_name()}", flush=True)
    times = {(label, state): [] for label in runners for state in ("quiet", "busy")}
    for k in range(args.rounds):
        for label, runner in runners.items():
            for state in ("quiet", "busy") if k % 2 == 0 else ("busy", "quiet"):
                if state == "busy":
                    with busy_core():
                        times[label, state].append(runner())
                else:
                    time.sleep(0.5)
                    times[label, state].append(runner())
        print(f"round {k + 1}/{args.rounds} done", flush=True)
    print("\n| run | quiet s | busy s | busy / quiet |\n| --- | ---: | ---: | ---: |")
    for label in runners:
        quiet, busy = (
            statistics.median(times[label, "quiet"]),
            statistics.median(times[label, "busy"]),
        )
        print(f"| {label} | {quiet:.2f} | {busy:.2f} | {busy / quiet:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
