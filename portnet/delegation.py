"""Fast paths behind one name, as array-api-extra delegates: each function here has a generic
array-API implementation that every backend runs, and faster ones for the libraries that have
them; ``generic=True`` forces the generic one (the tests compare the two on every backend).

This is the one module outside :mod:`portnet.backends` where a library is named.
"""

from __future__ import annotations

import importlib

import array_api_compat

from .arrays import library_name, namespace_of
from .precision import is_half


def relu_forward(x, mask, *, generic=False):
    """``x`` with the entries where ``mask`` (x <= 0) is True set to 0. NumPy: ``maximum`` (its
    ``where`` branches per element and costs 7x as much); elsewhere ``where``, one fast kernel."""
    xp = namespace_of(x)
    if not generic and library_name(xp) == "numpy":
        return xp.maximum(x, 0.0)
    return xp.where(mask, 0.0, x)


def relu_backward(dout, mask, *, generic=False):
    """``dout`` with the entries where ``mask`` is True set to 0. NumPy: a product with the 0/1
    mask; elsewhere ``where``."""
    xp = namespace_of(dout)
    if not generic and library_name(xp) == "numpy":
        return dout * xp.astype(~mask, dout.dtype)
    return xp.where(mask, 0.0, dout)


def window_matrix(padded, filter_h, filter_w, stride, out_h, out_w, *, generic=False):
    """The windows of the padded (N, C, H, W) input as a (C*filter_h*filter_w, N*OH*OW) matrix:
    rows in the order of a filter bank reshaped to (FN, C*FH*FW), columns sample-major.

    Generic: the filter_h * filter_w strided slices stacked. NumPy and CuPy: copied in one pass out
    of a strided view of the input (2-3x faster), which is only read."""
    xp = namespace_of(padded)
    N, C = padded.shape[:2]
    rows, cols = C * filter_h * filter_w, N * out_h * out_w
    library = library_name(xp)
    if not generic and library in ("numpy", "cupy"):
        lib = importlib.import_module(library)
        sN, sC, sH, sW = padded.strides
        shape, strides = (
            (C, filter_h, filter_w, N, out_h, out_w),
            (sC, sH, sW, sN, sH * stride, sW * stride),
        )
        view = lib.lib.stride_tricks.as_strided(padded, shape, strides)
        return xp.reshape(lib.ascontiguousarray(view), (rows, cols))
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    slices = [
        padded[:, :, i : i + span_h : stride, j : j + span_w : stride]
        for i in range(filter_h)
        for j in range(filter_w)
    ]
    return xp.reshape(
        xp.stack([xp.permute_dims(w, (1, 0, 2, 3)) for w in slices], axis=1), (rows, cols)
    )


def matmul(a, b, *, generic=False):
    """``a @ b``. Half-precision operands where the library has no fast half matmul (NumPy, which
    has no half BLAS, and PyTorch on the CPU) go through float32: products of half values are
    exact in float32 and the sums float32 ones (as NumPy's own half loop and GPUs' tensor cores
    sum), rounded to half once; 4-15 times faster."""
    xp = namespace_of(a, b)
    if not generic and a.dtype == b.dtype and is_half(a.dtype):
        library = library_name(xp)
        cpu = library == "numpy" or (
            library == "torch" and array_api_compat.device(a).type == "cpu"
        )
        if cpu:
            return xp.astype(xp.astype(a, xp.float32) @ xp.astype(b, xp.float32), a.dtype)
    return a @ b
