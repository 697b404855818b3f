"""Fast paths behind one name, as array-api-extra delegates: each function here has a generic
array-API implementation that every backend runs, and faster ones for the libraries that have
them; ``generic=True`` forces the generic one (the tests compare the two on every backend).

This is the one module outside :mod:`portnet.backends` where a library is named.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any, NamedTuple

import array_api_compat
import array_api_extra as xpx

from .arrays import library_name, namespace_of
from .precision import is_half
from .windows import col2im_windows, output_shape, pad_input, window_slices


def relu_forward(x, *, generic=False):
    """max(0, x) (eq. 3.7). Generic: ``maximum`` with 0, one kernel (NumPy's ``where`` branches
    per element and costs 7x as much); PyTorch: ``relu``."""
    xp = namespace_of(x)
    if not generic and library_name(xp) == "torch":
        return x.relu()
    return xp.maximum(x, 0.0)


def relu_backward(dout, out, *, generic=False):
    """``dout`` where the forward's output ``out`` is positive, else 0 (eq. 5.7): :func:`keep`;
    PyTorch: ``threshold_backward``, one kernel that needs no mask."""
    if not generic and library_name(namespace_of(dout)) == "torch":
        return _torch().ops.aten.threshold_backward(dout, out, 0)
    return keep(dout, out > 0, generic=generic)


def keep(x, mask, *, generic=False):
    """``x`` where the boolean ``mask`` is True, else 0 (a ReLU's or a dropout's mask). Generic:
    ``where``; NumPy, CuPy and PyTorch: the product with the mask, one kernel that casts the
    bools inside it (NumPy's ``where`` branches per element and costs 7x as much)."""
    xp = namespace_of(x)
    if not generic and library_name(xp) in ("numpy", "cupy", "torch"):
        return x * mask
    return xp.where(mask, x, 0.0)


def linear(x, W, b, *, generic=False):
    """``x @ W + b`` (ch. 5.6.2). PyTorch: ``addmm``, one kernel (except in half precision on the
    CPU, which :func:`matmul` takes through float32)."""
    xp = namespace_of(x, W)
    if not generic and library_name(xp) == "torch" and not is_half(x.dtype):
        return _torch().addmm(b, x, W)
    return matmul(x, W) + b


def minus_one_hot(y, labels, picked, *, generic=False):
    """``y`` with 1 subtracted at each row's label: the book's ``dx[np.arange(N), t] -= 1``
    (ch. 5.6.3), on a copy. ``picked`` is ``y``'s value at the labels (N, 1), which the forward
    has (..., 1). Generic: minus a one-hot matrix; NumPy and CuPy: minus the comparison's bools
    with the class numbers made once; PyTorch: one ``scatter`` of ``picked - 1``."""
    xp = namespace_of(y)
    library = library_name(xp)
    if not generic and library == "torch":
        return y.scatter(-1, _torch_index(labels), picked - 1)
    device = array_api_compat.device(y)
    if not generic and library in ("numpy", "cupy"):  # the bools subtracted as they are
        key = (library, str(device), y.shape[-1])
        classes = _CLASSES.get(key)
        if classes is None:  # the default integers: uint8 labels compare without wrapping
            classes = _CLASSES[key] = xp.arange(y.shape[-1], device=device)
            if library == "numpy":
                classes.flags.writeable = False  # shared: nobody may change it
        return y - (labels[..., None] == classes)
    classes = xp.arange(y.shape[-1], device=device)
    return y - xp.astype(labels[..., None] == classes, y.dtype)


#: The class numbers 0..n-1 per library, device and n (NumPy and CuPy: no kernel a step).
_CLASSES: dict = {}


def pick(y, labels, *, generic=False):
    """``y``'s value at each row's label, as (..., 1): the book's ``y[np.arange(N), t]``.
    Generic: ``take_along_axis``; PyTorch: ``gather``, without array-api-compat's handling of
    negative indices (two more kernels; labels were checked to be in range)."""
    if not generic and library_name(namespace_of(y)) == "torch":
        return y.gather(-1, _torch_index(labels))
    return namespace_of(y).take_along_axis(y, labels[..., None], axis=-1)


def take_rows(x, idx, *, out=None, generic=False):
    """The rows ``idx`` of ``x`` (a mini-batch, an epoch's shuffle). Generic: ``take``, a new
    array; PyTorch: ``index_select``, without array-api-compat's handling of negative indices
    (three more kernels). ``out`` (an array of the result's shape and dtype, or None) is written
    instead where the library can (NumPy, CuPy, PyTorch: no fresh memory to fault in, 0.04-0.4 s
    for an epoch's copy of MNIST on a virtual machine); the result is returned either way."""
    xp = namespace_of(x)
    library = None if generic else library_name(xp)
    if library == "torch":
        return _torch().index_select(x, 0, idx, out=out)
    if library == "numpy" and out is not None:  # 'clip': unbuffered (the indices are in range)
        return importlib.import_module(library).take(x, idx, axis=0, out=out, mode="clip")
    if library == "cupy" and out is not None:
        return importlib.import_module(library).take(x, idx, axis=0, out=out)
    return xp.take(x, idx, axis=0)


def _torch_index(labels):
    """Labels as PyTorch's gather and scatter take them: (..., 1), int64."""
    idx = labels[..., None]
    return idx if idx.dtype == _torch().int64 else idx.long()


def _torch():
    return sys.modules["torch"]  # imported: its arrays are here (and a compiler can trace this)


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


# --------------------------------------------------------------------------- convolution and max pooling
# Generic: the book's im2col and one matmul (ch. 7.4), and the maximum over a window's strided
# slices (ch. 7.5). Fast: PyTorch's own kernels (oneDNN or cuDNN), JAX's convolution. NumPy, CuPy
# (no cuDNN in CuPy 14) and array-api-strict run the generic path, NumPy and CuPy with their
# strided window matrix (:func:`window_matrix`).


class ConvolutionSaved(NamedTuple):
    """What :func:`convolution_backward` needs of a forward: its input and filters, and the window
    matrix ``col`` where the generic path built it (None where a library's kernel ran)."""

    x: Any
    W: Any
    stride: int
    pad: int
    col: Any = None


class PoolingSaved(NamedTuple):
    """What :func:`max_pooling_backward` needs of a forward: the input, the output, and either the
    window slices (generic) or the library's indices of each window's maximum."""

    x: Any
    out: Any
    pool_h: int
    pool_w: int
    stride: int
    pad: int
    windows: Any = None
    indices: Any = None


def convolution_forward(x, W, b, stride, pad, *, generic=False):
    """The correlation of (N, C, H, W) ``x`` with filters ``W`` (FN, C, FH, FW) plus the bias ``b``
    (FN,): ``(out, saved)``, out (N, FN, OH, OW), saved for :func:`convolution_backward`.

    Generic: the window matrix (C*FH*FW, N*OH*OW) times the filters reshaped to (FN, C*FH*FW), the
    whole batch in one matmul. PyTorch: ``conv2d`` with the bias fused; JAX:
    ``lax.conv_general_dilated``. Half-precision operands are summed in float32 and rounded once,
    as :func:`matmul` sums them, where the library's own half kernel might not (PyTorch's CPU; JAX
    is asked for float32 sums everywhere)."""
    xp = namespace_of(x, W, b)
    output_shape(x.shape[2], x.shape[3], W.shape[2], W.shape[3], stride, pad)  # fits, or says why
    library = None if generic else library_name(xp)
    saved = ConvolutionSaved(x, W, stride, pad)
    if library == "torch":
        torch = _torch()
        with _torch_ieee_float32(torch, x):
            xc, Wc, bc = _torch_compute(torch, x, W, b)
            out = torch.nn.functional.conv2d(xc, Wc, bc, stride, pad)
        return out.to(x.dtype), saved
    if library == "jax":
        return _jax_convolve(x, W, stride, pad) + b[:, None, None], saved
    out, col = _convolve(x, W, stride, pad)
    return out + b[:, None, None], saved._replace(col=col)


def convolution_backward(dout, saved, need_dx=True, *, generic=False):
    """dL/dx (None unless ``need_dx``), dL/dW and dL/db of :func:`convolution_forward`, from the
    output gradient ``dout`` (N, FN, OH, OW) and the forward's ``saved``.

    Generic: dW and db from the window matrix and one matmul, dx as the correlation of the dilated,
    padded output gradient with the flipped filters. PyTorch: one ``convolution_backward`` (dx
    skipped by its output mask). JAX: dx the transpose of the convolution (``jax.linear_transpose``:
    the forward is not run again), and dW too except on the CPU, where it is the generic matmul:
    there XLA's filter-gradient convolution took 3.4x as long under ``jax.jit`` (204 ms against
    59, DeepConvNet's pad-2 layer, float32, batch 100; :data:`_JAX_FILTER_GRADIENT_BY_MATMUL`)."""
    xp = namespace_of(dout)
    x, W, stride, pad, col = saved
    library = None if generic else library_name(xp)
    if library == "torch":
        torch = _torch()
        with _torch_ieee_float32(torch, x):
            dc, xc, Wc = _torch_compute(torch, dout, x, W)
            strides, pads, dilation, output_padding = [stride] * 2, [pad] * 2, [1, 1], [0, 0]
            mask = [bool(need_dx), True, True]  # which of dx, dW, db to compute
            dx, dW, db = torch.ops.aten.convolution_backward(
                dc, xc, Wc, [W.shape[0]], strides, pads, dilation, False, output_padding, 1, mask
            )
        return (None if dx is None else dx.to(x.dtype)), dW.to(W.dtype), db.to(dout.dtype)
    if library == "jax":
        jax = importlib.import_module("jax")
        if _jax_platform(jax, dout) in _JAX_FILTER_GRADIENT_BY_MATMUL:
            dW, db = _filter_gradient(dout, x, W, stride, pad, None)
        else:
            db = xp.sum(dout, axis=(0, 2, 3))
            dW = jax.linear_transpose(
                lambda w: _jax_convolve(x, w, stride, pad), jax.ShapeDtypeStruct(W.shape, W.dtype)
            )(dout)[0]
        if not need_dx:
            return None, dW, db
        dx = jax.linear_transpose(
            lambda v: _jax_convolve(v, W, stride, pad), jax.ShapeDtypeStruct(x.shape, x.dtype)
        )(dout)[0]
        return dx, dW, db
    dW, db = _filter_gradient(dout, x, W, stride, pad, col)
    if not need_dx:
        return None, dW, db
    return _convolve_transpose(dout, W, x.shape, stride, pad), dW, db


def max_pooling_forward(x, pool_h, pool_w, stride, pad, *, generic=False):
    """The maximum of each (pool_h, pool_w) window of (N, C, H, W) ``x`` (zeros padded, as the
    book's im2col pads): ``(out, saved)``, saved for :func:`max_pooling_backward`.

    Generic: the maximum over the window's strided slices (no reduction over a tiny axis).
    PyTorch, without a pad (it pads with -inf, the book with zeros): ``max_pool2d_with_indices``,
    which keeps each window's first maximum in row-major order, as the book's argmax. JAX runs
    the generic path: the gradient of its ``reduce_window`` (a select-and-scatter) took 2.7x as
    long as the generic backward under ``jax.jit`` on the CPU (42 ms against 15 for a (100, 30,
    24, 24) input), and XLA promises no order among equal maxima (the CPU's picked the first)."""
    xp = namespace_of(x)
    output_shape(x.shape[2], x.shape[3], pool_h, pool_w, stride, pad)
    if not generic and pad == 0 and library_name(xp) == "torch":
        torch = _torch()
        cpu = x.device.type == "cpu"
        # the CPU kernel is vectorized (over the channels) in the channels-last layout only: with
        # the copies there and back, forward and backward took 1.6-2x less time than in NCHW
        source = x.contiguous(memory_format=torch.channels_last) if cpu else x
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            source, [pool_h, pool_w], [stride] * 2, [0, 0], [1, 1], False
        )
        out = out.contiguous() if cpu else out
        return out, PoolingSaved(x, out, pool_h, pool_w, stride, pad, indices=indices)
    windows = window_slices(x, pool_h, pool_w, stride, pad)
    out = windows[0]
    for window in windows[1:]:
        out = xp.maximum(out, window)
    return out, PoolingSaved(x, out, pool_h, pool_w, stride, pad, windows=windows)


