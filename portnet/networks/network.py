"""What every network shares (ch. 5.7, 7.5, 8.1): the book's predict / loss / accuracy /
gradient / numerical_gradient as one generic loop over the network's layers.

A network holds ``params`` (a plain dict), ``layers`` (in order: a dict of named layers as the
book's MultiLayerNet, or a list as its ConvNets) and ``last_layer``. Its layers with parameters
read them from ``params`` and report their own gradients by key (``layer.grads()``), so
``gradient`` needs no names or indices. A network is created on the active backend, on its
device and in its dtype; its weights are drawn on the host (``seed``, or NumPy's global generator
when ``seed`` is None, as the book) and transferred once, so the same draws give the same network
on every backend.
"""

from __future__ import annotations

import copy
import math

from .. import backend as _backend
from ..arrays import dtype_name, library_name, namespace_of, to_numpy
from ..checks import check_memory, same_samples, size_text
from ..errors import ArrayTypeError, CheckpointError, InputError
from ..functions import check_labels, check_targets, labels_of
from ..gradient import numerical_gradient as _numerical_gradient
from ..persistence import (
    read_checkpoint,
    read_pickled_arrays,
    write_checkpoint,
    write_pickled_arrays,
)
from ..layers import SoftmaxWithLoss
from ..parameters import Parameters
from ..precision import to_device
from ..randomness import host_rng, random_normal
from ..summary import lines as summary_lines


