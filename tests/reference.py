"""The book's own layer and optimizer code in plain NumPy float64: the reference for the tests.

Written as the book writes it (in-place updates, fancy indexing), on purpose: portnet must agree
with this without doing either.
"""

import numpy as np


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)


def relu(x, dout):
    mask = x <= 0
    out = x.copy()
    out[mask] = 0
    dx = dout.copy()
    dx[mask] = 0
    return out, dx


def sigmoid(x, dout):
    out = 1 / (1 + np.exp(-x))
    return out, dout * (1.0 - out) * out


def affine(x, W, b, dout):
    x2 = x.reshape(x.shape[0], -1)
    out = x2 @ W + b
    dx = (dout @ W.T).reshape(x.shape)
    return out, dx, x2.T @ dout, dout.sum(axis=0)


def softmax_with_loss(x, labels):
    y = softmax(x)
    n = y.shape[0]
    loss = -np.sum(np.log(y[np.arange(n), labels] + 1e-7)) / n
    dx = y.copy()
    dx[np.arange(n), labels] -= 1
    return loss, dx / n


def batchnorm_train(x, gamma, beta, dout):
    mu = x.mean(axis=0)
    xc = x - mu
    var = np.mean(xc**2, axis=0)
    std = np.sqrt(var + 10e-7)
    xn = xc / std
    out = gamma * xn + beta
    n = x.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / n) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    dx = dxc - dmu / n
    return out, dx, dgamma, dbeta, mu, var


class Adam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2, self.iter, self.m, self.v = lr, beta1, beta2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params.keys():
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)
