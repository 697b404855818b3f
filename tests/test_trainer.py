"""The Trainer: learning on real MNIST, losses read back in batches, a clean stop when training
blows up, the book's step and printed lines, any network with the book's methods."""

import numpy as np
import pytest

import portnet as pn


def _data(mnist, n_train=5000, n_test=2000):
    (x_train, t_train), (x_test, t_test) = mnist
    return (
        pn.asarray(x_train[:n_train]),
        pn.asarray(t_train[:n_train]),
        pn.asarray(x_test[:n_test]),
        pn.asarray(t_test[:n_test]),
    )


def test_two_layer_net_learns_mnist_subset(backend, mnist):
    net = pn.TwoLayerNet(784, 50, 10, seed=0)
    trainer = pn.Trainer(
        net,
        *_data(mnist, 10000),
        epochs=3,
        mini_batch_size=100,
        optimizer="sgd",
        optimizer_param={"lr": 0.1},
        verbose=False,
        seed=0,
        random_source="host",
    )
    trainer.train()
    assert len(trainer.train_loss_list) == 300 and len(trainer.test_acc_list) == 3
    assert trainer.test_acc_list[-1] >= 0.84, trainer.test_acc_list  # 0.847 on every backend here
    assert np.mean(trainer.train_loss_list[-10:]) < np.mean(trainer.train_loss_list[:10]) / 3


def test_losses_are_read_back_in_batches_and_agree(backend, mnist):
    """loss_every changes when losses cross to the host, not what they are."""
    runs = []
    for every in (1, 7):
        net = pn.MultiLayerNet(784, [30], 10, seed=0)
        trainer = pn.Trainer(
            net,
            *_data(mnist, 2000, 500),
            epochs=1,
            mini_batch_size=100,
            optimizer="adam",
            optimizer_param={"lr": 0.001},
            verbose=False,
            loss_every=every,
            seed=1,
            random_source="host",
        )
        runs.append(trainer.train().train_loss_list)
    assert len(runs[0]) == 20
    assert runs[0] == runs[1]


class _PoisonAfter(pn.SGD):
    """SGD that makes the weights NaN at its ``n``-th update."""

    def __init__(self, n):
        super().__init__(lr=0.1)
        self.n, self.calls = n, 0

    def update(self, params, grads):
        self.calls += 1
        super().update(params, grads)
        if self.calls == self.n:
            params["W1"] = params["W1"] * float("nan")


@pytest.mark.parametrize("loss_every", [1, 50])
def test_nan_loss_stops_and_restores_the_last_good_parameters(backend, mnist, loss_every):
    net = pn.TwoLayerNet(784, 20, 10, seed=0)
    initial = {k: pn.to_numpy(v).copy() for k, v in net.params.items()}
    trainer = pn.Trainer(
        net,
        *_data(mnist, 1000, 100),
        epochs=1,
        optimizer=_PoisonAfter(1),
        verbose=False,
        loss_every=loss_every,
        seed=0,
    )
    with pytest.raises(
        pn.TrainingDiverged,
        match=r"the loss is nan at step 1 \(epoch 1\).*restored to those of step 0",
    ):
        trainer.train()
    for (
        key,
        value,
    ) in initial.items():  # the optimizer updated these arrays in place: restored in place
        assert np.array_equal(pn.to_numpy(net.params[key]), value), key
    assert len(trainer.train_loss_list) == 1 and np.isfinite(trainer.train_loss_list[0])


def test_a_loss_stuck_at_the_ceiling_stops_training(mnist):
    """lr 1e6 does not overflow to NaN (the softmax guard caps the loss at 16.1) but trains to
    chance: it must not pass for a result."""
    net = pn.MultiLayerNet(784, [50], 10, seed=0)
    trainer = pn.Trainer(
        net,
        *_data(mnist, 6000, 100),
        epochs=1,
        optimizer="adam",
        optimizer_param={"lr": 1e6},
        verbose=False,
        seed=0,
    )
    with pytest.raises(pn.TrainingDiverged, match=r"the loss has stayed above 8.06 for 50 steps"):
        trainer.train()


