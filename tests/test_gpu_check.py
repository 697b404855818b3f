"""``benchmarks/gpu_check.py --rehearse``: the GPU check end to end on the CPU, as a GPU machine
would run it: from a copy of the checkout with the data inside it (``shared/data``) and no data
variable set, from another directory with a relative ``--out``. Every step must run and pass on
the stand-ins and be in the report; a budget too small still leaves a report that says what was
cut short. Statuses and the report's contents are checked, never durations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["tests", "audit", "train", "bench"]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, mnist_dir, book_dir):
    """A copy of the checkout's code with the data carried into it, and no ``shared/`` beside it."""
    root = tmp_path_factory.mktemp("gpu-check") / "checkout"
    for name in ("portnet", "benchmarks", "tests"):
        shutil.copytree(
            ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    data = root / "shared" / "data"
    data.mkdir(parents=True)
    (data / "mnist").symlink_to(mnist_dir.resolve())
    (data / "book").symlink_to(book_dir.resolve())
    return root


def rehearse(checkout, *args):
    """Run the rehearsal from the directory above the checkout, no PORTNET_ data or backend
    variable set (only the cache directory, so that no user cache is written)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTNET_") or k == "PORTNET_CACHE_DIR"
    }
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, str(checkout / "benchmarks" / "gpu_check.py"), "--rehearse", *args],
        cwd=checkout.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out


def read_report(where):
    assert (where / "report.md").is_file()
    return json.loads((where / "report.json").read_text())


def test_the_rehearsal_runs_every_step_and_reports_it(checkout):
    out = rehearse(checkout, "--out", "report")
    where = checkout.parent / "report"
    report = read_report(where)
    assert out.returncode == 0, (
        f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n"
        + json.dumps(report["steps"], indent=1)[:6000]
    )
    assert [s["name"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        assert step["status"] == "ok" and isinstance(step["seconds"], float) and step["parts"], step
        assert all(
            part["status"] == "ok" and Path(part["log"]).is_absolute() for part in step["parts"]
        ), step
    assert report["rehearsal"] and [b["runs_on"] for b in report["backends"]] == [
        "array_api_strict-device1",
        "torch-cpu",
    ]
    # the data were found inside the checkout, and the checkout's code is what ran
    assert report["data"] == {
        "mnist": str(checkout / "shared" / "data" / "mnist"),
        "book": str(checkout / "shared" / "data" / "book"),
        "found": "shared/data inside the checkout",
    }
    assert report["environment"]["portnet imported from"] == str(
        checkout / "portnet" / "__init__.py"
    )
    # what each step measured is in the report
    tests = report["steps"][0]["parts"][0]["tests"]
    assert tests["passed"] and not tests["failed"]
    assert any(reason.startswith("CPU-only") for reason in tests["skip_reasons"]), tests[
        "skip_reasons"
    ]
    assert {(r["backend"], r["dtype"]) for r in report["parity"]} == {
        (b, d) for b in ("array_api_strict-device1", "torch-cpu") for d in ("float32", "float64")
    }
    (capture,) = report["capture"]
    assert capture["results"]["control: a loss read back (must be refused)"].startswith(
        "refused: HostReadback"
    )
    assert all(
        result == "captured"
        for what, result in capture["results"].items()
        if not what.startswith("control")
    )
    assert {(e["backend"], e["model"]) for e in report["epochs"]} == {
        (b, m) for b in ("cupy", "torch-cuda") for m in ("multi-layer", "deep-conv")
    }
    assert "ConvNets" in report["benchmark"] and "inference" in report["benchmark"]
    markdown = (where / "report.md").read_text()
    assert all(f"| {name} | ok |" in markdown for name in STEPS)


def test_a_budget_too_small_still_leaves_a_report(checkout, tmp_path):
    """No time for the steps chosen: each is stopped at once, says so, and the report lists
    every step, the ones not chosen too."""
    out = rehearse(checkout, "--steps", "audit,bench", "--budget", "0", "--out", str(tmp_path))
    assert out.returncode == 1
    report = read_report(tmp_path)
    assert [(s["name"], s["status"]) for s in report["steps"]] == [
        ("tests", "not chosen"),
        ("audit", "cut short"),
        ("train", "not chosen"),
        ("bench", "cut short"),
    ]
    for part in report["steps"][1]["parts"] + report["steps"][3]["parts"]:
        assert (
            part["status"] == "cut short" and "stopped at the end of its share" in part["detail"]
        ), part
    assert "cut short" in (tmp_path / "report.md").read_text()


def test_no_test_starts_once_the_time_share_is_spent():
    """conftest's --time-share: a test that would start after the share skips, saying why."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "--time-share=0",
            "tests/test_gpu.py::test_the_stand_in_audit_refuses_a_read_back",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "1 skipped" in out.stdout, out.stdout[-2000:]
    assert "not run: the time share of this run was spent (--time-share)" in out.stdout
