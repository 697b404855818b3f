"""portnet: the networks of "Deep Learning from Scratch", written once on the Python array API.

The same code runs on NumPy, CuPy, PyTorch, JAX and array-api-strict. Choose the backend with
``PORTNET_BACKEND`` (and ``PORTNET_DEVICE``) or :func:`set_backend`; functions that receive arrays
follow their inputs whatever the active backend is.
"""

from .arrays import to_numpy
from .backend import BACKENDS, asarray, backend_info, get_namespace, set_backend, use_backend
from .callbacks import (
    BookLines,
    Callback,
    CSVLogger,
    DivergenceGuard,
    Evaluation,
    ProgressBar,
    TensorBoard,
    ThreadTuner,
    TrainingCheckpoint,
)
from .datasets import load_fashion_mnist, load_mnist
from .errors import (
    ArrayTypeError,
    BackendUnavailableError,
    CheckpointError,
    DatasetError,
    InputError,
    MissingDependencyError,
    PortnetError,
    TrainingDiverged,
    UnsafePickleError,
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
from .gradient import gradient_descent, numerical_diff, numerical_gradient
from .persistence import load_book_weights, read_pickled_arrays, read_training_checkpoint
from .layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from .networks import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    SimpleConvNet,
    TwoLayerNet,
    load_checkpoint,
    save_checkpoint,
)
from .optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from .trainer import Trainer
from .util import col2im, conv_output_size, im2col, shuffle_dataset, smooth_curve

__version__ = "0.2.0"

__all__ = [
    "AdaGrad",
    "Adam",
    "Affine",
    "ArrayTypeError",
    "BACKENDS",
    "BackendUnavailableError",
    "BatchNormalization",
    "BookLines",
    "Callback",
    "CSVLogger",
    "CheckpointError",
    "DivergenceGuard",
    "Evaluation",
    "MissingDependencyError",
    "ProgressBar",
    "TensorBoard",
    "ThreadTuner",
    "TrainingCheckpoint",
    "Convolution",
    "DatasetError",
    "DeepConvNet",
    "Dropout",
    "InputError",
    "Momentum",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Nesterov",
    "Pooling",
    "PortnetError",
    "RMSprop",
    "Relu",
    "SGD",
    "Sigmoid",
    "SimpleConvNet",
    "SoftmaxWithLoss",
    "Trainer",
    "TrainingDiverged",
    "TwoLayerNet",
    "UnsafePickleError",
    "asarray",
    "backend_info",
    "col2im",
    "conv_output_size",
    "cross_entropy_error",
    "get_namespace",
    "gradient_descent",
    "identity_function",
    "im2col",
    "load_book_weights",
    "load_checkpoint",
    "load_fashion_mnist",
    "load_mnist",
    "mean_squared_error",
    "numerical_diff",
    "numerical_gradient",
    "read_pickled_arrays",
    "read_training_checkpoint",
    "relu",
    "relu_grad",
    "save_checkpoint",
    "set_backend",
    "shuffle_dataset",
    "sigmoid",
    "sigmoid_grad",
    "smooth_curve",
    "softmax",
    "softmax_loss",
    "step_function",
    "to_numpy",
    "use_backend",
]
