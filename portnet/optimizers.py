"""The book's optimizers (ch. 6.1, common/optimizer.py), on one core: a pure step.

Each optimizer is its hyperparameters plus a rule; its state is data, ``{"step": count, slot:
{key: array}}`` (Adam's slots 'm' and 'v', Momentum's 'v', AdaGrad's 'h'). :meth:`Optimizer.apply`
``(state, params, grads) -> (params, state)`` is pure, so a compiled step needs no special case
for any optimizer. The book's ``update(params, grads)`` is a thin wrapper that works by reference,
as the book's does: an array that can be written (NumPy, CuPy, PyTorch) is updated in place, so
a layer holding it sees the new values; an array that cannot (JAX) and a Python number are
rebound in ``params`` instead, which portnet's own layers see because they read ``params`` at
every forward. State is created like each parameter (same namespace, device and dtype), and
Python numbers work as the book's 2-D demos use them.
"""

from __future__ import annotations

import math
from types import MappingProxyType

from .arrays import book_star_numpy, is_array, library_name, namespace_of, writeable
from .checks import fraction, rate
from .errors import ArrayTypeError, CheckpointError, InputError
from .parameters import Parameters
from .precision import host_copy, host_like

__all__ = [
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "RMSprop",
    "SGD",
    "np",
]  # np: what the book's star-import gave
__getattr__ = book_star_numpy(__name__)

#: The book's guard against division by zero in AdaGrad, RMSprop and Adam.
EPS = 1e-7


def _in_place(x, delta):
    """``x += delta`` where ``x`` can be written, else ``x + delta``; returns the result."""
    if writeable(x):
        x += delta
        return x
    return x + delta


def _pure(x, delta):
    return x + delta


def _sqrt(h):
    return namespace_of(h).sqrt(h) if is_array(h) else math.sqrt(h)


def check_pairs(params, grads) -> None:
    """Each gradient names a parameter and is of its library (checked by type: no sync)."""
    for key, g in grads.items():
        if key not in params:
            raise InputError(f"grads has {key!r}, which params does not ({sorted(params)})")
        p = params[key]
        if type(p) is not type(g) and is_array(p) and is_array(g):
            mine, theirs = library_name(namespace_of(p)), library_name(namespace_of(g))
            if mine != theirs:
                raise ArrayTypeError(
                    f"params[{key!r}] is a {mine} array but grads[{key!r}] a {theirs} one: compute the gradients "
                    f"on the parameters' backend (portnet.asarray(x) puts data there while it is active)"
                )