def max_pooling_backward(dout, saved, *, generic=False):
    """dL/dx of :func:`max_pooling_forward`: each window's gradient routed to its first maximum
    (row-major), as the book's argmax routes it; overlapping windows add.

    Generic: per window slice, where it holds the maximum and no earlier slice did, without index
    assignment. PyTorch: ``max_pool2d_with_indices_backward`` with the forward's indices."""
    xp = namespace_of(dout)
    x, out, ph, pw, stride, pad, windows, indices = saved
    if not generic and indices is not None and library_name(xp) == "torch":
        torch = _torch()
        return torch.ops.aten.max_pool2d_with_indices_backward(
            dout, x, [ph, pw], [stride] * 2, [0, 0], [1, 1], False, indices
        )
    if windows is None:  # the forward ran a library's kernel
        windows = window_slices(x, ph, pw, stride, pad)
    grads, free = [], None  # free: windows whose maximum has not been claimed yet
    for window in windows:
        hit = window == out
        if free is not None:
            hit = hit & free
        free = ~hit if free is None else free & ~hit
        grads.append(keep(dout, hit, generic=generic))
    return col2im_windows(grads, x.shape, ph, pw, stride, pad)


def _convolve(x, W, stride, pad):
    """The generic correlation, no bias: (N, FN, OH, OW) by im2col and one matmul, and the window
    matrix."""
    xp = namespace_of(x, W)
    FN, C, FH, FW = W.shape
    padded, (out_h, out_w) = pad_input(x, FH, FW, stride, pad)
    col = window_matrix(padded, FH, FW, stride, out_h, out_w)
    out = matmul(xp.reshape(W, (FN, C * FH * FW)), col)
    out = xp.permute_dims(xp.reshape(out, (FN, x.shape[0], out_h, out_w)), (1, 0, 2, 3))
    return out, col


