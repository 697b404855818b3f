"""The book's layers with backpropagation (ch. 5-7, common/layers.py), on the array API.

``forward(x, train_flg=...)`` and ``backward(dout)`` as the book. A layer with parameters is built
as the book builds it, ``Affine(W, b)`` (it keeps those arrays; an optimizer that updates them in
place is seen), or bound by keyword to a network's dict, ``Affine(params=net.params,
keys=("W1", "b1"))``: it then reads ``net.params["W1"]`` at every forward, so a rebound entry
takes effect, which is how immutable arrays (JAX) train. Either way ``layer.W`` reads and
assigns the parameter, and :meth:`grads` hands back the last backward's gradients by key.
Nothing is written into an array a caller owns.
"""

from __future__ import annotations

import array_api_compat

from .arrays import book_star_numpy, namespace_of, writeable
from .checks import fraction, integer
from .delegation import (
    convolution_backward,
    convolution_forward,
    keep,
    linear,
    max_pooling_backward,
    max_pooling_forward,
    minus_one_hot,
    pick,
    relu_backward,
    relu_forward,
)
from .errors import InputError
from .functions import check_labels, labels_of, mean_log_loss, sigmoid, softmax
from .randomness import Random

__all__ = [
    "Affine",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "Pooling",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "np",
]  # np: what the book's star-import gave
__getattr__ = book_star_numpy(__name__)


class Relu:
    """y = max(0, x); dx = dout where x > 0 (ch. 5.5.1, eq. 5.7). The backward needs only the
    output; the book's ``mask`` (True where x <= 0) is read from it."""

    def forward(self, x, train_flg=True):
        self.out = relu_forward(x)
        return self.out

    def backward(self, dout):
        return relu_backward(dout, self.out)

    @property
    def mask(self):
        """The book's mask: True where x <= 0, which is where the output is 0."""
        return self.out <= 0


class Sigmoid:
    """y = 1 / (1 + exp(-x)); dx = dout (1 - y) y (ch. 5.5.2)."""

    def forward(self, x, train_flg=True):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


def _parameter(name):
    def get(self):
        return self.params[self.keys[name]]

    def put(self, value):
        self.params[self.keys[name]] = value

    return property(
        get, put, doc=f"The layer's {name} (assigning rebinds it where the layer reads it)."
    )


class _Parametric:
    """A layer with parameters ``names``; ``decayed`` are those weight decay applies to."""

    names: tuple[str, ...] = ()
    decayed: tuple[str, ...] = ()

    def _bind(self, values, params, keys):
        cls = type(self).__name__
        if params is None:
            if any(v is None for v in values):
                raise InputError(
                    f"{cls} needs {', '.join(self.names)}, or params= and keys= to read them from"
                )
            for name, value in zip(self.names, values):
                if not writeable(value):
                    raise InputError(
                        f"{cls}({', '.join(self.names)}) keeps the arrays it is given, but this {name} cannot be "
                        f"updated in place ({type(value).__name__}), so an optimizer's update would never reach "
                        f"the layer; bind it to the network's dict instead: "
                        f"{cls}(params=self.params, keys=({', '.join(repr(n + '1') for n in self.names)}))"
                    )
            params, keys = dict(zip(self.names, values)), self.names
        else:
            if any(v is not None for v in values):
                raise InputError(f"{cls}: give either the arrays or params= and keys=, not both")
            keys = self.names if keys is None else tuple(keys)
            if len(keys) != len(self.names):
                raise InputError(
                    f"{cls}: keys={keys!r} must name {len(self.names)} entries ({', '.join(self.names)})"
                )
            missing = [k for k in keys if k not in params]
            if missing:
                raise InputError(
                    f"{cls}: params has no {', '.join(map(repr, missing))}; it holds {sorted(params)}"
                )
        self.params, self.keys = params, dict(zip(self.names, keys))
        for name in self.names:
            setattr(self, "d" + name, None)

    def grads(self) -> dict:
        """The last backward's gradients, by the keys the parameters have in ``params``."""
        return {self.keys[name]: getattr(self, "d" + name) for name in self.names}

    def decayed_keys(self) -> list[str]:
        """The keys of the parameters that weight decay applies to (the weights, not the biases)."""
        return [self.keys[name] for name in self.decayed]


