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
            col[:, :, i, j, :, :] = img[
                :, :, i : i + stride * oh : stride, j : j + stride * ow : stride
            ]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * oh * ow, -1)


def col2im(col, shape, fh, fw, stride=1, pad=0):
    """The adjoint of im2col: each filter position's slice added back, on a canvas with a margin."""
    N, C, H, W = shape
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    col = col.reshape(N, oh, ow, C, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for i in range(fh):
        for j in range(fw):
            img[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += col[
                :, :, i, j, :, :
            ]
    return img[:, :, pad : H + pad, pad : W + pad]


class Relu:
    """The book's Relu layer: a copy with the masked entries set to 0; backward writes into dout."""

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    """The book's Affine layer (N-D input flattened)."""

    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.shape, self.x = x.shape, x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        self.dW, self.db = np.dot(self.x.T, dout), np.sum(dout, axis=0)
        return np.dot(dout, self.W.T).reshape(self.shape)


class Convolution:
    """The book's convolution layer: im2col, one matmul, col2im for dx."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, _, H, Wd = x.shape
        oh, ow = (
            (H + 2 * self.pad - FH) // self.stride + 1,
            (Wd + 2 * self.pad - FW) // self.stride + 1,
        )
        self.x, self.col = x, im2col(x, FH, FW, self.stride, self.pad)
        self.col_W = self.W.reshape(FN, -1).T
        return (self.col @ self.col_W + self.b).reshape(N, oh, ow, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        d = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = d.sum(axis=0)
        self.dW = (self.col.T @ d).transpose(1, 0).reshape(FN, C, FH, FW)
        return col2im(d @ self.col_W.T, self.x.shape, FH, FW, self.stride, self.pad)


class Pooling:
    """The book's max pooling: the argmax of each window row, the gradient assigned to it."""

    def __init__(self, ph, pw, stride=1, pad=0):
        self.ph, self.pw, self.stride, self.pad = ph, pw, stride, pad

    def forward(self, x):
        N, C, H, W = x.shape
        oh, ow = (
            (H + 2 * self.pad - self.ph) // self.stride + 1,
            (W + 2 * self.pad - self.pw) // self.stride + 1,
        )
        col = im2col(x, self.ph, self.pw, self.stride, self.pad).reshape(-1, self.ph * self.pw)
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        return col.max(axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2)

    def backward(self, dout):
        d = dout.transpose(0, 2, 3, 1)
        dmax = np.zeros((d.size, self.ph * self.pw), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = d.flatten()
        dcol = dmax.reshape(d.shape[0] * d.shape[1] * d.shape[2], -1)
        return col2im(dcol, self.x.shape, self.ph, self.pw, self.stride, self.pad)


def convolution(x, W, b, dout, stride=1, pad=0):
    """Forward and backward of a convolution by im2col: (out, dx, dW, db)."""
    layer = Convolution(W, b, stride, pad)
    out = layer.forward(x)
    dx = layer.backward(dout)
    return out, dx, layer.dW, layer.db


def max_pooling(x, dout, ph, pw, stride=1, pad=0):
    """Forward and backward of max pooling: (out, dx)."""
    layer = Pooling(ph, pw, stride, pad)
    return layer.forward(x), layer.backward(dout)