def _filter_gradient(dout, x, W, stride, pad, col):
    """The generic dL/dW and dL/db: the output gradient as a (FN, N*OH*OW) matrix times the
    transposed window matrix ``col`` (built from ``x`` when the forward did not), and its sums."""
    xp = namespace_of(dout)
    if col is None:  # the forward ran a library's kernel
        FH, FW = W.shape[2:]
        padded, (out_h, out_w) = pad_input(x, FH, FW, stride, pad)
        col = window_matrix(padded, FH, FW, stride, out_h, out_w)
    N, FN, OH, OW = dout.shape
    grad = xp.reshape(xp.permute_dims(dout, (1, 0, 2, 3)), (FN, N * OH * OW))
    return xp.reshape(grad @ xp.matrix_transpose(col), W.shape), xp.sum(grad, axis=1)


def _convolve_transpose(dout, W, x_shape, stride, pad):
    """dL/dx of :func:`_convolve`: the output gradient, dilated by the stride and padded, correlated
    with the filters flipped and with their channels swapped."""
    xp = namespace_of(dout)
    FN, _, FH, FW = W.shape
    N, _, H, Wd = x_shape
    OH, OW = dout.shape[2:]
    if stride > 1:
        dilated = xp.zeros(
            (N, FN, (OH - 1) * stride + 1, (OW - 1) * stride + 1),
            dtype=dout.dtype,
            device=array_api_compat.device(dout),
        )
        dout = xpx.at(
            dilated,
            (slice(None), slice(None), slice(None, None, stride), slice(None, None, stride)),
        ).set(dout)
    # rows and columns of the padded input that no window reached (stride > 1) get no gradient
    rest_h, rest_w = H + 2 * pad - FH - (OH - 1) * stride, Wd + 2 * pad - FW - (OW - 1) * stride
    # padding FH - 1 - pad gives dx of the unpadded input directly; a pad wider than the filter
    # gives dx of the padded input, cropped
    crop_h, crop_w = max(0, pad - (FH - 1)), max(0, pad - (FW - 1))
    lo_h, lo_w = FH - 1 - pad + crop_h, FW - 1 - pad + crop_w
    padded = xpx.pad(dout, ((0, 0), (0, 0), (lo_h, lo_h + rest_h), (lo_w, lo_w + rest_w)), xp=xp)
    flipped = xp.permute_dims(xp.flip(W, axis=(2, 3)), (1, 0, 2, 3))  # (C, FN, FH, FW)
    dx, _ = _convolve(padded, flipped, 1, 0)
    return dx[:, :, crop_h : crop_h + H, crop_w : crop_w + Wd] if crop_h or crop_w else dx


