# coding: utf-8
# In the book's style (ch08/misclassified_mnist.py's first lines): the trained DeepConvNet.
import sys, os
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from deep_convnet import DeepConvNet

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)

network = DeepConvNet()
network.load_params("deep_convnet_params.pkl")

print("calculating test accuracy ... ")
test_acc = network.accuracy(x_test, t_test)
print("test acc:" + str(test_acc))
