"""The book's optimizers (ch. 6.1, common/optimizer.py).

``update(params, grads)`` *rebinds* each entry of ``params`` (the book writes ``-=`` in place), so
arrays that someone else holds are never modified and immutable arrays work. Their state is
created from the parameters, on the parameters' device.
"""

from __future__ import annotations

import math

from .backend import namespace_of

#: The book's guard against division by zero in AdaGrad, RMSprop and Adam.
EPS = 1e-7


def _zeros_like(params):
    """Optimizer state: zeros shaped, typed and placed like each parameter."""
    return {k: namespace_of(p).zeros_like(p) for k, p in params.items()}


class SGD:
    """W <- W - lr dL/dW (eq. 6.1)."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key, g in grads.items():
            params[key] = params[key] - self.lr * g


class Momentum:
    """v <- momentum v - lr dL/dW; W <- W + v (eqs. 6.3-6.4)."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum = lr, momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = _zeros_like(params)
        for key, g in grads.items():
            self.v[key] = self.momentum * self.v[key] - self.lr * g
            params[key] = self._step(params[key], self.v[key], g)

    def _step(self, w, v, g):
        return w + v


class Nesterov(Momentum):
    """Nesterov's accelerated gradient, in the book's formulation (arXiv:1212.0901)."""

    def _step(self, w, v, g):
        m = self.momentum
        return w + m * m * v - (1 + m) * self.lr * g


class AdaGrad:
    """h <- h + g*g; W <- W - lr g / sqrt(h) (eqs. 6.5-6.6)."""

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = _zeros_like(params)
        for key, g in grads.items():
            xp = namespace_of(g)
            self.h[key] = self._accumulate(self.h[key], g)
            params[key] = params[key] - self.lr * g / (xp.sqrt(self.h[key]) + EPS)

    def _accumulate(self, h, g):
        return h + g * g


class RMSprop(AdaGrad):
    """AdaGrad whose sum of squares decays: h <- decay h + (1 - decay) g*g."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr)
        self.decay_rate = decay_rate

    def _accumulate(self, h, g):
        return self.decay_rate * h + (1 - self.decay_rate) * g * g


class Adam:
    """Adam (arXiv:1412.6980) with the book's bias correction folded into the step size."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter = 0
        self.m = self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = _zeros_like(params), _zeros_like(params)
        self.iter += 1
        b1, b2 = self.beta1, self.beta2
        lr_t = self.lr * math.sqrt(1.0 - b2**self.iter) / (1.0 - b1**self.iter)
        for key, g in grads.items():
            xp = namespace_of(g)
            self.m[key] = self.m[key] + (1 - b1) * (g - self.m[key])
            self.v[key] = self.v[key] + (1 - b2) * (g * g - self.v[key])
            params[key] = params[key] - lr_t * self.m[key] / (xp.sqrt(self.v[key]) + EPS)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name, **params):
    """An optimizer by its (case-insensitive) name, as the book's Trainer takes it."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}") from None
    return cls(**params)
