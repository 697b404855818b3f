"""The windows a filter slides over (ch. 7.4): their number (eq. 7.1), the padded input, the
window's strided slices, and the adjoint that adds per-window gradients back into the input.

A convolution's or a pooling's input windows are taken as strided slices of the (padded) input,
one slice per filter position, with exact stops (the standard leaves stops past the end
undefined); the adjoint adds them back with ``array_api_extra.at(...).add``: no padding by hand,
no writes into views, no index assignment.
"""

from __future__ import annotations

import operator

import array_api_compat
import array_api_extra as xpx

from .arrays import namespace_of
from .errors import InputError


def output_size(input_size, filter_size, stride, pad) -> int:
    """(input_size + 2 pad - filter_size) // stride + 1 (eq. 7.1), for arguments already checked;
    an error if no window fits."""
    size = (input_size + 2 * pad - filter_size) // stride + 1
    if size < 1:
        raise InputError(
            f"a filter of size {filter_size} does not fit an input of size {input_size} with pad {pad}"
        )
    return size


def output_shape(height, width, filter_h, filter_w, stride, pad) -> tuple[int, int]:
    """(OH, OW) of a filter sliding over a (height, width) input (eq. 7.1), for the layers' hot
    path: their arguments were checked when the layer was built."""
    return output_size(height, filter_h, stride, pad), output_size(width, filter_w, stride, pad)


def pad_input(x, filter_h, filter_w, stride, pad):
    """``x`` padded with zeros, and the output size (OH, OW) of a filter sliding over it."""
    if x.ndim != 4:
        raise InputError(f"expected input of shape (N, C, H, W), got {tuple(x.shape)}")
    out = output_shape(x.shape[2], x.shape[3], filter_h, filter_w, stride, pad)
    if pad:
        x = xpx.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), xp=namespace_of(x))
    return x, out


def _slices(out_h, out_w, i, j, stride):
    """The index of filter position (i, j)'s slice of a padded input: (N, C, OH, OW)."""
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    return (slice(None), slice(None), slice(i, i + span_h, stride), slice(j, j + span_w, stride))


def window_slices(x, filter_h, filter_w, stride=1, pad=0) -> list:
    """The filter_h * filter_w strided slices of the padded (N, C, H, W) input ``x``, one per
    filter position (i, j) in row-major order, each (N, C, OH, OW)."""
    x, (out_h, out_w) = pad_input(x, filter_h, filter_w, stride, pad)
    return [
        x[_slices(out_h, out_w, i, j, stride)] for i in range(filter_h) for j in range(filter_w)
    ]


def col2im_windows(parts, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The adjoint of :func:`window_slices`: the list of per-position window gradients, each
    (N, C, OH, OW), added back into an array of ``input_shape``."""
    N, C, H, W = (operator.index(v) for v in input_shape)
    out_h, out_w = output_shape(H, W, filter_h, filter_w, stride, pad)
    xp = namespace_of(*parts)
    img = xp.zeros(
        (N, C, H + 2 * pad, W + 2 * pad),
        dtype=parts[0].dtype,
        device=array_api_compat.device(parts[0]),
    )
    for k, part in enumerate(parts):
        img = xpx.at(img, _slices(out_h, out_w, *divmod(k, filter_w), stride)).add(part)
    return img[:, :, pad : pad + H, pad : pad + W] if pad else img
