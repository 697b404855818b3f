"""The book's algorithms for layers and optimizers in plain NumPy float64: the reference for the tests.

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


class SGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params.keys():
            params[key] -= self.lr * grads[key]


class Momentum:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params.keys():
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class Nesterov:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params.keys():
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]


class AdaGrad:
    def __init__(self, lr=0.01):
        self.lr, self.h = lr, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params.keys():
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop:
    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr, self.decay_rate, self.h = lr, decay_rate, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params.keys():
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


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


# --------------------------------------------------------------------------- ch. 7: convolution
def im2col(x, fh, fw, stride=1, pad=0):
    """Window rows (N*OH*OW, C*FH*FW), filled by assigning each filter position's slice."""
    N, C, H, W = x.shape
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.zeros((N, C, fh, fw, oh, ow), dtype=x.dtype)
    for i in range(fh):
        for j in range(fw):
            col[:, :, i, j, :, :] = img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * oh * ow, -1)


def col2im(col, shape, fh, fw, stride=1, pad=0):
    """The adjoint of im2col: each filter position's slice added back, on a canvas with a margin."""
    N, C, H, W = shape
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    col = col.reshape(N, oh, ow, C, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for i in range(fh):
        for j in range(fw):
            img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += col[:, :, i, j, :, :]
    return img[:, :, pad : H + pad, pad : W + pad]


def convolution(x, W, b, dout, stride=1, pad=0):
    """Forward and backward of a convolution by im2col: (out, dx, dW, db)."""
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = (H + 2 * pad - FH) // stride + 1, (Wd + 2 * pad - FW) // stride + 1
    col = im2col(x, FH, FW, stride, pad)
    col_W = W.reshape(FN, -1).T
    out = (col @ col_W + b).reshape(N, oh, ow, -1).transpose(0, 3, 1, 2)
    d = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    dW = (col.T @ d).transpose(1, 0).reshape(FN, C, FH, FW)
    dx = col2im(d @ col_W.T, x.shape, FH, FW, stride, pad)
    return out, dx, dW, d.sum(axis=0)


def max_pooling(x, dout, ph, pw, stride=1, pad=0):
    """Forward and backward of max pooling: argmax per window, the gradient assigned to it."""
    N, C, H, W = x.shape
    oh, ow = (H + 2 * pad - ph) // stride + 1, (W + 2 * pad - pw) // stride + 1
    col = im2col(x, ph, pw, stride, pad).reshape(-1, ph * pw)
    arg_max = np.argmax(col, axis=1)
    out = col.max(axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2)
    d = dout.transpose(0, 2, 3, 1)
    dmax = np.zeros((d.size, ph * pw), dtype=dout.dtype)
    dmax[np.arange(arg_max.size), arg_max.flatten()] = d.flatten()
    dcol = dmax.reshape(N * oh * ow, -1)
    return out, col2im(dcol, x.shape, ph, pw, stride, pad)