class Affine(_Parametric):
    """y = x W + b (ch. 5.6.2); N-D input is flattened to (N, -1) and dx takes its shape back.

    ``need_dx=False`` (a network's first layer) skips the input gradient: a matmul a step."""

    names, decayed = ("W", "b"), ("W",)
    W, b = _parameter("W"), _parameter("b")

    def __init__(self, W=None, b=None, *, params=None, keys=None, need_dx=True):
        self._bind((W, b), params, keys)
        self.need_dx = need_dx

    def forward(self, x, train_flg=True):
        xp = namespace_of(x)
        W = self.W
        self.x_shape = x.shape
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0], -1))
        if x.shape[1] != W.shape[0]:
            raise InputError(
                f"{self.keys['W']}: the input has {x.shape[1]} features per sample "
                f"(shape {tuple(self.x_shape)}), but the layer expects {W.shape[0]}"
            )
        self.x = x
        return linear(x, W, self.b)

    def backward(self, dout):
        xp = namespace_of(dout)
        self.dW = self.x.T @ dout
        self.db = xp.sum(dout, axis=0)
        if not self.need_dx:
            return None
        return xp.reshape(dout @ self.W.T, self.x_shape)


class Convolution(_Parametric):
    """Convolution of (N, C, H, W) input with filters W (FN, C, FH, FW) plus bias b (FN,) (ch. 7.4).

    Generic: the book's im2col and matmul, with the windows laid out as a (C*FH*FW, N*OH*OW)
    matrix so that the whole batch is one matmul (a few large products beat a hundred small ones);
    backward finds dW with one more matmul and dx as the convolution of the (dilated, padded)
    output gradient with the flipped filters: no scatter at stride 1. PyTorch and JAX run their
    own convolution kernels (:func:`portnet.delegation.convolution_forward`). ``saved`` holds
    what backward needs (the window matrix on the generic path) until backward has run.
    """

    names, decayed = ("W", "b"), ("W",)
    W, b = _parameter("W"), _parameter("b")

    def __init__(self, W=None, b=None, stride=1, pad=0, *, params=None, keys=None, need_dx=True):
        self._bind((W, b), params, keys)
        self.stride, self.pad, self.need_dx = (
            integer("stride", stride),
            integer("pad", pad, 0),
            need_dx,
        )
        self.saved = None

    def forward(self, x, train_flg=True):
        W = self.W
        if x.ndim != 4 or x.shape[1] != W.shape[1]:
            raise InputError(
                f"{self.keys['W']}: expected input of shape (N, {W.shape[1]}, H, W) for filters of shape "
                f"{tuple(W.shape)}, got {tuple(x.shape)}"
            )
        out, self.saved = convolution_forward(x, W, self.b, self.stride, self.pad)
        return out

    def backward(self, dout):
        dx, self.dW, self.db = convolution_backward(dout, self.saved, self.need_dx)
        self.saved = None
        return dx


