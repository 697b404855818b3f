"""Fully connected networks: ``MultiLayerNet`` (ch. 6, the book's MultiLayerNetExtend) and
``TwoLayerNet`` (ch. 5.7)."""

from __future__ import annotations

from ..checks import fraction, integers, non_negative
from ..errors import InputError
from ..layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss
from ..randomness import Random
from .network import Network, Sizes, init_scale


class MultiLayerNet(Network):
    """(Affine [BatchNorm] activation [Dropout]) x hidden, Affine, softmax.

    The book's MultiLayerNetExtend (and, with its defaults, its MultiLayerNet): ``weight_init_std``
    is 'relu'/'he', 'sigmoid'/'xavier' or a number; ``weight_decay_lambda`` adds L2 decay to the
    loss and its gradient (ch. 6.4.2); ``dropout_ration`` is accepted as the book spells it.
    ``layers`` is a dict named as the book's ('Affine1', 'BatchNorm1', 'Activation_function1', ...).
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
        dropout_ration=None,
    ):
        if activation not in ("relu", "sigmoid"):
            raise InputError(f"unknown activation {activation!r}; expected 'relu' or 'sigmoid'")
        if dropout_ration is not None:
            dropout_ratio = dropout_ration
        sizes = integers("layer sizes", [input_size, *hidden_size_list, output_size])
        non_negative("weight_decay_lambda", weight_decay_lambda)
        dropout_ratio = fraction("dropout_ratio", dropout_ratio)
        rng = self._setup(dtype, seed)
        self._check_size(
            f"a {'-'.join(map(str, sizes))} network", _sizes(sizes, use_batchnorm, use_dropout)
        )
        self.sizes, self.output_size = sizes, sizes[-1]
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
        for idx in range(1, len(sizes)):
            scale = init_scale(weight_init_std, sizes[idx - 1])
            self.params[f"W{idx}"] = self._normal(rng, (sizes[idx - 1], sizes[idx]), scale)
            self.params[f"b{idx}"] = self._full(sizes[idx], 0.0)
        dropout_rng = Random(
            self.xp,
            self.device,
            seed=None if seed is None else rng.integers(0, 2**63),
            source=random_source,
        )
        self.layers = {}
        for idx in range(1, len(sizes)):
            self.layers[f"Affine{idx}"] = Affine(
                params=self.params, keys=(f"W{idx}", f"b{idx}"), need_dx=idx > 1
            )
            if idx == len(sizes) - 1:
                break
            if use_batchnorm:
                self.params[f"gamma{idx}"] = self._full(sizes[idx], 1.0)
                self.params[f"beta{idx}"] = self._full(sizes[idx], 0.0)
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(
                    params=self.params,
                    keys=(f"gamma{idx}", f"beta{idx}"),
                    running_mean=self._full(sizes[idx], 0.0),
                    running_var=self._full(sizes[idx], 0.0),
                )
            self.layers[f"Activation_function{idx}"] = Relu() if activation == "relu" else Sigmoid()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ratio, dropout_rng)
        self.last_layer = SoftmaxWithLoss()
        self._built()

    def _shape_text(self):
        return "-".join(map(str, self.sizes))


def _sizes(sizes, batchnorm, dropout) -> Sizes:
    """Affine (and batch norm: its statistics counted as parameters) and activation (and
    dropout) per hidden layer, then the last Affine and the softmax."""
    counted = Sizes()
    for m, n in zip(sizes[:-2], sizes[1:-1]):
        counted.add(
            m * n + n + (4 * n if batchnorm else 0),
            (n,) * (2 + 3 * bool(batchnorm) + 2 * bool(dropout)),
        )
    m, n = sizes[-2:]
    counted.add(m * n + n, (n, n, n))
    return counted


#: The book's name for the network with weight decay, dropout and batch normalization.
MultiLayerNetExtend = MultiLayerNet


class TwoLayerNet(MultiLayerNet):
    """Affine - ReLU - Affine - softmax, weights ``weight_init_std`` x N(0, 1) (the book's ch. 5.7),
    its layers named as the book's: ``Affine1``, ``Relu1``, ``Affine2`` and ``lastLayer``."""

    def __init__(
        self, input_size, hidden_size, output_size, weight_init_std=0.01, *, dtype=None, seed=None
    ):
        super().__init__(
            input_size, [hidden_size], output_size, "relu", weight_init_std, dtype=dtype, seed=seed
        )
        self.layers = {
            "Affine1": self.layers["Affine1"],
            "Relu1": self.layers["Activation_function1"],
            "Affine2": self.layers["Affine2"],
        }
        self.config = {
            "input_size": self.sizes[0],
            "hidden_size": self.sizes[1],
            "output_size": self.sizes[2],
            "weight_init_std": weight_init_std,
        }

    @property
    def lastLayer(self):  # noqa: N802  (the book's name)
        """The book's name for the softmax-with-loss layer (``last_layer``)."""
        return self.last_layer
