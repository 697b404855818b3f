"""Each layer's forward and backward against the book's NumPy float64 code, on every backend."""

import numpy as np
import pytest

import portnet as pn
from portnet.backend import Random
from tests import reference as ref
from tests.helpers import assert_close, on

DTYPES = ["float64", "float32"]
rng = np.random.default_rng(42)
X = rng.normal(size=(8, 6))
DOUT = rng.normal(size=(8, 6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer, book", [(pn.Relu, ref.relu), (pn.Sigmoid, ref.sigmoid)], ids=["Relu", "Sigmoid"])
def test_activation(backend, layer, book, dtype):
    layer = layer()
    out, dx = book(X.astype(dtype).astype("float64"), DOUT.astype(dtype).astype("float64"))
    assert_close(layer.forward(on(backend, X, dtype)), out, backend, dtype)
    assert_close(layer.backward(on(backend, DOUT, dtype)), dx, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_flattens_and_restores_shape(backend, dtype):
    x = rng.normal(size=(4, 1, 2, 3)).astype(dtype)
    W = rng.normal(size=(6, 5)).astype(dtype)
    b = rng.normal(size=5).astype(dtype)
    dout = rng.normal(size=(4, 5)).astype(dtype)
    out, dx, dW, db = ref.affine(*(a.astype("float64") for a in (x, W, b, dout)))
    layer = pn.Affine(on(backend, W), on(backend, b))
    assert_close(layer.forward(on(backend, x)), out, backend, dtype)
    assert_close(layer.backward(on(backend, dout)), dx, backend, dtype)
    assert_close(layer.dW, dW, backend, dtype)
    assert_close(layer.db, db, backend, dtype)


def test_affine_reads_rebound_parameters(backend):
    params = {"W1": on(backend, np.eye(3)), "b1": on(backend, np.zeros(3))}
    layer = pn.Affine.of(params, "W1", "b1")
    x = on(backend, [[1.0, 2.0, 3.0]])
    assert_close(layer.forward(x), [[1.0, 2.0, 3.0]], backend, "float64")
    params["W1"] = params["W1"] * 2.0
    params["b1"] = params["b1"] + 1.0
    assert_close(layer.forward(x), [[3.0, 5.0, 7.0]], backend, "float64")


def test_affine_wrong_width_names_it(backend):
    layer = pn.Affine(on(backend, np.zeros((784, 10))), on(backend, np.zeros(10)))
    with pytest.raises(ValueError, match=r"783 features per sample.*expects 784"):
        layer.forward(on(backend, np.zeros((2, 783))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("one_hot", [False, True], ids=["labels", "one-hot"])
def test_softmax_with_loss(backend, dtype, one_hot):
    x = X.astype(dtype)
    labels = rng.integers(0, 6, size=8)
    loss, dx = ref.softmax_with_loss(x.astype("float64"), labels)
    layer = pn.SoftmaxWithLoss()
    t = np.eye(6, dtype=np.int64)[labels] if one_hot else labels
    assert_close(layer.forward(on(backend, x), on(backend, t)), loss, backend, dtype)
    assert_close(layer.backward(), dx, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(backend, dtype):
    layer = pn.Dropout(0.4, Random(backend.xp, backend.device, seed=1))
    out = layer.forward(on(backend, X, dtype), train_flg=True)
    mask = pn.to_numpy(layer.mask)
    assert 0.3 < mask.mean() < 0.9, "about 60% of the units are kept"
    x64 = X.astype(dtype).astype("float64")
    assert_close(out, x64 * mask, backend, dtype)
    assert_close(layer.backward(on(backend, DOUT, dtype)), DOUT.astype(dtype) * mask, backend, dtype)
    assert_close(layer.forward(on(backend, X, dtype), train_flg=False), x64 * 0.6, backend, dtype)
    layer.frozen = True
    layer.forward(on(backend, X, dtype))
    assert np.array_equal(pn.to_numpy(layer.mask), mask), "a frozen layer keeps its mask"


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_normalization(backend, dtype):
    gamma = rng.normal(size=6).astype(dtype)
    beta = rng.normal(size=6).astype(dtype)
    x, dout = X.astype(dtype), DOUT.astype(dtype)
    out, dx, dgamma, dbeta, mu, var = ref.batchnorm_train(*(a.astype("float64") for a in (x, gamma, beta, dout)))
    layer = pn.BatchNormalization(on(backend, gamma), on(backend, beta))
    assert_close(layer.forward(on(backend, x), train_flg=True), out, backend, dtype)
    assert_close(layer.backward(on(backend, dout)), dx, backend, dtype)
    assert_close(layer.dgamma, dgamma, backend, dtype)
    assert_close(layer.dbeta, dbeta, backend, dtype)
    running_mean, running_var = 0.1 * mu, 0.1 * var  # one step of momentum 0.9 from zero
    assert_close(layer.running_mean, running_mean, backend, dtype)
    test_out = gamma * (x - running_mean) / np.sqrt(running_var + 10e-7) + beta
    assert_close(layer.forward(on(backend, x), train_flg=False), test_out, backend, dtype)