def test_bad_labels_are_found_before_training(backend, mnist):
    x_train, t_train, x_test, t_test = _data(mnist, 500, 100)
    labels = pn.to_numpy(t_train).copy()
    labels[7] = 10
    with pytest.raises(ValueError, match=r"label 10 is out of range"):
        pn.Trainer(
            pn.TwoLayerNet(784, 5, 10), x_train, pn.asarray(labels), x_test, t_test, verbose=False
        )
    with pytest.raises(ValueError, match="train set: 500 samples in x but 499 in t"):
        pn.Trainer(
            pn.TwoLayerNet(784, 5, 10), x_train, t_train[:499, ...], x_test, t_test, verbose=False
        )


@pytest.mark.parametrize(
    "args, message",
    [
        ({"mini_batch_size": -5}, "mini_batch_size must be a positive integer, got -5"),
        ({"epochs": -3}, "epochs must be a positive integer, got -3"),
        ({"epochs": 2.5}, "epochs must be a positive integer, got 2.5"),
        (
            {"evaluate_sample_num_per_epoch": 0},
            "evaluate_sample_num_per_epoch must be a positive integer, got 0",
        ),
        ({"loss_every": 0}, "loss_every must be a positive integer, got 0"),
        (
            {"optimizer": "sgd", "optimizer_param": {"lr": float("inf")}},
            "lr must be a finite positive number",
        ),
    ],
)
def test_arguments_are_checked(mnist, args, message):
    with pytest.raises(pn.InputError, match=message):
        pn.Trainer(pn.TwoLayerNet(784, 5, 10, seed=0), *_data(mnist, 500, 100), **args)


def test_the_books_printed_lines(mnist, capsys):
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    pn.Trainer(
        net,
        *_data(mnist, 300, 200),
        epochs=2,
        optimizer="sgd",
        optimizer_param={"lr": 0.1},
        evaluate_sample_num_per_epoch=100,
        loss_every=1,
        seed=0,
    ).train()
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("train loss:") for line in lines) == 6
    float(lines[0].removeprefix("train loss:"))
    epochs = [line for line in lines if line.startswith("=== epoch:")]
    assert (
        len(epochs) == 2
        and epochs[0].startswith("=== epoch:1, train acc:")
        and epochs[0].endswith(" ===")
    )
    assert lines[-2:][0] == "=============== Final Test Accuracy ==============="
    assert lines[-1].startswith("test acc:")


def test_progress_bar_writes_to_stderr(mnist, capsys):
    pytest.importorskip("tqdm")
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    pn.Trainer(
        net,
        *_data(mnist, 1000, 200),
        epochs=1,
        optimizer="sgd",
        optimizer_param={"lr": 0.1},
        verbose=False,
        progress=True,
        seed=0,
    ).train()
    assert "training" in capsys.readouterr().err


def test_train_step_is_the_books(mnist):
    """Batches drawn with replacement from NumPy's global generator (np.random.choice), an
    evaluation when an epoch begins, the loss after the update."""
    x_train, t_train, x_test, t_test = _data(mnist, 300, 100)
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    trainer = pn.Trainer(
        net, x_train, t_train, x_test, t_test, epochs=1, mini_batch_size=100, verbose=False
    )
    np.random.seed(4)
    expected = np.random.choice(300, 100)
    reference = pn.TwoLayerNet(784, 10, 10, seed=0)
    pn.SGD(lr=0.01).update(
        reference.params, reference.gradient(x_train[expected], t_train[expected])
    )
    np.random.seed(4)
    trainer.train_step()
    assert (
        trainer.current_iter == 1 and trainer.current_epoch == 1 and len(trainer.test_acc_list) == 1
    )
    assert trainer.train_loss_list == [float(reference.loss(x_train[expected], t_train[expected]))]
    for key in net.params:
        np.testing.assert_array_equal(net.params[key], reference.params[key])


