"""The book's convolutional networks: ``SimpleConvNet`` (ch. 7.5) and ``DeepConvNet`` (ch. 8.1).

Layer order, names, defaults and initialisation are the book's: ``layers`` is a dict in
SimpleConvNet and a list in DeepConvNet, as there. Both predict ``accuracy_batch_size`` = 100
images at a time, as the book's ``accuracy``.
"""

from __future__ import annotations

from ..checks import integer, integers
from ..errors import InputError
from ..layers import Affine, Convolution, Dropout, Pooling, Relu, SoftmaxWithLoss
from ..randomness import Random
from ..util import conv_output_size
from .network import Network, Sizes, init_scale

_CONV_KEYS = ("filter_num", "filter_size", "pad", "stride")


def _conv_param(name, param) -> dict:
    if not isinstance(param, dict) or set(param) != set(_CONV_KEYS):
        raise InputError(f"{name} must be a dict with keys {', '.join(_CONV_KEYS)}, got {param!r}")
    return {
        "filter_num": integer(f"{name}['filter_num']", param["filter_num"]),
        "filter_size": integer(f"{name}['filter_size']", param["filter_size"]),
        "pad": integer(f"{name}['pad']", param["pad"], 0),
        "stride": integer(f"{name}['stride']", param["stride"]),
    }


def _input_dim(input_dim) -> tuple[int, int, int]:
    if len(input_dim) != 3:
        raise InputError(f"input_dim must be (channels, height, width), got {input_dim!r}")
    return tuple(integers("input_dim", input_dim))


class _ConvNet(Network):
    accuracy_batch_size = 100

    def _conv(self, rng, idx, channels, size, param, scale_of):
        """W{idx}, b{idx} and their Convolution layer; returns (filters, output height/width)."""
        fn, fs = param["filter_num"], param["filter_size"]
        self.params[f"W{idx}"] = self._normal(
            rng, (fn, channels, fs, fs), scale_of(channels * fs * fs)
        )
        self.params[f"b{idx}"] = self._full(fn, 0.0)
        out = (
            conv_output_size(size[0], fs, param["stride"], param["pad"]),
            conv_output_size(size[1], fs, param["stride"], param["pad"]),
        )
        layer = Convolution(
            params=self.params,
            keys=(f"W{idx}", f"b{idx}"),
            stride=param["stride"],
            pad=param["pad"],
            need_dx=idx > 1,
        )
        return layer, fn, out

    def _affine(self, rng, idx, fan_in, fan_out, scale):
        self.params[f"W{idx}"] = self._normal(rng, (fan_in, fan_out), scale)
        self.params[f"b{idx}"] = self._full(fan_out, 0.0)
        return Affine(params=self.params, keys=(f"W{idx}", f"b{idx}"))

    def _shape_text(self):
        return "x".join(map(str, self.input_dim))


def _pooled(size):
    return conv_output_size(size[0], 2, 2), conv_output_size(size[1], 2, 2)


def _count_conv(sizes: Sizes, channels, size, param):
    """A Convolution and its ReLU: the im2col windows, the output, the ReLU's output (and the
    padded input while the windows are cut). Returns the filters and output size."""
    fn, fs, pad, stride = (param[k] for k in _CONV_KEYS)
    out = (
        conv_output_size(size[0], fs, stride, pad),
        conv_output_size(size[1], fs, stride, pad),
    )
    padded = channels * (size[0] + 2 * pad) * (size[1] + 2 * pad)
    windows = out[0] * out[1] * channels * fs * fs
    sizes.add(fn * channels * fs * fs + fn, (windows, *(fn * out[0] * out[1],) * 2))
    sizes.add(0, (padded,), kept=False)
    return fn, out


def _count_pool(sizes: Sizes, channels, size):
    """A 2x2 pooling of stride 2: its windows, the positions of the maxima, the output."""
    out = _pooled(size)
    sizes.add(0, (4 * channels * out[0] * out[1], *(channels * out[0] * out[1],) * 2))
    return out


def _count_affine(sizes: Sizes, fan_in, fan_out, arrays):
    """An Affine and what follows it (ReLU, dropout, softmax): ``arrays`` of its outputs' size."""
    sizes.add(fan_in * fan_out + fan_out, (fan_out,) * arrays)


