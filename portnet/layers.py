"""The book's layers with backpropagation (ch. 5-6, common/layers.py), on the array API.

``forward(x, train_flg=...)`` and ``backward(dout)`` as the book. Two differences, both so that
immutable arrays (JAX) work: nothing is written in place, and a layer with parameters reads them
from a mapping at every forward (``Affine.of(net.params, "W1", "b1")``), so that rebinding
``net.params["W1"]`` takes effect at the next forward instead of leaving the layer a stale copy.
"""

from __future__ import annotations

import array_api_compat

from .backend import Random, namespace_of
from .functions import _cross_entropy, labels_of, one_hot, sigmoid, softmax


class Relu:
    """y = max(0, x); dx = dout where x > 0 (ch. 5.5.1)."""

    def forward(self, x, train_flg=True):
        xp = namespace_of(x)
        self.mask = x <= 0
        return xp.where(self.mask, 0.0, x)

    def backward(self, dout):
        return namespace_of(dout).where(self.mask, 0.0, dout)


class Sigmoid:
    """y = 1 / (1 + exp(-x)); dx = dout (1 - y) y (ch. 5.5.2)."""

    def forward(self, x, train_flg=True):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class _Bound:
    """A layer whose parameters live in a mapping it reads at every forward."""

    def __init__(self, params, keys):
        self.params, self.keys = params, keys

    @classmethod
    def of(cls, params, *keys, **kwargs):
        """The layer reading its parameters ``keys`` from ``params`` (a network's dict)."""
        layer = cls.__new__(cls)
        _Bound.__init__(layer, params, keys)
        layer._setup(**kwargs)
        return layer

    def _setup(self):
        pass


class Affine(_Bound):
    """y = x W + b (ch. 5.6.2); N-D input is flattened to (N, -1) and dx takes its shape back."""

    def __init__(self, W, b):
        super().__init__({"W": W, "b": b}, ("W", "b"))
        self._setup()

    def _setup(self, need_dx=True):
        #: The first layer of a network never needs dx: skipping it saves a matmul a step.
        self.need_dx = need_dx
        self.dW = self.db = None

    @property
    def W(self):
        return self.params[self.keys[0]]

    @property
    def b(self):
        return self.params[self.keys[1]]

    def forward(self, x, train_flg=True):
        xp = namespace_of(x)
        W = self.W
        self.x_shape = x.shape
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0], -1))
        if x.shape[1] != W.shape[0]:
            raise ValueError(
                f"{self.keys[0]}: the input has {x.shape[1]} features per sample "
                f"(shape {tuple(self.x_shape)}), but the layer expects {W.shape[0]}"
            )
        self.x = x
        return x @ W + self.b

    def backward(self, dout):
        xp = namespace_of(dout)
        self.dW = self.x.T @ dout
        self.db = xp.sum(dout, axis=0)
        if not self.need_dx:
            return None
        return xp.reshape(dout @ self.W.T, self.x_shape)


class SoftmaxWithLoss:
    """Softmax then cross-entropy; backward gives (y - t) / N (ch. 5.6.3, fig. 5-30).

    ``t`` is one-hot or integer labels. Labels are not range-checked here (the hot path): the
    networks' public methods and the Trainer check them.
    """

    def forward(self, x, t):
        xp = namespace_of(x, t)
        self.y = softmax(x)
        labels = labels_of(xp, x.shape, t, "SoftmaxWithLoss")
        picker = one_hot(xp, labels, x.shape[-1], self.y.dtype)
        self.loss = _cross_entropy(xp, self.y, picker)
        # the book's backward subtracts one-hot t itself (labels: their one-hot rows)
        self.target = xp.astype(t, self.y.dtype) if t.shape == x.shape else picker
        return self.loss

    def backward(self, dout=1):
        xp = namespace_of(self.y)
        y = self.y
        batch = y.shape[0] if y.ndim == 2 else 1
        scale = dout / batch if isinstance(dout, (int, float)) else xp.astype(dout, y.dtype) / batch
        return (y - self.target) * scale


class Dropout:
    """Each unit kept with probability 1 - ratio in training; scaled by 1 - ratio at test (ch. 6.4.3).

    The mask comes from ``rng`` (a :class:`portnet.backend.Random`, by default the backend's own
    generator on the input's device). ``frozen = True`` keeps the last mask, for gradient checks.
    """

    def __init__(self, dropout_ratio=0.5, rng: Random | None = None):
        self.dropout_ratio = dropout_ratio
        self.rng = rng
        self.mask = None
        self.frozen = False

    def forward(self, x, train_flg=True):
        xp = namespace_of(x)
        if not train_flg:
            return x * (1.0 - self.dropout_ratio)
        if not self.frozen or self.mask is None or self.mask.shape != x.shape:
            if self.rng is None:
                self.rng = Random(xp, array_api_compat.device(x))
            self.mask = self.rng.uniform(x.shape, x.dtype) > self.dropout_ratio
        return xp.where(self.mask, x, 0.0)

    def backward(self, dout):
        return namespace_of(dout).where(self.mask, dout, 0.0)


class BatchNormalization(_Bound):
    """Normalise each feature over the batch, then scale by gamma and shift by beta (ch. 6.3).

    Running mean and variance (for ``train_flg=False``) are kept by the layer, with ``momentum``.
    """

    #: The book's epsilon under the square root (written 10e-7 there).
    EPS = 10e-7

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        super().__init__({"gamma": gamma, "beta": beta}, ("gamma", "beta"))
        self._setup(momentum, running_mean, running_var)

    def _setup(self, momentum=0.9, running_mean=None, running_var=None):
        self.momentum = momentum
        self.running_mean, self.running_var = running_mean, running_var
        self.dgamma = self.dbeta = None

    def forward(self, x, train_flg=True):
        xp = namespace_of(x)
        self.input_shape = x.shape
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0], -1))
        gamma, beta = self.params[self.keys[0]], self.params[self.keys[1]]
        if self.running_mean is None:
            self.running_mean = xp.zeros_like(x[0, ...])
            self.running_var = xp.zeros_like(x[0, ...])
        if train_flg:
            mu = xp.mean(x, axis=0)
            xc = x - mu
            var = xp.mean(xc**2, axis=0)
            std = xp.sqrt(var + self.EPS)
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mu
            self.running_var = m * self.running_var + (1 - m) * var
        else:
            xn = (x - self.running_mean) / xp.sqrt(self.running_var + self.EPS)
        return xp.reshape(gamma * xn + beta, self.input_shape)

    def backward(self, dout):
        xp = namespace_of(dout)
        if dout.ndim != 2:
            dout = xp.reshape(dout, (dout.shape[0], -1))
        gamma = self.params[self.keys[0]]
        self.dbeta = xp.sum(dout, axis=0)
        self.dgamma = xp.sum(self.xn * dout, axis=0)
        dxn = gamma * dout
        dxc = dxn / self.std
        dstd = -xp.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
        dmu = xp.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        return xp.reshape(dx, self.input_shape)