def _torch_compute(torch, *arrays):
    """The arrays a PyTorch kernel computes with: half precision on the CPU as float32 (exact),
    so that sums are float32 ones; else the arrays themselves."""
    if is_half(arrays[0].dtype) and arrays[0].device.type == "cpu":
        return tuple(a.to(torch.float32) for a in arrays)
    return arrays


@contextlib.contextmanager
def _torch_ieee_float32(torch, x):
    """cuDNN convolutions of float32 in float32, not TF32 (PyTorch's default for them, though not
    for its matmuls): the generic path's matmul sums in float32."""
    if x.device.type != "cuda" or x.dtype != torch.float32:
        yield
        return
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)  # PyTorch 2.9+; the legacy flag before
    owner, name, value = (conv, "fp32_precision", "ieee") if conv else (cudnn, "allow_tf32", False)
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


#: The JAX platforms where the filter gradient is the generic matmul, not XLA's convolution.
_JAX_FILTER_GRADIENT_BY_MATMUL = ("cpu",)


def _jax_platform(jax, x) -> str:
    """The platform ``x`` is on: its device's, or inside a trace (which has no device) the one
    jit compiles for."""
    device = array_api_compat.device(x)
    return jax.default_backend() if device is None else device.platform


def _jax_convolve(x, W, stride, pad):
    """``lax.conv_general_dilated`` in the layout of the book (NCHW input, OIHW filters), float32
    in float32 on a GPU (HIGHEST: not TF32), half precision summed in float32 and rounded once."""
    lax = importlib.import_module("jax.lax")
    half = is_half(x.dtype)
    out = lax.conv_general_dilated(
        x,
        W,
        (stride, stride),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=namespace_of(x).float32 if half else None,
    )
    return out.astype(x.dtype) if half else out