class Pooling:
    """Max pooling over (pool_h, pool_w) windows of (N, C, H, W) input (ch. 7.5); the stride
    defaults to 2, as in the book's common/layers.py.

    Generic: the maximum is taken over the window's strided slices (no reduction over a tiny
    axis), remembering which slice held the window's first maximum; backward routes each gradient
    there, as the book's argmax does, without index assignment. PyTorch, unpadded, runs its own
    max pooling, which picks the same maximum (:func:`portnet.delegation.max_pooling_forward`).
    ``saved`` holds what backward needs until it has run.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h, self.pool_w = integer("pool_h", pool_h), integer("pool_w", pool_w)
        self.stride, self.pad = integer("stride", stride), integer("pad", pad, 0)
        self.saved = None

    def forward(self, x, train_flg=True):
        if x.ndim != 4:
            raise InputError(f"Pooling expects input of shape (N, C, H, W), got {tuple(x.shape)}")
        out, self.saved = max_pooling_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        return out

    def backward(self, dout):
        dx = max_pooling_backward(dout, self.saved)
        self.saved = None
        return dx


class SoftmaxWithLoss:
    """Softmax then cross-entropy; backward gives (y - t) / N (ch. 5.6.3, fig. 5-30).

    ``t`` is one-hot rows or integer labels (shape (N,) or the book's (N, 1)). Labels are
    range-checked (one number read back from the device) unless ``check=False``: portnet's
    networks check theirs once, in their public methods and the Trainer, and pass it.
    """

    def forward(self, x, t, *, check=True):
        xp = namespace_of(x, t)
        y = self.y = softmax(x)
        if tuple(t.shape) == tuple(x.shape):  # one-hot rows: the book's backward subtracts them
            self.t, self.labels, self.picked = xp.astype(t, y.dtype, copy=False), None, None
            picked = xp.sum(y * self.t, axis=-1)  # exact: the other products are zeros
        else:
            self.t = self.labels = labels_of(xp, x.shape, t, "SoftmaxWithLoss")
            if check:
                check_labels(xp, self.labels, x.shape[-1])
            self.picked = pick(y, self.labels)
            picked = self.picked[..., 0]
        self.loss = mean_log_loss(xp, picked, 1 if y.ndim == 1 else y.shape[0])
        return self.loss

    def backward(self, dout=1):
        """(y - t) / N, as the book's (which ignores ``dout``); a ``dout`` other than 1 scales it."""
        xp = namespace_of(self.y)
        y = self.y
        batch = y.shape[0] if y.ndim == 2 else 1
        if self.labels is None:
            dx = y - self.t
        else:
            dx = minus_one_hot(y, self.labels, self.picked)
        if isinstance(dout, (int, float)):
            return dx / batch if dout == 1 else dx * (dout / batch)
        return dx * (xp.astype(dout, y.dtype) / batch)


class Dropout:
    """Each unit kept with probability 1 - ratio in training; scaled by 1 - ratio at test (ch. 6.4.3).

    The mask comes from ``rng`` (a :class:`portnet.randomness.Random`); by default on NumPy it is
    the book's ``np.random.rand(*x.shape) > ratio`` from NumPy's global generator, elsewhere the
    backend's own generator on the input's device. ``frozen = True`` keeps the last mask, for
    gradient checks.
    """

    #: The random generators the layer draws from (a pure step carries their state).
    generators = ("rng",)

    def __init__(self, dropout_ratio=0.5, rng: Random | None = None):
        self.dropout_ratio = fraction("dropout_ratio", dropout_ratio)
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
            self.mask = self.rng.keep_mask(x.shape, self.dropout_ratio)
        return keep(x, self.mask)

    def backward(self, dout):
        return keep(dout, self.mask)


class BatchNormalization(_Parametric):
    """Normalise each feature over the batch, then scale by gamma and shift by beta (ch. 6.3).

    Running mean and variance (for ``train_flg=False``) are kept by the layer, with ``momentum``:
    its persistent values (Chainer's term), saved with the parameters.
    """

    names = ("gamma", "beta")
    persistent = ("running_mean", "running_var")
    gamma, beta = _parameter("gamma"), _parameter("beta")
    #: The book's epsilon under the square root (written 10e-7 there).
    EPS = 10e-7

    def __init__(
        self,
        gamma=None,
        beta=None,
        momentum=0.9,
        running_mean=None,
        running_var=None,
        *,
        params=None,
        keys=None,
    ):
        self._bind((gamma, beta), params, keys)
        self.momentum = momentum
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, train_flg=True):
        xp = namespace_of(x)
        self.input_shape = x.shape
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0], -1))
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
        return xp.reshape(self.gamma * xn + self.beta, self.input_shape)

    def backward(self, dout):
        xp = namespace_of(dout)
        if dout.ndim != 2:
            dout = xp.reshape(dout, (dout.shape[0], -1))
        self.dbeta = xp.sum(dout, axis=0)
        self.dgamma = xp.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -xp.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
        dmu = xp.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        return xp.reshape(dx, self.input_shape)
