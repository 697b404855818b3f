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
from .gradient import gradient_descent, numerical_diff, numerical_gradient

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "asarray",
    "backend_info",
    "cross_entropy_error",
    "get_namespace",
    "gradient_descent",
    "identity_function",
    "mean_squared_error",
    "numerical_diff",
    "numerical_gradient",
    "relu",
    "relu_grad",
    "set_backend",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "to_numpy",
    "use_backend",
]
