"""portnet.gradient: the book's ch. 4 numbers, its in-place idiom, metadata kept."""

import numpy as np
import pytest

import portnet as pn
from portnet.gradient import numerical_gradient_2d
from tests.helpers import assert_close, assert_prints, on


def function_1(x):
    return 0.01 * x**2 + 0.1 * x


def test_numerical_diff_book_values(backend):
    # The book's ch. 4.3.2: 0.1999999999990898 and 0.2999999999986347 (true values 0.2 and 0.3).
    for x, expected in [(5.0, 0.1999999999990898), (10.0, 0.2999999999986347)]:
        assert pn.numerical_diff(function_1, x) == expected
        assert_close(pn.numerical_diff(function_1, on(backend, x)), expected, backend, "float64")


@pytest.mark.parametrize(
    "point, expected",
    [([3.0, 4.0], [6.0, 8.0]), ([0.0, 2.0], [0.0, 4.0]), ([3.0, 0.0], [6.0, 0.0])],
)
def test_numerical_gradient_book_values(backend, point, expected):
    xp = backend.xp
    x = on(backend, point)
    grad = pn.numerical_gradient(lambda v: xp.sum(v**2), x)
    assert_close(grad, expected, backend, "float64", rtol=0, atol=1e-7)
    assert_close(
        x, point, backend, "float64", rtol=0, atol=0
    )  # perturbed in place, restored exactly


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numerical_gradient_any_shape(backend, dtype):
    xp = backend.xp
    x_np = np.random.default_rng(0).normal(size=(2, 3, 2))
    weights = on(backend, np.arange(12.0).reshape(2, 3, 2), dtype)
    x = on(backend, x_np, dtype)
    grad = pn.numerical_gradient(lambda v: xp.sum(weights * v**2), x)
    tol = {"float64": 1e-6, "float32": 2e-1}[dtype]  # float32 central differences are coarse
    assert_close(
        grad,
        2 * np.arange(12.0).reshape(2, 3, 2) * x_np.astype(dtype),
        backend,
        dtype,
        rtol=0,
        atol=tol,
    )


def test_numerical_gradient_rejects_integers(backend):
    with pytest.raises(pn.InputError, match="floating-point"):
        pn.numerical_gradient(lambda v: v, on(backend, [1, 2]))


def test_gradient_descent_book_values(backend):
    xp = backend.xp

    def function_2(x):
        return xp.sum(x**2)

    init = on(backend, [-3.0, 4.0])
    x, history = pn.gradient_descent(function_2, init, lr=0.1, step_num=100)
    assert_prints(x, "[-6.11110793e-10  8.14814391e-10]", backend, "float64")
    assert_close(history[0, ...], [-3.0, 4.0], backend, "float64")
    assert tuple(history.shape) == (100, 2)
    # lr too large diverges, too small barely moves (ch. 4.4.1)
    big, _ = pn.gradient_descent(function_2, init, lr=10.0, step_num=100)
    small, _ = pn.gradient_descent(function_2, init, lr=1e-10, step_num=100)
    assert abs(float(big[0])) > 1e10
    assert_close(small, [-3.0, 4.0], backend, "float64", rtol=1e-7)
    assert_close(init, [-3.0, 4.0], backend, "float64", rtol=0, atol=0)


class _SimpleNet:
    """The book's simpleNet (ch. 4.4.2): its loss reads ``self.W``, not the argument of f."""

    def __init__(self, W):
        self.W = W

    def loss(self, x, t):
        return pn.cross_entropy_error(pn.softmax(x @ self.W), t)


@pytest.mark.skip_backends(
    "jax", reason="immutable arrays: the book's idiom is an error there (the test below)"
)
def test_the_books_idiom_perturbs_in_place_and_restores(backend):
    """``numerical_gradient(lambda W: net.loss(x, t), net.W)``: f ignores its argument and reads
    net.W. On arrays that can be written the perturbation is made there, as the book does, and
    undone bit for bit."""
    W_np = np.random.default_rng(0).normal(size=(2, 3))
    net = _SimpleNet(on(backend, W_np))
    x, t = on(backend, [0.6, 0.9]), on(backend, [0.0, 0.0, 1.0])
    y = np.exp(np.array([0.6, 0.9]) @ W_np)
    y /= y.sum()
    exact = np.outer([0.6, 0.9], y - [0, 0, 1]) * y[2] / (y[2] + 1e-7)
    before = net.W
    dW = pn.numerical_gradient(lambda W: net.loss(x, t), net.W)
    assert_close(dW, exact, backend, "float64", rtol=0, atol=1e-8)
    assert net.W is before
    assert_close(net.W, W_np, backend, "float64", rtol=0, atol=0)


@pytest.mark.only_backends("jax", reason="arrays that cannot be perturbed in place")
def test_the_books_idiom_is_an_error_on_immutable_arrays(backend):
    """There f never sees a perturbation: an error saying what to write, never a zero dW."""
    net = _SimpleNet(on(backend, np.random.default_rng(0).normal(size=(2, 3))))
    x, t = on(backend, [0.6, 0.9]), on(backend, [0.0, 0.0, 1.0])
    with pytest.raises(
        pn.InputError, match=r"f must compute with its argument.*lambda W: net.loss\(x, t\)"
    ):
        pn.numerical_gradient(lambda W: net.loss(x, t), net.W)


def test_numerical_gradient_calls_f_twice_per_element(backend):
    xp = backend.xp
    calls = []
    x = on(backend, np.arange(12.0).reshape(3, 4))
    pn.numerical_gradient(lambda v: calls.append(1) or xp.sum(v * v), x)
    assert len(calls) == 24


def test_a_zero_gradient_that_reads_its_argument_is_a_result(backend):
    """A bias that batch normalization cancels has a true gradient of zero everywhere: not an error
    (on JAX too, where f is given copies: it does read them)."""
    xp = backend.xp
    grad = pn.numerical_gradient(lambda b: xp.sum(b - b), on(backend, [0.5, 0.5, 0.5]))
    assert_close(grad, [0.0, 0.0, 0.0], backend, "float64")


def test_numerical_gradient_2d_rows(backend):
    """The book's gradient_2d.py helper: one gradient per row of X."""
    xp = backend.xp
    X = on(backend, [[3.0, 4.0], [0.0, 2.0]])
    grad = numerical_gradient_2d(lambda v: xp.sum(v**2), X)
    assert_close(grad, [[6.0, 8.0], [0.0, 4.0]], backend, "float64", rtol=0, atol=1e-7)
    assert_close(
        numerical_gradient_2d(lambda v: xp.sum(v**2), X[0, :]),
        [6.0, 8.0],
        backend,
        "float64",
        rtol=0,
        atol=1e-7,
    )
