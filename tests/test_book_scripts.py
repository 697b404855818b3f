"""The book's own chapter scripts run on portnet with only their imports rewritten.

The scripts are test input, read from ``book-code`` beside the data (``../shared/book-code``, or
``shared/book-code`` inside the checkout; ``PORTNET_BOOK_CODE``): each is copied with its ``from
common.X`` / ``from dataset.mnist`` imports mapped to portnet's modules (the map the README
gives), its iteration constants reduced where CI needs it, and run in a fresh interpreter after
``np.random.seed(0)``, with matplotlib drawing off screen. What it prints (and, for the optimizer
demos, what it plots) is checked against the book's numbers. A script that imports matplotlib
skips where matplotlib is not installed, saying so. The chapter 7-8 scripts in
``tests/book_style`` are written in the book's style from its API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import reference as ref

ROOT = Path(__file__).resolve().parent.parent
BOOK_CODE = Path(
    os.environ.get("PORTNET_BOOK_CODE")
    or next(
        (
            p
            for p in (ROOT.parent / "shared" / "book-code", ROOT / "shared" / "book-code")
            if p.is_dir()
        ),
        ROOT.parent / "shared" / "book-code",
    )
)
BOOK_STYLE = Path(__file__).resolve().parent / "book_style"

#: The whole edit a reader makes: the book's package names to portnet's modules.
IMPORT_MAP = {
    "common.functions": "portnet.functions",
    "common.gradient": "portnet.gradient",
    "common.layers": "portnet.layers",
    "common.optimizer": "portnet.optimizers",
    "common.trainer": "portnet.trainer",
    "common.util": "portnet.util",
    "common.multi_layer_net": "portnet.networks",
    "common.multi_layer_net_extend": "portnet.networks",
    "dataset.mnist": "portnet.datasets",
    # chapters 7-8 keep their networks beside the scripts; portnet has them
    "simple_convnet": "portnet.networks",
    "deep_convnet": "portnet.networks",
}
_IMPORT = re.compile(r"^from (common\.\w+|dataset\.mnist|simple_convnet|deep_convnet) import", re.M)

#: Iteration constants cut down for CI (script -> [(the book's line, the line run here)]).
SHORTER = {
    "ch04/train_neuralnet.py": [("iters_num = 10000", "iters_num = 200")],
    "ch04/train_neuralnet_2.py": [("iters_num = 10000", "iters_num = 200")],
    "ch05/train_neuralnet.py": [("iters_num = 10000", "iters_num = 700")],
    "ch06/batch_norm_test.py": [("max_epochs = 20", "max_epochs = 3")],
    "ch06/batch_norm_test_multi.py": [("max_epochs = 20", "max_epochs = 2")],
    "ch06/hyperparameter_optimization.py": [("optimization_trial = 100", "optimization_trial = 2")],
    "ch06/optimizer_compare_mnist.py": [("max_iterations = 2000", "max_iterations = 101")],
    "ch06/weight_init_compare.py": [("max_iterations = 2000", "max_iterations = 101")],
    "ch06/overfit.py": [("max_epochs = 201", "max_epochs = 3")],
    "ch06/overfit_weight_decay.py": [("max_epochs = 201", "max_epochs = 3")],
    "ch06/overfit_dropout.py": [("epochs=301", "epochs=3")],
}

RUNNER = """
import json, runpy, sys
import numpy as np
plotted = []
try:
    import matplotlib
except ImportError:  # the scripts that plot were skipped
    pass
else:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _plot = plt.plot
    def plot(*args, **kwargs):
        plotted.append([np.asarray(a, dtype=float).tolist() for a in args if not isinstance(a, str)])
        return _plot(*args, **kwargs)
    plt.plot = plot
    plt.show = lambda *args, **kwargs: None
np.random.seed(0)
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
finally:
    with open(sys.argv[2], "w") as f:
        json.dump(plotted, f)
