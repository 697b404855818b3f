"""portnet.functions: the documented numbers from the seeds, parity with NumPy float64, metadata."""

import warnings

import numpy as np
import pytest

import portnet as pn
from tests.helpers import assert_close, assert_like, assert_prints, on

DTYPES = ["float64", "float32"]
T_ONE_HOT = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
Y_GOOD = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
Y_BAD = [0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]


# --------------------------------------------------------------------------- documented numbers
@pytest.mark.parametrize("dtype", DTYPES)
def test_step_function(backend, dtype):
    out = pn.step_function(on(backend, [-1.0, 1.0, 2.0], dtype))
    assert_close(out, [0, 1, 1], backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid(backend, dtype):
    out = pn.sigmoid(on(backend, [-1.0, 1.0, 2.0], dtype))
    assert_prints(out, "[0.26894142 0.73105858 0.88079708]", backend, dtype)


def _three_layer(backend, dtype, b1_row=False):
    W1 = on(backend, [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]], dtype)
    b1 = on(backend, [[0.1, 0.2, 0.3]] if b1_row else [0.1, 0.2, 0.3], dtype)
    W2 = on(backend, [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]], dtype)
    b2 = on(backend, [0.1, 0.2], dtype)
    W3 = on(backend, [[0.1, 0.3], [0.2, 0.4]], dtype)
    b3 = on(backend, [0.1, 0.2], dtype)
    x = on(backend, [1.0, 0.5], dtype)
    A1 = x @ W1 + b1
    Z1 = pn.sigmoid(A1)
    A2 = Z1 @ W2 + b2
    Z2 = pn.sigmoid(A2)
    Y = pn.identity_function(Z2 @ W3 + b3)
    return A1, Z1, A2, Z2, Y


