"""Check a GPU machine in one command, and write a report ready for the README.

    python benchmarks/gpu_check.py [--out gpu-report] [--quick]

For each GPU backend usable here (CuPy, PyTorch on CUDA): the test suite with
PORTNET_REQUIRE_GPU=1 (a missing GPU or missing data fails instead of skipping), the sync audit (a
Trainer epoch under ``cupyx.allow_synchronize(False)`` / ``torch.cuda.set_sync_debug_mode("error")``),
``portnet train`` with the default model and with ``--model deep-conv`` (and the default model
on the CPU, to compare), and the GPU benchmark against PyTorch-CUDA eager (the MLPs and both
ConvNets). It writes ``report.md`` and ``report.json`` in ``--out`` and exits non-zero if any
step failed. On a machine without a usable GPU it says so in one line and exits 1.

A GPU machine may have CuPy, PyTorch and JAX but no network. Bring portnet and its pure-Python
dependencies as wheels, and the data inside the checkout (``shared/`` is ignored by git):

    pip wheel --no-deps -w wheels . array-api-compat array-api-extra array-api-strict threadpoolctl
    cp -r ../shared shared            # MNIST and the book's weights, found by the tests there
    # on the GPU machine, in the copied checkout:
    pip install --no-deps wheels/*.whl
    PORTNET_DATA_DIR=$PWD/shared/data/mnist python benchmarks/gpu_check.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_BACKENDS = {"cupy": ("cupy", 0), "torch-cuda": ("torch", "cuda")}


def usable_gpus() -> tuple[list[str], dict]:
    import portnet as pn

    found, why = [], {}
    for backend_id, (name, device) in GPU_BACKENDS.items():
        try:
            pn.backend.make_backend(name, device)
        except pn.PortnetError as exc:
            why[backend_id] = " ".join(str(exc).split())
            continue
        found.append(backend_id)
    return found, why


def step(report, name, cmd, env=None, timeout=3600):
    """Run ``cmd``, keep its last lines and status in ``report`` (and echo them)."""
    print(f"gpu_check: {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(env or {})})
        status, text = out.returncode, (out.stdout + out.stderr)
    except subprocess.TimeoutExpired as exc:
        status, text = "timeout", f"{exc}"
    tail = "\n".join(text.strip().splitlines()[-15:])
    report["steps"].append({"name": name, "command": " ".join(cmd), "status": status,
                            "seconds": round(time.perf_counter() - start, 1), "tail": tail})
    print(f"gpu_check: {name}: {'ok' if status == 0 else f'FAILED ({status})'}\n{tail}\n", flush=True)
    return status == 0


def environment() -> dict:
    info = {"python": sys.version.split()[0]}
    for module in ("numpy", "array_api_compat", "array_api_extra", "cupy", "torch", "jax"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def markdown(report) -> str:
    lines = ["# portnet on a GPU", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in report["environment"].items()]
    lines += ["", "| step | status | s |", "| --- | --- | ---: |"]
    lines += [f"| {s['name']} | {'ok' if s['status'] == 0 else s['status']} | {s['seconds']} |" for s in report["steps"]]
    for s in report["steps"]:
        lines += ["", f"## {s['name']}", "", f"`{s['command']}`", "", "```text", s["tail"], "```"]
    if report.get("benchmark"):
        lines += ["", "## benchmark", "", report["benchmark"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-report", help="directory for report.md and report.json")
    parser.add_argument("--quick", action="store_true", help="one epoch of each training run, a quick benchmark")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    gpus, why = usable_gpus()
    if not gpus:
        print(f"gpu_check: no usable GPU here ({'; '.join(f'{k}: {v}' for k, v in why.items())})", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(), "gpu_backends": gpus, "steps": []}
    python = sys.executable
    ok = True
    epochs = ["--epochs", "1"] if args.quick else []
    for backend_id in gpus:
        env = {"PORTNET_REQUIRE_GPU": "1"}
        ok &= step(report, f"tests on {backend_id}", [python, "-m", "pytest", "-q", "--backend", backend_id, "-p", "no:cacheprovider"], env)
        ok &= step(report, f"sync audit on {backend_id}",
                   [python, "-m", "pytest", "-q", "tests/test_gpu.py", "-k", "no_host_sync", "--backend", backend_id], env)
        name, device = GPU_BACKENDS[backend_id]
        for model in ("multi-layer", "deep-conv"):
            ok &= step(report, f"portnet train --model {model} on {backend_id}",
                       [python, "-m", "portnet", "train", "--model", model, "--backend", name, "--device", str(device),
                        "--no-progress", *epochs])
    ok &= step(report, "portnet train (default model) on the CPU, to compare",
               [python, "-m", "portnet", "train", "--backend", "numpy", "--no-progress", *epochs])
    bench = [python, "benchmarks/bench_training.py", "--gpu-only", "--only", "mlp,cnn,inference",
             "--json", str(out / "benchmark.json"), "--markdown", str(out / "benchmark.md")] + (["--quick"] if args.quick else [])
    if step(report, "benchmark against PyTorch-CUDA eager", bench):
        report["benchmark"] = (out / "benchmark.md").read_text()
    else:
        ok = False
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    print(f"gpu_check: {'all steps passed' if ok else 'some steps FAILED'}; wrote {out / 'report.md'} and {out / 'report.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
