"""A network's parameters: the book's ``params``, a dict of arrays by name, whose arrays are views
into one flat buffer, so that an optimizer's update (ch. 6.1) is a handful of array operations on
the whole vector, whatever the number of parameters (each one a kernel launch on a GPU).

:class:`Parameters` is a ``dict``: reading, assigning and iterating work as on the book's. An
entry assigned anew is a plain entry: the dict is then no longer :meth:`~Parameters.packed`, and
every user of it (the optimizers, the divergence guard) falls back to one array at a time until
:meth:`~Parameters.flatten` packs the entries into a new buffer. Where arrays cannot be written
(JAX), a new buffer is installed with :meth:`~Parameters.rebind`.
"""

from __future__ import annotations

import math

import array_api_compat

from .arrays import is_array, namespace_of, writeable
from .errors import ArrayTypeError


class Layout:
    """Where each array lies in a flat vector: its key, its span and its shape, in order."""

    def __init__(self, arrays: dict):
        self.spans, start = {}, 0
        for key, a in arrays.items():
            stop = start + math.prod(a.shape)
            self.spans[key] = (start, stop, tuple(a.shape))
            start = stop
        self.size = start

    def pack(self, arrays: dict):
        """The arrays (one per key) as one flat vector: one concatenation."""
        xp = namespace_of(*(arrays[k] for k in self.spans))
        return xp.concat([xp.reshape(arrays[k], (-1,)) for k in self.spans])

    def fits(self, arrays: dict) -> bool:
        """Whether ``arrays`` has an array of each key's shape (a gradient for each parameter)."""
        for key, (_, _, shape) in self.spans.items():
            a = arrays.get(key)
            if a is None or tuple(a.shape) != shape:
                return False
        return True

    def unpack(self, flat) -> dict:
        """Views of ``flat``, one per key, in the arrays' shapes (no copy where the library has
        views; slices of the traced vector under a compiler)."""
        xp = namespace_of(flat)
        return {k: xp.reshape(flat[a:b], shape) for k, (a, b, shape) in self.spans.items()}

    def __eq__(self, other):
        return isinstance(other, Layout) and self.spans == other.spans

    __hash__ = None


class Parameters(dict):
    """A dict of arrays that, once :meth:`flatten`-ed, are views into one flat ``buffer``."""

    layout = buffer = None
    _views: dict = {}

    def flatten(self) -> None:
        """Pack the current entries into a new buffer and rebind them to its views; entries that
        are not all arrays of one library, dtype and device stay as they are."""
        arrays = list(self.values())
        if not _alike(arrays):
            self.layout = self.buffer = None
            return
        self.layout = Layout(self)
        self.rebind(self.layout.pack(self))

    def rebind(self, buffer, views=None) -> None:
        """Make ``buffer`` (laid out as :attr:`layout`) the parameters: the entries its views
        (``views``, where they were made already)."""
        self.buffer, self._views = buffer, self.layout.unpack(buffer) if views is None else views
        dict.update(self, self._views)

    def packed(self):
        """``(layout, buffer)`` while every entry is still its view of the buffer, else None."""
        if self.buffer is None or len(self) != len(self._views):
            return None
        for key, view in self._views.items():
            if dict.get(self, key) is not view:
                return None
        return self.layout, self.buffer

    def with_buffer(self, buffer) -> Parameters:
        """New parameters laid out as these, computing with ``buffer`` (a pure step's result)."""
        new = Parameters()
        new.layout = self.layout
        new.rebind(buffer)
        return new

    def __reduce__(self):
        """Pickled and copied (``copy.copy``, ``copy.deepcopy``) as a plain dict of its arrays,
        which the book's code and portnet's safe unpickler read: views of a buffer would not
        survive a copy as views (:meth:`flatten` packs a copy again)."""
        return dict, (dict(self),)

    def copy(self) -> Parameters:
        """A new dict of the same arrays (the same buffer and views where packed)."""
        new = Parameters(self)
        if self.packed() is not None:
            new.layout, new.buffer, new._views = self.layout, self.buffer, self._views
        return new


def assign(params: dict, values: dict) -> None:
    """Put ``values`` (arrays by key, e.g. a snapshot) into ``params`` (any dict of parameters):
    into the buffer in one operation where both are packed alike and it can be written, else
    entry by entry (in place where the arrays allow it, as a layer may hold them), then packed
    again."""
    mine = params.packed() if isinstance(params, Parameters) else None
    theirs = values.packed() if isinstance(values, Parameters) else None
    if mine is not None and theirs is not None and mine[0] == theirs[0]:
        if writeable(mine[1]):
            mine[1][...] = theirs[1]
        else:
            params.rebind(theirs[1])
        return
    for key, value in values.items():
        if writeable(params.get(key)):
            params[key][...] = value
        else:
            params[key] = value
    if mine is not None and params.packed() is None:
        params.flatten()


def _alike(arrays) -> bool:
    """Whether ``arrays`` are arrays of one library, dtype and device (one buffer can hold them)."""
    if not arrays or not all(is_array(a) for a in arrays):
        return False
    try:
        namespace_of(*arrays)
    except ArrayTypeError:
        return False
    return len({(a.dtype, str(array_api_compat.device(a))) for a in arrays}) == 1


def storage(params) -> list:
    """The arrays that hold ``params``: the one buffer where it is packed, else its array entries
    (so that a check of all parameters is one operation a buffer)."""
    packed = params.packed() if isinstance(params, Parameters) else None
    if packed is not None:
        return [packed[1]]
    return [v for v in params.values() if is_array(v)]


def snapshot(params):
    """Copies of the parameters: one copy of the buffer (viewed by key) where they are packed."""
    packed = params.packed() if isinstance(params, Parameters) else None
    if packed is not None:
        return params.with_buffer(namespace_of(packed[1]).asarray(packed[1], copy=True))
    return {k: namespace_of(v).asarray(v, copy=True) for k, v in params.items() if is_array(v)}
