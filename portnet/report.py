"""An evaluation report: accuracy, per-class accuracy and the confusion matrix of a network on a
test set, and the pictures of the book's ch. 8 (``misclassified_mnist.py``: the misclassified
digits, each with its predicted and true label) and of the matrix as a heat map.

The predictions are made on the device, a batch at a time as :meth:`Network.accuracy` makes them;
only the predicted labels (and the few images drawn) come back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import namespace_of, to_numpy
from .functions import labels_of
from . import figures

#: Misclassified digits drawn, as in the book's figure (a 4 x 5 grid).
MISCLASSIFIED_SHOWN = 20


@dataclass
class Report:
    """``labels`` and ``predicted`` (host integer arrays) and the ``confusion`` matrix they give:
    ``confusion[i, j]`` test images of class i predicted as j."""

    labels: np.ndarray
    predicted: np.ndarray
    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion)) / self.labels.size

    @property
    def misclassified(self) -> np.ndarray:
        """The indices of the misclassified images, in test-set order."""
        return np.flatnonzero(self.labels != self.predicted)

    def lines(self) -> list[str]:
        """Per-class accuracy and the confusion matrix as text."""
        classes = self.confusion.shape[0]
        totals = self.confusion.sum(axis=1)
        out = ["per-class accuracy:"]
        for c in range(classes):
            hit, n = int(self.confusion[c, c]), int(totals[c])
            out.append(f"  {c}: {hit / n if n else 0:.4f} ({hit}/{n})")
        width = max(5, len(str(int(self.confusion.max()))) + 1)
        out.append("confusion matrix (rows: true label, columns: predicted label):")
        out.append("     " + "".join(f"{c:>{width}}" for c in range(classes)))
        for c in range(classes):
            out.append(f"  {c:>2} " + "".join(f"{v:>{width}}" for v in self.confusion[c]))
        return out


def evaluate(network, x, t) -> Report:
    """Predict every image of ``x`` (a batch of ``network.accuracy_batch_size`` at a time) and
    compare with the labels ``t`` (integer or one-hot)."""
    xp = namespace_of(x)
    n, classes = x.shape[0], network.output_size
    labels = labels_of(xp, (n, classes), t, "labels")
    step, predicted = network.accuracy_batch_size, []
    for start in range(0, n, step):
        y = network.predict(x[start : min(start + step, n), ...], train_flg=False)
        predicted.append(xp.argmax(y, axis=1))
    predicted = to_numpy(xp.concat(predicted)).astype(np.int64)
    labels = to_numpy(labels).astype(np.int64)
    confusion = np.bincount(labels * classes + predicted, minlength=classes * classes)
    return Report(labels, predicted, confusion.reshape(classes, classes))


def plot_misclassified(report: Report, x, path: Path, title: str, *, overwrite=False) -> int:
    """The book's ch. 8 figure: the first :data:`MISCLASSIFIED_SHOWN` misclassified test images
    in a 4 x 5 grid (gray, ink dark), each titled with its predicted and true label; returns how
    many were drawn."""
    plt = figures.pyplot("--plot-misclassified")
    shown = report.misclassified[:MISCLASSIFIED_SHOWN]
    xp = namespace_of(x)
    images = [to_numpy(xp.astype(x[int(i), ...], xp.float32)) for i in shown]
    fig, axes = plt.subplots(4, 5, figsize=(7.5, 7.2))
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i, image in zip(axes.flat, shown, images):
        side = int(round(image.size**0.5))
        ax.imshow(image.reshape(side, side), cmap="gray_r", interpolation="nearest")
        ax.set_title(
            f"{report.predicted[i]}  (true {report.labels[i]})", fontsize=13, color="#b00020"
        )
        ax.text(0.02, 0.03, f"#{i}", transform=ax.transAxes, fontsize=8, color="0.45", va="bottom")
    fig.suptitle(
        f"{title}\nthe first {len(shown)} of {report.misclassified.size} misclassified test images: "
        f"predicted label (true label)",
        fontsize=11,
    )
    fig.tight_layout()
    figures.save(fig, path, overwrite=overwrite)
    return len(shown)


def plot_confusion(report: Report, path: Path, title: str, *, overwrite=False) -> None:
    """The confusion matrix as a heat map, counts written in the cells: errors coloured on a
    logarithmic scale (a few images against a thousand on the diagonal), the diagonal apart."""
    plt = figures.pyplot("--plot-confusion")
    from matplotlib.colors import LogNorm

    m = report.confusion
    classes = m.shape[0]
    errors = np.where(np.eye(classes, dtype=bool) | (m == 0), np.nan, m).astype(float)
    fig, ax = plt.subplots(figsize=(7.6, 6.6))
    top = max(2.0, float(np.nanmax(errors)) if np.isfinite(errors).any() else 2.0)
    image = ax.imshow(errors, cmap="Reds", norm=LogNorm(vmin=1, vmax=top))
    diagonal = np.where(np.eye(classes, dtype=bool), 1.0, np.nan)
    ax.imshow(diagonal, cmap="Greens", vmin=0, vmax=1.6, alpha=0.55)
    for i in range(classes):
        for j in range(classes):
            if m[i, j] == 0:
                continue
            strong = i != j and m[i, j] > np.sqrt(top)
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=9 if i == j else 10,
                fontweight="bold" if i != j else "normal",
                color="white" if strong else "black",
            )
    ax.set(
        xticks=range(classes),
        yticks=range(classes),
        xlabel="predicted label",
        ylabel="true label",
    )
    ax.set_title(f"{title}\naccuracy {report.accuracy:.4f}; off the diagonal: the errors")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("misclassified images (log scale)")
    ticks = [v for v in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000) if v <= top]
    bar.set_ticks(ticks, labels=[str(v) for v in ticks])
    bar.ax.minorticks_off()
    fig.tight_layout()
    figures.save(fig, path, overwrite=overwrite)