class Optimizer:
    """Hyperparameters, ``slots`` (the state kept per parameter) and a rule: :meth:`_rule` moves
    one parameter given its gradient, its slots, the step count and an ``add``."""

    slots: tuple[str, ...] = ()

    def __init__(self):
        self.state = None  # created at the first update
        self._layout = None  # how a flat state's vectors are laid out (portnet.parameters)

    def init(self, params) -> dict:
        """The state before the first step: count 0, each slot zeros like the parameters (one
        vector like their buffer where they are packed, else one array per parameter)."""
        packed = _packed(params)
        if packed is not None:
            self._layout, buffer = packed
            xp = namespace_of(buffer)
            return {"step": 0, **{slot: xp.zeros_like(buffer) for slot in self.slots}}
        return {
            "step": 0,
            **{slot: {k: _zeros_like(p) for k, p in params.items()} for slot in self.slots},
        }

    def apply(self, state, params, grads, *, in_place=False):
        """One step, ``(params, state) -> (new params, new state)``: pure (new arrays, nothing
        changed), or with ``in_place`` the arrays that can be written are updated and returned.

        Parameters packed in one buffer (:class:`~portnet.parameters.Parameters`) with a gradient
        for each are moved at once: the gradients gathered into one vector, the rule applied to
        the whole buffer, a few operations whatever the number of parameters."""
        add = _in_place if in_place else _pure
        step = state["step"] + 1
        lr = self.step_size(_wide(step))
        packed = _packed(params) if len(grads) == len(params) else None
        if packed is not None and not packed[0].fits(grads):
            packed = None  # a gradient of another shape: each parameter on its own (it broadcasts or fails)
        if packed is not None:
            layout, buffer = packed
            slots = {slot: self._flat(state[slot], layout) for slot in self.slots}
            new, kept = self._rule(buffer, layout.pack(grads), slots, _like(lr, buffer), add)
            return (params if new is buffer else params.with_buffer(new)), {"step": step, **kept}
        new_params, new_state = (
            dict(params),
            {"step": step, **{slot: dict(self._keyed(state[slot])) for slot in self.slots}},
        )
        for key, g in grads.items():
            kept = {slot: new_state[slot][key] for slot in self.slots}
            new_params[key], kept = self._rule(params[key], g, kept, _like(lr, params[key]), add)
            for slot, value in kept.items():
                new_state[slot][key] = value
        return new_params, new_state

    def update(self, params, grads) -> None:
        """The book's update: each ``params[key]`` moved by ``grads[key]``, by reference."""
        check_pairs(params, grads)
        if self.state is None:
            self.state = self.init(params)
        new, self.state = self.apply(self.state, params, grads, in_place=True)
        if new is params:  # one buffer, written in place
            return
        if isinstance(new, Parameters) and isinstance(params, Parameters):
            params.rebind(new.buffer, new._views)  # one new buffer (arrays that cannot be written)
            return
        for key in grads:
            if new[key] is not params[key]:  # not written in place: rebound
                params[key] = new[key]

    def _flat(self, slot, layout):
        """A slot's state as one vector laid out as the parameters' buffer."""
        if isinstance(slot, dict):
            slot = layout.pack(slot)
        self._layout = layout
        return slot

    def _keyed(self, slot) -> dict:
        """A slot's state as one array per parameter (views of its vector where it is flat)."""
        return slot if isinstance(slot, dict) else self._layout.unpack(slot)

    def state_dict(self) -> dict | None:
        """The state as host data, ``{"class", "step", "slots": {slot: {key: NumPy array}}}``
        (copies), or None before the first update."""
        if self.state is None:
            return None
        return {
            "class": type(self).__name__,
            "step": int(self.state["step"]),
            "slots": {
                s: {k: host_copy(v) for k, v in self._keyed(self.state[s]).items()}
                for s in self.slots
            },
        }

    def load_state_dict(self, state: dict | None, params: dict) -> None:
        """Continue from :meth:`state_dict`'s ``state``: each slot's arrays made like the
        parameters of ``params`` (namespace, device, dtype), after checking class and keys."""
        if state is None:
            self.state = None
            return
        name = type(self).__name__
        if state["class"] != name:
            raise CheckpointError(
                f"the optimizer's state is {state['class']}'s, this one is {name}"
            )
        if set(state["slots"]) != set(self.slots):
            raise CheckpointError(
                f"{name}'s state has slots {sorted(self.slots)}, not {sorted(state['slots'])}"
            )
        slots = {}
        for slot, arrays in state["slots"].items():
            if set(arrays) != set(params):
                raise CheckpointError(
                    f"{name}'s {slot!r} holds {sorted(arrays)}, the parameters are {sorted(params)}"
                )
            slots[slot] = {
                k: host_like(a, params[k], f"{name}'s {slot}[{k!r}]") for k, a in arrays.items()
            }
        packed = _packed(params)
        if packed is not None:
            slots = {slot: self._flat(arrays, packed[0]) for slot, arrays in slots.items()}
        self.state = {"step": int(state["step"]), **slots}

    def __getattr__(self, name):
        """The book's attributes for the state: ``iter`` (the step count) and the slots (``v``, ``h``,
        ``m``), None before the first update."""
        if name == "iter" or name in type(self).slots:
            state = self.__dict__.get("state")
            if state is None:
                return None
            if name == "iter":
                return state["step"]
            slot = state[name]  # one vector: views by key, to read (write them in place: [...] =)
            return slot if isinstance(slot, dict) else MappingProxyType(self._keyed(slot))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def step_size(self, step):
        """The learning rate of step ``step`` (1, 2, ...; an array inside a compiled step)."""
        return self.lr

    def _rule(self, p, g, slots, lr, add):
        """``(new p, new slots)`` for parameter ``p`` with gradient ``g`` at learning rate ``lr``."""
        raise NotImplementedError


