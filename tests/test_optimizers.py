"""The book's optimizers: its 2-D demo trajectories step by step, in place where arrays allow it."""

import numpy as np
import pytest

import portnet as pn
from portnet.optimizers import OPTIMIZERS, make_optimizer
from tests import reference as ref
from tests.helpers import assert_close, on

# The book's comparison (ch. 6.1.7, optimizer_compare_naive.py): f(x, y) = x^2 / 20 + y^2 from
# (-7, 2), with the book's learning rates.
BOOK_LR = {
    "sgd": 0.95,
    "momentum": 0.1,
    "nesterov": 0.1,
    "adagrad": 1.5,
    "rmsprop": 0.1,
    "adam": 0.3,
}
BOOK = {
    "sgd": ref.SGD,
    "momentum": ref.Momentum,
    "nesterov": ref.Nesterov,
    "adagrad": ref.AdaGrad,
    "rmsprop": ref.RMSprop,
    "adam": ref.Adam,
}


def _trajectory(optimizer, start, to_value=float, steps=30):
    params = {"x": start[0], "y": start[1]}
    points = []
    for _ in range(steps):
        points.append((to_value(params["x"]), to_value(params["y"])))
        optimizer.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
    return np.array(points)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_book_demo_with_python_floats(name):
    """optimizer_compare_naive.py starts from the Python floats -7.0 and 2.0."""
    expected = _trajectory(BOOK[name](lr=BOOK_LR[name]), (-7.0, 2.0))
    got = _trajectory(make_optimizer(name, lr=BOOK_LR[name]), (-7.0, 2.0))
    np.testing.assert_array_equal(got, expected)
    assert got[-1] @ got[-1] < got[0] @ got[0]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_book_demo_trajectory_on_every_backend(backend, name):
    expected = _trajectory(
        BOOK[name](lr=BOOK_LR[name]), (np.array([-7.0]), np.array([2.0])), lambda v: float(v[0])
    )
    got = _trajectory(
        make_optimizer(name, lr=BOOK_LR[name]),
        (on(backend, [-7.0]), on(backend, [2.0])),
        lambda v: float(pn.to_numpy(v)[0]),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.skip_backends("jax", reason="immutable arrays are rebound (the test below)")
def test_updates_in_place_where_the_array_allows_it(backend):
    """As the book's: a layer holding the array sees the update."""
    W = on(backend, np.ones((2, 2)))
    params = {"W": W}
    pn.SGD(lr=0.5).update(params, {"W": on(backend, np.ones((2, 2)))})
    assert_close(params["W"], 0.5 * np.ones((2, 2)), backend, "float64")
    assert params["W"] is W


@pytest.mark.only_backends("jax", reason="arrays that cannot be updated in place")
def test_immutable_arrays_are_rebound(backend):
    W = on(backend, np.ones((2, 2)))
    params = {"W": W}
    pn.SGD(lr=0.5).update(params, {"W": on(backend, np.ones((2, 2)))})
    assert_close(params["W"], 0.5 * np.ones((2, 2)), backend, "float64")
    assert params["W"] is not W
    assert_close(W, np.ones((2, 2)), backend, "float64")


def test_zero_dimensional_arrays(backend):
    params = {"x": on(backend, -7.0)}
    optimizer = pn.Adam(lr=0.3)
    for _ in range(3):
        optimizer.update(params, {"x": params["x"] / 10.0})
    assert float(pn.to_numpy(params["x"])) > -7.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_matches_the_book_step_by_step(backend, dtype):
    rng = np.random.default_rng(0)
    expected = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    params = {k: on(backend, v, dtype) for k, v in expected.items()}
    expected = {k: v.astype(dtype).astype("float64") for k, v in expected.items()}
    book, ours = ref.Adam(lr=0.01), pn.Adam(lr=0.01)
    for step in range(10):
        grads = {k: rng.normal(size=v.shape).astype(dtype) for k, v in expected.items()}
        book.update(expected, {k: g.astype("float64") for k, g in grads.items()})
        ours.update(params, {k: on(backend, g) for k, g in grads.items()})
        for key in expected:
            assert_close(params[key], expected[key], backend, dtype, err_msg=f"step {step} {key}")


def test_state_lives_with_the_parameters(backend):
    params = {"W": on(backend, np.ones((2, 2)), "float32")}
    for name in OPTIMIZERS:
        optimizer = make_optimizer(name)
        optimizer.update(params, {"W": on(backend, np.ones((2, 2)), "float32")})
        for state in ("v", "h", "m"):
            for value in (getattr(optimizer, state, None) or {}).values():
                assert_close(value, pn.to_numpy(value), backend, "float32")


def test_names_and_arguments():
    assert isinstance(make_optimizer("rmsprpo"), pn.RMSprop), "the book's Trainer spells it so"
    with pytest.raises(
        ValueError, match="unknown optimizer 'adamw'; expected one of sgd, momentum"
    ):
        make_optimizer("adamw")
    for bad in (0, -1, float("nan"), float("inf"), "fast"):
        with pytest.raises(pn.InputError, match="lr must be a finite positive number"):
            pn.SGD(lr=bad)
    with pytest.raises(pn.InputError, match=r"momentum must lie in \[0, 1\)"):
        pn.Momentum(momentum=1.5)
    with pytest.raises(
        pn.InputError, match="optimizer 'sgd': .*unexpected keyword argument 'momentum'"
    ):
        make_optimizer("sgd", lr=0.1, momentum=0.9)


# --------------------------------------------------------------------------- one buffer
def _net_and_grads(backend, seed=3):
    with pn.use_backend(backend.name, device=backend.device, dtype="float64"):
        net = pn.MultiLayerNet(6, [5, 4], 3, seed=seed)
        x = pn.asarray(np.random.default_rng(seed).normal(size=(8, 6)))
        t = pn.asarray(np.arange(8) % 3)
    return net, x, t


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_one_buffer_moves_as_each_parameter_would(backend, name):
    """The update on the parameters' one buffer gives, bit for bit, the update of each array."""
    net, x, t = _net_and_grads(backend)
    assert net.params.packed() is not None
    plain = {k: on(backend, pn.to_numpy(v).copy()) for k, v in net.params.items()}
    flat_opt, plain_opt = make_optimizer(name, lr=0.05), make_optimizer(name, lr=0.05)
    for _ in range(3):
        grads = net.gradient(x, t)
        flat_opt.update(net.params, grads)
        plain_opt.update(plain, {k: on(backend, pn.to_numpy(g)) for k, g in grads.items()})
        assert net.params.packed() is not None
        for k in plain:
            assert np.array_equal(pn.to_numpy(net.params[k]), pn.to_numpy(plain[k])), k
    assert set(flat_opt.state_dict()["slots"]) == set(plain_opt.state_dict()["slots"])
    for slot, arrays in flat_opt.state_dict()["slots"].items():
        for k, a in arrays.items():
            assert np.array_equal(a, plain_opt.state_dict()["slots"][slot][k])
    for slot in flat_opt.slots:  # the book's attributes, by key
        assert set(getattr(flat_opt, slot)) == set(net.params)


def test_a_layer_sees_the_buffer_move(backend):
    net, x, t = _net_and_grads(backend)
    layer_view = net.layers["Affine1"].W
    before = pn.to_numpy(layer_view).copy()
    pn.SGD(lr=0.1).update(net.params, net.gradient(x, t))
    now = net.layers["Affine1"].W
    assert not np.array_equal(pn.to_numpy(now), before)
    if backend.name != "jax":  # written in place: the layer's array is the one that moved
        assert now is layer_view and net.params.buffer is net.params.packed()[1]


def test_an_entry_assigned_anew_is_updated_on_its_own(backend):
    """A rebound entry unpacks the dict: the optimizer moves each array (the state it kept as one
    vector is read by key), and the result is the same as if nothing had been rebound."""
    net, x, t = _net_and_grads(backend)
    plain = {k: on(backend, pn.to_numpy(v).copy()) for k, v in net.params.items()}
    flat_opt, plain_opt = pn.Adam(lr=0.05), pn.Adam(lr=0.05)
    for step in range(3):
        if step == 1:
            net.params["b1"] = on(backend, pn.to_numpy(net.params["b1"]).copy())
            assert net.params.packed() is None
        grads = net.gradient(x, t)
        flat_opt.update(net.params, grads)
        plain_opt.update(plain, {k: on(backend, pn.to_numpy(g)) for k, g in grads.items()})
    for k in plain:
        assert np.array_equal(pn.to_numpy(net.params[k]), pn.to_numpy(plain[k])), k
    net.params.flatten()
    flat_opt.update(net.params, net.gradient(x, t))  # and back to one vector
    assert net.params.packed() is not None


def test_the_state_loads_into_one_buffer(backend):
    net, x, t = _net_and_grads(backend)
    first = pn.Adam(lr=0.05)
    first.update(net.params, net.gradient(x, t))
    second = pn.Adam(lr=0.05)
    second.load_state_dict(first.state_dict(), net.params)
    assert not isinstance(second.state["m"], dict)  # one vector, as the parameters
    for slot in ("m", "v"):
        for k, a in first.state_dict()["slots"][slot].items():
            assert np.array_equal(pn.to_numpy(getattr(second, slot)[k]), a)


def test_loading_and_checking_keep_the_buffer(backend):
    net, x, t = _net_and_grads(backend)
    net.numerical_gradient(x[:2, ...], t[:2])
    assert net.params.packed() is not None
    net.set_params({k: pn.to_numpy(v) for k, v in net.params.items()})
    assert net.params.packed() is not None


def test_copied_parameters_are_a_plain_dict_of_their_own(backend):
    """copy, deepcopy and pickle give a plain dict (the book's code and the safe unpickler read
    it): copies of views would not be views of one buffer."""
    import copy
    import pickle

    net, x, t = _net_and_grads(backend)
    assert type(copy.copy(net.params)) is dict
    assert copy.copy(net.params)["W1"] is net.params["W1"]
    twin = copy.deepcopy(net.params)
    assert type(twin) is dict
    pn.SGD(lr=0.1).update(twin, net.gradient(x, t))
    assert not np.array_equal(pn.to_numpy(twin["W1"]), pn.to_numpy(net.params["W1"]))
    if backend.name == "numpy":
        assert type(pickle.loads(pickle.dumps(net.params))) is dict


def test_a_gradient_of_another_shape_is_not_packed_silently(backend):
    """The one-vector update needs each gradient in its parameter's shape: a transposed one (the
    same number of values) goes to the per-array update, which refuses it."""
    net, x, t = _net_and_grads(backend)
    grads = net.gradient(x, t)
    grads["W2"] = grads["W2"].T
    with pytest.raises(Exception, match="broadcast|shape|size"):
        pn.SGD(lr=0.1).update(net.params, grads)


def test_a_slot_read_by_key_cannot_be_assigned_in_vain(backend):
    net, x, t = _net_and_grads(backend)
    opt = pn.Adam()
    opt.update(net.params, net.gradient(x, t))
    with pytest.raises(TypeError):
        opt.v["W1"] = opt.v["W1"]  # a view of the one vector: write it in place instead