class Network:
    """Base of portnet's networks; subclasses build ``params``, ``layers`` and ``last_layer``."""

    #: Rows per forward pass in :meth:`accuracy` when no ``batch_size`` is given (bounds memory).
    accuracy_batch_size = 10000
    weight_decay_lambda = 0

    def _setup(self, dtype, seed):
        """Backend, device and dtype of the new network, and the generator its weights come from."""
        active = _backend.active()
        self.xp, self.device = active.xp, active.device
        self.dtype = active.dtype if dtype is None else _backend.resolve_dtype(self.xp, dtype)
        self.params = Parameters()  # packed into one buffer once built (_built)
        return host_rng(seed)

    def _built(self):
        """The end of a constructor: the parameters packed into one buffer."""
        self.params.flatten()

    def _normal(self, rng, shape, scale):
        return random_normal(rng, shape, scale, self.xp, self.device, self.dtype)

    def _full(self, n, value):
        return self.xp.full((n,), value, dtype=self.dtype, device=self.device)

    def layer_list(self) -> list:
        """The layers in order (``layers`` is a dict or a list)."""
        return list(self.layers.values()) if isinstance(self.layers, dict) else list(self.layers)

    # ------------------------------------------------------------------ the book's API
    def predict(self, x, train_flg=False):
        """Scores before the softmax (the book's predict). ``x``: an array of the network's library
        (or a list, as the book's NumPy code takes) of any real dtype, computed in the network's."""
        return self._predict(self._input(x, "x"), train_flg)

    def _predict(self, x, train_flg):
        self.check_pass(x.shape[0], train_flg)
        for layer in self.layer_list():
            x = layer.forward(x, train_flg)
        return x

    def loss(self, x, t, train_flg=False):
        """Cross-entropy of softmax(predict(x)) against ``t``, plus the weight decay."""
        x, t = self._check(x, t)
        return self._loss(x, t, train_flg)

    def accuracy(self, x, t, batch_size=None) -> float:
        """Fraction of samples whose highest score is the label (one-hot or integer ``t``),
        predicted ``batch_size`` rows at a time (default: the network's ``accuracy_batch_size``)."""
        x, t = self._check(x, t, labels=False)
        xp, n = self.xp, x.shape[0]
        labels = labels_of(xp, (n, self.output_size), t, "accuracy")
        check_labels(xp, labels, self.output_size)
        step = self.accuracy_batch_size if batch_size is None else int(batch_size)
        if step < 1:
            raise InputError(f"accuracy: batch_size must be positive, got {batch_size!r}")
        correct = 0
        for start in range(0, n, step):
            stop = min(start + step, n)  # the standard leaves out-of-range stops undefined
            y = self._predict(x[start:stop, ...], train_flg=False)
            correct = correct + xp.count_nonzero(xp.argmax(y, axis=1) == labels[start:stop])
        return int(correct) / n

    def numerical_gradient(self, x, t):
        """Gradients by central differences (ch. 4.4.2): slow, for checking :meth:`gradient`.

        Computed in float64 whatever the network's dtype, as the book's float64 networks do (a
        float32 central difference with h = 1e-4 keeps about three digits, and a correct backprop
        would look wrong), and returned in the network's dtype. The parameters and batch-norm
        statistics are restored afterwards."""
        x, t = self._check(x, t)
        xp, dtype = self.xp, self.dtype
        saved, buffers = dict(self.params), self.buffers()
        wide = xp.float64
        x = xp.astype(x, wide) if xp.isdtype(x.dtype, "real floating") else x
        t = xp.astype(t, wide) if xp.isdtype(t.dtype, "real floating") else t
        grads = {}
        try:
            self.params.update({k: xp.astype(v, wide) for k, v in saved.items()})
            for key in saved:

                def loss_at(w, key=key):
                    self.params[key] = w
                    return self._loss(x, t, train_flg=True)

                value = self.params[key]
                grads[key] = xp.astype(_numerical_gradient(loss_at, value), dtype)
                self.params[key] = value
        finally:
            self.params.update(saved)
            self.load_buffers(buffers)
        return grads

    def gradient(self, x, t):
        """Gradients by backpropagation (ch. 5.7.2), by the keys of ``params``."""
        return self.loss_and_gradient(x, t)[1]

    # ------------------------------------------------------------------ beyond the book
    def loss_and_gradient(self, x, t, check=True):
        """``(loss, grads)`` from one forward and one backward pass.

        The loss stays on the device (no sync). ``check=False`` skips the label check, which reads
        two numbers back from the device: the Trainer checks its whole dataset once instead.
        """
        x, t = self._check(x, t) if check else (self._input(x, "x"), t)
        loss = self._loss(x, t, train_flg=True)
        layers = self.layer_list()
        dout = self.last_layer.backward(1)
        for layer in reversed(layers):
            dout = layer.backward(dout)
        grads = {}
        for layer in layers:
            if hasattr(layer, "grads"):
                grads.update(layer.grads())
        decay = self.weight_decay_lambda
        if decay:
            for key in self._decayed_keys():
                grads[key] = grads[key] + decay * self.params[key]
        return loss, grads

    def freeze_dropout(self, frozen=True):
        """Keep the current random masks (dropout's, for gradient checks) or draw new ones again."""
        for layer in self.layer_list():
            if getattr(layer, "generators", ()):
                layer.frozen = frozen

    def buffers(self) -> dict:
        """State that is not a parameter: the layers' persistent values (the batch-norm running
        statistics), by layer name and attribute."""
        return {
            f"{name}.{attr}": getattr(layer, attr)
            for name, layer in self._named_layers()
            for attr in getattr(layer, "persistent", ())
            if getattr(layer, attr) is not None
        }

    def buffer_shapes(self) -> dict:
        """The buffers this network holds and their shapes (for validating a checkpoint)."""
        return {key: tuple(value.shape) for key, value in self.buffers().items()}

    def generators(self) -> list:
        """The random generators the layers draw from, each once."""
        found = {}
        for layer in self.layer_list():
            for attr in getattr(layer, "generators", ()):
                rng = getattr(layer, attr)
                if rng is not None:
                    found.setdefault(id(rng), rng)
        return list(found.values())

    def bound(self, params: dict, buffers: dict, generator_states: list):
        """A copy of this network computing with ``params``, ``buffers`` and the generators' states
        given (a pure step's state, traced or concrete), sharing nothing it could change: whatever
        a pass leaves on the copy's layers (traced values included) goes with the copy."""
        clone = copy.copy(self)
        clone._sizes = None  # no memory check of its passes: the step's caller checked them (a
        # check reads the sizes seen so far, which a compiler would guard on and recompile for)
        clone.params = params.copy() if isinstance(params, Parameters) else Parameters(params)
        rngs = {id(rng): copy.copy(rng) for rng in self.generators()}
        for rng, state in zip(rngs.values(), generator_states):
            rng.native = copy.copy(rng.native)
            rng.state = state

        def rebind(layer):
            layer = copy.copy(layer)
            if getattr(layer, "params", None) is self.params:
                layer.params = clone.params
            for attr in getattr(layer, "generators", ()):
                setattr(layer, attr, rngs.get(id(getattr(layer, attr)), getattr(layer, attr)))
            return layer

        if isinstance(self.layers, dict):
            clone.layers = {name: rebind(layer) for name, layer in self.layers.items()}
        else:
            clone.layers = [rebind(layer) for layer in self.layers]
        clone.last_layer = copy.copy(self.last_layer)
        clone.load_buffers(buffers)
        return clone

    def load_buffers(self, buffers):
        """Restore what :meth:`buffers` returned (names and shapes checked first)."""
        expected = self.buffer_shapes()
        for key, value in buffers.items():
            if key not in expected:
                raise CheckpointError(
                    f"buffer {key!r} is not one this network defines ({sorted(expected) or 'none'})"
                )
            if tuple(value.shape) != expected[key]:
                raise CheckpointError(
                    f"buffer {key!r} has shape {tuple(value.shape)}, expected {expected[key]}"
                )
        layers = dict(self._named_layers())
        for key, value in buffers.items():
            name, attr = key.rsplit(".", 1)
            setattr(layers[name], attr, value)

    def save_params(self, file_name="params.pkl", *, overwrite=True):
        """Write the parameters: a ``.pkl`` file holds the book's pickled dict of NumPy arrays (the
        book's own code reads it); any other name a portnet ``.npz`` checkpoint."""
        params = {k: to_numpy(v) for k, v in self.params.items()}
        if str(file_name).endswith(".pkl"):
            return write_pickled_arrays(file_name, params, overwrite=overwrite)
        meta = {"architecture": self.architecture(), "dtype": dtype_name(self.dtype)}
        buffers = {k: to_numpy(v) for k, v in self.buffers().items()}
        return write_checkpoint(file_name, meta, params, buffers, overwrite=overwrite)

    def load_params(self, file_name="params.pkl"):
        """Read parameters saved by :meth:`save_params` or by the book's code (its pickles are read
        safely: nothing in them runs), checked against this network's keys and shapes, converted
        to its dtype on its device."""
        if str(file_name).endswith(".npz"):
            _, params, buffers = read_checkpoint(file_name)
        else:
            params, buffers = read_pickled_arrays(file_name), {}
        self.set_params(params, source=str(file_name))
        if buffers:
            self.load_buffers(
                {k: to_device(v, self.xp, self.device, self.dtype) for k, v in buffers.items()}
            )

    def set_params(self, arrays: dict, source="the given parameters"):
        """Install host arrays as the parameters, after checking keys, shapes and dtypes."""
        if set(arrays) != set(self.params):
            raise CheckpointError(
                f"{source}: parameters {sorted(arrays)} do not match the network's {sorted(self.params)}"
            )
        for key, value in sorted(arrays.items()):
            if tuple(value.shape) != tuple(self.params[key].shape):
                raise CheckpointError(
                    f"{source}: {key} has shape {tuple(value.shape)}, the network needs {tuple(self.params[key].shape)}"
                )
            if value.dtype.kind not in "fiu":
                raise CheckpointError(
                    f"{source}: {key} has dtype {value.dtype}, expected real numbers"
                )
        for key, value in arrays.items():
            self.params[key] = to_device(value, self.xp, self.device, self.dtype)
        self.params.flatten()

    def architecture(self) -> dict:
        """What rebuilds this network: its class and constructor arguments."""
        return {"class": type(self).__name__, **self.config}

    def summary(self, print_fn=print) -> None:
        """Print the layers in order with their output shapes and parameter counts, the total, the
        dtype and the device, as Keras's ``model.summary()`` (one line per ``print_fn`` call)."""
        for line in summary_lines(self):
            print_fn(line)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shape_text()}, {dtype_name(self.dtype)}, device={self.device})"

    # ------------------------------------------------------------------ internals
    def _named_layers(self):
        if isinstance(self.layers, dict):
            return list(self.layers.items())
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def _decayed_keys(self):
        return [
            k
            for layer in self.layer_list()
            if hasattr(layer, "decayed_keys")
            for k in layer.decayed_keys()
        ]

    def _loss(self, x, t, train_flg):
        y = self._predict(x, train_flg)
        last = self.last_layer  # the labels were checked once, by the public method or Trainer
        loss = (
            last.forward(y, t, check=False)
            if isinstance(last, SoftmaxWithLoss)
            else last.forward(y, t)
        )
        if self.weight_decay_lambda:
            xp = self.xp
            decay = sum(xp.sum(self.params[k] ** 2) for k in self._decayed_keys())
            loss = loss + 0.5 * self.weight_decay_lambda * decay
        return loss

    def _own(self, a, what):
        """The namespace of ``a``, which must be this network's library (a type check: no sync)."""
        found = namespace_of(a)
        if found is not self.xp:
            mine, theirs = library_name(self.xp), library_name(found)
            raise ArrayTypeError(
                f"{what} is a {theirs} array, but this network computes with {mine}: mixing them would fail or copy "
                f"silently; convert it with portnet.asarray({what}) while the {mine} backend is active"
            )
        return found

    def _input(self, a, what):
        """``a`` as the network computes with it: a list made an array, real numbers cast to the
        network's dtype (as NumPy would promote them, but the same on every backend)."""
        a = self._array(a, what)
        if a.dtype != self.dtype:
            if not self.xp.isdtype(a.dtype, ("bool", "integral", "real floating")):
                raise ArrayTypeError(f"{what} holds {dtype_name(a.dtype)} values, not real numbers")
            a = self.xp.astype(a, self.dtype)
        return a

    def _array(self, a, what):
        """``a``, an array of this network's library, or a list or tuple made one."""
        if isinstance(a, (list, tuple)):
            try:
                a = self.xp.asarray(a, device=self.device)
            except (ValueError, TypeError) as exc:
                raise ArrayTypeError(
                    f"{what}: a list that is not an array of numbers ({exc})"
                ) from None
        self._own(a, what)
        return a

    def _check(self, x, t, labels=True):
        """``(x, t)`` as the network computes with them, after checking library, shapes, that the
        batch is not empty and (``labels``) the label range, with errors that name what is wrong."""
        x, t = self._input(x, "x"), self._array(t, "t")
        if same_samples(type(self).__name__, x, t) == 0:
            raise InputError(f"{type(self).__name__}: an empty batch (x of shape {tuple(x.shape)})")
        if labels:
            check_targets(namespace_of(x, t), (x.shape[0], self.output_size), t)
        return x, t

    # ------------------------------------------------------------------ memory
    def memory_needed(self, batch_size, optimizer_slots=0) -> int:
        """Bytes that training on mini-batches of ``batch_size`` holds at once, estimated from the
        shapes: the parameters, their gradients, ``optimizer_slots`` arrays like them (Adam's 2)
        and the divergence guard's two copies; a batch's activations and im2col windows, forward
        and backward, or an evaluation pass of ``accuracy_batch_size`` rows if that is more."""
        parameters = self._sizes.parameters * self._itemsize()
        return (4 + optimizer_slots) * parameters + max(
            self._activations(batch_size, True), self._activations(self.accuracy_batch_size, False)
        )

    def _check_size(self, what, sizes):
        """Refuse a network of more than :data:`MAX_PARAMETERS` parameters, or one this machine
        cannot hold with its gradients and one sample's pass, before any of it is allocated."""
        check_parameter_count(what, sizes.parameters)
        self._sizes = sizes
        check_memory(what, 2 * sizes.parameters * self._itemsize() + self._activations(1, True))

    def check_pass(self, n, train=True) -> None:
        """Refuse a pass of ``n`` samples (training: forward and backward) that this machine
        cannot hold, before it allocates; checked once per size (every training step passes the
        same one; the Trainer checks its batch up front, so a compiled step never does)."""
        sizes = getattr(self, "_sizes", None)  # None: a network that did not count its sizes
        if sizes is not None and (n, train) not in self.__dict__.setdefault("_fits", set()):
            # once per batch size: every training step passes the same one
            check_memory(
                f"a pass of {n:,} samples through {self!r}",
                self._activations(n, train),
                "; fewer at a time would fit (accuracy takes a batch_size)",
            )
            self._fits.add((n, train))

    def _activations(self, n, train) -> int:
        sizes = self._sizes
        return n * (sizes.kept + 2 * sizes.largest if train else sizes.kept) * self._itemsize()

    def _itemsize(self) -> int:
        return self.xp.finfo(self.dtype).bits // 8


