"""Check a GPU machine in one command that fits a GPU lease, and leave a report however it ends.

    python benchmarks/gpu_check.py [--steps tests,audit,train,bench] [--backend cupy|torch-cuda ...]
                                   [--budget 540] [--out gpu-report] [--logs DIR] [--rehearse]

Each step gets its share of the budget, taken from the time left when it starts (a step that
ends early leaves its time to the next), and is stopped when that share is spent:

- ``tests`` (30 %): the suite's GPU subset, ``tests/test_gpu.py`` first (the backend matrix's tests
  on each GPU backend with PORTNET_REQUIRE_GPU=1; the CPU-only ones skip, saying so; no test
  starts once the share is spent), then the parity probe: loss and gradients against NumPy
  float64 (``benchmarks/gpu_probe.py``);
- ``audit`` (12 %): no host synchronisation inside a Trainer epoch (``tests/test_gpu.py``: CuPy under
  ``cupyx.allow_synchronize(False)`` with warnings as errors, torch's sync debug mode) and, apart,
  CUDA stream capture of a training step of each network and of a shuffle (CuPy);
- ``train`` (28 %): ``portnet train``, the default model (3 epochs) then ``--model deep-conv`` (2
  epochs), on each backend: accuracies and seconds per epoch;
- ``bench`` (30 %): ``bench_training.py`` cut to the default model, both ConvNets (250 steps
  each) and inference, portnet against PyTorch-CUDA eager.

The default budget, 540 s, holds all of it within the 10 minutes that one command of a lease may
run, on one H100/H200. ``report.json`` and ``report.md`` (in ``--out``; the logs in ``--logs``,
which can go elsewhere where only a few files come back: the report holds each part's last
lines) are rewritten after every part, so a run cut short still reports: each step's status (ok,
failed, cut short: its share was spent, or not chosen), its seconds and parts, the versions
(driver, CUDA, CuPy, torch, JAX), the GPU, the TF32 settings, the parity figures, the seconds per
epoch and the benchmark's tables. It exits 0 when every chosen step is ok. On a machine without a
usable GPU it says so in one line and exits 1.

``--rehearse`` runs it all on the CPU (CI does): the same steps, subprocesses and report, with
array_api_strict's device1 standing in for CuPy and torch on the CPU for torch-cuda, small sizes
and a 240 s ceiling (37-59 s of work on two CPU cores shared with other work).

The checkout's code is what runs: its root comes first on every subprocess's PYTHONPATH. The data
are found as the tests find them, in ``../shared/data`` beside the checkout or ``shared/data`` in
it (PORTNET_DATA_DIR and PORTNET_BOOK_DIR override). A GPU machine without network gets the
pure-Python dependencies as wheels and the data inside the checkout (``shared/`` and ``wheels/``
are ignored by git: copy them along), a tree of 16 MiB (measured: 15.3 MiB of data, 0.3 MiB of
wheels, 0.5 MiB of code):

    pip wheel --no-deps -w wheels array-api-compat array-api-extra array-api-strict threadpoolctl
    mkdir -p shared && cp -r ../shared/data shared/      # MNIST and the book's weights
    # there, in the copied checkout, with the Python that has CuPy and PyTorch:
    python -m pip install --no-deps wheels/*.whl
    python benchmarks/gpu_check.py --out gpu-report
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from paths import ROOT, SHARED

STARTED = time.monotonic()  # the budget counts from here
STEPS = {
    "tests": 0.30,
    "audit": 0.12,
    "train": 0.28,
    "bench": 0.30,
}  # each step's weight in the budget
GPU_BACKENDS = {"cupy": ("cupy", 0), "torch-cuda": ("torch", "cuda")}
STAND_INS = {
    "cupy": ("array_api_strict-device1", "array_api_strict", "device1"),
    "torch-cuda": ("torch-cpu", "torch", "cpu"),
}
GRACE = 10  # seconds a stopped subprocess has between SIGTERM and SIGKILL
#: What the steps run, sized to fit their shares: on one H100/H200, and on two CPU cores.
SIZES = {
    "gpu": {
        "budget": 540,
        "tests": None,
        "bench": ["--repeats", "3", "--conv-steps", "50"],
        "train": {"multi-layer": ["--epochs", "3"], "deep-conv": ["--epochs", "2"]},
    },
    "rehearsal": {
        "budget": 240,
        "tests": ["tests/test_gpu.py", "tests/test_trainer.py"],
        "bench": ["--repeats", "1", "--conv-steps", "1", "--limit", "1000"],
        "train": {
            "multi-layer": ["--epochs", "2", "--limit", "2000"],
            "deep-conv": ["--epochs", "1", "--limit", "100"],
        },
    },
}
#: `portnet train`'s line for each epoch (what follows each figure may vary).
EPOCH_LINE = re.compile(
    r"^epoch\s+(\d+)/(\d+):.*?train acc ([0-9.]+).*?test acc ([0-9.]+).*?loss ([^,\s]+).*?([0-9.]+) s$",
    re.M,
)


@dataclass
class Part:
    """One subprocess of a step: its command (given its share in seconds), its weight in the
    step's share, and ``read(entry, exit status)``, which returns its (status, detail)."""

    name: str
    command: Callable[[float], list]
    read: Callable[[dict, int], tuple]
    weight: float = 1.0
    env: dict = field(default_factory=dict)


