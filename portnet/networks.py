"""The book's networks: ``TwoLayerNet`` (ch. 5.7) and ``MultiLayerNet`` (ch. 6, MultiLayerNetExtend).

A network is created on the active backend, on its device and in its dtype (float32 unless
``PORTNET_DTYPE``, ``set_backend(..., dtype=)`` or the network's ``dtype=`` says otherwise). Its weights are drawn on the host from ``seed`` and transferred
once, so the same seed gives the same network on every backend. ``params`` is a plain dict:
rebind an entry (``net.params["W1"] = net.params["W1"] - lr * g["W1"]``) and the next forward
uses it.
"""

from __future__ import annotations

import math

from . import backend as _backend
from .backend import Random, namespace_of
from .functions import check_labels, labels_of
from .gradient import numerical_gradient as _numerical_gradient
from .layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss

#: Rows per forward pass when measuring accuracy over many samples (bounds memory).
ACCURACY_CHUNK = 10000


class MultiLayerNet:
    """Fully connected network: (Affine [BatchNorm] activation [Dropout]) x hidden, Affine, softmax.

    The book's MultiLayerNetExtend: ``weight_init_std`` is 'relu'/'he' (sqrt(2/n)),
    'sigmoid'/'xavier' (sqrt(1/n)) or a number; ``weight_decay_lambda`` adds L2 decay to the loss
    and its gradient (ch. 6.4.2).
    """

    def __init__(
        self,
        input_size,
        hidden_size_list,
        output_size,
        activation="relu",
        weight_init_std="relu",
        weight_decay_lambda=0,
        use_dropout=False,
        dropout_ratio=0.5,
        use_batchnorm=False,
        *,
        dtype=None,
        seed=None,
        random_source="native",
    ):
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"unknown activation {activation!r}; expected 'relu' or 'sigmoid'")
        active = _backend.active()
        self.xp, self.device = active.xp, active.device
        self.dtype = active.dtype if dtype is None else _backend.resolve_dtype(self.xp, dtype)
        sizes = [int(input_size), *map(int, hidden_size_list), int(output_size)]
        self.sizes = sizes
        self.config = {
            "input_size": sizes[0],
            "hidden_size_list": sizes[1:-1],
            "output_size": sizes[-1],
            "activation": activation,
            "weight_init_std": weight_init_std,
            "weight_decay_lambda": weight_decay_lambda,
            "use_dropout": use_dropout,
            "dropout_ratio": dropout_ratio,
            "use_batchnorm": use_batchnorm,
        }
        self.weight_decay_lambda = weight_decay_lambda
        self.hidden_layer_num = len(sizes) - 2
        rng = _backend.host_rng(seed)
        self.params = {}
        for idx in range(1, len(sizes)):
            self.params[f"W{idx}"] = _backend.random_normal(
                rng, (sizes[idx - 1], sizes[idx]), _init_scale(weight_init_std, sizes[idx - 1]),
                self.xp, self.device, self.dtype,
            )
            self.params[f"b{idx}"] = self._full(sizes[idx], 0.0)
        dropout_rng = Random(self.xp, self.device, seed=rng.integers(2**63), source=random_source)
        self.layers = {}
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine.of(self.params, f"W{idx}", f"b{idx}", need_dx=idx > 1)
            if use_batchnorm:
                self.params[f"gamma{idx}"] = self._full(sizes[idx], 1.0)
                self.params[f"beta{idx}"] = self._full(sizes[idx], 0.0)
                self.layers[f"BatchNorm{idx}"] = BatchNormalization.of(self.params, f"gamma{idx}", f"beta{idx}")
            self.layers[f"Activation_function{idx}"] = Relu() if activation == "relu" else Sigmoid()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ratio, dropout_rng)
        last = self.hidden_layer_num + 1
        self.layers[f"Affine{last}"] = Affine.of(self.params, f"W{last}", f"b{last}", need_dx=last > 1)
        self.last_layer = SoftmaxWithLoss()

    def _full(self, n, value):
        return self.xp.full((n,), value, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ the book's API
    def predict(self, x, train_flg=False):
        """Scores before the softmax (the book's predict)."""
        for layer in self.layers.values():
            x = layer.forward(x, train_flg)
        return x

    def loss(self, x, t, train_flg=False):
        """Cross-entropy of softmax(predict(x)) against ``t``, plus the weight decay."""
        self._check(x, t)
        return self._loss(x, t, train_flg)

    def accuracy(self, x, t) -> float:
        """Fraction of samples whose highest score is the label (one-hot or integer ``t``)."""
        xp = namespace_of(x, t)
        n = x.shape[0]
        labels = labels_of(xp, (n, self.sizes[-1]), t, "accuracy")
        check_labels(xp, labels, self.sizes[-1])
        correct = 0
        for start in range(0, n, ACCURACY_CHUNK):
            stop = min(start + ACCURACY_CHUNK, n)  # the standard leaves out-of-range stops undefined
            y = self.predict(x[start:stop, ...], train_flg=False)
            correct = correct + xp.count_nonzero(xp.argmax(y, axis=1) == labels[start:stop])
        return int(correct) / n if n else 0.0

    def numerical_gradient(self, x, t):
        """Gradients by central differences (ch. 4.4.2): slow, for checking :meth:`gradient`."""
        self._check(x, t)
        grads = {}
        for key, value in list(self.params.items()):
            def loss_at(w, key=key):
                self.params[key] = w
                return self._loss(x, t, train_flg=True)

            try:
                grads[key] = _numerical_gradient(loss_at, value)
            finally:
                self.params[key] = value
        return grads

    def gradient(self, x, t):
        """Gradients by backpropagation (ch. 5.7.2)."""
        return self.loss_and_gradient(x, t)[1]

    # ------------------------------------------------------------------ beyond the book
    def loss_and_gradient(self, x, t, check=True):
        """``(loss, grads)`` from one forward and one backward pass.

        The loss stays on the device (no sync). ``check=False`` skips the label check, which reads
        two numbers back from the device: the Trainer checks its whole dataset once instead.
        """
        if check:
            self._check(x, t)
        loss = self._loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        decay = self.weight_decay_lambda
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            W = self.params[f"W{idx}"]
            grads[f"W{idx}"] = affine.dW + decay * W if decay else affine.dW
            grads[f"b{idx}"] = affine.db
            if f"BatchNorm{idx}" in self.layers:
                grads[f"gamma{idx}"] = self.layers[f"BatchNorm{idx}"].dgamma
                grads[f"beta{idx}"] = self.layers[f"BatchNorm{idx}"].dbeta
        return loss, grads

    def freeze_dropout(self, frozen=True):
        """Keep the current dropout masks (for gradient checks) or draw new ones again."""
        for layer in self.layers.values():
            if isinstance(layer, Dropout):
                layer.frozen = frozen

    def buffers(self):
        """State that is not a parameter: the batch-norm running statistics."""
        out = {}
        for name, layer in self.layers.items():
            if isinstance(layer, BatchNormalization) and layer.running_mean is not None:
                out[f"{name}.running_mean"] = layer.running_mean
                out[f"{name}.running_var"] = layer.running_var
        return out

    def load_buffers(self, buffers):
        """Restore what :meth:`buffers` returned."""
        for key, value in buffers.items():
            name, attr = key.split(".")
            setattr(self.layers[name], attr, value)

    def architecture(self) -> dict:
        """What rebuilds this network: its class and constructor arguments."""
        return {"class": type(self).__name__, **self.config}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'-'.join(map(str, self.sizes))}, {_backend.dtype_name(self.dtype)}, device={self.device})"

    # ------------------------------------------------------------------ internals
    def _loss(self, x, t, train_flg):
        xp = self.xp
        y = self.predict(x, train_flg)
        loss = self.last_layer.forward(y, t)
        if self.weight_decay_lambda:
            decay = sum(xp.sum(self.params[f"W{i}"] ** 2) for i in range(1, self.hidden_layer_num + 2))
            loss = loss + 0.5 * self.weight_decay_lambda * decay
        return loss

    def _check(self, x, t):
        """Shapes and label range, with errors that name what is wrong."""
        if x.ndim < 1 or t.shape[:1] != x.shape[:1]:
            raise ValueError(f"x and t disagree on the number of samples: shapes {tuple(x.shape)} and {tuple(t.shape)}")
        xp = namespace_of(x, t)
        labels = labels_of(xp, (x.shape[0], self.sizes[-1]), t, "labels")
        check_labels(xp, labels, self.sizes[-1])


class TwoLayerNet(MultiLayerNet):
    """Affine - ReLU - Affine - softmax, weights ``weight_init_std`` x N(0, 1) (the book's ch. 5)."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *, dtype=None, seed=None):
        super().__init__(input_size, [hidden_size], output_size, "relu", weight_init_std, dtype=dtype, seed=seed)
        self.config = {
            "input_size": int(input_size),
            "hidden_size": int(hidden_size),
            "output_size": int(output_size),
            "weight_init_std": weight_init_std,
        }


def _init_scale(weight_init_std, fan_in):
    if isinstance(weight_init_std, str):
        kind = weight_init_std.lower()
        if kind in ("relu", "he"):
            return math.sqrt(2.0 / fan_in)
        if kind in ("sigmoid", "xavier"):
            return math.sqrt(1.0 / fan_in)
        raise ValueError(f"unknown weight_init_std {weight_init_std!r}; expected 'relu', 'he', 'sigmoid', 'xavier' or a number")
    return float(weight_init_std)
