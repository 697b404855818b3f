"""Runners that train the book's ConvNets (batch 100, Adam lr 0.001) a block of steps per call.

- ``PortnetConvNet``: the Trainer's step on portnet, ``net.loss_and_gradient`` (no label check a
  step: the Trainer checks its dataset once) then ``optimizer.update``, the mini-batch gathered on
  the device from a shuffle drawn there (float32);
- ``CompiledConvNet``: portnet's Trainer with its steps compiled (JAX's ``jit`` of a ``scan``,
  ``torch.compile``), a block of steps one epoch of a training set cut to that many batches;
- ``TorchEagerConvNet``: nn.Conv2d / MaxPool2d / Linear, autograd and optim.Adam;
- ``BookConvNet``: the book's own algorithm in NumPy float64, as its code computes (im2col with
  assignments, col2im, argmax pooling, in-place Adam), from ``tests/reference.py``.
Each has ``label``, ``steps(k)``, ``sync()`` and ``loss()``.
"""

from __future__ import annotations

import numpy as np

import portnet as pn
from tests import reference as ref  # the book's algorithm, shared with the tests
from timing import sync_for

BATCH, LR = 100, 0.001


class PortnetConvNet:
    def __init__(self, backend_id, name, device, kind, data):
        self.label = f"portnet {backend_id}"
        self.sync = sync_for(name, device)
        with pn.use_backend(name, device):
            (x, t), _ = data
            self.x, self.t = pn.asarray(x), pn.asarray(t)
            self.xp = pn.get_namespace()
            self.net = pn.SimpleConvNet(seed=0) if kind == "simple" else pn.DeepConvNet(seed=0)
            self.rng = pn.randomness.Random(self.xp, pn.backend.active().device, seed=0)
        self.optimizer, self.order, self.i = pn.Adam(lr=LR), None, 0

    def steps(self, k):
        xp = self.xp
        for _ in range(k):
            if self.order is None or (self.i + 1) * BATCH > self.x.shape[0]:
                self.order, self.i = self.rng.permutation(self.x.shape[0]), 0
            idx = self.order[self.i * BATCH : (self.i + 1) * BATCH]
            self.i += 1
            _, grads = self.net.loss_and_gradient(
                xp.take(self.x, idx, axis=0), xp.take(self.t, idx, axis=0), check=False
            )
            self.optimizer.update(self.net.params, grads)

    def loss(self):
        return float(self.net.loss(self.x[:BATCH, ...], self.t[:BATCH]))


class CompiledConvNet:
    """portnet's Trainer, ``compile=True``, on the first ``block`` batches of the training set:
    ``steps(block)`` is one epoch, the block's steps one compiled call (the losses read back once)."""

    def __init__(self, backend_id, name, device, kind, data, block):
        self.label, self.block = f"portnet {backend_id} compile", block
        self.sync = sync_for(name, device)
        with pn.use_backend(name, device):
            (x, t), (xt, tt) = data
            x, t = pn.asarray(x[: block * BATCH]), pn.asarray(t[: block * BATCH])
            net = pn.SimpleConvNet(seed=0) if kind == "simple" else pn.DeepConvNet(seed=0)
            self.trainer = pn.Trainer(
                net,
                x,
                t,
                pn.asarray(xt[:BATCH].reshape(-1, 1, 28, 28)),
                pn.asarray(tt[:BATCH]),
                epochs=1,
                mini_batch_size=BATCH,
                optimizer="adam",
                optimizer_param={"lr": LR},
                verbose=False,
                seed=0,
                loss_every=block,
                compile=True,
            )

    def steps(self, k):
        assert k == self.block, f"{self.label} runs blocks of {self.block} steps, not {k}"
        self.trainer.train_epoch()

    def loss(self):
        return float(np.mean(self.trainer.train_loss_list[-20:]))