"""


def rewrite(source: str, script: str) -> str:
    """The script as a reader runs it on portnet: imports mapped, constants shortened."""
    source = _IMPORT.sub(lambda m: f"from {IMPORT_MAP[m.group(1)]} import", source)
    for book, here in SHORTER.get(script, []):
        assert book in source, f"{script} no longer holds {book!r}"
        source = source.replace(book, here)
    return source


def run_script(script: str, tmp_path, mnist_dir, book_dir, source_dir=BOOK_CODE, env=None):
    """Copy the script's chapter (rewritten) to ``tmp_path`` and run it: (stdout, plotted data)."""
    if not source_dir.is_dir():
        pytest.skip(f"the book's scripts are not at {source_dir}; set PORTNET_BOOK_CODE")
    if "matplotlib" in (source_dir / script).read_text(encoding="utf-8"):
        pytest.importorskip(
            "matplotlib", reason=f"{script} plots with matplotlib, which is not installed"
        )
    chapter = tmp_path / Path(script).parent.name
    chapter.mkdir(parents=True, exist_ok=True)
    for module in (source_dir / script).parent.glob("*.py"):
        name = f"{Path(script).parent.name}/{module.name}"
        (chapter / module.name).write_text(
            rewrite(module.read_text(encoding="utf-8"), name), encoding="utf-8"
        )
    for weights in ("sample_weight.pkl", "simple_convnet_params.pkl", "deep_convnet_params.pkl"):
        shutil.copy(book_dir / weights, chapter / weights)
    plotted = tmp_path / "plotted.json"
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "PORTNET_DATA_DIR": str(mnist_dir),
        "PYTHONPATH": str(ROOT),
        "PORTNET_BACKEND": "numpy",
        "PORTNET_DTYPE": "float64",
        **(env or {}),
    }
    env.pop("PORTNET_DEVICE", None)
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(chapter / Path(script).name), str(plotted)],
        cwd=chapter,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, f"{script} failed:\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr
    return out.stdout, json.loads(plotted.read_text())


