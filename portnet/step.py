"""A training step as a pure function of its state, for compilers (Keras's JAX trainer is the
model): ``step(state, idx) -> (state, loss)``.

``state`` holds everything a step changes: the parameters (their one buffer where they are
packed), the optimizer's state (its step count included), the layers' persistent values (batch-norm statistics) and the random generators'
states (JAX's keys). A step runs the same array-API forward, backward and update as an eager
step, on a copy of the network bound to the state (:meth:`Network.bound`) and the optimizer's
pure :meth:`~portnet.optimizers.Optimizer.apply`: nothing is written anywhere, so the library's
compiler (:meth:`portnet.backends.Adapter.step_compiler`; JAX: ``jit`` of a ``scan``) can trace
it whole. :meth:`PureStep.install` puts a concrete state back into the network and optimizer.
"""

from __future__ import annotations

from .arrays import namespace_of, writeable
from .delegation import take_rows
from .networks import Network
from .optimizers import Optimizer
from .parameters import Parameters


class PureStep:
    """The training step of ``network`` and ``optimizer`` on ``(x_train, t_train)`` as a pure
    function of a state pytree and the mini-batch's indices."""

    def __init__(self, network, optimizer, x_train, t_train):
        self.network, self.optimizer = network, optimizer
        self.x_train, self.t_train = x_train, t_train

    @staticmethod
    def supports(network, optimizer) -> bool:
        """Whether the step can be made pure: portnet's network, portnet's optimizer whose
        ``update`` is its ``apply`` (a subclass that overrides ``update`` must be run as written),
        and random draws whose state is data (a native generator with a ``state``: host draws
        would be baked into a trace)."""
        if not isinstance(network, Network) or not isinstance(optimizer, Optimizer):
            return False
        if type(optimizer).update is not Optimizer.update:
            return False
        return all(rng.state is not None for rng in network.generators())

    def state(self) -> dict:
        """What a step reads and changes, as a pytree of arrays."""
        net, opt = self.network, self.optimizer
        if opt.state is None:
            opt.state = opt.init(net.params)
        xp = namespace_of(*net.params.values())
        if isinstance(net.params, Parameters) and net.params.packed() is None:
            net.params.flatten()  # an entry rebound between runs (a callback's): one buffer again
        packed = net.params.packed() if isinstance(net.params, Parameters) else None
        return {
            "params": dict(net.params) if packed is None else packed[1],
            "optimizer": {**opt.state, "step": xp.asarray(opt.state["step"])},
            "buffers": net.buffers(),
            "generators": [rng.state for rng in net.generators()],
        }

    def install(self, state) -> None:
        """Bind a concrete ``state`` (a compiled run's result) into the network and optimizer."""
        net, params = self.network, state["params"]
        if isinstance(params, dict):
            net.params.update(params)
        elif writeable(net.params.buffer):
            net.params.buffer[...] = params  # the layers' arrays keep their identity
        else:
            net.params.rebind(params)
        self.optimizer.state = {**state["optimizer"], "step": int(state["optimizer"]["step"])}
        net.load_buffers(state["buffers"])
        for rng, value in zip(net.generators(), state["generators"]):
            rng.state = value

    def __call__(self, state, idx):
        """One training step: (state, indices of the mini-batch) -> (new state, loss)."""
        params = state["params"]
        if not isinstance(params, dict):  # the parameters' buffer
            params = self.network.params.with_buffer(params)
        net = self.network.bound(params, state["buffers"], state["generators"])
        x, t = take_rows(self.x_train, idx), take_rows(self.t_train, idx)
        loss, grads = net.loss_and_gradient(x, t, check=False)
        params, optimizer = self.optimizer.apply(state["optimizer"], net.params, grads)
        new = {
            "params": params.buffer if isinstance(params, Parameters) else params,
            "optimizer": optimizer,
            "buffers": net.buffers(),
            "generators": [rng.state for rng in net.generators()],
        }
        return new, loss
