"""Accuracy on the real MNIST with the book's settings (NumPy, CPU: what CI runs)."""

import numpy as np

import portnet as pn


def test_book_ch05_train_neuralnet(mnist):
    """train_neuralnet.py: TwoLayerNet 784-50-10, batch 100, SGD lr 0.1, 10000 iterations.

    The book's own code reaches 0.9685 test accuracy on this data."""
    (x_train, t_train), (x_test, t_test) = mnist
    with pn.use_backend("numpy"):
        network = pn.TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10000):
        batch_mask = rng.choice(x_train.shape[0], 100)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        _, grad = network.loss_and_gradient(x_batch, t_batch, check=False)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] = network.params[key] - 0.1 * grad[key]
    test_acc = network.accuracy(x_test, t_test)
    print(f"ch05: train {network.accuracy(x_train, t_train):.4f}, test {test_acc:.4f}")
    assert test_acc >= 0.965


def test_multi_layer_net_with_adam(mnist):
    """MultiLayerNet 784-256-128-10, Adam lr 0.001, 10 epochs of the Trainer: at least 0.98."""
    (x_train, t_train), (x_test, t_test) = mnist
    with pn.use_backend("numpy"):
        network = pn.MultiLayerNet(784, [256, 128], 10, seed=0)
    trainer = pn.Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=10,
        optimizer="adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        seed=0,
    )
    trainer.train()
    print(f"MultiLayerNet: test accuracy per epoch {trainer.test_acc_list}")
    assert trainer.test_acc_list[-1] >= 0.98
