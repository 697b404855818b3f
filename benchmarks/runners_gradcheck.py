"""The book's ch. 5 gradient check (TwoLayerNet 784-50-10, numerical against backprop on three
images), on portnet and as the book's own code computes it: ``numerical_gradient`` walking the
array with ``np.nditer`` and perturbing it in place, the network's loss by its layers (float64)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

import portnet as pn
from tests import reference as ref  # the book's layers, shared with the tests


def portnet_gradient_check(x, t) -> float:
    with pn.use_backend("numpy", dtype="float64"):
        net = pn.TwoLayerNet(784, 50, 10, seed=0)
    numerical, backprop = net.numerical_gradient(x, t), net.gradient(x, t)
    return max(float(np.mean(np.abs(numerical[k] - backprop[k]))) for k in net.params)


def _numerical_gradient(f, x):
    h = 1e-4
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        tmp = x[idx]
        x[idx] = float(tmp) + h
        plus = f(x)
        x[idx] = tmp - h
        minus = f(x)
        grad[idx] = (plus - minus) / (2 * h)
        x[idx] = tmp
        it.iternext()
    return grad


class _SoftmaxWithLoss:
    def forward(self, x, t):
        self.t = t
        x = x - np.max(x, axis=-1, keepdims=True)
        self.y = np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)
        labels = t.argmax(axis=1) if t.size == self.y.size else t
        n = self.y.shape[0]
        return -np.sum(np.log(self.y[np.arange(n), labels] + 1e-7)) / n

    def backward(self, dout=1):
        return (self.y - self.t) / self.t.shape[0]


class _BookTwoLayerNet:
    """The book's ch. 5 TwoLayerNet: its layers, its loss, its gradient."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.params = {
            "W1": 0.01 * rng.standard_normal((784, 50)),
            "b1": np.zeros(50),
            "W2": 0.01 * rng.standard_normal((50, 10)),
            "b2": np.zeros(10),
        }
        self.layers = OrderedDict(
            Affine1=ref.Affine(self.params["W1"], self.params["b1"]),
            Relu1=ref.Relu(),
            Affine2=ref.Affine(self.params["W2"], self.params["b2"]),
        )
        self.last_layer = _SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


def book_gradient_check(x, t) -> float:
    net = _BookTwoLayerNet()
    loss = lambda W: net.loss(x, t)  # noqa: E731  (the book's idiom)
    numerical = {k: _numerical_gradient(loss, net.params[k]) for k in ("W1", "b1", "W2", "b2")}
    backprop = net.gradient(x, t)
    return max(float(np.mean(np.abs(numerical[k] - backprop[k]))) for k in net.params)
