"""The book's ConvNets (ch. 7-8): its trained parameters give its counts on every backend,
backprop agrees with numerical gradients, the Trainer trains them, parameters save and load."""

import numpy as np
import pytest

import portnet as pn
from tests.helpers import assert_backprop_matches_numerical, assert_close, on

BOOK_COUNTS = {"simple": 9890, "deep": 9935}  # of 10000, the book's own code in float64


def _book_net(kind, path, dtype):
    net = (
        pn.SimpleConvNet(dtype=dtype, seed=0)
        if kind == "simple"
        else pn.DeepConvNet(dtype=dtype, seed=0)
    )
    net.load_params(path)
    return net


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["simple", "deep"])
def test_the_books_trained_convnets_give_its_counts(backend, mnist_images, book_dir, kind, dtype):
    """float64: exactly the book's count; float32: within 3 images of it."""
    x_test, t_test = mnist_images
    net = _book_net(kind, book_dir / f"{kind}_convnet_params.pkl", dtype)
    assert pn.to_numpy(net.params["W1"]).dtype == np.dtype(dtype)
    correct = round(net.accuracy(on(backend, x_test, dtype), on(backend, t_test)) * 10000)
    if dtype == "float64":
        assert correct == BOOK_COUNTS[kind]
    else:
        assert abs(correct - BOOK_COUNTS[kind]) <= 3, correct


def _tiny_simple():
    return pn.SimpleConvNet(
        input_dim=(2, 9, 8),
        conv_param={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 2},
        hidden_size=6,
        output_size=4,
        weight_init_std=0.3,
        seed=0,
    )


def _tiny_deep():
    params = [
        {"filter_num": 2, "filter_size": 3, "pad": p, "stride": 1} for p in (1, 1, 1, 2, 1, 1)
    ]
    return pn.DeepConvNet(
        input_dim=(1, 8, 8),
        **{f"conv_param_{i + 1}": p for i, p in enumerate(params)},
        hidden_size=5,
        output_size=3,
        seed=0,
        random_source="host",
    )


@pytest.mark.parametrize("make", [_tiny_simple, _tiny_deep], ids=["SimpleConvNet", "DeepConvNet"])
def test_gradient_check(backend, make):
    """Backprop against central differences, float64, on small inputs (stride 2 and pad 2 among them)."""
    with pn.use_backend(backend.name, backend.device, "float64"):
        net = make()
    rng = np.random.default_rng(1)
    x = on(backend, rng.random((3, *net.input_dim)))
    t = on(backend, rng.integers(0, net.output_size, 3))
    assert_backprop_matches_numerical(net, x, t, backend, bias_scale=0.1)


@pytest.mark.parametrize("layer", ["conv", "pool"])
@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (1, 2)])
def test_layer_gradient_check(backend, layer, stride, pad):
    """dL/dx of a layer against central differences, L = sum(R * layer(x)) for a fixed random R."""
    xp = backend.xp
    rng = np.random.default_rng(2)
    x = on(backend, rng.normal(size=(2, 2, 7, 6)))
    if layer == "conv":
        params = {
            "W": on(backend, rng.normal(size=(3, 2, 3, 2))),
            "b": on(backend, rng.normal(size=3)),
        }
        unit = pn.Convolution(stride=stride, pad=pad, params=params)
    else:
        unit = pn.Pooling(2, 3, stride, pad)
    R = on(backend, rng.normal(size=tuple(unit.forward(x).shape)))
    unit.forward(x)
    dx = unit.backward(R)
    numerical = pn.numerical_gradient(lambda v: xp.sum(R * unit.forward(v)), x)
    np.testing.assert_allclose(pn.to_numpy(dx), pn.to_numpy(numerical), rtol=1e-6, atol=1e-7)
    if layer == "conv":
        for name in ("W", "b"):

            def loss(w, name=name):
                params[name] = w
                return xp.sum(R * unit.forward(x))

            original = params[name]
            expected = pn.numerical_gradient(loss, original)
            params[name] = original
            np.testing.assert_allclose(
                pn.to_numpy(getattr(unit, "d" + name)), pn.to_numpy(expected), rtol=1e-6, atol=1e-7
            )


def test_trainer_trains_a_convnet(backend, mnist):
    (x_train, t_train), (x_test, t_test) = mnist
    x_train, x_test = x_train[:1000].reshape(-1, 1, 28, 28), x_test[:200].reshape(-1, 1, 28, 28)
    net = pn.SimpleConvNet(
        conv_param={"filter_num": 8, "filter_size": 5, "pad": 0, "stride": 1},
        hidden_size=30,
        seed=0,
    )
    trainer = pn.Trainer(
        net,
        on(backend, x_train, "float32"),
        on(backend, t_train[:1000]),
        on(backend, x_test, "float32"),
        on(backend, t_test[:200]),
        epochs=2,
        mini_batch_size=50,
        optimizer="adam",
        optimizer_param={"lr": 0.003},
        verbose=False,
        seed=0,
    )
    trainer.train()
    assert trainer.test_acc_list[-1] > 0.6, trainer.test_acc_list
    assert np.mean(trainer.train_loss_list[-5:]) < 0.6 * np.mean(trainer.train_loss_list[:5])


def test_save_and_load_params(backend, tmp_path, book_dir):
    net = _tiny_deep()
    for name in ("p.pkl", "p.npz"):
        net.save_params(tmp_path / name)
        other = _tiny_deep()
        for key in other.params:
            other.params[key] = other.params[key] * 0.0
        other.load_params(tmp_path / name)
        for key, value in net.params.items():
            assert_close(other.params[key], pn.to_numpy(value), backend, "float32", rtol=0, atol=0)
    with pytest.raises(
        pn.CheckpointError,
        match=r"parameters \['W1', .*'W8', .*\] do not match the network's \['W1', 'W2', 'W3', ",
    ):
        pn.SimpleConvNet(seed=0).load_params(book_dir / "deep_convnet_params.pkl")
    wider = pn.SimpleConvNet(
        conv_param={"filter_num": 20, "filter_size": 5, "pad": 0, "stride": 1}, seed=0
    )
    with pytest.raises(
        pn.CheckpointError, match=r"W1 has shape \(30, 1, 5, 5\), the network needs \(20, 1, 5, 5\)"
    ):
        wider.load_params(book_dir / "simple_convnet_params.pkl")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_the_books_params_in_any_pickle_protocol(tmp_path, book_dir, protocol):
    import pickle

    params = pn.read_pickled_arrays(book_dir / "simple_convnet_params.pkl")
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(params, protocol=protocol))
    again = pn.read_pickled_arrays(path)
    assert sorted(again) == sorted(params)
    for key in params:
        assert np.array_equal(again[key], params[key]) and again[key].dtype == params[key].dtype


@pytest.mark.parametrize(
    "args, message",
    [
        (
            {"conv_param": {"filter_num": 30}},
            "conv_param must be a dict with keys filter_num, filter_size, pad, stride",
        ),
        ({"input_dim": (1, 28)}, r"input_dim must be \(channels, height, width\)"),
        ({"input_dim": (1, 3, 3)}, "a filter of size 5 does not fit an input of size 3"),
        ({"hidden_size": 0}, "hidden_size/output_size must be a positive integer, got 0"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(pn.InputError, match=message):
        pn.SimpleConvNet(**args)
