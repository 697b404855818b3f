"""The book's activation and loss functions (common/functions.py), on the array API.

Each function follows its input: the namespace and device come from the arguments, the dtype of a
floating input is kept, and shapes that do not match are an error rather than a broadcast.
"""

from __future__ import annotations

import array_api_extra as xpx

from .arrays import book_star_numpy, dtype_name, namespace_of
from .delegation import pick
from .errors import InputError
from .precision import accumulator

__all__ = [
    "cross_entropy_error",
    "identity_function",
    "mean_squared_error",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "np",
]  # np: what the book's star-import gave
__getattr__ = book_star_numpy(__name__)

#: The book's guard inside the logarithm of the cross-entropy (eq. 4.2): log(y + delta).
DELTA = 1e-7


def identity_function(x):
    """h(x) = x, the output activation for regression (ch. 3.5)."""
    return x


def step_function(x):
    """h(x) = 1 if x > 0 else 0 (eq. 3.3); the input's dtype is kept."""
    xp = namespace_of(x)
    return xp.astype(x > 0, x.dtype)


#: Where exp(-x) overflows, per dtype: below these the sigmoid is clipped.
_SIGMOID_LOW = {"float16": -11.0, "bfloat16": -88.0, "float32": -88.0, "float64": -709.0}


def sigmoid(x):
    """h(x) = 1 / (1 + exp(-x)) (eq. 3.6), the book's formula to the bit.

    x is clipped where exp(-x) would overflow (below -11 in float16, -88 in float32 and bfloat16,
    -709 in float64); there the result is already below the smallest normal number."""
    xp = namespace_of(x)
    low = _SIGMOID_LOW.get(dtype_name(x.dtype), -709.0)
    return 1 / (1 + xp.exp(-xp.where(x < low, low, x)))  # where: cheaper than compat's clip


def sigmoid_grad(x):
    """dh/dx = (1 - h(x)) h(x) for the sigmoid h (ch. 5.5.2)."""
    y = sigmoid(x)
    return (1.0 - y) * y


def relu(x):
    """h(x) = max(0, x) (eq. 3.7)."""
    xp = namespace_of(x)
    return xp.where(x > 0, x, xp.zeros_like(x))


def relu_grad(x):
    """dh/dx = 1 where x >= 0, else 0: the book's common/functions.py, which counts the kink at 0
    as 1 (ch. 5.5.1)."""
    xp = namespace_of(x)
    return xp.astype(x >= 0, x.dtype)


def softmax(x):
    """y_k = exp(a_k - c) / sum_i exp(a_i - c), c = max(a) (eq. 3.11), over the last axis; in half
    precision the sum and the division are float32 ones, rounded once."""
    xp = namespace_of(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    wide = accumulator(xp, x.dtype)
    if wide == x.dtype:
        return e / xp.sum(e, axis=-1, keepdims=True)
    e = xp.astype(e, wide)
    return xp.astype(e / xp.sum(e, axis=-1, keepdims=True), x.dtype)


def mean_squared_error(y, t):
    """E = 0.5 * sum_k (y_k - t_k)^2 (eq. 4.1), summed over every element as the book does."""
    xp = namespace_of(y, t)
    _same_shape(y, t, "mean_squared_error")
    return 0.5 * xp.sum((y - xp.astype(t, y.dtype)) ** 2)


def cross_entropy_error(y, t):
    """E = -(1/N) sum_n log(y[n, t_n] + 1e-7) (eqs. 4.2-4.3), y 1-D or batched.

    ``t`` holds one-hot rows (the shape of ``y``; the book takes their argmax) or integer labels
    (the shape of ``y`` without its last axis). Labels outside ``[0, classes)`` are an error.
    """
    xp = namespace_of(y, t)
    labels = labels_of(xp, y.shape, t, "cross_entropy_error")
    if tuple(t.shape) != tuple(y.shape):  # one-hot rows' argmax is always in range
        check_labels(xp, labels, y.shape[-1])
    picked = pick(y, labels)[..., 0]
    return mean_log_loss(xp, picked, 1 if y.ndim == 1 else y.shape[0])


def softmax_loss(x, t):
    """cross_entropy_error(softmax(x), t): the loss of a softmax classifier on logits ``x``."""
    return cross_entropy_error(softmax(x), t)


# --------------------------------------------------------------------------- helpers
def _same_shape(y, t, what):
    if tuple(y.shape) != tuple(t.shape):
        raise InputError(f"{what}: y has shape {tuple(y.shape)} but t has shape {tuple(t.shape)}")


def labels_of(xp, shape, t, what="labels"):
    """Integer class labels from ``t`` (one-hot rows, labels, or the book's (N, 1) labels) for
    scores of ``shape``."""
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return xp.argmax(t, axis=-1)
    if len(shape) > 1 and tuple(t.shape) == (*shape[:-1], 1) and xp.isdtype(t.dtype, "integral"):
        t = xp.reshape(t, shape[:-1])
    if tuple(t.shape) != shape[:-1]:
        raise InputError(
            f"{what}: t has shape {tuple(t.shape)}, expected one-hot {shape} "
            f"or labels {shape[:-1]} for scores of shape {shape}"
        )
    if not xp.isdtype(t.dtype, "integral"):
        raise InputError(f"{what}: labels must be integers, got dtype {t.dtype}")
    return t


def check_labels(xp, labels, classes: int) -> None:
    """Raise if a label lies outside [0, classes): one reduction, one number read back from the
    device (the offending label is looked for only when there is one)."""
    if classes > xp.iinfo(labels.dtype).max:  # uint8 labels of 300 classes: none is too high
        outside = labels < 0
    else:
        outside = (labels < 0) | (labels >= classes)
    if bool(xp.any(outside)):
        low, high = int(xp.min(labels)), int(xp.max(labels))
        bad = low if low < 0 else high
        raise InputError(f"label {bad} is out of range: expected labels in [0, {classes})")


def check_targets(xp, scores_shape, t, what="labels") -> None:
    """Check ``t`` against scores of ``scores_shape``: one-hot rows need only their shape (their
    argmax is always in range); integer labels are range-checked."""
    if tuple(t.shape) != tuple(scores_shape):
        check_labels(xp, labels_of(xp, scores_shape, t, what), scores_shape[-1])


def one_hot(xp, labels, classes: int, dtype):
    """Rows of ``classes`` zeros with a one at each label (array-api-extra's, no index assignment)."""
    return xpx.one_hot(labels, classes, dtype=dtype, xp=xp)


def mean_log_loss(xp, picked, batch):
    """-(1/N) sum_n log(p_n + delta) of the probabilities ``picked`` at the labels (eq. 4.3), a
    float32 sum in half precision."""
    logs = xp.log(picked + DELTA)
    wide = accumulator(xp, picked.dtype)
    if wide == picked.dtype:
        return xp.sum(logs) / -batch  # -(s / N), bit for bit
    return xp.astype(xp.sum(xp.astype(logs, wide)) / -batch, picked.dtype)
