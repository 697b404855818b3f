"""Numerical differentiation and gradient descent (ch. 4.3-4.4, the book's gradient.py).

The book perturbs ``x[idx]`` in place and restores it. Here ``f`` is called with perturbed
*copies*, so the caller's array is never touched and immutable arrays (JAX) work too.
"""

from __future__ import annotations

import array_api_compat

from .backend import namespace_of

#: The book's step for the central difference (eq. 4.5).
H = 1e-4


def numerical_diff(f, x):
    """df/dx at ``x`` by the central difference (f(x+h) - f(x-h)) / 2h, h = 1e-4 (eq. 4.5)."""
    return (f(x + H) - f(x - H)) / (2 * H)


def numerical_gradient(f, x):
    """The gradient of scalar ``f`` at ``x`` (any shape), one central difference per element.

    ``f`` receives arrays of the shape of ``x`` that differ from it in one element; ``x`` itself is
    never modified. Returns an array of the namespace, device, dtype and shape of ``x``.
    """
    xp = namespace_of(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"numerical_gradient needs a floating-point x, got dtype {x.dtype}")
    device = array_api_compat.device(x)
    flat = xp.reshape(x, (-1,))
    index = xp.arange(flat.shape[0], device=device)
    slopes = []
    for i in range(flat.shape[0]):
        at_i = index == i
        plus = xp.reshape(xp.where(at_i, flat + H, flat), x.shape)
        minus = xp.reshape(xp.where(at_i, flat - H, flat), x.shape)
        slope = (f(plus) - f(minus)) / (2 * H)
        slopes.append(xp.astype(xp.asarray(slope, device=device), x.dtype))
    if not slopes:
        return xp.zeros_like(x)
    return xp.reshape(xp.stack(slopes), x.shape)


def gradient_descent(f, init_x, lr=0.01, step_num=100):
    """x <- x - lr * grad f(x), ``step_num`` times (eq. 4.7).

    Returns ``(x, history)`` as the book's gradient_method.py: ``history`` stacks the ``x`` seen
    before each step, shape ``(step_num, *x.shape)``.
    """
    xp = namespace_of(init_x)
    x = init_x
    history = []
    for _ in range(step_num):
        history.append(x)
        x = x - lr * numerical_gradient(f, x)
    if not history:
        empty = (0, *init_x.shape)
        return x, xp.zeros(empty, dtype=x.dtype, device=array_api_compat.device(x))
    return x, xp.stack(history)