@pytest.mark.parametrize("dtype", DTYPES)
def test_three_layer_forward(backend, dtype):
    A1, Z1, A2, Z2, Y = _three_layer(backend, dtype)
    assert_close(A1, [0.3, 0.7, 1.1], backend, dtype)
    assert_prints(Z1, "[0.57444252 0.66818777 0.75026011]", backend, dtype)
    assert_prints(A2, "[0.51615984 1.21402696]", backend, dtype)
    assert_prints(Z2, "[0.62624937 0.7710107]", backend, dtype)
    assert_prints(Y, "[0.31682708 0.69627909]", backend, dtype)
    *_, Y_row = _three_layer(backend, dtype, b1_row=True)
    assert_prints(Y_row, "[[0.31682708 0.69627909]]", backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_documented(backend, dtype):
    a = on(backend, [0.3, 2.9, 4.0], dtype)
    y = pn.softmax(a)
    assert_prints(y, "[0.01821127 0.24519181 0.73659691]", backend, dtype)
    assert_close(backend.xp.sum(y), 1.0, backend, dtype)
    exp_a = backend.xp.exp(a)
    assert_prints(exp_a, "[ 1.34985881 18.17414537 54.59815003]", backend, dtype)
    assert_close(backend.xp.sum(exp_a), 74.1221542101633, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_does_not_overflow(backend, dtype):
    a = on(backend, [1010.0, 1000.0, 990.0], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow this test is about
        naive = backend.xp.exp(a) / backend.xp.sum(backend.xp.exp(a))
    assert np.isnan(pn.to_numpy(naive)).all(), "the book's naive formula gives nan here"
    assert_prints(pn.softmax(a), "[9.99954600e-01 4.53978686e-05 2.06106005e-09]", backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_squared_error(backend, dtype):
    t = on(backend, T_ONE_HOT)
    good = pn.mean_squared_error(on(backend, Y_GOOD, dtype), t)
    assert_close(good, 0.09750000000000003, backend, dtype)
    assert_close(pn.mean_squared_error(on(backend, Y_BAD, dtype), t), 0.5975, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_error(backend, dtype):
    t = on(backend, T_ONE_HOT)
    assert_close(
        pn.cross_entropy_error(on(backend, Y_GOOD, dtype), t), 0.510825457099338, backend, dtype
    )
    assert_close(
        pn.cross_entropy_error(on(backend, Y_BAD, dtype), t), 2.302584092994546, backend, dtype
    )
    label = on(backend, 2)
    assert_close(
        pn.cross_entropy_error(on(backend, Y_GOOD, dtype), label), 0.510825457099338, backend, dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_classifier(backend, dtype):
    y_np = np.array([0.3, 0.2, 0.1, 0.4])
    y, t = on(backend, y_np, dtype), on(backend, [0, 1, 0, 0])
    assert_close(pn.cross_entropy_error(y, t), -np.log(0.2 + 1e-7), backend, dtype)
    # logits whose softmax is y: the gradient of the loss w.r.t. them is y - t
    logits = on(backend, np.log(y_np), "float64")
    grad = pn.numerical_gradient(lambda a: pn.softmax_loss(a, t), logits)
    assert_close(grad, y_np - [0, 1, 0, 0], backend, "float64", rtol=0, atol=1e-6)
    assert_close(pn.softmax_loss(logits, t), -np.log(0.2 + 1e-7), backend, "float64")


def test_argmax_of_softmax_is_argmax(backend):
    a = np.random.default_rng(0).normal(scale=10.0, size=(64, 10))
    xp = backend.xp
    assert np.array_equal(
        pn.to_numpy(xp.argmax(pn.softmax(on(backend, a)), axis=-1)), a.argmax(axis=-1)
    )


# --------------------------------------------------------------------------- parity with NumPy float64
def _reference(name, *args):
    """The book's own formulas, in NumPy float64."""
    if name == "sigmoid":
        return 1 / (1 + np.exp(-args[0]))
    if name == "softmax":
        a = args[0]
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "cross_entropy_error":
        y, t = args
        y2 = y.reshape(1, -1) if y.ndim == 1 else y
        return -np.sum(np.log(y2[np.arange(y2.shape[0]), t.reshape(-1)] + 1e-7)) / y2.shape[0]
    return {
        "identity_function": lambda x: x,
        "step_function": lambda x: (x > 0).astype(float),
        "sigmoid_grad": lambda x: (1 - 1 / (1 + np.exp(-x))) / (1 + np.exp(-x)),
        "relu": lambda x: np.maximum(0, x),
        "relu_grad": lambda x: (x >= 0).astype(float),  # the book: grad[x>=0] = 1
    }[name](args[0])


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=5.0, size=shape)
    extreme = np.array([-1e3, -80.0, -1e-30, 0.0, 1e-30, 80.0, 1e3])
    flat = x.reshape(-1)
    flat[: min(flat.size, extreme.size)] = extreme[: flat.size]
    return x


ELEMENTWISE = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (16, 10), (2, 3, 7)], ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_parity_elementwise(backend, name, shape, dtype):
    x = _inputs(shape).astype(dtype)
    with np.errstate(over="ignore"):
        expected = _reference(name, x.astype("float64"))
    out = getattr(pn, name)(on(backend, x))
    assert_close(out, expected, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("one_hot", [False, True], ids=["labels", "one-hot"])
@pytest.mark.parametrize("batch", [None, 1, 32])
def test_parity_losses(backend, batch, one_hot, dtype):
    rng = np.random.default_rng(1)
    shape = (10,) if batch is None else (batch, 10)
    logits = rng.normal(scale=3.0, size=shape)
    logits.reshape(-1)[:2] = [-200.0, 200.0]  # probabilities of exactly 0 and 1 in float32
    y = _reference("softmax", logits).astype(dtype)
    labels = rng.integers(0, 10, size=shape[:-1])
    t = np.eye(10, dtype=np.int64)[labels] if one_hot else labels
    expected = _reference("cross_entropy_error", y.astype("float64"), labels)
    assert_close(pn.cross_entropy_error(on(backend, y), on(backend, t)), expected, backend, dtype)
    t_hot = np.eye(10)[labels]
    expected_mse = 0.5 * np.sum((y.astype("float64") - t_hot) ** 2)
    assert_close(
        pn.mean_squared_error(on(backend, y), on(backend, t_hot, dtype)),
        expected_mse,
        backend,
        dtype,
    )
    expected_sl = _reference(
        "cross_entropy_error", _reference("softmax", logits.astype(dtype).astype("float64")), labels
    )
    assert_close(
        pn.softmax_loss(on(backend, logits, dtype), on(backend, t)), expected_sl, backend, dtype
    )


# --------------------------------------------------------------------------- metadata and errors
@pytest.mark.parametrize("dtype", DTYPES)
def test_result_follows_input_not_active_backend(backend, dtype):
    x = on(backend, [[-1.0, 0.5, 2.0]], dtype)
    with pn.use_backend("numpy"):
        for name in ELEMENTWISE:
            assert_like(getattr(pn, name)(x), backend, dtype, (1, 3))
        assert_like(pn.cross_entropy_error(pn.softmax(x), on(backend, [2])), backend, dtype, ())


def test_mismatched_shapes_raise(backend):
    y = on(backend, Y_GOOD)
    with pytest.raises(ValueError, match=r"\(10,\).*\(9,\)"):
        pn.mean_squared_error(y, on(backend, T_ONE_HOT[:9]))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 10\)"):
        pn.cross_entropy_error(on(backend, [Y_GOOD, Y_BAD]), on(backend, [2, 7, 1]))


def test_labels_out_of_range_raise(backend):
    with pytest.raises(ValueError, match="label 10 is out of range"):
        pn.cross_entropy_error(on(backend, [Y_GOOD]), on(backend, [10]))
    with pytest.raises(ValueError, match="label -1 is out of range"):
        pn.cross_entropy_error(on(backend, [Y_GOOD]), on(backend, [-1]))


def test_float_labels_raise(backend):
    with pytest.raises(ValueError, match="labels must be integers"):
        pn.cross_entropy_error(on(backend, [Y_GOOD]), on(backend, [2.0]))


def test_non_arrays_are_refused_with_a_hint():
    with pytest.raises(TypeError, match=r"got list; convert it with portnet.asarray"):
        pn.sigmoid([1.0, 2.0])


def test_mixed_libraries_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different libraries"):
        pn.mean_squared_error(np.zeros(3), torch.zeros(3))
