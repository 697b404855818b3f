"""portnet.util, the book's common/util.py: im2col / col2im equal to the book's on every backend."""

import itertools

import numpy as np
import pytest

import portnet as pn
from tests import reference as ref
from tests.helpers import assert_close, on

FILTERS = [(3, 3), (2, 3), (4, 1), (5, 5)]


@pytest.mark.parametrize("stride, pad", list(itertools.product((1, 2, 3), (0, 1, 2))))
def test_im2col_and_col2im_equal_the_books(backend, stride, pad):
    rng = np.random.default_rng(10 * stride + pad)
    x = rng.normal(size=(2, 3, 7, 9))
    for fh, fw in FILTERS:
        expected = ref.im2col(x, fh, fw, stride, pad)
        assert_close(
            pn.im2col(on(backend, x), fh, fw, stride, pad),
            expected,
            backend,
            "float64",
            rtol=0,
            atol=0,
        )
        col = rng.normal(size=expected.shape)
        assert_close(
            pn.col2im(on(backend, col), x.shape, fh, fw, stride, pad),
            ref.col2im(col, x.shape, fh, fw, stride, pad),
            backend,
            "float64",
        )


def test_conv_output_size():
    assert pn.conv_output_size(28, 5) == 24
    assert pn.conv_output_size(28, 3, 1, 1) == 28
    assert pn.conv_output_size(7, 3, 2, 0) == 3
    with pytest.raises(
        pn.InputError, match="a filter of size 9 does not fit an input of size 4 with pad 2"
    ):
        pn.conv_output_size(4, 9, 1, 2)
    with pytest.raises(pn.InputError, match="stride must be a positive integer, got 0"):
        pn.conv_output_size(4, 3, 0)


def test_col2im_checks_the_shape(backend):
    with pytest.raises(pn.InputError, match=r"col has shape \(5, 9\), expected \(4, 9\)"):
        pn.col2im(on(backend, np.zeros((5, 9))), (1, 1, 4, 4), 3, 3)


def _book_smooth(x):
    """The book's smooth_curve: numpy's kaiser window and convolve."""
    window_len = 11
    s = np.r_[x[window_len - 1 : 0 : -1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5 : len(y) - 5]


def test_smooth_curve_is_the_books(backend):
    losses = list(np.random.default_rng(0).random(40) + np.linspace(3, 0, 40))
    np.testing.assert_allclose(pn.smooth_curve(losses), _book_smooth(np.array(losses)), rtol=1e-13)
    assert_close(
        pn.smooth_curve(on(backend, losses)), _book_smooth(np.array(losses)), backend, "float64"
    )
    with pytest.raises(pn.InputError, match="at least 11 values"):
        pn.smooth_curve([1.0, 2.0])


def test_shuffle_dataset_keeps_pairs(backend):
    x = on(backend, np.arange(20.0).reshape(10, 2))
    t = on(backend, np.arange(10))
    xs, ts = pn.shuffle_dataset(x, t)
    xs, ts = pn.to_numpy(xs), pn.to_numpy(ts)
    assert sorted(ts.tolist()) == list(range(10)) and np.array_equal(xs[:, 0], 2.0 * ts)


@pytest.mark.only_backends("numpy", reason="the book's draws come from NumPy's global generator")
def test_shuffle_dataset_is_the_books_on_numpy(backend):
    x, t = on(backend, np.arange(20.0).reshape(10, 2)), on(backend, np.arange(10))
    np.random.seed(3)
    order = np.random.permutation(10)
    np.random.seed(3)
    assert np.array_equal(pn.to_numpy(pn.shuffle_dataset(x, t)[1]), order)
