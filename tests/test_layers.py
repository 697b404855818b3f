"""Each layer's forward and backward against the book's NumPy float64 code, on every backend."""

import numpy as np
import pytest

import portnet as pn
from portnet.arrays import writeable
from portnet.randomness import Random
from tests import reference as ref
from tests.helpers import assert_close, on, tolerance

DTYPES = ["float64", "float32"]


def data(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for shape in shapes]


def layer_of(cls, backend, arrays, **options):
    """The layer built as the book builds it, ``cls(W, b, ...)``; on JAX, whose arrays cannot be
    updated in place, bound by keyword to a dict instead."""
    arrays = {k: on(backend, v) for k, v in arrays.items()}
    if not all(writeable(a) for a in arrays.values()):
        return cls(params=arrays, keys=tuple(arrays), **options)
    return cls(*arrays.values(), **options)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "layer, book", [(pn.Relu, ref.relu), (pn.Sigmoid, ref.sigmoid)], ids=["Relu", "Sigmoid"]
)
def test_activation(backend, layer, book, dtype):
    X, DOUT = data(42, (8, 6), (8, 6))
    layer = layer()
    out, dx = book(X.astype(dtype).astype("float64"), DOUT.astype(dtype).astype("float64"))
    assert_close(layer.forward(on(backend, X, dtype)), out, backend, dtype)
    assert_close(layer.backward(on(backend, DOUT, dtype)), dx, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_flattens_and_restores_shape(backend, dtype):
    x, W, b, dout = (a.astype(dtype) for a in data(1, (4, 1, 2, 3), (6, 5), (5,), (4, 5)))
    out, dx, dW, db = ref.affine(*(a.astype("float64") for a in (x, W, b, dout)))
    sizes = ref.affine(*(np.abs(a.astype("float64")) for a in (x, W, b, dout)))  # sums of |terms|
    layer = layer_of(pn.Affine, backend, {"W": W, "b": b})
    assert_close(layer.forward(on(backend, x)), out, backend, dtype, sums=(7, sizes[0]))
    assert_close(layer.backward(on(backend, dout)), dx, backend, dtype, sums=(5, sizes[1]))
    assert_close(layer.dW, dW, backend, dtype, sums=(4, sizes[2]))
    assert_close(layer.db, db, backend, dtype, sums=(4, sizes[3]))
    assert set(layer.grads()) == {"W", "b"}


def test_bound_layer_reads_rebound_parameters_and_reports_by_key(backend):
    params = {"W1": on(backend, np.eye(3)), "b1": on(backend, np.zeros(3))}
    layer = pn.Affine(params=params, keys=("W1", "b1"))
    x = on(backend, [[1.0, 2.0, 3.0]])
    assert_close(layer.forward(x), [[1.0, 2.0, 3.0]], backend, "float64")
    params["W1"] = params["W1"] * 2.0
    params["b1"] = params["b1"] + 1.0
    assert_close(layer.forward(x), [[3.0, 5.0, 7.0]], backend, "float64")
    layer.backward(on(backend, [[1.0, 0.0, 0.0]]))
    grads = layer.grads()
    assert set(grads) == {"W1", "b1"} and layer.decayed_keys() == ["W1"]
    assert_close(grads["b1"], [1.0, 0.0, 0.0], backend, "float64")


def test_assigning_a_layer_parameter_rebinds_where_it_is_read(backend):
    """The book's networks set ``layer.W = ...`` after loading their parameters."""
    params = {"W1": on(backend, np.eye(2)), "b1": on(backend, np.zeros(2))}
    layer = pn.Affine(params=params, keys=("W1", "b1"))
    layer.W = on(backend, 3.0 * np.eye(2))
    assert_close(params["W1"], 3.0 * np.eye(2), backend, "float64")
    assert_close(layer.forward(on(backend, [[1.0, 1.0]])), [[3.0, 3.0]], backend, "float64")


@pytest.mark.skip_backends(
    "jax", reason="a layer cannot keep arrays that cannot be updated in place"
)
def test_assigning_a_book_style_layers_parameter(backend):
    book_style = pn.Affine(on(backend, np.eye(2)), on(backend, np.zeros(2)))
    book_style.b = on(backend, [1.0, 2.0])
    assert_close(book_style.forward(on(backend, [[0.0, 0.0]])), [[1.0, 2.0]], backend, "float64")


def test_layer_construction_errors(backend):
    W, b = on(backend, np.zeros((2, 2))), on(backend, np.zeros(2))
    with pytest.raises(pn.InputError, match="either the arrays or params= and keys=, not both"):
        pn.Affine(W, b, params={"W": W, "b": b})
    with pytest.raises(pn.InputError, match=r"params has no 'W9'"):
        pn.Affine(params={"W1": W, "b1": b}, keys=("W9", "b1"))
    with pytest.raises(pn.InputError, match="Affine needs W, b"):
        pn.Affine(W)


@pytest.mark.only_backends(
    "jax", reason="immutable: a layer keeping the arrays could never see an update"
)
def test_a_layer_refuses_arrays_it_could_never_update(backend):
    W, b = on(backend, np.zeros((2, 2))), on(backend, np.zeros(2))
    with pytest.raises(
        pn.InputError, match=r"cannot be updated in place.*Affine\(params=self.params"
    ):
        pn.Affine(W, b)


def test_affine_wrong_width_names_it(backend):
    layer = pn.Affine(
        params={"W1": on(backend, np.zeros((784, 10))), "b1": on(backend, np.zeros(10))},
        keys=("W1", "b1"),
    )
    with pytest.raises(ValueError, match=r"W1: the input has 783 features per sample.*expects 784"):
        layer.forward(on(backend, np.zeros((2, 783))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels_kind", ["labels", "one-hot", "column"])
def test_softmax_with_loss(backend, dtype, labels_kind):
    (x,) = data(3, (8, 6))
    x = x.astype(dtype)
    labels = np.random.default_rng(4).integers(0, 6, size=8)
    loss, dx = ref.softmax_with_loss(x.astype("float64"), labels)
    layer = pn.SoftmaxWithLoss()
    t = {"labels": labels, "one-hot": np.eye(6, dtype=np.int64)[labels], "column": labels[:, None]}[
        labels_kind
    ]
    assert_close(layer.forward(on(backend, x), on(backend, t)), loss, backend, dtype)
    assert_close(layer.backward(), dx, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(backend, dtype):
    X, DOUT = data(5, (8, 6), (8, 6))
    layer = pn.Dropout(0.4, Random(backend.xp, backend.device, seed=1))
    out = layer.forward(on(backend, X, dtype), train_flg=True)
    mask = pn.to_numpy(layer.mask)
    assert 0.3 < mask.mean() < 0.9, "about 60% of the units are kept"
    x64 = X.astype(dtype).astype("float64")
    assert_close(out, x64 * mask, backend, dtype)
    assert_close(
        layer.backward(on(backend, DOUT, dtype)), DOUT.astype(dtype) * mask, backend, dtype
    )
    assert_close(layer.forward(on(backend, X, dtype), train_flg=False), x64 * 0.6, backend, dtype)
    layer.frozen = True
    layer.forward(on(backend, X, dtype))
    assert np.array_equal(pn.to_numpy(layer.mask), mask), "a frozen layer keeps its mask"


def test_dropout_default_mask_is_the_books_on_numpy():
    """No generator given: NumPy's global one, ``np.random.rand(*x.shape) > ratio`` as the book."""
    x = np.ones((4, 5))
    np.random.seed(7)
    expected = np.random.rand(4, 5) > 0.5
    np.random.seed(7)
    layer = pn.Dropout(0.5)
    assert np.array_equal(layer.forward(x) != 0, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_normalization(backend, dtype):
    gamma, beta, x, dout = (a.astype(dtype) for a in data(6, (6,), (6,), (8, 6), (8, 6)))
    out, dx, dgamma, dbeta, mu, var = ref.batchnorm_train(
        *(a.astype("float64") for a in (x, gamma, beta, dout))
    )
    layer = layer_of(pn.BatchNormalization, backend, {"gamma": gamma, "beta": beta})
    assert_close(layer.forward(on(backend, x), train_flg=True), out, backend, dtype)
    assert_close(layer.backward(on(backend, dout)), dx, backend, dtype)
    assert_close(layer.dgamma, dgamma, backend, dtype)
    assert_close(layer.dbeta, dbeta, backend, dtype)
    running_mean, running_var = 0.1 * mu, 0.1 * var  # one step of momentum 0.9 from zero
    assert_close(layer.running_mean, running_mean, backend, dtype)
    test_out = gamma * (x - running_mean) / np.sqrt(running_var + 10e-7) + beta
    assert_close(layer.forward(on(backend, x), train_flg=False), test_out, backend, dtype)


# --------------------------------------------------------------------------- ch. 7
CONV_CASES = [
    (1, 0, (3, 3)),
    (1, 1, (3, 3)),
    (1, 2, (2, 3)),
    (2, 0, (3, 2)),
    (2, 1, (3, 3)),
    (3, 2, (5, 2)),
    (1, 0, (1, 1)),
    (2, 2, (4, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, pad, filt", CONV_CASES, ids=lambda c: str(c))
def test_convolution_against_the_books(backend, dtype, stride, pad, filt):
    fh, fw = filt
    x, W, b = (a.astype(dtype) for a in data(7, (3, 2, 9, 8), (4, 2, fh, fw), (4,)))
    oh, ow = pn.conv_output_size(9, fh, stride, pad), pn.conv_output_size(8, fw, stride, pad)
    (dout,) = (a.astype(dtype) for a in data(8, (3, 4, oh, ow)))
    out, dx, dW, db = ref.convolution(*(a.astype("float64") for a in (x, W, b, dout)), stride, pad)
    # Each result sums products that cancel: bound it by the sum of their absolute values (the
    # same convolution of |x|, |W|, |b|, |dout|), which holds on any BLAS.
    sizes = ref.convolution(*(np.abs(a.astype("float64")) for a in (x, W, b, dout)), stride, pad)
    terms = {"out": 2 * fh * fw + 1, "dx": 4 * fh * fw, "dW": 3 * oh * ow, "db": 3 * oh * ow}
    layer = layer_of(pn.Convolution, backend, {"W": W, "b": b}, stride=stride, pad=pad)
    assert_close(layer.forward(on(backend, x)), out, backend, dtype, sums=(terms["out"], sizes[0]))
    assert_close(
        layer.backward(on(backend, dout)), dx, backend, dtype, sums=(terms["dx"], sizes[1])
    )
    assert_close(layer.dW, dW, backend, dtype, sums=(terms["dW"], sizes[2]))
    assert_close(layer.db, db, backend, dtype, sums=(terms["db"], sizes[3]))


@pytest.mark.parametrize(
    "stride, pad, window",
    [(2, 0, (2, 2)), (1, 0, (2, 2)), (2, 1, (3, 3)), (3, 0, (2, 3)), (1, 1, (3, 2))],
)
def test_max_pooling_routes_to_the_first_maximum(backend, stride, pad, window):
    """Ties (common after ReLU and on MNIST's blank borders) go to the first maximum, as the
    book's argmax sends them."""
    ph, pw = window
    (x,) = data(9, (2, 3, 7, 8))
    x = np.round(x)  # many ties
    oh, ow = pn.conv_output_size(7, ph, stride, pad), pn.conv_output_size(8, pw, stride, pad)
    (dout,) = data(10, (2, 3, oh, ow))
    out, dx = ref.max_pooling(x, dout, ph, pw, stride, pad)
    layer = pn.Pooling(ph, pw, stride, pad)
    assert_close(layer.forward(on(backend, x)), out, backend, "float64")
    assert_close(layer.backward(on(backend, dout)), dx, backend, "float64")


def test_pooling_default_stride_is_the_books():
    assert (
        pn.Pooling(2, 2).stride == 2
    )  # common/layers.py: Pooling(pool_h, pool_w, stride=2, pad=0)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 2), "pool_h must be a positive integer, got 0"),
        ((2, 2, 0), "stride must be a positive integer, got 0"),
        ((2, 2, 1, -1), "pad must be a non-negative integer, got -1"),
    ],
)
def test_pooling_arguments(args, message):
    with pytest.raises(pn.InputError, match=message):
        pn.Pooling(*args)


def test_convolution_shape_errors(backend):
    layer = layer_of(pn.Convolution, backend, {"W": np.zeros((4, 3, 5, 5)), "b": np.zeros(4)})
    with pytest.raises(
        pn.InputError, match=r"expected input of shape \(N, 3, H, W\).*got \(2, 1, 28, 28\)"
    ):
        layer.forward(on(backend, np.zeros((2, 1, 28, 28))))
    with pytest.raises(pn.InputError, match="a filter of size 5 does not fit an input of size 4"):
        layer.forward(on(backend, np.zeros((2, 3, 4, 4))))


# --------------------------------------------------------------------------- fast paths and compilation
@pytest.mark.parametrize("stride, pad, filt", CONV_CASES, ids=lambda c: str(c))
def test_the_window_matrix_fast_path_is_the_generic_one(backend, stride, pad, filt):
    """portnet.delegation: each library's fast path gives exactly the generic array-API result."""
    from portnet import delegation
    from portnet.windows import pad_input

    fh, fw = filt
    padded, (oh, ow) = pad_input(on(backend, data(11, (3, 2, 9, 8))[0]), fh, fw, stride, pad)
    fast = delegation.window_matrix(padded, fh, fw, stride, oh, ow)
    generic = delegation.window_matrix(padded, fh, fw, stride, oh, ow, generic=True)
    assert np.array_equal(pn.to_numpy(fast), pn.to_numpy(generic))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_relu_fast_path_is_the_generic_one(backend, dtype):
    from portnet import delegation

    x, dout = (on(backend, a, dtype) for a in data(12, (7, 5), (7, 5)))
    out = delegation.relu_forward(x)
    assert np.array_equal(pn.to_numpy(out), pn.to_numpy(delegation.relu_forward(x, generic=True)))
    for fast in (delegation.relu_backward(dout, out), delegation.keep(dout, x > 0)):
        assert np.array_equal(
            pn.to_numpy(fast), pn.to_numpy(delegation.relu_backward(dout, out, generic=True))
        )
    assert np.array_equal(pn.to_numpy(pn.Relu().forward(x) <= 0), pn.to_numpy(x <= 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_loss_fast_paths_are_the_generic_ones(backend, dtype):
    """The gather of each row's label, the book's ``dx[arange(N), t] -= 1``, the mini-batch's
    rows and the Affine product: each library's fast path gives the generic result."""
    from portnet import delegation

    y, W, b = (on(backend, a, dtype) for a in data(14, (6, 4), (4, 3), (3,)))
    labels, rows = (on(backend, np.array(v)) for v in ([3, 0, 1, 3, 2, 0], [5, 0, 2]))
    picked = delegation.pick(y, labels)
    cases = [
        (picked, delegation.pick(y, labels, generic=True)),
        (
            delegation.minus_one_hot(y, labels, picked),
            delegation.minus_one_hot(y, labels, picked, generic=True),
        ),
        (delegation.take_rows(y, rows), delegation.take_rows(y, rows, generic=True)),
    ]
    for fast, generic in cases:
        assert np.array_equal(pn.to_numpy(fast), pn.to_numpy(generic))
    product = delegation.linear(y, W, b)
    assert_close(
        product,
        pn.to_numpy(delegation.linear(y, W, b, generic=True)),
        backend,
        dtype,
        sums=(5, np.abs(pn.to_numpy(y)) @ np.abs(pn.to_numpy(W)) + np.abs(pn.to_numpy(b))),
    )


def _layer_cases():
    rng = np.random.default_rng(13)
    W, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    F, c = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    return {
        "Affine": (lambda p: pn.Affine(params=p, keys=("W", "b")), {"W": W, "b": b}, (5, 6)),
        "Relu": (lambda p: pn.Relu(), {}, (5, 6)),
        "Sigmoid": (lambda p: pn.Sigmoid(), {}, (5, 6)),
        "BatchNormalization": (
            lambda p: pn.BatchNormalization(params=p, keys=("gamma", "beta")),
            {"gamma": rng.normal(size=6), "beta": rng.normal(size=6)},
            (5, 6),
        ),
        "Convolution": (
            lambda p: pn.Convolution(params=p, keys=("W", "b"), stride=1, pad=1),
            {"W": F, "b": c},
            (2, 2, 6, 5),
        ),
        "Pooling": (lambda p: pn.Pooling(2, 2), {}, (2, 3, 6, 6)),
    }


@pytest.mark.only_backends("jax", reason="jax.jit traces the layers")
@pytest.mark.parametrize("name", list(_layer_cases()))
def test_layers_under_jit_are_the_eager_ones(backend, name):
    """Forward and backward traced by jax.jit give what the eager layer gives: no host read, no
    in-place write, no Python branch on a value inside a layer."""
    import jax

    make, params, shape = _layer_cases()[name]
    rng = np.random.default_rng(14)
    x = on(backend, rng.normal(size=shape))

    def run(params, x):
        layer = make(params)
        out = layer.forward(x, train_flg=True)
        dx = layer.backward(backend.xp.ones_like(out) * 0.5)
        return out, dx, (layer.grads() if hasattr(layer, "grads") else {})

    arrays = {k: on(backend, v) for k, v in params.items()}
    eager, traced = run(dict(arrays), x), jax.jit(run)(dict(arrays), x)
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(traced)):
        np.testing.assert_allclose(pn.to_numpy(b), pn.to_numpy(a), **tolerance("float64"))


def _conv_data(dtype, stride, pad, filt):
    """The data of test_convolution_against_the_books in ``dtype``, and per result (out, dx, dW,
    db) how many products it sums and the sum of their absolute values (float64)."""
    fh, fw = filt
    x, W, b = (a.astype(dtype) for a in data(7, (3, 2, 9, 8), (4, 2, fh, fw), (4,)))
    oh, ow = pn.conv_output_size(9, fh, stride, pad), pn.conv_output_size(8, fw, stride, pad)
    (dout,) = (a.astype(dtype) for a in data(8, (3, 4, oh, ow)))
    sizes = ref.convolution(*(np.abs(a.astype("float64")) for a in (x, W, b, dout)), stride, pad)
    terms = (2 * fh * fw + 1, 4 * fh * fw, 3 * oh * ow, 3 * oh * ow)
    return (x, W, b, dout), list(zip(terms, sizes))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, pad, filt", CONV_CASES, ids=lambda c: str(c))
def test_the_convolution_fast_path_is_the_generic_one(
    backend, dtype, stride, pad, filt, monkeypatch
):
    """The library's convolution (PyTorch, JAX) against the generic im2col path: out, dx, dW, db.
    Both are sums of the same products in other orders, each within gamma_n of the exact sum, so
    the two within gamma_2n of each other. On JAX also with XLA's filter gradient, which the CPU
    does not use."""
    from portnet import delegation

    _compare_convolutions(dtype, backend, stride, pad, filt)
    if backend.name == "jax":
        monkeypatch.setattr(delegation, "_JAX_FILTER_GRADIENT_BY_MATMUL", ())
        _compare_convolutions(dtype, backend, stride, pad, filt)


def _compare_convolutions(dtype, backend, stride, pad, filt):
    from portnet import delegation

    arrays, sums = _conv_data(dtype, stride, pad, filt)
    x, W, b, dout = (on(backend, a) for a in arrays)
    fast_out, fast_saved = delegation.convolution_forward(x, W, b, stride, pad)
    out, saved = delegation.convolution_forward(x, W, b, stride, pad, generic=True)
    fast = (fast_out, *delegation.convolution_backward(dout, fast_saved, True))
    generic = (out, *delegation.convolution_backward(dout, saved, True, generic=True))
    for name, f, g, (terms, size) in zip(("out", "dx", "dW", "db"), fast, generic, sums):
        expected = pn.to_numpy(g).astype(np.float64)
        assert_close(f, expected, backend, dtype, sums=(2 * terms, size), err_msg=name)
    # no input gradient asked for: none computed, the filter gradients as before (cuDNN's may
    # differ in their last bits from call to call)
    skipped = delegation.convolution_backward(dout, fast_saved, False)
    assert skipped[0] is None
    for name, f, g, (terms, size) in zip(("dW", "db"), skipped[1:], generic[2:], sums[2:]):
        expected = pn.to_numpy(g).astype(np.float64)
        assert_close(f, expected, backend, dtype, sums=(2 * terms, size), err_msg=name)
    # the generic backward of a forward that ran a library's kernel builds the windows itself
    again = delegation.convolution_backward(dout, fast_saved, True, generic=True)
    for f, g in zip(again, generic[1:]):
        assert np.array_equal(pn.to_numpy(f), pn.to_numpy(g))


#: The cases of test_max_pooling_routes_to_the_first_maximum.
POOL_CASES = [(2, 0, (2, 2)), (1, 0, (2, 2)), (2, 1, (3, 3)), (3, 0, (2, 3)), (1, 1, (3, 2))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, pad, window", POOL_CASES)
def test_the_max_pooling_fast_path_is_the_generic_one(backend, dtype, stride, pad, window):
    """The library's max pooling (PyTorch, unpadded) against the generic path, with many ties:
    the same maxima, each gradient routed to the same (first) one; where windows overlap, the
    gradients reaching one input add, in either order."""
    from portnet import delegation

    ph, pw = window
    x = np.round(data(9, (2, 3, 7, 8))[0]).astype(dtype)
    oh, ow = pn.conv_output_size(7, ph, stride, pad), pn.conv_output_size(8, pw, stride, pad)
    (dout,) = (a.astype(dtype) for a in data(10, (2, 3, oh, ow)))
    size = ref.max_pooling(x.astype("float64"), np.abs(dout.astype("float64")), ph, pw, stride, pad)
    x, dout = on(backend, x), on(backend, dout)
    fast_out, fast_saved = delegation.max_pooling_forward(x, ph, pw, stride, pad)
    out, saved = delegation.max_pooling_forward(x, ph, pw, stride, pad, generic=True)
    assert_close(fast_out, pn.to_numpy(out), backend, dtype, rtol=0, atol=0)
    dx = pn.to_numpy(delegation.max_pooling_backward(dout, saved, generic=True))
    fast_dx = delegation.max_pooling_backward(dout, fast_saved)
    assert_close(fast_dx, dx.astype(np.float64), backend, dtype, sums=(2 * ph * pw, size[1]))
    again = delegation.max_pooling_backward(dout, fast_saved, generic=True)
    assert np.array_equal(pn.to_numpy(again), dx)


#: Which libraries run their own kernels: (convolution, unpadded max pooling).
OWN_KERNELS = {"torch": (True, True), "jax": (True, False)}


def test_the_fast_paths_are_taken(backend):
    """PyTorch's and JAX's convolution build no window matrix, PyTorch's pooling keeps indices
    instead of the window slices (with a pad, which PyTorch fills with -inf, the slices); the
    other libraries run the generic path. The layers keep what backward needs until it ran."""
    from portnet.arrays import library_name

    conv, pool = OWN_KERNELS.get(library_name(backend.xp), (False, False))
    x = on(backend, data(15, (2, 3, 8, 8))[0])
    layer = layer_of(pn.Convolution, backend, {"W": np.ones((4, 3, 3, 3)), "b": np.zeros(4)}, pad=1)
    out = layer.forward(x)
    assert (layer.saved.col is None) == conv
    layer.backward(backend.xp.ones_like(out))
    assert layer.saved is None and layer.dW is not None
    for pad, own in ((0, pool), (1, False)):
        pooling = pn.Pooling(2, 2, 2, pad)
        out = pooling.forward(x)
        assert (pooling.saved.windows is None) == own
        assert (pooling.saved.indices is not None) == own
        pooling.backward(backend.xp.ones_like(out))
        assert pooling.saved is None


@pytest.mark.parametrize("stride, pad, filt", CONV_CASES[:3], ids=lambda c: str(c))
def test_half_precision_convolution_sums_in_float32(backend, stride, pad, filt):
    """float16 convolution (inference): each output the float32 sum of the exact products,
    rounded to float16, the bias added (in float32 or after, in float16), on either path."""
    from portnet import delegation
    from tests.helpers import sum_tolerance

    if not hasattr(backend.xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")
    arrays, sums = _conv_data("float16", stride, pad, filt)
    exact = ref.convolution(*(a.astype("float64") for a in arrays), stride, pad)[0]
    x, W, b = (on(backend, a) for a in arrays[:3])
    products = exact - arrays[2].astype("float64")[:, None, None]
    rounding = 2.0**-11 * (np.abs(products) + np.abs(exact))  # to float16, before and after b
    bound = rounding + sum_tolerance(*sums[0], "float32") + 2.0**-24
    for generic in (False, True):
        out, _ = delegation.convolution_forward(x, W, b, stride, pad, generic=generic)
        assert out.dtype == backend.xp.float16
        error = np.abs(pn.to_numpy(out).astype(np.float64) - exact)
        assert np.all(error <= bound), f"generic={generic}: {np.max(error / bound):.3g} x bound"


def test_softmax_with_loss_used_directly_checks_its_labels(backend):
    """As the book's ch. 5 uses it: a label out of range is an error, not a wrapped index."""
    layer = pn.SoftmaxWithLoss()
    x = on(backend, np.zeros((2, 3)))
    with pytest.raises(pn.InputError, match="label 3 is out of range"):
        layer.forward(x, on(backend, np.array([0, 3])))


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_labels_of_any_integer_dtype(backend, dtype):
    """The gather and the one-hot subtraction take labels of any integer dtype (PyTorch's gather
    wants int64: converted; uint8 class numbers would wrap: compared as default integers)."""
    y = on(backend, np.full((2, 300), 1 / 300))
    labels = on(backend, np.array([200, 5], dtype=dtype))  # 5 is also 261 wrapped to uint8
    layer = pn.SoftmaxWithLoss()
    layer.forward(y, labels)
    dx = pn.to_numpy(layer.backward())
    assert np.count_nonzero(dx < 0) == 2 and dx[0, 200] < 0 and dx[1, 5] < 0
