"""The book's optimizers: each drives a quadratic down; Adam step by step against the book's code."""

import numpy as np
import pytest

import portnet as pn
from portnet.optimizers import OPTIMIZERS, make_optimizer
from tests import reference as ref
from tests.helpers import assert_close, on

# The book's comparison (ch. 6.1.7, optimizer_compare_naive.py): f(x, y) = x^2 / 20 + y^2 from
# (-7, 2), 30 steps, with the book's learning rates.
BOOK_LR = {"sgd": 0.95, "momentum": 0.1, "nesterov": 0.1, "adagrad": 1.5, "rmsprop": 0.1, "adam": 0.3}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_drives_the_quadratic_down(backend, name):
    params = {"x": on(backend, [-7.0]), "y": on(backend, [2.0])}
    start = dict(params)
    optimizer = make_optimizer(name, lr=BOOK_LR[name])
    for _ in range(30):
        optimizer.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
    f = float(params["x"][0] ** 2 / 20 + params["y"][0] ** 2)
    assert f < 0.02 * 6.45, f"{name}: f = {f} after 30 steps, from 6.45"
    assert_close(start["x"], [-7.0], backend, "float64", rtol=0, atol=0)  # rebinding, not writing


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


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; expected one of sgd, momentum"):
        make_optimizer("adamw")
