"""portnet's errors: one hierarchy, so a caller (and the ``portnet`` command) can tell a problem
with the user's input, files or machine from a bug in portnet, which keeps its traceback."""

from __future__ import annotations

import pickle


class PortnetError(Exception):
    """Base of every error portnet raises on purpose."""


class InputError(PortnetError, ValueError):
    """An argument, array or setting is not what portnet expects; the message names it."""


class ArrayTypeError(InputError, TypeError):
    """Not an array where one belongs (a list), or arrays of two libraries mixed (a NumPy array
    given to a network on torch); the message says how to convert."""


class BackendUnavailableError(PortnetError, RuntimeError):
    """The requested backend's library is missing, or its device is not visible or usable."""


class DatasetError(InputError):
    """A data file is missing, truncated, not the expected one, or could not be downloaded."""


class CheckpointError(InputError):
    """A file is not a valid portnet checkpoint (or book parameter file) for this architecture."""


class UnsafePickleError(PortnetError, pickle.UnpicklingError):
    """The pickle asks for something other than NumPy arrays, or more than the limits allow;
    nothing of it was run."""


class TrainingDiverged(PortnetError, FloatingPointError):
    """The loss became NaN, infinite, or stuck at the ceiling of the softmax guard; the parameters
    were restored to the last good step."""


class MissingDependencyError(PortnetError, ImportError):
    """An optional library a feature needs (tqdm, matplotlib) is not installed; the message says
    what to install."""
