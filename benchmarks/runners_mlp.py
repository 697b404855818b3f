"""Runners that train the book's fully connected network (float32, SGD) one epoch per call.

- ``NumpyByHand``: the book's algorithm (Affine/ReLU/SoftmaxWithLoss, backprop, SGD) in plain NumPy;
- ``TorchEager``: PyTorch as people write it (nn.Linear, autograd, optim.SGD);
- ``TorchByHand``: portnet's step written directly in PyTorch;
- ``PortnetTrainer``: portnet's Trainer on any backend;
- ``PortnetBookLoop``: the book's own loop on portnet (``net.gradient`` then ``optimizer.update``,
  one-hot labels, a mini-batch drawn on the host each step), against ``NumpyByHand`` drawing the
  same way.
Each has ``label``, ``epoch()``, ``sync()`` and ``loss()``; data live on the runner's device.
"""

from __future__ import annotations

import numpy as np

import portnet as pn
from timing import sync_for

LR = 0.1


class NumpyByHand:
    """The book's algorithm in NumPy; ``book_loop``: one-hot labels and np.random.choice batches."""

    def __init__(self, hidden, batch, data, book_loop=False):
        self.label = "numpy by hand" + (" (book loop)" if book_loop else "")
        (self.x, t), _ = data
        self.book_loop = book_loop
        self.t = np.eye(10, dtype=np.float32)[t] if book_loop else t
        rng = np.random.default_rng(0)
        sizes = [784, *hidden, 10]
        self.W = [
            (np.sqrt(2.0 / m) * rng.standard_normal((m, n))).astype(np.float32)
            for m, n in zip(sizes, sizes[1:])
        ]
        self.b = [np.zeros(n, np.float32) for n in sizes[1:]]
        self.batch, self.rng, self.losses = batch, rng, []
        self.sync = sync_for("numpy")

    def epoch(self):
        n = self.x.shape[0]
        order = self.rng.permutation(n)
        for i in range(n // self.batch):
            idx = (
                self.rng.choice(n, self.batch)
                if self.book_loop
                else order[i * self.batch : (i + 1) * self.batch]
            )
            self._step(self.x[idx], self.t[idx])

    def _step(self, x, t):
        acts, masks = [x], []
        for W, b in zip(self.W[:-1], self.b[:-1]):
            a = acts[-1] @ W + b
            masks.append(a <= 0)
            a[masks[-1]] = 0
            acts.append(a)
        scores = acts[-1] @ self.W[-1] + self.b[-1]
        y = np.exp(scores - scores.max(axis=1, keepdims=True))
        y /= y.sum(axis=1, keepdims=True)
        n = y.shape[0]
        if self.book_loop:
            self.losses.append(-np.sum(np.log(np.sum(y * t, axis=1) + 1e-7)) / n)
            dout = (y - t) / n
        else:
            self.losses.append(-np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n)
            dout = y
            dout[np.arange(n), t] -= 1
            dout /= n
        for k in range(len(self.W) - 1, -1, -1):
            dW, db = acts[k].T @ dout, dout.sum(axis=0)
            if k:
                dout = dout @ self.W[k].T
                dout[masks[k - 1]] = 0
            self.W[k] -= LR * dW
            self.b[k] -= LR * db

    def loss(self):
        return float(np.mean(self.losses[-50:]))


class _Torch:
    """The dataset as tensors on ``device``, and what the PyTorch runners share."""

    kind = ""

    def __init__(self, device, batch, data):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.label = f"torch {self.kind} ({self.device.type})"
        (x, t), _ = data
        self.x, self.t = (
            torch.as_tensor(x, device=self.device),
            torch.as_tensor(t, device=self.device),
        )
        self.batch, self.losses = batch, []
        self.sync = sync_for("torch", self.device)

    def loss(self):
        return float(self.torch.stack(self.losses[-50:]).mean())


class TorchEager(_Torch):
    """PyTorch as people write it: nn.Linear layers, autograd, optim.SGD."""

    kind = "eager"

    def __init__(self, device, hidden, batch, data):
        super().__init__(device, batch, data)
        torch = self.torch
        torch.manual_seed(0)
        sizes = [784, *hidden, 10]
        layers = []
        for m, n in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(m, n), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)

    def epoch(self):
        torch = self.torch
        order = torch.randperm(self.x.shape[0], device=self.device)
        for i in range(self.x.shape[0] // self.batch):
            idx = order[i * self.batch : (i + 1) * self.batch]
            loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.t[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.losses.append(loss.detach())


class TorchByHand(_Torch):
    """portnet's step written directly in PyTorch: the same math, no array-API layer in between."""

    kind = "by hand"

    def __init__(self, device, hidden, batch, data):
        super().__init__(device, batch, data)
        torch = self.torch
        rng = np.random.default_rng(0)
        sizes = [784, *hidden, 10]
        self.W = [
            torch.as_tensor(
                (np.sqrt(2.0 / m) * rng.standard_normal((m, n))).astype(np.float32),
                device=self.device,
            )
            for m, n in zip(sizes, sizes[1:])
        ]
        self.b = [torch.zeros(n, device=self.device) for n in sizes[1:]]
        self.classes = torch.arange(10, device=self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(0)

    def epoch(self):
        torch = self.torch
        order = torch.randperm(self.x.shape[0], generator=self.gen, device=self.device)
        for i in range(self.x.shape[0] // self.batch):
            idx = order[i * self.batch : (i + 1) * self.batch]
            x, t = self.x[idx], self.t[idx]
            acts, masks = [x], []
            for W, b in zip(self.W[:-1], self.b[:-1]):
                a = acts[-1] @ W + b
                masks.append(a <= 0)
                acts.append(torch.where(masks[-1], 0.0, a))
            scores = acts[-1] @ self.W[-1] + self.b[-1]
            e = torch.exp(scores - torch.amax(scores, dim=1, keepdim=True))
            y = e / torch.sum(e, dim=1, keepdim=True)
            onehot = (t[:, None] == self.classes).to(y.dtype)
            n = t.shape[0]
            self.losses.append(-torch.sum(torch.log(torch.sum(y * onehot, dim=1) + 1e-7)) / n)
            dout = (y - onehot) / n
            for k in range(len(self.W) - 1, -1, -1):
                dW, db = acts[k].T @ dout, torch.sum(dout, dim=0)
                if k:
                    dout = torch.where(masks[k - 1], 0.0, dout @ self.W[k].T)
                self.W[k] = self.W[k] - LR * dW
                self.b[k] = self.b[k] - LR * db


class PortnetTrainer:
    """portnet's Trainer, one epoch per call; losses read back once an epoch (no transfer
    between host and device inside the epoch but that one)."""

    def __init__(
        self, backend_id, name, device, hidden, batch, data, optimizer="sgd", lr=LR, **options
    ):
        self.label = f"portnet {backend_id}" + "".join(f" {k}={v}" for k, v in options.items())
        self.sync = sync_for(name, device)
        with pn.use_backend(name, device):
            (x, t), (xt, tt) = data
            x, t, xt, tt = (pn.asarray(a) for a in (x, t, xt, tt))
            net = pn.MultiLayerNet(784, hidden, 10, seed=0)
            self.trainer = pn.Trainer(
                net,
                x,
                t,
                xt,
                tt,
                epochs=1,
                mini_batch_size=batch,
                optimizer=optimizer,
                optimizer_param={"lr": lr},
                verbose=False,
                seed=0,
                loss_every=x.shape[0] // batch,
                **options,
            )

    def epoch(self):
        self.trainer.train_epoch()

    def loss(self):
        return float(np.mean(self.trainer.train_loss_list[-50:]))


class PortnetBookLoop:
    """The book's loop on portnet (NumPy): grad = net.gradient(x_batch, t_batch), then
    optimizer.update(net.params, grad), one-hot labels, batches from np.random.choice."""

    label = "portnet numpy (book loop)"

    def __init__(self, hidden, batch, data):
        (self.x, t), _ = data
        self.t = np.eye(10, dtype=np.float32)[t]
        with pn.use_backend("numpy"):
            self.net = pn.MultiLayerNet(784, hidden, 10, seed=0)
        self.optimizer = pn.SGD(lr=LR)
        self.batch, self.rng, self.losses = batch, np.random.default_rng(0), []
        self.sync = sync_for("numpy")

    def epoch(self):
        n = self.x.shape[0]
        for _ in range(n // self.batch):
            idx = self.rng.choice(n, self.batch)
            grad = self.net.gradient(self.x[idx], self.t[idx])
            self.optimizer.update(self.net.params, grad)

    def loss(self):
        x, t = self.x[:1000], self.t[:1000]
        return float(self.net.loss(x, t))
