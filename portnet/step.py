"""A training step as a pure function of its state, for compilers (Keras's JAX trainer is the
model): ``step(state, idx) -> (state, loss)``.

``state`` holds everything a step changes: the parameters, the optimizer's state (Adam's step
count included), the batch-norm statistics and the dropout generators' keys. The step binds
them into the network and optimizer, runs the same array-API forward, backward and update as an
eager step, and reads them back out, so that ``jax.jit`` can trace it into one program (instead of
a hundred-odd dispatches); the same function is what ``torch.compile`` or a CUDA graph would
capture. Nothing traced is left on the network, its layers or the optimizer: :meth:`scrub`
clears what a trace left, and :meth:`install` puts concrete state back.
"""

from __future__ import annotations

from .arrays import _is_tracer, namespace_of
from .layers import Dropout


class PureStep:
    """The training step of ``network`` and ``optimizer`` on ``(x_train, t_train)`` as a pure
    function of a state pytree and the mini-batch's indices."""

    def __init__(self, network, optimizer, x_train, t_train):
        self.network, self.optimizer = network, optimizer
        self.x_train, self.t_train = x_train, t_train
        rngs = [layer.rng for layer in network.layer_list() if isinstance(layer, Dropout)]
        self.rngs = list({id(r): r for r in rngs}.values())

    @staticmethod
    def supports(network, optimizer) -> bool:
        """Whether the step can be made pure: portnet's network and optimizer, and dropout masks
        drawn by JAX's own generator (host draws would be baked into a trace)."""
        if not hasattr(network, "loss_and_gradient") or not hasattr(optimizer, "state_names"):
            return False
        rngs = [layer.rng for layer in network.layer_list() if isinstance(layer, Dropout)]
        return all(r is not None and getattr(r, "_kind", None) == "jax" for r in rngs)

    def state(self) -> dict:
        """What a step reads and changes, as a pytree of arrays."""
        opt = self.optimizer
        return {
            "params": dict(self.network.params),
            "optimizer": {name: dict(getattr(opt, name)) for name in opt.state_names},
            "iter": namespace_of(*self.network.params.values()).asarray(getattr(opt, "iter", 0)),
            "buffers": self.network.buffers(),
            "keys": [r._key for r in self.rngs],
        }

    def install(self, state, *, concrete=False) -> None:
        """Bind ``state`` into the network and optimizer (``concrete``: after the last step, with
        the step count back as a Python int)."""
        self.network.params.update(state["params"])
        for name, value in state["optimizer"].items():
            setattr(self.optimizer, name, dict(value))
        if hasattr(self.optimizer, "iter"):
            self.optimizer.iter = int(state["iter"]) if concrete else state["iter"]
        self.network.load_buffers(state["buffers"])
        for rng, key in zip(self.rngs, state["keys"]):
            rng._key = key

    def __call__(self, state, idx):
        """One training step: (state, indices of the mini-batch) -> (new state, loss)."""
        self.install(state)
        xp = namespace_of(self.x_train)
        x, t = xp.take(self.x_train, idx, axis=0), xp.take(self.t_train, idx, axis=0)
        loss, grads = self.network.loss_and_gradient(x, t, check=False)
        self.optimizer.update(self.network.params, grads)
        return self.state(), loss

    def scrub(self) -> None:
        """Drop the intermediate values a trace left on the layers (tracers, useless after it)."""
        for layer in [*self.network.layer_list(), self.network.last_layer]:
            for name, value in list(vars(layer).items()):
                if _traced(value):
                    setattr(layer, name, None)


def _traced(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_traced(v) for v in value)
    return _is_tracer(type(value))


def compile_steps(pure: PureStep):
    """``jax.jit`` of a run of pure steps, ``(state, idx of shape (steps, batch)) -> (state,
    losses)``: one dispatch for the whole run (``jax.lax.scan``), not one per step."""
    import jax

    return jax.jit(lambda state, idx: jax.lax.scan(pure, state, idx))