class TorchEagerConvNet:
    def __init__(self, device, kind, data):
        import torch
        import torch.nn as nn

        self.torch, self.device = torch, torch.device(device)
        self.label = f"torch eager ({self.device.type})"
        self.sync = sync_for("torch", self.device)
        torch.manual_seed(0)
        if kind == "simple":
            layers = [
                nn.Conv2d(1, 30, 5),
                nn.ReLU(),
                nn.MaxPool2d(2, 2),
                nn.Flatten(),
                nn.Linear(4320, 100),
                nn.ReLU(),
                nn.Linear(100, 10),
            ]
        else:
            layers, channels = [], 1
            for i, (filters, pad) in enumerate(
                [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]
            ):
                layers += [nn.Conv2d(channels, filters, 3, padding=pad), nn.ReLU()]
                channels = filters
                if i % 2:
                    layers.append(nn.MaxPool2d(2, 2))
            layers += [
                nn.Flatten(),
                nn.Linear(1024, 50),
                nn.ReLU(),
                nn.Dropout(0.5),
                nn.Linear(50, 10),
                nn.Dropout(0.5),
            ]
        self.model = nn.Sequential(*layers).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        (x, t), _ = data
        self.x, self.t = (
            torch.as_tensor(x, device=self.device),
            torch.as_tensor(t, device=self.device),
        )
        self.order, self.i, self.losses = None, 0, []

    def steps(self, k):
        torch = self.torch
        for _ in range(k):
            if self.order is None or (self.i + 1) * BATCH > self.x.shape[0]:
                self.order, self.i = torch.randperm(self.x.shape[0], device=self.device), 0
            idx = self.order[self.i * BATCH : (self.i + 1) * BATCH]
            self.i += 1
            loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.t[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.losses.append(loss.detach())

    def loss(self):
        return float(self.torch.stack(self.losses[-20:]).mean())


class _Dropout:
    def forward(self, x):
        self.mask = np.random.rand(*x.shape) > 0.5
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class BookConvNet:
    """The book's SimpleConvNet / DeepConvNet as its own code computes them (float64)."""

    def __init__(self, kind, data):
        self.label = "book's code (numpy)"
        self.sync = sync_for("numpy")
        (x, self.t), _ = data
        self.x = x.reshape(-1, 1, 28, 28)
        rng = np.random.default_rng(0)
        self.params, self.layers = {}, []
        if kind == "simple":
            self._conv(rng, 1, (30, 1, 5, 5), 0.01, 0)
            self.layers += [ref.Relu(), ref.Pooling(2, 2, 2)]
            self._affine(rng, 2, (4320, 100), 0.01)
            self.layers.append(ref.Relu())
            self._affine(rng, 3, (100, 10), 0.01)
        else:
            channels = 1
            for idx, (filters, pad) in enumerate(
                [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)], start=1
            ):
                self._conv(rng, idx, (filters, channels, 3, 3), np.sqrt(2.0 / (channels * 9)), pad)
                self.layers.append(ref.Relu())
                channels = filters
                if idx % 2 == 0:
                    self.layers.append(ref.Pooling(2, 2, 2))
            self._affine(rng, 7, (1024, 50), np.sqrt(2.0 / 1024))
            self.layers += [ref.Relu(), _Dropout()]
            self._affine(rng, 8, (50, 10), np.sqrt(2.0 / 50))
            self.layers.append(_Dropout())
        self.optimizer, self.rng, self.losses = ref.Adam(lr=LR), rng, []

    def _conv(self, rng, idx, shape, scale, pad):
        self.params[f"W{idx}"], self.params[f"b{idx}"] = (
            scale * rng.standard_normal(shape),
            np.zeros(shape[0]),
        )
        self.layers.append(ref.Convolution(self.params[f"W{idx}"], self.params[f"b{idx}"], 1, pad))

    def _affine(self, rng, idx, shape, scale):
        self.params[f"W{idx}"], self.params[f"b{idx}"] = (
            scale * rng.standard_normal(shape),
            np.zeros(shape[1]),
        )
        self.layers.append(ref.Affine(self.params[f"W{idx}"], self.params[f"b{idx}"]))

    def steps(self, k):
        for _ in range(k):
            idx = self.rng.choice(self.x.shape[0], BATCH)
            x, t = self.x[idx].astype(np.float64), self.t[idx]  # the book's arrays are float64
            for layer in self.layers:
                x = layer.forward(x)
            loss, dout = ref.softmax_with_loss(x, t)
            self.losses.append(loss)
            for layer in reversed(self.layers):
                dout = layer.backward(dout)
            grads = {}
            for layer in self.layers:
                if hasattr(layer, "dW"):
                    key = next(k for k, v in self.params.items() if v is layer.W)
                    grads[key], grads["b" + key[1:]] = layer.dW, layer.db
            self.optimizer.update(self.params, grads)

    def loss(self):
        return float(np.mean(self.losses[-20:]))