CHAPTER_MODULES = {"ch04/two_layer_net.py", "ch05/two_layer_net.py", "ch05/layer_naive.py"}
ALL_SCRIPTS = (
    sorted(str(p.relative_to(BOOK_CODE)) for p in BOOK_CODE.glob("ch0*/*.py"))
    if BOOK_CODE.is_dir()
    else []
)
SCRIPTS = [s for s in ALL_SCRIPTS if s not in CHAPTER_MODULES] or [
    pytest.param(
        "(none)",
        marks=pytest.mark.skip(
            reason=f"the book's scripts are not at {BOOK_CODE}"
            + (
                ""
                if os.environ.get("PORTNET_BOOK_CODE")
                else " nor in shared/book-code inside the checkout"
            )
            + "; set PORTNET_BOOK_CODE"
        ),
    )
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs(script, tmp_path, mnist_dir, book_dir):
    """Every script runs with only its imports rewritten, and what it prints is checked."""
    stdout, plotted = run_script(script, tmp_path, mnist_dir, book_dir)
    check = CHECKS.get(script)
    if check is not None:
        check(stdout, plotted)
    for number in re.findall(r"(?:acc|Accuracy)[^0-9\-]*([0-9.]+(?:e-?\d+)?)", stdout):
        assert 0.0 <= float(number) <= 1.0, f"{script} printed an accuracy of {number}"
    for line in stdout.splitlines():
        assert "nan" not in line.lower().split(), f"{script} printed {line!r}"


# --------------------------------------------------------------------------- what the book prints
def _accuracy_9352(stdout, plotted):
    assert stdout.strip().splitlines()[-1] == "Accuracy:0.9352"


def _mnist_show(stdout, plotted):
    assert stdout.split() == ["5", "(784,)", "(28,", "28)"]


def _gradient_1d(stdout, plotted):
    assert stdout.split()[:2] == ["0.1999999999990898", "0.2999999999986347"]


def _gradient_simplenet(stdout, plotted):
    """dW of the book's simpleNet against the exact gradient of -log(y_t + 1e-7):
    x^T (y - t) y_t / (y_t + 1e-7)."""
    np.random.seed(0)
    W = np.random.randn(2, 3)
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    y = ref.softmax(x @ W)
    exact = np.outer(x, y - t) * y[2] / (y[2] + 1e-7)
    printed = np.array(
        [float(v) for v in stdout.replace("[", " ").replace("]", " ").split()]
    ).reshape(2, 3)
    np.testing.assert_allclose(printed, exact, rtol=0, atol=1e-8)
    assert np.abs(printed).max() > 0.05, "not the all-zero dW of a perturbation f never saw"


def _gradient_check(stdout, plotted, limits=None):
    """Mean |backprop - numerical| per parameter below 1e-6 (float64), or the given limit. Where a
    ReLU input is exactly 0 (on the kink) a central difference measures half the slope: the
    book's own code prints the same large difference there."""
    diffs = {
        line.split(":")[0].strip(): float(line.split(":")[1])
        for line in stdout.splitlines()
        if ":" in line
    }
    assert diffs and set(diffs) >= {"W1", "b1", "W2", "b2"}, stdout
    for key, diff in diffs.items():
        assert 0 <= diff < (limits or {}).get(key, 1e-6), f"{key}: {diff}"


def _buy_apple(stdout, plotted):
    assert stdout.splitlines() == ["price: 220", "dApple: 2.2", "dApple_num: 110", "dTax: 200"]


def _buy_apple_orange(stdout, plotted):
    assert stdout.splitlines() == [
        "price: 715",
        "dApple: 2.2",
        "dApple_num: 110",
        "dOrange: 3.3000000000000003",
        "dOrange_num: 165",
        "dTax: 650",
    ]


def _demo(names):
    """The optimizer demos plot each optimizer's 30 steps from (-7, 2) first: the book's path."""
    lrs = {"SGD": 0.95, "Momentum": 0.1, "AdaGrad": 1.5, "Adam": 0.3}
    book = {"SGD": ref.SGD, "Momentum": ref.Momentum, "AdaGrad": ref.AdaGrad, "Adam": ref.Adam}

    def check(stdout, plotted):
        paths = [p for p in plotted if len(p) == 2 and isinstance(p[0], list) and len(p[0]) == 30]
        assert len(paths) == len(names), plotted and len(plotted)
        for name, (xs, ys) in zip(names, paths):
            params, optimizer, expected = {"x": -7.0, "y": 2.0}, book[name](lr=lrs[name]), []
            for _ in range(30):
                expected.append((params["x"], params["y"]))
                optimizer.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
            np.testing.assert_array_equal(
                np.array([xs, ys]).T, np.array(expected, dtype=float), err_msg=name
            )

    return check


def _learned(accuracies, at_least):
    """The last printed train and test accuracies, both at least ``at_least``."""
    assert len(accuracies) == 2 and all(float(a) >= at_least for a in accuracies), accuracies


def _trainer_lines(stdout, plotted):
    lines = stdout.splitlines()
    assert any(line.startswith("train loss:") for line in lines)
    assert sum(line.startswith("=== epoch:") for line in lines) == 3
    assert "=============== Final Test Accuracy ===============" in lines


CHECKS = {
    "ch03/neuralnet_mnist.py": _accuracy_9352,
    "ch03/neuralnet_mnist_batch.py": _accuracy_9352,
    "ch03/mnist_show.py": _mnist_show,
    "ch04/gradient_1d.py": _gradient_1d,
    "ch04/gradient_simplenet.py": _gradient_simplenet,
    "ch05/gradient_check.py": _gradient_check,
    "ch05/buy_apple.py": _buy_apple,
    "ch05/buy_apple_orange.py": _buy_apple_orange,
    "ch05/train_neuralnet.py": lambda stdout, plotted: _learned(
        stdout.splitlines()[-1].split(), 0.85
    ),
    "ch04/train_neuralnet_2.py": lambda stdout, plotted: _learned(
        stdout.splitlines()[-1].split("|")[1].split(","), 0.05
    ),
    # one sample through batch normalization: its output is beta, which starts at 0, on the kink
    "ch06/batch_norm_gradient_check.py": lambda stdout, plotted: _gradient_check(
        stdout, plotted, {"beta2": 0.1}
    ),
    "ch06/optimizer_compare_naive.py": _demo(["SGD", "Momentum", "AdaGrad", "Adam"]),
    "ch06/show_optimizer_sgd.py": _demo(["SGD"]),
    "ch06/show_optimizer_momentum.py": _demo(["Momentum"]),
    "ch06/show_optimizer_adagrad.py": _demo(["AdaGrad"]),
    "ch06/show_optimizer_adam.py": _demo(["Adam"]),
    "ch06/overfit_dropout.py": _trainer_lines,
}


# --------------------------------------------------------------------------- chapters 7-8
BOOK_STYLE_SCRIPTS = {
    "ch07/simple_convnet_accuracy.py": "test acc:0.989",
    "ch08/deep_convnet_accuracy.py": "test acc:0.9935",
    "ch07/gradient_check.py": None,
}


@pytest.mark.parametrize("script", BOOK_STYLE_SCRIPTS)
def test_book_style_convnet_scripts(script, tmp_path, mnist_dir, book_dir):
    """The book's networks compute in float64 (NumPy's default): PORTNET_DTYPE=float64 gives its digits."""
    stdout, _ = run_script(
        script,
        tmp_path,
        mnist_dir,
        book_dir,
        source_dir=BOOK_STYLE,
        env={"PORTNET_DTYPE": "float64"},
    )
    expected = BOOK_STYLE_SCRIPTS[script]
    if expected is not None:
        assert stdout.strip().splitlines()[-1] == expected
    else:  # random inputs put a few conv outputs within h = 1e-4 of ReLU's kink: W1 and b1 feel it
        _gradient_check(stdout, None, {"W1": 2e-5, "b1": 2e-5})
