"""Numerical differentiation and gradient descent (ch. 4.3-4.4, the book's common/gradient.py).

As the book does, :func:`numerical_gradient` perturbs ``x`` itself, one element at a time, and
restores it exactly, so that the book's idiom ``numerical_gradient(lambda W: net.loss(x, t),
net.W)`` works: ``f`` may ignore its argument and read ``x`` through the network. Arrays that
cannot be changed in place (JAX) are perturbed in copies instead, and then ``f`` must use its
argument: a gradient that is zero everywhere because ``f`` ignored it is an error, not a result.
"""

from __future__ import annotations

import itertools
import math

import array_api_compat
import array_api_extra as xpx

from .arrays import namespace_of, writeable
from .errors import InputError

#: The book's step for the central difference (eq. 4.5).
H = 1e-4


def numerical_diff(f, x):
    """df/dx at ``x`` by the central difference (f(x+h) - f(x-h)) / 2h, h = 1e-4 (eq. 4.5)."""
    return (f(x + H) - f(x - H)) / (2 * H)


def numerical_gradient(f, x):
    """The gradient of scalar ``f`` at ``x`` (any shape): one central difference per element,
    ``f`` called twice per element. Returns an array of the namespace, device, dtype and shape of
    ``x``; ``x`` is left exactly as it was."""
    xp = namespace_of(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise InputError(f"numerical_gradient needs a floating-point x, got dtype {x.dtype}")
    slopes = []
    in_place = writeable(x)
    visible = False  # whether any perturbation changed x at all (x + h == x for large x)
    for idx in _indices(x.shape):
        value = float(x[idx])
        if in_place:
            x[idx] = value + H
            f_plus = f(x)
            x[idx] = value - H
            f_minus = f(x)
            x[idx] = value  # restored bit for bit: a float holds any float32 or float64 exactly
        else:
            plus = xpx.at(x, idx).set(value + H, copy=True)
            visible = visible or float(plus[idx]) != value
            f_plus = f(plus)
            f_minus = f(xpx.at(x, idx).set(value - H, copy=True))
        slopes.append((float(f_plus) - float(f_minus)) / (2 * H))
    if visible and all(s == 0.0 for s in slopes) and _ignores(f, x, xp):
        raise InputError(
            f"numerical_gradient: f gave the same value for every perturbation of x. This "
            f"{type(x).__name__} cannot be changed in place, so f must compute with its argument: "
            f"write f = lambda W: loss_with(W), not lambda W: net.loss(x, t)"
        )
    grad = xp.asarray(slopes, dtype=x.dtype, device=array_api_compat.device(x))
    return xp.reshape(grad, x.shape)


def _ignores(f, x, xp) -> bool:
    """Whether ``f`` gives the same value at ``x`` and at an ``x`` of NaNs: it never reads its
    argument (as ``lambda W: net.loss(x, t)`` on an array that cannot be perturbed in place).
    A function whose gradient is truly zero (a bias that batch normalization cancels) still
    reads its argument, and turns NaN."""
    value = float(f(x))
    return math.isfinite(value) and float(f(xp.full_like(x, math.nan))) == value


def _indices(shape):
    """Every index tuple of ``shape`` in row-major order (the book's nditer order)."""
    return itertools.product(*(range(n) for n in shape))


def numerical_gradient_2d(f, X):
    """The book's gradient_2d.py helper: the gradient at ``X`` (a vector), or, for a matrix, at
    each of its rows in turn (``f`` sees one row at a time)."""
    xp = namespace_of(X)
    if X.ndim == 1:
        return numerical_gradient(f, X)
    if X.ndim != 2:
        raise InputError(
            f"numerical_gradient_2d expects a vector or a matrix, got shape {tuple(X.shape)}"
        )
    if writeable(X):
        return xp.stack([numerical_gradient(f, X[i, :]) for i in range(X.shape[0])])
    return xp.stack(
        [numerical_gradient(f, xp.asarray(X[i, :], copy=True)) for i in range(X.shape[0])]
    )


def gradient_descent(f, init_x, lr=0.01, step_num=100):
    """x <- x - lr * grad f(x), ``step_num`` times (eq. 4.7).

    Returns ``(x, history)`` as the book's gradient_method.py: ``history`` stacks the ``x`` seen
    before each step, shape ``(step_num, *x.shape)``. ``init_x`` itself is not changed.
    """
    xp = namespace_of(init_x)
    x = xp.asarray(init_x, copy=True)
    history = []
    for _ in range(step_num):
        history.append(xp.asarray(x, copy=True))
        x = x - lr * numerical_gradient(f, x)
    if not history:
        empty = (0, *init_x.shape)
        return x, xp.zeros(empty, dtype=x.dtype, device=array_api_compat.device(x))
    return x, xp.stack(history)
