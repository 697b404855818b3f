"""The book's networks: fully connected (ch. 5-6) and convolutional (ch. 7-8), on one base."""

from .convnets import DeepConvNet, SimpleConvNet
from .multi_layer_net import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet
from .network import Network
from .saved import load_checkpoint, save_checkpoint

__all__ = [
    "DeepConvNet",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Network",
    "SimpleConvNet",
    "TwoLayerNet",
    "load_checkpoint",
    "save_checkpoint",
]
