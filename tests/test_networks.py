"""The book's networks on every backend: gradient checks on real MNIST, parity, learning, errors."""

import numpy as np
import pytest

import portnet as pn
from tests.helpers import assert_backprop_matches_numerical, assert_close, on, tolerance


def pooled(images, n):
    """The first ``n`` MNIST images averaged over 4x4 blocks: 7x7 = 49 inputs, so that a
    numerical gradient over every weight takes seconds, not minutes, on every backend."""
    return images[:n].reshape(n, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(n, 49).astype("float64")


VARIANTS = {
    "two-layer": lambda: pn.TwoLayerNet(49, 8, 10, weight_init_std=0.1, seed=0),
    "relu": lambda: pn.MultiLayerNet(49, [6, 5], 10, activation="relu", seed=0),
    "sigmoid": lambda: pn.MultiLayerNet(
        49, [6, 5], 10, activation="sigmoid", weight_init_std="xavier", seed=0
    ),
    "batchnorm": lambda: pn.MultiLayerNet(49, [6, 5], 10, use_batchnorm=True, seed=0),
    "dropout": lambda: pn.MultiLayerNet(
        49, [6, 5], 10, use_dropout=True, dropout_ratio=0.3, seed=0, random_source="host"
    ),
    "weight-decay": lambda: pn.MultiLayerNet(49, [6, 5], 10, weight_decay_lambda=0.1, seed=0),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_check_on_mnist(backend, mnist, variant):
    """Backprop against central differences, float64, mean |difference| below 1e-6 per parameter."""
    (x_train, t_train), _ = mnist
    with pn.use_backend(backend.name, backend.device, "float64"):
        net = VARIANTS[variant]()
    x, t = on(backend, pooled(x_train, 3)), on(backend, t_train[:3])
    assert_backprop_matches_numerical(net, x, t, backend, bias_scale=0.05, what=variant)


def test_book_gradient_check_full_size(mnist):
    """The book's ch05 gradient_check.py itself: TwoLayerNet 784-50-10 on 3 images, NumPy."""
    (x_train, t_train), _ = mnist
    net = pn.TwoLayerNet(784, 50, 10, dtype="float64", seed=0)
    x, t = x_train[:3].astype("float64"), t_train[:3]
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    for key in ("W1", "b1", "W2", "b2"):
        assert np.mean(np.abs(backprop[key] - numerical[key])) < 1e-6, key


def test_same_seed_same_weights_everywhere(backend):
    with pn.use_backend("numpy"):
        expected = pn.MultiLayerNet(20, [7], 3, seed=5).params
    net = pn.MultiLayerNet(20, [7], 3, seed=5)
    for key, value in expected.items():
        assert_close(net.params[key], value, backend, "float32", rtol=0, atol=0)


def test_default_dtype_is_float32_and_overridable(backend, monkeypatch):
    assert pn.to_numpy(pn.TwoLayerNet(4, 3, 2).params["W1"]).dtype == np.float32
    assert pn.to_numpy(pn.TwoLayerNet(4, 3, 2, dtype="float64").params["W1"]).dtype == np.float64
    assert (
        pn.to_numpy(pn.TwoLayerNet(4, 3, 2, dtype=backend.xp.float64).params["b2"]).dtype
        == np.float64
    )
    with pn.use_backend(backend.name, backend.device, dtype="float64"):
        assert pn.to_numpy(pn.TwoLayerNet(4, 3, 2).params["W1"]).dtype == np.float64
    monkeypatch.setenv("PORTNET_DTYPE", "float64")
    with pn.use_backend(backend.name, backend.device):
        assert pn.to_numpy(pn.TwoLayerNet(4, 3, 2).params["W1"]).dtype == np.float64


def _sgd_losses(mnist, steps=50, dtype="float32"):
    """50 SGD steps on real MNIST from seed 0, batches chosen on the host: the loss each step."""
    (x_train, t_train), _ = mnist
    xp = pn.get_namespace()
    net = pn.MultiLayerNet(784, [40, 20], 10, dtype=dtype, seed=0)
    batches = np.random.default_rng(0).integers(0, 60000, size=(steps, 100))
    x_all, t_all = pn.asarray(x_train[:60000], dtype=dtype), pn.asarray(t_train)
    losses = []
    for idx in batches:
        x, t = xp.take(x_all, pn.asarray(idx), axis=0), xp.take(t_all, pn.asarray(idx), axis=0)
        loss, grads = net.loss_and_gradient(x, t)
        pn.SGD(lr=0.1).update(net.params, grads)
        losses.append(float(loss))
    return np.array(losses)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parity_50_sgd_steps(backend, mnist, dtype):
    with pn.use_backend("numpy"):
        expected = _sgd_losses(mnist, dtype=dtype)
    got = _sgd_losses(mnist, dtype=dtype)
    assert expected[-1] < expected[0] * 0.5, "the reference run learns"
    np.testing.assert_allclose(got, expected, **tolerance(dtype))


def test_book_ch05_loop_runs_unchanged(backend, mnist):
    """The book's train_neuralnet.py with only its NumPy-isms spelled through portnet."""
    (x_train, t_train), (x_test, t_test) = mnist
    xp = pn.get_namespace()
    x_train, t_train = pn.asarray(x_train[:10000]), pn.asarray(t_train[:10000])
    x_test, t_test = pn.asarray(x_test[:2000]), pn.asarray(t_test[:2000])
    network = pn.TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=0)
    rng = np.random.default_rng(0)
    train_size, batch_size, learning_rate = x_train.shape[0], 100, 0.1
    train_loss_list = []
    for _ in range(300):
        batch_mask = pn.asarray(rng.choice(train_size, batch_size))
        x_batch = xp.take(x_train, batch_mask, axis=0)
        t_batch = xp.take(t_train, batch_mask, axis=0)
        grad = network.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] = network.params[key] - learning_rate * grad[key]
        train_loss_list.append(float(network.loss(x_batch, t_batch)))
    assert np.mean(train_loss_list[-20:]) < 0.6 < np.mean(train_loss_list[:5])
    assert network.accuracy(x_test, t_test) >= 0.85


