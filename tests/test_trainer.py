"""The Trainer: learning on real MNIST, losses read back in batches, a clean stop on divergence."""

import numpy as np
import pytest

import portnet as pn


def _data(mnist, n_train=5000, n_test=2000):
    (x_train, t_train), (x_test, t_test) = mnist
    return (pn.asarray(x_train[:n_train]), pn.asarray(t_train[:n_train]),
            pn.asarray(x_test[:n_test]), pn.asarray(t_test[:n_test]))


def test_two_layer_net_learns_mnist_subset(backend, mnist):
    net = pn.TwoLayerNet(784, 50, 10, seed=0)
    trainer = pn.Trainer(net, *_data(mnist, 10000), epochs=3, mini_batch_size=100, optimizer="sgd",
                         optimizer_param={"lr": 0.1}, verbose=False, seed=0, random_source="host")
    trainer.train()
    assert len(trainer.train_loss_list) == 300 and len(trainer.test_acc_list) == 3
    assert trainer.test_acc_list[-1] >= 0.84, trainer.test_acc_list  # 0.847 on every backend here
    assert np.mean(trainer.train_loss_list[-10:]) < np.mean(trainer.train_loss_list[:10]) / 3


def test_losses_are_read_back_in_batches_and_agree(backend, mnist):
    """loss_every changes when losses cross to the host, not what they are."""
    runs = []
    for every in (1, 7):
        net = pn.MultiLayerNet(784, [30], 10, seed=0)
        trainer = pn.Trainer(net, *_data(mnist, 2000, 500), epochs=1, mini_batch_size=100, optimizer="adam",
                             optimizer_param={"lr": 0.001}, verbose=False, loss_every=every, seed=1, random_source="host")
        runs.append(trainer.train().train_loss_list)
    assert len(runs[0]) == 20
    assert runs[0] == runs[1]


@pytest.mark.parametrize("loss_every", [1, 50])
def test_nan_loss_stops_and_restores_the_last_good_parameters(backend, mnist, loss_every):
    net = pn.TwoLayerNet(784, 20, 10, seed=0)
    initial = {k: pn.to_numpy(v).copy() for k, v in net.params.items()}
    trainer = pn.Trainer(net, *_data(mnist, 1000, 100), epochs=1, optimizer=pn.SGD(lr=float("nan")),
                         verbose=False, loss_every=loss_every, seed=0)
    with pytest.raises(pn.TrainingDiverged, match=r"the loss is nan at step 1 \(epoch 1\).*restored to those of step 0"):
        trainer.train()
    for key, value in initial.items():
        assert np.array_equal(pn.to_numpy(net.params[key]), value), key
    assert len(trainer.train_loss_list) == 1 and np.isfinite(trainer.train_loss_list[0])


def test_bad_labels_are_found_before_training(backend, mnist):
    x_train, t_train, x_test, t_test = _data(mnist, 500, 100)
    labels = pn.to_numpy(t_train).copy()
    labels[7] = 10
    with pytest.raises(ValueError, match=r"label 10 is out of range"):
        pn.Trainer(pn.TwoLayerNet(784, 5, 10), x_train, pn.asarray(labels), x_test, t_test, verbose=False)
    with pytest.raises(ValueError, match="train set: 500 samples in x but 499 in t"):
        pn.Trainer(pn.TwoLayerNet(784, 5, 10), x_train, t_train[:499, ...], x_test, t_test, verbose=False)


def test_progress_bar_and_epoch_lines(mnist, capsys):
    pytest.importorskip("tqdm")
    net = pn.TwoLayerNet(784, 10, 10, seed=0)
    pn.Trainer(net, *_data(mnist, 1000, 200), epochs=2, optimizer="sgd", optimizer_param={"lr": 0.1},
               evaluate_sample_num_per_epoch=100, progress=True, seed=0).train()
    out = capsys.readouterr()
    assert "epoch   1/2: train acc" in out.out and "epoch   2/2" in out.out
    assert "training" in out.err, "the tqdm bar writes to stderr"