def _wide(step):
    """The step count as float64 where it is an array (a compiled step's): the step size is then
    computed as eagerly, in double precision, whatever the library's default float."""
    return namespace_of(step).astype(step, namespace_of(step).float64) if is_array(step) else step


def _like(lr, p):
    """A step size that is an array (a compiled step's), in the dtype of parameter ``p``, as a
    Python float is rounded to it when an eager step multiplies."""
    if is_array(lr) and is_array(p):
        return namespace_of(lr).astype(lr, p.dtype)
    return lr


def _packed(params):
    """``(layout, buffer)`` of parameters packed in one buffer, else None."""
    return params.packed() if isinstance(params, Parameters) else None


def _zeros_like(p):
    return namespace_of(p).zeros_like(p) if is_array(p) else 0.0


class SGD(Optimizer):
    """W <- W - lr dL/dW (eq. 6.1)."""

    def __init__(self, lr=0.01):
        super().__init__()
        self.lr = rate("lr", lr)

    def _rule(self, p, g, slots, lr, add):
        return add(p, -lr * g), slots


class Momentum(Optimizer):
    """v <- momentum v - lr dL/dW; W <- W + v (eqs. 6.3-6.4)."""

    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__()
        self.lr, self.momentum = rate("lr", lr), fraction("momentum", momentum)

    def _rule(self, p, g, slots, lr, add):
        v = self.momentum * slots["v"] - lr * g
        return add(p, v), {"v": v}


class Nesterov(Momentum):
    """Nesterov's accelerated gradient, in the book's formulation (arXiv:1212.0901)."""

    def _rule(self, p, g, slots, lr, add):
        m = self.momentum
        v = m * slots["v"] - lr * g
        return add(add(p, m * m * v), -(1 + m) * lr * g), {"v": v}


class AdaGrad(Optimizer):
    """h <- h + g*g; W <- W - lr g / sqrt(h) (eqs. 6.5-6.6)."""

    slots = ("h",)

    def __init__(self, lr=0.01):
        super().__init__()
        self.lr = rate("lr", lr)

    def _rule(self, p, g, slots, lr, add):
        h = self._accumulate(slots["h"], g)
        return add(p, -lr * g / (_sqrt(h) + EPS)), {"h": h}

    def _accumulate(self, h, g):
        return h + g * g


class RMSprop(AdaGrad):
    """AdaGrad whose sum of squares decays: h <- decay h + (1 - decay) g*g."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr)
        self.decay_rate = fraction("decay_rate", decay_rate)

    def _accumulate(self, h, g):
        return self.decay_rate * h + (1 - self.decay_rate) * g * g


class Adam(Optimizer):
    """Adam (arXiv:1412.6980) with the book's bias correction folded into the step size:
    lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t) (a Python float eagerly, an array when the step
    count is traced)."""

    slots = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        super().__init__()
        self.lr, self.beta1, self.beta2 = (
            rate("lr", lr),
            fraction("beta1", beta1),
            fraction("beta2", beta2),
        )

    def _rule(self, p, g, slots, lr, add):
        # m += (1 - b1)(g - m); v += (1 - b2)(g g - v); p -= lr_t m / (sqrt(v) + eps), the book's
        # order, each temporary made once and then changed in place: on a network's one buffer,
        # each fresh array is memory the system may have to fault in again at every step
        d = g - slots["m"]
        d *= 1 - self.beta1
        m = add(slots["m"], d)
        d = g * g
        d -= slots["v"]
        d *= 1 - self.beta2
        v = add(slots["v"], d)
        d = _sqrt(v)
        d += EPS
        u = m * -lr
        u /= d
        return add(p, u), {"m": m, "v": v}

    def step_size(self, step):
        return self.lr * _sqrt(1.0 - self.beta2**step) / (1.0 - self.beta1**step)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}
#: The book's Trainer spells RMSprop 'rmsprpo'.
_ALIASES = {"rmsprpo": "rmsprop"}


def make_optimizer(name, **params):
    """An optimizer by its (case-insensitive) name, as the book's Trainer takes it."""
    key = str(name).lower()
    try:
        cls = OPTIMIZERS[_ALIASES.get(key, key)]
    except KeyError:
        raise InputError(
            f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}"
        ) from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(f"optimizer {name!r}: {exc}") from None