class Check:
    def __init__(self, args, backends):
        self.start, self.budget = STARTED, args.budget
        self.rehearse, self.sizes = args.rehearse, SIZES["rehearsal" if args.rehearse else "gpu"]
        self.backends = backends  # [(check's name, matrix id, library, device)]
        self.out, self.logs = args.out, args.logs
        self.mnist, self.book = data_dirs()
        self.python = sys.executable
        chosen = args.steps
        self.report = {
            "rehearsal": self.rehearse,
            "budget_s": self.budget,
            "backends": [{"backend": b, "runs_on": i} for b, i, _, _ in backends],
            "data": {"mnist": str(self.mnist), "book": str(self.book), "found": data_source()},
            "environment": {**environment(), "portnet imported from": self.imported_from()},
            "tf32": tf32_settings(),
            "steps": [
                {
                    "name": s,
                    "status": "pending" if s in chosen else "not chosen",
                    "seconds": 0.0,
                    "planned_share_s": round(
                        self.budget * STEPS[s] / sum(STEPS[c] for c in chosen), 1
                    )
                    if s in chosen
                    else 0.0,
                    "parts": [],
                }
                for s in STEPS
            ],
            "parity": [],
            "epochs": [],
            "capture": [],
            "benchmark": None,
        }
        self.write()

    # ------------------------------------------------------------------ running
    def env(self, extra=None) -> dict:
        """The subprocesses' environment: the checkout first on the path, output unbuffered (a log
        is whole when its process is stopped), JAX allocating as it goes (not 75 % of the GPU at
        its first use), no backend chosen by a variable."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            **(extra or {}),
        }
        for name in ("PORTNET_BACKEND", "PORTNET_DEVICE", "PORTNET_DTYPE"):
            env.pop(name, None)
        return env

    def imported_from(self) -> str:
        out = subprocess.run(
            [self.python, "-c", "import portnet; print(portnet.__file__)"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        return out.stdout.strip() or " ".join(out.stderr.split())[-300:]

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def run_step(self, name, remaining):
        step = next(s for s in self.report["steps"] if s["name"] == name)
        share = max(0.0, self.left() * STEPS[name] / sum(STEPS[s] for s in remaining))
        step.update(status="running", share_s=round(share, 1))
        start = time.monotonic()
        parts = getattr(self, f"_{name}")()
        for i, part in enumerate(parts):
            left = share - (time.monotonic() - start)
            self.run_part(
                step, part, max(0.0, left * part.weight / sum(p.weight for p in parts[i:]))
            )
        statuses = [p["status"] for p in step["parts"]]
        step["status"] = next(
            (s for s in ("failed", "cut short", "skipped") if s in statuses), "ok"
        )
        step["seconds"] = round(time.monotonic() - start, 1)
        self.write()
        print(
            f"gpu_check: step {name}: {step['status']} in {step['seconds']} s (share {step['share_s']} s)",
            flush=True,
        )

    def run_part(self, step, part, share):
        log = self.logs / f"{step['name']}-{len(step['parts']) + 1}.log"
        command = part.command(share)
        entry = {
            "name": part.name,
            "status": "running",
            "share_s": round(share, 1),
            "seconds": 0.0,
            "command": shlex.join(command),
            "log": str(log),
        }
        step["parts"].append(entry)
        self.write()
        print(
            f"gpu_check: {step['name']}: {part.name} (share {share:.0f} s): {entry['command']}",
            flush=True,
        )
        start = time.monotonic()
        with open(log, "w") as f:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=self.env(part.env),
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=share)
                stopped = None
            except subprocess.TimeoutExpired:
                stopped = f"stopped at the end of its share ({share:.0f} s)"
            except (
                BaseException
            ):  # gpu_check itself is being stopped: its subprocess goes too, the report says so
                _stop(proc)
                entry.update(
                    status="cut short",
                    detail="gpu_check was stopped",
                    seconds=round(time.monotonic() - start, 1),
                )
                self.write()
                raise
            if stopped:
                code = _stop(proc)
        entry["seconds"] = round(time.monotonic() - start, 1)
        entry["tail"] = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        try:
            status, detail = part.read(entry, code)
        except (
            OSError,
            ValueError,
            KeyError,
            ET.ParseError,
        ) as exc:  # e.g. a result file cut off mid-write
            status, detail = "failed", f"its output could not be read ({type(exc).__name__}: {exc})"
        if stopped:
            status, detail = "cut short", f"{stopped}; {detail}"
        entry.update(status=status, detail=detail)
        self.write()
        print(
            f"gpu_check: {step['name']}: {part.name}: {status}: {detail} ({entry['seconds']} s)",
            flush=True,
        )

    def interrupted(self):
        for entry in [
            *self.report["steps"],
            *(p for s in self.report["steps"] for p in s["parts"]),
        ]:
            if entry["status"] in ("pending", "running"):
                entry.update(status="cut short", detail="gpu_check was stopped")
        self.write()

    # ------------------------------------------------------------------ the steps
    def _pytest(self, title, slug, targets, select, extra_env):
        xml = self.logs / f"{slug}.xml"

        def command(share):
            xml.unlink(missing_ok=True)
            margin = min(30.0, 0.2 * share)  # for the test running when the share is spent
            backends = [a for _, i, _, _ in self.backends for a in ("--backend", i)]
            return [
                self.python,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-rfEs",
                f"--junitxml={xml}",
                f"--time-share={max(0.0, share - margin):.0f}",
                *select,
                *backends,
                *targets,
            ]

        def read(entry, code):
            if not xml.is_file():
                return "failed", f"pytest exited with {code} and left no summary"
            entry["tests"] = counts = junit_counts(xml)
            not_started = sum(
                n for reason, n in counts["skip_reasons"].items() if "--time-share" in reason
            )
            summary = (
                f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
            )
            if counts["failed"] or code != 0:
                return "failed", f"{summary} (exit status {code})"
            if not_started:
                return (
                    "cut short",
                    f"{summary}, of which {not_started} not started: the share was spent",
                )
            if not counts["passed"]:
                return "skipped", f"no test ran: {summary}"
            return "ok", summary

        return Part(title, command, read, env=extra_env)

    def _tests(self):
        files = sorted(
            f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_gpu.py"
        )
        targets = self.sizes["tests"] or ["tests/test_gpu.py", *files]
        suite = self._pytest(
            "the suite's GPU subset",
            "tests",
            targets,
            ["--gpu-subset", "-k", "not no_host_sync"],
            self._require_gpu(),
        )
        suite.weight = 0.85
        parity = self._probe(
            "parity",
            "parity: loss and gradients against NumPy float64",
            [i for _, i, _, _ in self.backends],
            "parity",
            weight=0.15,
        )
        return [suite, parity]

    def _audit(self):
        parts = [
            self._pytest(
                "no host sync inside an epoch (tests/test_gpu.py)",
                "audit",
                ["tests/test_gpu.py"],
                ["-k", "no_host_sync"],
                self._require_gpu(),
            )
        ]
        cupy = [i for b, i, _, _ in self.backends if b == "cupy"]
        if cupy:
            parts.append(
                self._probe(
                    "capture",
                    "stream capture of training steps and a shuffle (CuPy)",
                    cupy,
                    "capture",
                )
            )
        return parts

    def _train(self):
        parts = []
        for model, sizes in self.sizes["train"].items():
            for check_name, backend_id, name, device in self.backends:
                parts.append(
                    Part(
                        f"portnet train --model {model} on {check_name}",
                        lambda share, m=model, n=name, d=device, s=sizes: [
                            self.python,
                            "-m",
                            "portnet",
                            "train",
                            "--model",
                            m,
                            "--backend",
                            n,
                            "--device",
                            str(d),
                            *s,
                            "--no-progress",
                            "--data-dir",
                            str(self.mnist),
                        ],
                        self._epochs(model, check_name),
                    )
                )
        return parts

    def _bench(self):
        results, tables = self.out / "benchmark.json", self.out / "benchmark.md"

        def command(share):
            results.unlink(missing_ok=True)
            tables.unlink(missing_ok=True)
            return [
                self.python,
                "benchmarks/bench_training.py",
                "--backends",
                ",".join(i for _, i, _, _ in self.backends),
                "--only",
                "mlp,cnn,inference",
                "--sizes",
                "default",
                *self.sizes["bench"],
                "--data-dir",
                str(self.mnist),
                "--weights",
                str(self.book / "sample_weight.pkl"),
                "--json",
                str(results),
                "--markdown",
                str(tables),
            ]

        def read(entry, code):
            if not results.is_file():
                return "failed", f"exit status {code}, no results written"
            done = json.loads(results.read_text())
            self.report["benchmark"] = tables.read_text() if tables.is_file() else None
            jobs = [
                j
                for j, key in (("mlp", "training"), ("cnn", "conv"), ("inference", "inference"))
                if done.get(key)
            ]
            detail = f"jobs done: {', '.join(jobs) or 'none'}" + "".join(
                f"; skipped {s}" for s in done.get("skipped", [])
            )
            return ("ok" if code == 0 and len(jobs) == 3 else "failed"), detail

        return [Part("benchmark against PyTorch eager", command, read)]

    def _require_gpu(self):
        return {} if self.rehearse else {"PORTNET_REQUIRE_GPU": "1"}

    def _probe(self, kind, title, ids, key, weight=1.0):
        path = self.logs / f"{kind}.json"

        def command(share):
            path.unlink(missing_ok=True)
            return [
                self.python,
                "benchmarks/gpu_probe.py",
                kind,
                "--backends",
                ",".join(ids),
                "--data-dir",
                str(self.mnist),
                "--json",
                str(path),
            ]

        def read(entry, code):
            if not path.is_file():
                return "failed", f"exit status {code}, no result written"
            result = json.loads(path.read_text())
            self.report[key] = result["rows"] if kind == "parity" else result["captures"]
            if kind == "parity":
                worst = {
                    d: max(max(r["loss"], r["gradient"]) for r in result["rows"] if r["dtype"] == d)
                    for d in result["limits"]
                }
                detail = ", ".join(
                    f"{d} worst {w:.1e} (limit {result['limits'][d]:.0e})" for d, w in worst.items()
                )
            else:
                detail = "; ".join(
                    f"{c['backend']}: "
                    + ", ".join(f"{k}: {v.split(':')[0]}" for k, v in c["results"].items())
                    for c in result["captures"]
                )
            return ("ok" if result["ok"] and code == 0 else "failed"), detail

        return Part(title, command, read, weight=weight)

    def _epochs(self, model, check_name):
        def read(entry, code):
            found = [
                m.groups()
                for m in EPOCH_LINE.finditer(Path(entry["log"]).read_text(errors="replace"))
            ]
            for epoch, of, train_acc, test_acc, loss, seconds in found:
                self.report["epochs"].append(
                    {
                        "backend": check_name,
                        "model": model,
                        "epoch": int(epoch),
                        "of": int(of),
                        "train_acc": float(train_acc),
                        "test_acc": float(test_acc),
                        "loss": float(loss),
                        "s": float(seconds),
                    }
                )
            planned = int(found[-1][1]) if found else None
            detail = f"{len(found)} of {planned or '?'} epochs" + (
                f", test acc {found[-1][3]}" if found else ""
            )
            if code != 0:
                return "failed", f"{detail} (exit status {code})"
            if not found or len(found) != planned:
                return "failed", f"{detail}: its epoch lines are not all in its output"
            return "ok", detail

        return read

    # ------------------------------------------------------------------ the report
    def write(self):
        for path, text in (
            (self.out / "report.json", json.dumps(self.report, indent=1, default=str)),
            (self.out / "report.md", markdown(self.report)),
        ):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def _stop(proc) -> int:
    """SIGTERM to the subprocess's group, SIGKILL after GRACE seconds; its exit status."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def junit_counts(path) -> dict:
    """passed / failed / skipped counts, skip reasons and failures from pytest's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "skip_reasons": {}, "failures": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            counts["failed"] += 1
            counts["failures"].append(
                f"{name}: {' '.join((bad.get('message') or '').split())[:300]}"
            )
        elif skipped is not None:
            counts["skipped"] += 1
            reason = " ".join((skipped.get("message") or "").split())
            counts["skip_reasons"][reason] = counts["skip_reasons"].get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return counts


# --------------------------------------------------------------------------- the machine
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


def data_dirs() -> tuple[Path, Path]:
    return (
        Path(os.environ.get("PORTNET_DATA_DIR") or SHARED / "mnist"),
        Path(os.environ.get("PORTNET_BOOK_DIR") or SHARED / "book"),
    )


def data_source() -> str:
    if os.environ.get("PORTNET_DATA_DIR") or os.environ.get("PORTNET_BOOK_DIR"):
        return "PORTNET_DATA_DIR / PORTNET_BOOK_DIR"
    return (
        "shared/data inside the checkout"
        if SHARED == ROOT / "shared" / "data"
        else "../shared/data beside the checkout"
    )


def environment() -> dict:
    info = {"python": sys.version.split()[0], "portnet (the checkout)": _git_commit()}
    for dist in (
        "numpy",
        "array-api-compat",
        "array-api-extra",
        "array-api-strict",
        "torch",
        "jax",
        "jaxlib",
    ):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = "not installed"
    try:
        import cupy

        runtime = cupy.cuda.runtime
        info["cupy"] = cupy.__version__
        info["CUDA runtime (CuPy)"] = _cuda_version(runtime.runtimeGetVersion())
        info["CUDA driver API"] = _cuda_version(runtime.driverGetVersion())
    except ImportError:
        info["cupy"] = "not installed"
    except Exception as exc:  # CUDARuntimeError and the like: no usable driver
        info["cupy"] = f"{info.get('cupy')}; CUDA: {' '.join(str(exc).split())}"
    try:
        import torch

        info["CUDA (torch build)"] = torch.version.cuda or "none (a CPU build)"
        if torch.cuda.is_available():
            info["GPU (torch)"] = (
                f"{torch.cuda.get_device_name()}, compute capability {torch.cuda.get_device_capability()}"
            )
            info["cuDNN (torch)"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia-smi (GPU, driver, memory)"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia-smi (GPU, driver, memory)"] = f"not available ({exc})"
    return info


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "not a git checkout"
    except (OSError, subprocess.TimeoutExpired):
        return "git not available"


def tf32_settings() -> dict:
    """What decides whether float32 matmuls run in TF32, as a fresh process starts with it."""
    out = {
        "CUPY_TF32": os.environ.get("CUPY_TF32", "unset (CuPy: off)"),
        "NVIDIA_TF32_OVERRIDE": os.environ.get(
            "NVIDIA_TF32_OVERRIDE", "unset (each library decides)"
        ),
    }
    try:
        import torch
    except ImportError:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.9 deprecates the allow_tf32 flags
        for name in (
            "backends.cuda.matmul.allow_tf32",
            "backends.cudnn.allow_tf32",
            "backends.cuda.matmul.fp32_precision",
            "backends.cudnn.conv.fp32_precision",
        ):
            value = torch
            try:
                for attr in name.split("."):
                    value = getattr(value, attr)
            except (AttributeError, RuntimeError):
                continue
            out[f"torch.{name}"] = value
        out["torch.get_float32_matmul_precision()"] = torch.get_float32_matmul_precision()
    return out


# --------------------------------------------------------------------------- report.md
def markdown(report) -> str:
    title = "portnet GPU check" + (": a rehearsal on the CPU" if report["rehearsal"] else "")
    runs = ", ".join(
        b["backend"] + ("" if b["backend"] == b["runs_on"] else f" (stand-in: {b['runs_on']})")
        for b in report["backends"]
    )
    lines = [f"# {title}", "", f"Backends: {runs}. Budget {report['budget_s']:g} s.", ""]
    lines += _table(
        ["step", "status", "s", "share s", "parts"],
        [
            [
                s["name"],
                s["status"],
                s["seconds"],
                s.get("share_s", s["planned_share_s"]),
                "; ".join(
                    f"{p['name']}: {p['status']}" + (f" ({p['detail']})" if p.get("detail") else "")
                    for p in s["parts"]
                ),
            ]
            for s in report["steps"]
        ],
    )
    lines += ["", "## Machine and versions", ""] + _table(
        ["", ""], list(report["environment"].items())
    )
    lines += ["", "## TF32", ""] + _table(["setting", "value"], list(report["tf32"].items()))
    lines += ["", "## Data", ""] + _table(["", ""], list(report["data"].items()))
    if report["parity"]:
        lines += [
            "",
            "## Parity against NumPy float64 (largest difference / largest reference value)",
            "",
        ]
        lines += _table(
            ["backend", "dtype", "model", "loss", "gradient", "worst parameter", "within limit"],
            [
                [
                    r["backend"],
                    r["dtype"],
                    r["model"],
                    f"{r['loss']:.1e}",
                    f"{r['gradient']:.1e}",
                    r["worst_parameter"],
                    r["ok"],
                ]
                for r in report["parity"]
            ],
        )
    if report["epochs"]:
        lines += ["", "## portnet train, per epoch", ""]
        lines += _table(
            ["backend", "model", "epoch", "s", "train acc", "test acc", "loss"],
            [
                [
                    e["backend"],
                    e["model"],
                    f"{e['epoch']}/{e['of']}",
                    e["s"],
                    e["train_acc"],
                    e["test_acc"],
                    e["loss"],
                ]
                for e in report["epochs"]
            ],
        )
    for capture in report["capture"]:
        lines += ["", f"## Stream capture on {capture['backend']} ({capture['recorder']})", ""]
        lines += _table(["recorded", "result"], list(capture["results"].items()))
    if report["benchmark"]:
        lines += ["", "## Benchmark", "", report["benchmark"]]
    for step in report["steps"]:
        for part in step["parts"]:
            lines += [
                "",
                f"### {step['name']}: {part['name']}: {part['status']}",
                "",
                f"`{part['command']}`",
                "",
                "```text",
                part.get("tail", ""),
                "```",
            ]
    return "\n".join(lines) + "\n"


def _table(header, rows) -> list:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows
    ]


# --------------------------------------------------------------------------- the command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated, in this order: {', '.join(STEPS)}",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=GPU_BACKENDS,
        help="a GPU backend (repeatable; default: each one usable here)",
    )
    parser.add_argument(
        "--budget", type=float, help="seconds for the whole check (default 540; rehearsal 240)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu-report"), help="directory for report.md, report.json"
    )
    parser.add_argument(
        "--logs", type=Path, help="directory for the subprocesses' logs (default: OUT/logs)"
    )
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="the whole check on the CPU, with stand-ins for the GPU",
    )
    args = parser.parse_args(argv)
    chosen = [s for s in args.steps.split(",") if s]
    if not chosen or set(chosen) - set(STEPS):
        parser.error(f"--steps {args.steps}: expected some of {', '.join(STEPS)}")
    args.steps = [s for s in STEPS if s in chosen]
    sys.path.insert(0, str(ROOT))
    if args.rehearse:
        backends = [(b, *STAND_INS[b]) for b in (args.backend or GPU_BACKENDS)]
    else:
        gpus, why = usable_gpus()
        wanted = args.backend or gpus
        missing = [b for b in wanted if b not in gpus] or ([] if gpus else list(GPU_BACKENDS))
        if missing:
            print(
                f"gpu_check: no usable GPU here ({'; '.join(f'{b}: {why[b]}' for b in missing)})",
                file=sys.stderr,
            )
            return 1
        backends = [(b, b, *GPU_BACKENDS[b]) for b in wanted]
    mnist, book = data_dirs()
    if (
        not (mnist / "train-images-idx3-ubyte.gz").is_file()
        or not (book / "sample_weight.pkl").is_file()
    ):
        print(
            f"gpu_check: the data are not at {mnist} and {book}: copy them into the checkout "
            f"(mkdir -p shared && cp -r ../shared/data shared/) or set PORTNET_DATA_DIR and PORTNET_BOOK_DIR",
            file=sys.stderr,
        )
        return 1
    if args.budget is None:
        args.budget = SIZES["rehearsal" if args.rehearse else "gpu"]["budget"]
    args.out = args.out.resolve()
    args.logs = (args.logs or args.out / "logs").resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    check = Check(args, backends)
    try:
        for i, name in enumerate(args.steps):
            check.run_step(name, args.steps[i:])
    except (KeyboardInterrupt, SystemExit):
        check.interrupted()
        print(
            f"gpu_check: stopped; wrote {args.out / 'report.md'} and {args.out / 'report.json'}",
            file=sys.stderr,
        )
        raise
    statuses = [s["status"] for s in check.report["steps"] if s["name"] in args.steps]
    summary = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    print(
        f"gpu_check: {summary} in {time.monotonic() - check.start:.0f} s; wrote {args.out / 'report.md'} and "
        f"{args.out / 'report.json'}"
    )
    return 0 if set(statuses) == {"ok"} else 1


if __name__ == "__main__":
    sys.exit(main())
