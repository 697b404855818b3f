"""The book's optimizers (ch. 6.1, common/optimizer.py).

``update(params, grads)`` works as the book's does, by reference: an array that can be written
(NumPy, CuPy, PyTorch) is updated in place, so a layer holding it sees the new values; an array
that cannot (JAX) and a Python number are rebound in ``params`` instead, which portnet's own
layers see because they read ``params`` at every forward. State is created like each parameter
(same namespace, device and dtype), and Python numbers work as the book's 2-D demos use them.
"""

from __future__ import annotations

import math

from .arrays import book_star_numpy, is_array, library_name, namespace_of, writeable
from .checks import fraction, rate
from .errors import ArrayTypeError, InputError

__all__ = ["AdaGrad", "Adam", "Momentum", "Nesterov", "RMSprop", "SGD", "np"]  # np: what the book's star-import gave
__getattr__ = book_star_numpy(__name__)

#: The book's guard against division by zero in AdaGrad, RMSprop and Adam.
EPS = 1e-7


def add_to(store: dict, key, delta) -> None:
    """``store[key] += delta``: in place where the array allows it, else by rebinding the entry."""
    value = store[key]
    if writeable(value):
        value += delta
    else:
        store[key] = value + delta


def _zeros_like(params):
    """Optimizer state: zeros shaped, typed and placed like each parameter (0.0 for a number)."""
    return {k: namespace_of(p).zeros_like(p) if is_array(p) else 0.0 for k, p in params.items()}


def _sqrt(h):
    return namespace_of(h).sqrt(h) if is_array(h) else math.sqrt(h)


def check_pairs(params, grads) -> None:
    """Each gradient names a parameter and is of its library (checked by type: no sync)."""
    for key, g in grads.items():
        if key not in params:
            raise InputError(f"grads has {key!r}, which params does not ({sorted(params)})")
        p = params[key]
        if type(p) is not type(g) and is_array(p) and is_array(g):
            mine, theirs = library_name(namespace_of(p)), library_name(namespace_of(g))
            if mine != theirs:
                raise ArrayTypeError(
                    f"params[{key!r}] is a {mine} array but grads[{key!r}] a {theirs} one: compute the gradients "
                    f"on the parameters' backend (portnet.asarray(x) puts data there while it is active)"
                )


class Optimizer:
    """What the optimizers share: their state (``state_names``: dicts of arrays shaped like the
    parameters, created at the first update) and hyperparameter checks."""

    state_names: tuple[str, ...] = ()

    def update(self, params, grads) -> None:
        """The book's update: each ``params[key]`` moved by ``grads[key]``, by reference."""
        check_pairs(params, grads)
        self.init(params)
        self._apply(params, grads)

    def init(self, params) -> None:
        """Create the state for ``params`` if it does not exist yet."""
        for name in self.state_names:
            if getattr(self, name) is None:
                setattr(self, name, _zeros_like(params))


class SGD(Optimizer):
    """W <- W - lr dL/dW (eq. 6.1)."""

    def __init__(self, lr=0.01):
        self.lr = rate("lr", lr)

    def _apply(self, params, grads):
        for key, g in grads.items():
            add_to(params, key, -self.lr * g)


class Momentum(Optimizer):
    """v <- momentum v - lr dL/dW; W <- W + v (eqs. 6.3-6.4)."""

    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum = rate("lr", lr), fraction("momentum", momentum)
        self.v = None

    def _apply(self, params, grads):
        for key, g in grads.items():
            self.v[key] = self.momentum * self.v[key] - self.lr * g
            add_to(params, key, self.v[key])


class Nesterov(Momentum):
    """Nesterov's accelerated gradient, in the book's formulation (arXiv:1212.0901)."""

    def _apply(self, params, grads):
        m = self.momentum
        for key, g in grads.items():
            self.v[key] = m * self.v[key] - self.lr * g
            add_to(params, key, m * m * self.v[key])
            add_to(params, key, -(1 + m) * self.lr * g)


class AdaGrad(Optimizer):
    """h <- h + g*g; W <- W - lr g / sqrt(h) (eqs. 6.5-6.6)."""

    state_names = ("h",)

    def __init__(self, lr=0.01):
        self.lr = rate("lr", lr)
        self.h = None

    def _apply(self, params, grads):
        for key, g in grads.items():
            self.h[key] = self._accumulate(self.h[key], g)
            add_to(params, key, -self.lr * g / (_sqrt(self.h[key]) + EPS))

    def _accumulate(self, h, g):
        return h + g * g


class RMSprop(AdaGrad):
    """AdaGrad whose sum of squares decays: h <- decay h + (1 - decay) g*g."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr)
        self.decay_rate = fraction("decay_rate", decay_rate)

    def _accumulate(self, h, g):
        return self.decay_rate * h + (1 - self.decay_rate) * g * g


class Adam(Optimizer):
    """Adam (arXiv:1412.6980) with the book's bias correction folded into the step size.

    ``iter``, the step count, is a Python int, or a 0-d array inside a compiled step."""

    state_names = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2 = rate("lr", lr), fraction("beta1", beta1), fraction("beta2", beta2)
        self.iter = 0
        self.m = self.v = None

    def _apply(self, params, grads):
        self.iter += 1
        b1, b2 = self.beta1, self.beta2
        if isinstance(self.iter, int):
            lr_t = self.lr * math.sqrt(1.0 - b2**self.iter) / (1.0 - b1**self.iter)
        else:  # traced: the step size must be computed, not baked in
            lr_t = self.lr * _sqrt(1.0 - b2**self.iter) / (1.0 - b1**self.iter)
        for key, g in grads.items():
            add_to(self.m, key, (1 - b1) * (g - self.m[key]))
            add_to(self.v, key, (1 - b2) * (g * g - self.v[key]))
            add_to(params, key, -lr_t * self.m[key] / (_sqrt(self.v[key]) + EPS))


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}
#: The book's Trainer spells RMSprop 'rmsprpo'.
_ALIASES = {"rmsprpo": "rmsprop"}


def make_optimizer(name, **params):
    """An optimizer by its (case-insensitive) name, as the book's Trainer takes it."""
    key = str(name).lower()
    try:
        cls = OPTIMIZERS[_ALIASES.get(key, key)]
    except KeyError:
        raise InputError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(f"optimizer {name!r}: {exc}") from None
