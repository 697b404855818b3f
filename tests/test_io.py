"""The book's trained weights (read without running pickle code), accuracy 0.9352, checkpoints."""

import os
import pickle

import numpy as np
import pytest

import portnet as pn
from tests.helpers import assert_like, sum_tolerance


def _predict(network, x):
    """The book's neuralnet_mnist.py predict, unchanged but for ``np.dot`` written as ``@``."""
    W1, W2, W3 = network["W1"], network["W2"], network["W3"]
    b1, b2, b3 = network["b1"], network["b2"], network["b3"]
    a1 = x @ W1 + b1
    z1 = pn.sigmoid(a1)
    a2 = z1 @ W2 + b2
    z2 = pn.sigmoid(a2)
    a3 = z2 @ W3 + b3
    return pn.softmax(a3)


def test_book_weights_load_as_arrays_of_the_backend(backend, book_weights_path):
    network = pn.load_book_weights(book_weights_path)
    assert sorted(network) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert_like(network["W1"], backend, "float32", (784, 50))
    assert_like(network["b3"], backend, "float32", (10,))


def test_accuracy_0_9352_one_image_at_a_time(backend, book_weights_path, mnist_dir):
    """The seeds' neuralnet_mnist.py loop: "Accuracy:0.9352"."""
    xp = backend.xp
    _, (x, t) = pn.load_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=mnist_dir)
    network = pn.load_book_weights(book_weights_path)
    accuracy_cnt = 0
    for i in range(x.shape[0]):
        y = _predict(network, x[i, ...])
        p = xp.argmax(y)
        if p == t[i]:
            accuracy_cnt += 1
    assert "Accuracy:" + str(float(accuracy_cnt) / x.shape[0]) == "Accuracy:0.9352"


def test_accuracy_0_9352_in_batches_of_100(backend, book_weights_path, mnist_dir):
    """The seeds' batched form (ch. 3.6.3)."""
    xp = backend.xp
    _, (x, t) = pn.load_mnist(data_dir=mnist_dir)
    network = pn.load_book_weights(book_weights_path)
    accuracy_cnt = 0
    for i in range(0, x.shape[0], 100):
        y = _predict(network, x[i : i + 100, ...])
        accuracy_cnt += int(xp.count_nonzero(xp.argmax(y, axis=1) == t[i : i + 100]))
    assert accuracy_cnt / x.shape[0] == 0.9352


class _Payload:
    ran = []

    def __reduce__(self):
        return (_Payload.ran.append, ("the payload ran",))


def test_unsafe_pickles_are_refused_without_running(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"W1": np.zeros(2), "x": _Payload()}))
    with pytest.raises(pn.UnsafePickleError, match=r"evil.pkl: refusing to load builtins.getattr"):
        pn.load_book_weights(evil)
    assert _Payload.ran == []
    os_call = tmp_path / "os.pkl"
    os_call.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(pn.UnsafePickleError, match="refusing to load os.system"):
        pn.load_book_weights(os_call)


def test_pickles_of_other_shapes_are_refused(tmp_path):
    objects = tmp_path / "objects.pkl"
    objects.write_bytes(pickle.dumps({"W1": np.array(["a", None], dtype=object)}))
    with pytest.raises(pn.UnsafePickleError):
        pn.load_book_weights(objects)
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([np.zeros(3)]))
    with pytest.raises(pn.UnsafePickleError, match="expected a dict of arrays, found list"):
        pn.load_book_weights(not_dict)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(pn.UnsafePickleError, match="garbage.pkl"):
        pn.load_book_weights(garbage)


def _trained_net(mnist):
    (x_train, t_train), _ = mnist
    net = pn.MultiLayerNet(784, [20, 10], 10, use_batchnorm=True, seed=0)
    x, t = pn.asarray(x_train[:200]), pn.asarray(t_train[:200])
    for _ in range(5):
        pn.Adam().update(net.params, net.gradient(x, t))
    return net


def _magnitude(net, x):
    """The sum of |terms| behind each score of a NumPy network: its forward pass on absolute
    values (ReLU passes them; the batch norm adds its mean instead of subtracting it)."""
    h = np.abs(x.astype(np.float64))
    for name, layer in net.layers.items():
        if name.startswith("Affine"):
            h = h @ np.abs(layer.W.astype(np.float64)) + np.abs(layer.b)
        elif name.startswith("BatchNorm"):
            h = (h + np.abs(layer.running_mean)) / np.sqrt(layer.running_var + layer.EPS) * np.abs(
                layer.gamma
            ) + np.abs(layer.beta)
    return h


def test_checkpoint_round_trip_to_numpy(backend, mnist, tmp_path):
    """Saved from this backend, loaded on NumPy: identical predictions."""
    (_, _), (x_test, _) = mnist
    net = _trained_net(mnist)
    path = pn.save_checkpoint(net, tmp_path / "net.npz")
    expected = pn.to_numpy(net.predict(pn.asarray(x_test[:500])))
    with pn.use_backend("numpy"):
        loaded = pn.load_checkpoint(path)
        assert type(loaded) is pn.MultiLayerNet and loaded.sizes == [784, 20, 10, 10]
        for key, value in net.params.items():
            np.testing.assert_array_equal(
                loaded.params[key], pn.to_numpy(value), err_msg=key
            )  # bit for bit
        scores = loaded.predict(x_test[:500])
    # Same parameters, same classes; the scores differ only by how each BLAS rounds float32: each
    # side within the rounding bound of its sums (784 + 20 + 10 products, a few operations more).
    np.testing.assert_array_equal(scores.argmax(axis=1), expected.argmax(axis=1))
    bound = 2 * sum_tolerance(830, _magnitude(loaded, x_test[:500]), "float32")
    assert np.all(np.abs(scores - expected) <= bound), np.max(np.abs(scores - expected) / bound)
    again = pn.load_checkpoint(path)  # and back onto this backend
    assert_like(again.params["W1"], backend, "float32", (784, 20))


def test_checkpoint_never_overwrites_by_accident(mnist, tmp_path):
    path = tmp_path / "net.npz"
    path.write_bytes(b"precious")
    net = pn.TwoLayerNet(784, 5, 10, seed=0)
    with pytest.raises(FileExistsError, match="net.npz exists; pass overwrite=True"):
        pn.save_checkpoint(net, path)
    assert path.read_bytes() == b"precious"
    pn.save_checkpoint(net, path, overwrite=True)
    assert pn.load_checkpoint(path).config == net.config
    assert [p for p in os.listdir(tmp_path) if p != "net.npz"] == []


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, W1=np.zeros(3))
    with pytest.raises(ValueError, match="not a portnet checkpoint"):
        pn.load_checkpoint(path)
