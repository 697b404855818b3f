# coding: utf-8
# In the book's style (ch07/train_convnet.py's last lines): the trained SimpleConvNet, its params.pkl.
import sys, os
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from simple_convnet import SimpleConvNet

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)

network = SimpleConvNet(input_dim=(1, 28, 28),
                        conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                        hidden_size=100, output_size=10, weight_init_std=0.01)
network.load_params("simple_convnet_params.pkl")

test_acc = network.accuracy(x_test, t_test)
print("test acc:" + str(test_acc))