class _BookStyleNet:
    """A network written as the book's chapters write theirs: its own layers hold the arrays of
    ``params`` (no portnet network class), trained by reference."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.params = {
            k: pn.asarray(v)
            for k, v in {
                "W1": 0.01 * rng.standard_normal((784, 50)),
                "b1": np.zeros(50),
                "W2": 0.01 * rng.standard_normal((50, 10)),
                "b2": np.zeros(10),
            }.items()
        }
        self.layers = [
            pn.Affine(self.params["W1"], self.params["b1"]),
            pn.Relu(),
            pn.Affine(self.params["W2"], self.params["b2"]),
        ]
        self.last_layer = pn.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        return float(np.mean(np.argmax(pn.to_numpy(self.predict(x)), axis=1) == pn.to_numpy(t)))

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return {
            "W1": self.layers[0].dW,
            "b1": self.layers[0].db,
            "W2": self.layers[2].dW,
            "b2": self.layers[2].db,
        }


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_book_style_network_learns(mnist, name):
    """Layers built from the arrays, optimizers updating them in place: it learns on NumPy and torch."""
    if name == "torch":
        pytest.importorskip("torch")
    with pn.use_backend(name):
        net = _BookStyleNet(0)
        x_train, t_train, x_test, t_test = _data(mnist, 3000, 500)
        x_train, x_test = pn.asarray(x_train, dtype="float64"), pn.asarray(x_test, dtype="float64")
        trainer = pn.Trainer(
            net,
            x_train,
            t_train,
            x_test,
            t_test,
            epochs=3,
            optimizer="sgd",
            optimizer_param={"lr": 0.5},
            verbose=False,
            seed=0,
        )
        before = net.accuracy(x_test, t_test)
        trainer.train()
    assert net.layers[0].W is net.params["W1"], "the layer holds the array the optimizer updates"
    assert before < 0.2 and trainer.test_acc_list[-1] > 0.8, (before, trainer.test_acc_list)


def test_the_devices_own_shuffle(backend, mnist):
    """random_source='native': each epoch's order drawn by the backend's generator on its device."""
    net = pn.TwoLayerNet(784, 30, 10, seed=0)
    trainer = pn.Trainer(
        net,
        *_data(mnist, 3000, 500),
        epochs=2,
        optimizer="adam",
        optimizer_param={"lr": 0.003},
        verbose=False,
        seed=3,
        random_source="native",
    )
    order = pn.to_numpy(trainer._rng.permutation(3000))
    assert sorted(order.tolist()) == list(range(3000)) and not np.array_equal(
        order, np.arange(3000)
    )
    trainer.train()
    assert trainer.test_acc_list[-1] >= 0.75, trainer.test_acc_list  # 0.81 here; chance is 0.1


def test_jax_compiled_steps_match_eager_ones(mnist):
    """On JAX the Trainer compiles loss_every steps into one program by default: the same losses
    and accuracy as eager steps, and nothing traced left on the network once it returns."""
    pytest.importorskip("jax")
    runs = {}
    with pn.use_backend("jax"):
        data = _data(mnist, 2000, 500)
        for jit in (False, True):
            net = pn.MultiLayerNet(784, [30, 20], 10, use_batchnorm=True, seed=0)
            trainer = pn.Trainer(
                net,
                *data,
                epochs=2,
                optimizer="adam",
                optimizer_param={"lr": 0.003},
                verbose=False,
                loss_every=7,
                seed=0,
                compile=jit,
            )
            runs[jit] = trainer.train()
        net, trainer = runs[True].network, runs[True]
        assert (
            trainer._compiled is not None
            and isinstance(trainer.optimizer.iter, int)
            and trainer.optimizer.iter == 40
        )
        for layer in [*net.layer_list(), net.last_layer]:
            for name, value in vars(layer).items():
                assert "Tracer" not in type(value).__name__, (
                    f"{type(layer).__name__}.{name} holds a tracer"
                )
        net.gradient(data[0][:10, ...], data[1][:10])  # usable eagerly afterwards
    np.testing.assert_allclose(runs[True].train_loss_list, runs[False].train_loss_list, rtol=2e-4)
    assert abs(runs[True].test_acc_list[-1] - runs[False].test_acc_list[-1]) <= 0.004


def test_torch_compiled_steps_match_eager_ones(mnist):
    """torch.compile of the pure step (compile=True): in float64 the parameters after a few
    steps are the eager ones, and the compile time is counted apart from the epoch's."""
    pytest.importorskip("torch")
    params = {}
    with pn.use_backend("torch", dtype="float64"):
        data = _data(mnist, 300, 100)
        for compiled in (False, True):
            net = pn.MultiLayerNet(784, [20, 10], 10, seed=0)
            trainer = pn.Trainer(
                net,
                *data,
                epochs=1,
                optimizer="adam",
                optimizer_param={"lr": 0.01},
                verbose=False,
                loss_every=2,
                seed=0,
                compile=compiled,
            )
            trainer.train()
            params[compiled] = {k: pn.to_numpy(v) for k, v in net.params.items()}
            assert (trainer._compiled is not None) == compiled
            assert (trainer.compile_times[0] > 0) == compiled
            assert net.params.packed() is not None
    for key, value in params[False].items():
        np.testing.assert_allclose(params[True][key], value, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model", ["MultiLayerNet", "SimpleConvNet"])
def test_the_torch_step_is_one_graph(model):
    """torch.compile traces the pure step whole: no graph break (each would be a trip back to
    Python between kernels, and CUDA graphs could not capture the step)."""
    torch = pytest.importorskip("torch")
    from portnet.step import PureStep

    with pn.use_backend("torch"):
        if model == "MultiLayerNet":
            net, shape = pn.MultiLayerNet(784, [20, 10], 10, seed=0), (200, 784)
        else:
            net, shape = pn.SimpleConvNet(seed=0), (200, 1, 28, 28)
        rng = np.random.default_rng(0)
        x, t = pn.asarray(rng.random(shape)), pn.asarray(rng.integers(0, 10, 200))
        net.check_pass(100)
        step = PureStep(net, pn.Adam(), x, t)
        found = torch._dynamo.explain(step)(step.state(), torch.arange(100))
    assert found.graph_break_count == 0, [b.reason for b in found.break_reasons]


def test_a_callback_may_rebind_a_parameter_between_compiled_epochs(mnist):
    """On JAX a parameter is changed by rebinding it (a max-norm clip, say): the next compiled
    epoch packs the parameters into one buffer again and goes on."""
    pytest.importorskip("jax")

    class Clip(pn.Callback):
        def on_epoch_end(self, trainer):
            params = trainer.network.params
            params["W1"] = trainer._xp.clip(params["W1"], -0.05, 0.05)

    with pn.use_backend("jax"):
        net = pn.MultiLayerNet(784, [20], 10, seed=0)
        trainer = pn.Trainer(
            net,
            *_data(mnist, 400, 100),
            epochs=2,
            optimizer="adam",
            verbose=False,
            loss_every=2,
            seed=0,
            callbacks=[Clip()],
        )
        trainer.train()
        assert trainer._compiled is not None and len(trainer.epoch_times) == 2
        assert float(trainer._xp.max(trainer._xp.abs(net.params["W1"]))) <= np.float32(0.05)


def test_jit_needs_what_it_can_compile(mnist):
    with pytest.raises(pn.InputError, match="compile=True needs a library that compiles"):
        pn.Trainer(
            pn.TwoLayerNet(784, 5, 10, seed=0), *_data(mnist, 500, 100), compile=True, verbose=False
        )


def test_thread_tuner_drops_a_stalling_setting_after_two_steps(monkeypatch):
    """With a core busy, all-core BLAS stalls: the tuner keeps one thread, and stops probing early."""
    import time as _time
    from types import SimpleNamespace

    from portnet.callbacks import ThreadTuner

    tuner, trainer = ThreadTuner(), SimpleNamespace(x_train=np.zeros(3), iter_per_epoch=100)
    tuner.on_train_begin(trainer)
    if not tuner.enabled:
        pytest.skip("threadpoolctl is not installed or there is one core")
    entered = []
    monkeypatch.setattr(tuner, "_enter", entered.append)
    tuner.on_epoch_begin(trainer)
    ran = []
    for i in range(100):
        tuner.on_step_begin(trainer, i)
        ran.append(entered[-1])
        if entered[-1] is None:
            _time.sleep(0.003)  # the stall a busy core causes
        tuner.on_step_end(trainer, i)
    assert tuner.choice == 1
    assert sum(c is None for c in ran) == 2, (
        "two probing steps, then no more under the stalling setting"
    )


def test_callbacks_see_the_loop(mnist):
    """A user's callback gets every hook in order, the losses as floats, and can stop nothing it
    was not asked to."""
    seen = []

    class Recorder(pn.Callback):
        def on_train_begin(self, trainer):
            seen.append("begin")

        def on_epoch_begin(self, trainer):
            seen.append(f"epoch {trainer.current_epoch}")

        def on_losses(self, trainer, first_step, losses):
            assert all(isinstance(v, float) for v in losses)
            seen.append((first_step, len(losses)))

        def on_epoch_end(self, trainer):
            seen.append(f"end {trainer.current_epoch}: {len(trainer.test_acc_list)} evaluations")

        def on_train_end(self, trainer):
            seen.append("done")

        def close(self, trainer):
            seen.append("closed")

    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    pn.Trainer(
        net,
        *_data(mnist, 1000, 100),
        epochs=2,
        optimizer="sgd",
        verbose=False,
        loss_every=4,
        seed=0,
        callbacks=[Recorder()],
    ).train()
    assert seen == [
        "begin",
        "epoch 0",
        (0, 4),
        (4, 4),
        (8, 2),
        "end 1: 1 evaluations",
        "epoch 1",
        (10, 4),
        (14, 4),
        (18, 2),
        "end 2: 2 evaluations",
        "done",
        "closed",
    ]


def test_a_last_step_that_blows_up_is_caught(mnist):
    """The last update of an epoch has no loss read after it: the parameters it left are checked."""
    net = pn.TwoLayerNet(784, 20, 10, seed=0)
    trainer = pn.Trainer(
        net, *_data(mnist, 1000, 100), epochs=1, optimizer=_PoisonAfter(10), verbose=False, seed=0
    )
    with pytest.raises(
        pn.TrainingDiverged,
        match=r"W1 turned non-finite at step 9 \(epoch 1\).*restored to those of step 0",
    ):
        trainer.train()
    assert all(np.isfinite(pn.to_numpy(v)).all() for v in net.params.values())


def test_an_epoch_without_train(mnist):
    """train_epoch on its own (a benchmark's, the GPU audit's) runs the callbacks' setup first."""
    trainer = pn.Trainer(
        pn.TwoLayerNet(784, 5, 10, seed=0), *_data(mnist, 500, 100), epochs=1, verbose=False, seed=0
    )
    assert trainer.train_epoch() > 0 and len(trainer.train_loss_list) == 5


def test_a_changed_learning_rate_reaches_the_compiled_step(mnist):
    """A trace bakes Python numbers in: a callback's new lr recompiles the step (JAX, compile=None)."""
    pytest.importorskip("jax")
    first = {}

    class StopLearning(pn.Callback):
        def on_epoch_end(self, trainer):
            if not first:
                first.update({k: pn.to_numpy(v).copy() for k, v in trainer.network.params.items()})
                trainer.optimizer.lr = 0.0

    with pn.use_backend("jax"):
        net = pn.TwoLayerNet(784, 10, 10, seed=0)
        trainer = pn.Trainer(
            net,
            *_data(mnist, 1000, 100),
            epochs=2,
            optimizer="sgd",
            optimizer_param={"lr": 0.1},
            verbose=False,
            seed=0,
            callbacks=[StopLearning()],
        )
        trainer.train()
        assert trainer._step_compiler is not None
        for key, value in net.params.items():  # epoch 2 ran at lr 0: nothing moved
            np.testing.assert_array_equal(pn.to_numpy(value), first[key], err_msg=key)
