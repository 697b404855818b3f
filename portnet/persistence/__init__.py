"""Persistence in one place: the book's pickles read safely (:mod:`.pickles`), portnet's ``.npz``
checkpoints (:mod:`.checkpoints`), and files written atomically and read bounded (:mod:`.files`).
Host data only: NumPy arrays in, NumPy arrays out."""

from .checkpoints import (
    checkpoint_path,
    read_checkpoint,
    read_training_checkpoint,
    write_checkpoint,
    write_training_checkpoint,
)
from .files import check_writable, read_bounded, write_atomic
from .pickles import load_book_weights, read_pickled_arrays, write_pickled_arrays

__all__ = [
    "check_writable",
    "checkpoint_path",
    "load_book_weights",
    "read_bounded",
    "read_checkpoint",
    "read_pickled_arrays",
    "read_training_checkpoint",
    "write_atomic",
    "write_checkpoint",
    "write_pickled_arrays",
    "write_training_checkpoint",
]
