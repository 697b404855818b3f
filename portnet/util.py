"""The book's common/util.py: im2col and col2im (ch. 7.4.3), conv_output_size, smooth_curve,
shuffle_dataset, on the array API.

The book's ``im2col`` / ``col2im`` lay a convolution's input windows (:mod:`portnet.windows`) out
as (N*OH*OW, C*FH*FW) rows; :func:`im2col_windows` gives them as the generic convolution
(:mod:`portnet.delegation`) uses them, one (C*FH*FW, N*OH*OW) matrix, so that a filter bank
reshaped to (FN, C*FH*FW) times it is the whole batch's convolution.
"""

from __future__ import annotations

import math
import operator

import array_api_compat

from .arrays import host_namespace, is_array, namespace_of
from .checks import integer, same_samples
from .delegation import take_rows, window_matrix
from .errors import InputError
from .randomness import Random
from .windows import col2im_windows, output_shape, output_size, pad_input


def conv_output_size(input_size, filter_size, stride=1, pad=0) -> int:
    """(input_size + 2 pad - filter_size) // stride + 1 (eq. 7.1); an error if no window fits."""
    input_size, filter_size = integer("input_size", input_size), integer("filter_size", filter_size)
    stride, pad = integer("stride", stride), integer("pad", pad, 0)
    return output_size(input_size, filter_size, stride, pad)


def im2col_windows(x, filter_h, filter_w, stride=1, pad=0):
    """The input's windows as a (C*filter_h*filter_w, N*OH*OW) matrix (see
    :func:`portnet.delegation.window_matrix`)."""
    padded, (out_h, out_w) = pad_input(x, filter_h, filter_w, stride, pad)
    return window_matrix(padded, filter_h, filter_w, stride, out_h, out_w)


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The book's im2col: (N, C, H, W) input to rows of (N*OH*OW, C*filter_h*filter_w)."""
    return namespace_of(input_data).matrix_transpose(
        im2col_windows(input_data, filter_h, filter_w, stride, pad)
    )


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The book's col2im: rows of (N*OH*OW, C*filter_h*filter_w) added back into ``input_shape``."""
    xp = namespace_of(col)
    N, C, H, W = (operator.index(v) for v in input_shape)
    out_h, out_w = output_shape(H, W, filter_h, filter_w, stride, pad)
    expected = (N * out_h * out_w, C * filter_h * filter_w)
    if tuple(col.shape) != expected:
        raise InputError(
            f"col2im: col has shape {tuple(col.shape)}, expected {expected} for input {tuple(input_shape)}"
        )
    col = xp.reshape(col, (N, out_h, out_w, C, filter_h * filter_w))
    parts = [xp.permute_dims(col[..., k], (0, 3, 1, 2)) for k in range(filter_h * filter_w)]
    return col2im_windows(parts, (N, C, H, W), filter_h, filter_w, stride, pad)


def smooth_curve(x):
    """The book's smoothing of a loss curve for plotting: a Kaiser window (length 11, beta 2) over
    the curve, its ends reflected. A list gives NumPy float64; an array keeps its namespace."""
    if is_array(x):
        xp = namespace_of(x)
    else:  # a list of Python floats (a loss history): host data
        xp = host_namespace()
        x = xp.asarray(x, dtype=xp.float64)
    n, m = x.shape[0], 11
    if n < m:
        raise InputError(f"smooth_curve needs at least {m} values, got {n}")
    padded = xp.concat([xp.flip(x[1:m]), x, xp.flip(x[n - (m - 1) : n])])
    weights = [_i0(2.0 * math.sqrt(1.0 - (2.0 * k / (m - 1) - 1.0) ** 2)) for k in range(m)]
    total = sum(weights)
    y = sum((w / total) * padded[k : k + n + m - 1] for k, w in enumerate(weights))
    return y[5 : 5 + n]


def _i0(z: float) -> float:
    """The modified Bessel function I0 (the Kaiser window's kernel), by its power series."""
    term, total, k = 1.0, 1.0, 0
    while term > 1e-17 * total:
        k += 1
        term *= (z / (2 * k)) ** 2
        total += term
    return total


def shuffle_dataset(x, t):
    """``x`` and ``t`` in the same random order (the book's, from NumPy's global generator on
    NumPy; on other backends the device's generator, seeded from it)."""
    xp = namespace_of(x, t)
    same_samples("shuffle_dataset", x, t)
    order = Random(xp, array_api_compat.device(x)).permutation(x.shape[0])
    return take_rows(x, order), take_rows(t, order)