class SimpleConvNet(_ConvNet):
    """conv - relu - pool - affine - relu - affine - softmax (ch. 7.5); weights
    ``weight_init_std`` x N(0, 1), the pool 2x2 with stride 2; ``layers`` named as the book's
    (``Conv1``, ``Relu1``, ``Pool1``, ``Affine1``, ``Relu2``, ``Affine2``)."""

    def __init__(
        self,
        input_dim=(1, 28, 28),
        conv_param=None,
        hidden_size=100,
        output_size=10,
        weight_init_std=0.01,
        *,
        dtype=None,
        seed=None,
    ):
        conv_param = _conv_param(
            "conv_param", conv_param or {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        )
        input_dim = _input_dim(input_dim)
        hidden_size, output_size = integers("hidden_size/output_size", [hidden_size, output_size])
        scale = init_scale(weight_init_std, 1)
        sizes = Sizes()
        filters, conv_out = _count_conv(sizes, input_dim[0], input_dim[1:], conv_param)
        pooled = _count_pool(sizes, filters, conv_out)
        flat = filters * pooled[0] * pooled[1]
        _count_affine(sizes, flat, hidden_size, 2)
        _count_affine(sizes, hidden_size, output_size, 3)
        rng = self._setup(dtype, seed)
        self._check_size("this SimpleConvNet", sizes)
        self.input_dim, self.output_size = input_dim, output_size
        self.config = {
            "input_dim": list(input_dim),
            "conv_param": conv_param,
            "hidden_size": hidden_size,
            "output_size": output_size,
            "weight_init_std": weight_init_std,
        }
        conv, _, _ = self._conv(
            rng, 1, input_dim[0], input_dim[1:], conv_param, lambda fan_in: scale
        )
        self.layers = {
            "Conv1": conv,
            "Relu1": Relu(),
            "Pool1": Pooling(pool_h=2, pool_w=2, stride=2),
            "Affine1": self._affine(rng, 2, flat, hidden_size, scale),
            "Relu2": Relu(),
            "Affine2": self._affine(rng, 3, hidden_size, output_size, scale),
        }
        self.last_layer = SoftmaxWithLoss()
        self._built()


DEEP_CONV_PARAMS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


class DeepConvNet(_ConvNet):
    """(conv - relu - conv - relu - pool) x 3 - affine - relu - dropout - affine - dropout - softmax
    (ch. 8.1), He initialisation; the book's defaults reach 99.35 % on MNIST.

    As the book's, :meth:`loss` runs in training mode (dropout on) unless told otherwise.
    """

    def __init__(
        self,
        input_dim=(1, 28, 28),
        conv_param_1=None,
        conv_param_2=None,
        conv_param_3=None,
        conv_param_4=None,
        conv_param_5=None,
        conv_param_6=None,
        hidden_size=50,
        output_size=10,
        *,
        dtype=None,
        seed=None,
        random_source="native",
    ):
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        conv_params = [
            _conv_param(f"conv_param_{i + 1}", p or dict(DEEP_CONV_PARAMS[i]))
            for i, p in enumerate(given)
        ]
        input_dim = _input_dim(input_dim)
        hidden_size, output_size = integers("hidden_size/output_size", [hidden_size, output_size])
        sizes = Sizes()
        channels, size = input_dim[0], input_dim[1:]
        for idx, param in enumerate(conv_params, start=1):
            channels, size = _count_conv(sizes, channels, size, param)
            if idx % 2 == 0:
                size = _count_pool(sizes, channels, size)
        _count_affine(sizes, channels * size[0] * size[1], hidden_size, 4)
        _count_affine(sizes, hidden_size, output_size, 5)
        rng = self._setup(dtype, seed)
        self._check_size("this DeepConvNet", sizes)
        self.input_dim, self.output_size = input_dim, output_size
        self.config = {
            "input_dim": list(input_dim),
            **{f"conv_param_{i + 1}": p for i, p in enumerate(conv_params)},
            "hidden_size": hidden_size,
            "output_size": output_size,
        }
        he = lambda fan_in: init_scale("he", fan_in)  # noqa: E731
        channels, size = input_dim[0], input_dim[1:]
        self.layers = []
        for idx, param in enumerate(conv_params, start=1):
            conv, channels, size = self._conv(rng, idx, channels, size, param, he)
            self.layers += [conv, Relu()]
            if idx % 2 == 0:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
                size = _pooled(size)
        flat = channels * size[0] * size[1]
        dropout_rng = Random(
            self.xp,
            self.device,
            seed=None if seed is None else rng.integers(0, 2**63),
            source=random_source,
        )
        self.layers += [
            self._affine(rng, 7, flat, hidden_size, he(flat)),
            Relu(),
            Dropout(0.5, dropout_rng),
            self._affine(rng, 8, hidden_size, output_size, he(hidden_size)),
            Dropout(0.5, dropout_rng),
        ]
        self.last_layer = SoftmaxWithLoss()
        self._built()

    def loss(self, x, t, train_flg=True):
        """Cross-entropy of the scores against ``t``, in training mode by default (the book's)."""
        return super().loss(x, t, train_flg)
