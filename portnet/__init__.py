"""portnet: the networks of "Deep Learning from Scratch", written once on the Python array API.

The same code runs on NumPy, CuPy, PyTorch, JAX and array-api-strict. Choose the backend with
``PORTNET_BACKEND`` (and ``PORTNET_DEVICE``) or :func:`set_backend`; functions that receive arrays
follow their inputs whatever the active backend is.
"""

from .backend import (
    BACKENDS,
    BackendUnavailableError,
    asarray,
    backend_info,
    get_namespace,
    set_backend,
    to_numpy,
    use_backend,
)
from .functions import (
    cross_entropy_error,
    identity_function,
    mean_squared_error,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_loss,
    step_function,
)
from .datasets import DatasetError, load_fashion_mnist, load_mnist
from .gradient import gradient_descent, numerical_diff, numerical_gradient
from .io import UnsafePickleError, load_book_weights, load_checkpoint, save_checkpoint
from .layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss
from .networks import MultiLayerNet, TwoLayerNet
from .optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from .trainer import Trainer, TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    "AdaGrad",
    "Adam",
    "Affine",
    "BACKENDS",
    "BackendUnavailableError",
    "BatchNormalization",
    "DatasetError",
    "Dropout",
    "Momentum",
    "MultiLayerNet",
    "Nesterov",
    "RMSprop",
    "Relu",
    "SGD",
    "Sigmoid",
    "SoftmaxWithLoss",
    "Trainer",
    "TrainingDiverged",
    "TwoLayerNet",
    "UnsafePickleError",
    "asarray",
    "backend_info",
    "cross_entropy_error",
    "get_namespace",
    "gradient_descent",
    "identity_function",
    "load_book_weights",
    "load_checkpoint",
    "load_fashion_mnist",
    "load_mnist",
    "mean_squared_error",
    "numerical_diff",
    "numerical_gradient",
    "relu",
    "relu_grad",
    "save_checkpoint",
    "set_backend",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "to_numpy",
    "use_backend",
]