def init_scale(weight_init_std, fan_in) -> float:
    """The standard deviation of initial weights: 'relu'/'he' sqrt(2/n), 'sigmoid'/'xavier'
    sqrt(1/n) (ch. 6.2), or the number given."""
    if isinstance(weight_init_std, str):
        kind = weight_init_std.lower()
        if kind in ("relu", "he"):
            return math.sqrt(2.0 / fan_in)
        if kind in ("sigmoid", "xavier"):
            return math.sqrt(1.0 / fan_in)
        raise InputError(
            f"unknown weight_init_std {weight_init_std!r}; expected 'relu', 'he', 'sigmoid', 'xavier' or a number"
        )
    scale = float(weight_init_std)
    if not math.isfinite(scale) or scale < 0:
        raise InputError(
            f"weight_init_std must be a finite non-negative number, got {weight_init_std!r}"
        )
    return scale


#: The most parameters a network may have (2 GB in float32): checked before anything is allocated.
MAX_PARAMETERS = 500_000_000


def check_parameter_count(what, count) -> None:
    """Refuse a network of more than :data:`MAX_PARAMETERS` parameters before allocating it."""
    if count > MAX_PARAMETERS:
        raise InputError(
            f"{what} would have {count:,} parameters ({size_text(4 * count)} in float32); "
            f"portnet allows at most {MAX_PARAMETERS:,}"
        )


class Sizes:
    """A network's sizes, counted from its shapes before anything is allocated: its parameters,
    the values per sample a forward pass keeps (activations, masks, im2col windows) and the
    largest of them (a backward pass holds about two more that large)."""

    def __init__(self):
        self.parameters = self.kept = self.largest = 0

    def add(self, parameters=0, values=(), kept=True):
        """A layer's parameters and the arrays of values per sample it makes (and keeps)."""
        self.parameters += parameters
        self.kept += sum(values) if kept else 0
        self.largest = max(self.largest, *values, 0)