def test_wrong_input_width(backend):
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    with pytest.raises(ValueError, match="783 features per sample"):
        net.predict(pn.asarray(np.zeros((2, 783)), dtype="float32"))


def test_labels_out_of_range(backend):
    net = pn.TwoLayerNet(4, 3, 10, seed=0)
    x = pn.asarray(np.zeros((2, 4)), dtype="float32")
    for method in (net.loss, net.gradient, net.accuracy):
        with pytest.raises(
            ValueError, match="label 12 is out of range: expected labels in \\[0, 10\\)"
        ):
            method(x, pn.asarray([1, 12]))
    with pytest.raises(ValueError, match=r"TwoLayerNet: 2 samples in x but 3 in t"):
        net.loss(x, pn.asarray([1, 2, 3]))


def test_accuracy_with_one_hot_labels(backend):
    net = pn.TwoLayerNet(4, 3, 3, seed=0)
    x = pn.asarray(np.eye(4)[:3], dtype="float32")
    labels = pn.to_numpy(backend.xp.argmax(net.predict(x), axis=1))
    assert net.accuracy(x, pn.asarray(labels)) == 1.0
    assert net.accuracy(x, pn.asarray(np.eye(3)[labels])) == 1.0


def test_mixing_libraries_is_an_error_saying_what_to_do():
    """A NumPy network given torch tensors (and the reverse) raises at once, naming both."""
    torch = pytest.importorskip("torch")
    with pn.use_backend("numpy"):
        net = pn.TwoLayerNet(4, 3, 2, seed=0)
    x, t = torch.zeros((2, 4)), torch.tensor([0, 1])
    for call in (
        lambda: net.predict(x),
        lambda: net.loss(x, t),
        lambda: net.gradient(x, t),
        lambda: net.accuracy(x, t),
    ):
        with pytest.raises(
            pn.InputError,
            match=r"x is a torch array, but this network computes with numpy.*portnet.asarray\(x\)",
        ):
            call()
    with pytest.raises(
        TypeError, match=r"t is a torch array"
    ):  # ArrayTypeError is also a TypeError
        net.loss(np.zeros((2, 4), dtype=np.float32), t)
    with pn.use_backend("torch"):
        on_torch = pn.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(
        pn.InputError, match="x is a numpy array, but this network computes with torch"
    ):
        on_torch.predict(np.zeros((2, 4), dtype=np.float32))
    params = {"W": np.zeros((2, 2))}
    with pytest.raises(
        pn.InputError, match=r"params\['W'\] is a numpy array but grads\['W'\] a torch one"
    ):
        pn.SGD().update(params, {"W": torch.zeros((2, 2), dtype=torch.float64)})
    with pytest.raises(pn.InputError, match=r"grads has 'V', which params does not"):
        pn.Adam().update(params, {"V": np.zeros((2, 2))})
    with pytest.raises(
        pn.InputError, match="the data are torch arrays but the network's parameters numpy ones"
    ):
        pn.Trainer(
            net,
            torch.zeros((4, 4)),
            torch.tensor([0, 1, 0, 1]),
            torch.zeros((2, 4)),
            torch.tensor([0, 1]),
            mini_batch_size=2,
            verbose=False,
        )


@pytest.mark.parametrize("model", ["two-layer", "batchnorm"])
def test_numerical_gradient_is_float64_whatever_the_dtype(backend, mnist, model):
    """The book's gradient check in float32: the central differences run in float64 (a float32
    one keeps three digits and makes a correct backprop look wrong), returned in float32; the
    parameters and the batch-norm statistics come back unchanged."""
    (x_train, t_train), _ = mnist
    make = {
        "two-layer": lambda: pn.TwoLayerNet(
            49, 8, 10, weight_init_std=0.1, dtype="float32", seed=0
        ),
        "batchnorm": lambda: pn.MultiLayerNet(
            49, [6, 5], 10, use_batchnorm=True, dtype="float32", seed=0
        ),
    }[model]
    net = make()
    x, t = pn.asarray(pooled(x_train, 3), dtype="float32"), pn.asarray(t_train[:3])
    before = {k: pn.to_numpy(v).copy() for k, v in {**net.params, **net.buffers()}.items()}
    numerical = net.numerical_gradient(x, t)
    after = {k: pn.to_numpy(v) for k, v in {**net.params, **net.buffers()}.items()}
    for key, value in before.items():
        assert after[key].dtype == np.float32 and np.array_equal(after[key], value), key
    backprop = net.gradient(x, t)
    for key, grad in numerical.items():
        assert pn.to_numpy(grad).dtype == np.float32, key
        diff = np.mean(np.abs(pn.to_numpy(grad) - pn.to_numpy(backprop[key])))
        assert diff < 1e-6, f"{key}: {diff:.3g}"  # 2.5e-3 when the differences were float32


def test_load_params_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(pn.CheckpointError, match=r"missing.pkl: no such file"):
        pn.TwoLayerNet(4, 3, 2, seed=0).load_params(tmp_path / "missing.pkl")
