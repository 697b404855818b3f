"""Counting the array operations of a training step on the CPU, and refusing host reads inside one.

On a GPU every array operation is a kernel launch and every read of a value on the host a sync,
so the tests count operations, deterministically, where no GPU is needed:

- PyTorch: :func:`torch_ops`, a ``TorchDispatchMode`` that sees every ATen operation dispatched
  (after autograd and the Python-level decompositions, as a kernel would be chosen);
- NumPy: :class:`Counted`, an ``ndarray`` subclass whose ufuncs, array functions and computing
  methods are counted by :func:`numpy_ops`; :func:`counted_network` and :func:`counted` make a
  network and its data compute on it.

One operation is one call into the library that writes new values: a kernel on a GPU. What is
**not** counted, on both libraries (see :data:`TORCH_FREE` and :func:`Counted.__array_function__`):

- views and aliases: results that are the memory of an input seen another way (PyTorch:
  ``func.is_view``, ``detach``, ``alias``, ``lift_fresh``, ``_unsafe_view``, ``_reshape_alias``;
  NumPy: any result that may share memory with an input, so a ``reshape``, ``transpose``,
  ``permute_dims``, ``flip``, basic slice or ``astype`` that copies nothing counts 0 and one that
  copies counts 1);
- allocations of uninitialised memory: ``empty``, ``empty_like``, ``empty_strided``, ``new_empty``,
  ``resize_`` (filled ones, ``zeros``, ``ones``, ``full``, ``arange``, ``scalar_tensor``, are
  counted: each is a fill kernel);
- metadata queries (``sym_size``, ``is_contiguous``, NumPy's ``shape``, ``ndim``,
  ``may_share_memory``: any array function whose result holds no array);
- an assignment of elements onto themselves (the second half of ``x[i] += y``, which writes the
  view ``x[i]`` in place and then assigns it to ``x[i]``: NumPy and PyTorch skip that copy).

Counted besides computations proper: ``aten._local_scalar_dense`` (a read; inside a step it is a
host read as well) and random draws on the device (``randperm``, ``rand``).

NumPy specifics: a call is counted once at the outermost level (what ``np.pad`` or ``np.mean``
does inside is not counted again); numpy scalars coming out of a counted call are returned as 0-d
``Counted`` arrays (as a GPU library's 0-d device arrays, so a ``float()`` of them is seen);
the array API's ``zeros``/``ones``/``full``/``arange``/``eye``/``linspace`` (counted) and ``empty``
(not), as ``array_api_compat.numpy`` has them, and numpy's ``array``/``asarray``/``asanyarray``/
``ascontiguousarray``/``asfortranarray`` (counted when they copy or convert a Python object, not
when they return a view) are patched while counting, so that arrays made from nothing come out
``Counted`` too. Not seen: the host generator's draws and what is computed from them before they
enter through ``asarray`` (NumPy has no device: ``Random`` draws the shuffle and the dropout
masks on the host).

Host reads (:func:`refusing_host_reads`, :func:`no_host_reads_in_steps`): PyTorch's
``aten._local_scalar_dense`` (``item``, ``bool``, ``float``, ``int``), a copy to the CPU from
another device, ``Tensor.numpy``, ``.tolist``, ``__array__`` and ``__dlpack__``; ``Counted``'s
``__bool__``, ``__float__``, ``__int__``, ``__index__``, ``__complex__``, ``item``, ``tolist``,
``tobytes``, ``__array__``, ``__format__``, ``__repr__`` and ``__str__``. Note that NumPy never
calls ``__array__`` of an ndarray subclass: ``np.asarray(counted)`` is a view, not a read.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import sys
import traceback

import numpy as np
import pytest


class HostRead(AssertionError):
    """A value was read back to the host inside a training step (an AssertionError, so that a
    library's ``except RuntimeError`` around the read does not swallow it)."""


class Count:
    """Operations counted, by name (``ops``), with their ``total``; ``untracked`` (NumPy) names the
    calls that computed with a plain, writeable ndarray of more than one value other than a
    conversion: an array that escaped the count (computed by something not counted), or host
    data. A read-only one is a constant made once (portnet's class numbers), not a step's work."""

    def __init__(self):
        self.ops = collections.Counter()
        self.untracked: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def add(self, name: str) -> None:
        self.ops[name] += 1

    def table(self, per: int = 1) -> str:
        """One line per operation, most frequent first, counts divided by ``per`` (the steps)."""
        rows = sorted(self.ops.items(), key=lambda kv: (-kv[1], kv[0]))
        return "\n".join(f"  {n / per:7.1f}  {name}" for name, n in rows)


# --------------------------------------------------------------------------- where a read happens
_HERE = os.path.abspath(__file__)
_ROOT = os.path.dirname(os.path.dirname(_HERE))
#: Frames of the machinery between a read and the code that asked for it.
_MACHINERY = (os.sep + "torch" + os.sep, os.sep + "numpy" + os.sep, os.sep + "_pytest" + os.sep)


def _short(path: str) -> str:
    path = os.path.abspath(path)
    if path.startswith(_ROOT + os.sep) and os.sep + ".venv" + os.sep not in path:
        return os.path.relpath(path, _ROOT)
    marker = os.sep + "site-packages" + os.sep
    return path.split(marker, 1)[1] if marker in path else path


def _where(limit: int = 4) -> str:
    """The innermost frames outside this module and the libraries' machinery, innermost first."""
    frames = [
        f
        for f in traceback.extract_stack()
        if os.path.abspath(f.filename) != _HERE and not any(m in f.filename for m in _MACHINERY)
    ]
    return " <- ".join(
        f"{_short(f.filename)}:{f.lineno} ({f.name})" for f in reversed(frames[-limit:])
    )


# --------------------------------------------------------------------------- host-read guard
class _Guard:
    """Whether host reads are refused now, and where they go (raised, or recorded in a list)."""

    inside = 0
    record: list | None = None


def _host_read(what: str) -> None:
    if not _Guard.inside:
        return
    message = f"{what} read a value back to the host inside a training step, at {_where()}"
    if _Guard.record is None:
        raise HostRead(message)
    _Guard.record.append(message)


@contextlib.contextmanager
def refusing_host_reads(record: list | None = None):
    """Inside the block, a host read (see the module's docstring) raises :class:`HostRead`, or with
    ``record`` (a list) is appended to it as a message naming the read and where it happened."""
    saved = _Guard.inside, _Guard.record
    _Guard.inside, _Guard.record = saved[0] + 1, record
    with contextlib.ExitStack() as stack:
        if "torch" in sys.modules:
            stack.enter_context(_torch_host_reads())
        try:
            yield record
        finally:
            _Guard.inside, _Guard.record = saved


@contextlib.contextmanager
def no_host_reads_in_steps(record: list | None = None):
    """While open, every ``Trainer._step`` runs inside :func:`refusing_host_reads` (the epoch's
    own reads, the flush every ``loss_every`` steps and the end-of-epoch checks, are outside).
    The method is wrapped, forwarding whatever arguments it takes."""
    from portnet.trainer import Trainer

    original = Trainer._step

    @functools.wraps(original)
    def step(self, *args, **kwargs):
        with refusing_host_reads(record):
            return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_step", step)
        yield record


# --------------------------------------------------------------------------- PyTorch
#: ATen operations (overload packets) that launch no kernel that computes: aliases, allocations
#: of uninitialised memory, metadata. Views (``func.is_view``) are excluded besides these.
TORCH_FREE = frozenset(
    {
        "detach",
        "alias",
        "lift_fresh",
        "_unsafe_view",
        "_reshape_alias",
        "empty",
        "empty_like",
        "empty_strided",
        "empty_permuted",
        "new_empty",
        "new_empty_strided",
        "resize_",
        "_resize_output_",
        "set_",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "sym_storage_offset",
        "is_same_size",
        "is_contiguous",
        "is_nonzero",
        "_has_compatible_shallow_copy_type",
    }
)


def torch_counts(func, args=()) -> bool:
    """Whether the ATen operation ``func`` is counted (computes): not a view, not in
    :data:`TORCH_FREE`, not a ``copy_`` of a tensor onto its own elements (``x[i] += y`` assigns
    ``x[i]`` to itself, which PyTorch skips)."""
    name = func.overloadpacket.__name__
    if func.is_view or name in TORCH_FREE:
        return False
    return not (name == "copy_" and len(args) >= 2 and _same_elements(args[0], args[1]))


def _same_elements(a, b) -> bool:
    import torch

    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.device == b.device
        and a.dtype == b.dtype
        and a.data_ptr() == b.data_ptr()
        and a.shape == b.shape
        and a.stride() == b.stride()
    )


def _is_host_read(func, args, kwargs) -> bool:
    name = func.overloadpacket.__name__
    if name == "_local_scalar_dense":
        return True
    if name in ("_to_copy", "copy_") and args:  # onto the CPU from another device
        import torch

        source = args[1] if name == "copy_" else args[0]
        target = args[0].device if name == "copy_" else kwargs.get("device")
        if isinstance(source, torch.Tensor) and target is not None:
            return torch.device(target).type == "cpu" and source.device.type != "cpu"
    return False


@functools.cache
def _torch_modes():
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        """Counts each ATen operation dispatched that :func:`torch_counts`, by name."""

        def __init__(self, count: Count):
            super().__init__()
            self.count = count

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if torch_counts(func, args):
                self.count.add(str(func))
            return func(*args, **kwargs)

    class HostReads(TorchDispatchMode):
        """Refuses (or records) the ATen operations that read a value back to the host."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if _is_host_read(func, args, kwargs):
                _host_read(str(func))
            return func(*args, **kwargs)

    return OpCounter, HostReads


@contextlib.contextmanager
def torch_ops():
    """Count the ATen operations run inside the block; yields the :class:`Count`."""
    count = Count()
    with _torch_modes()[0](count):
        yield count


_TORCH_READS = ("numpy", "tolist", "__array__", "__dlpack__")


@contextlib.contextmanager
def _torch_host_reads():
    import torch

    saved = {name: torch.Tensor.__dict__.get(name) for name in _TORCH_READS}

    def refusing(name):
        original = getattr(torch.Tensor, name)

        @functools.wraps(original)
        def method(self, *args, **kwargs):
            _host_read(f"Tensor.{name}")
            return original(self, *args, **kwargs)

        return method

    for name in _TORCH_READS:
        setattr(torch.Tensor, name, refusing(name))
    try:
        with _torch_modes()[1]():
            yield
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


# --------------------------------------------------------------------------- NumPy
class _State:
    #: Nesting of counted calls: only the outermost (0) is counted and checked for host reads.
    depth = 0
    count: Count | None = None


#: NumPy functions that only allocate (not counted) and that write into an argument and return
#: None (counted).
_ALLOCATING = frozenset({"np.empty", "np.empty_like"})
_WRITING = frozenset(
    f"np.{name}"
    for name in ("copyto", "put", "place", "putmask", "fill_diagonal", "put_along_axis")
)


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, Counted) else a


def _plain_all(value):
    if isinstance(value, Counted):
        return value.view(np.ndarray)
    if isinstance(value, list):
        return [_plain_all(v) for v in value]
    if isinstance(value, tuple):
        items = [_plain_all(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def _arrays_in(value, found=None) -> list:
    found = [] if found is None else found
    if isinstance(value, np.ndarray):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _arrays_in(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _arrays_in(v, found)
    return found


def _is_view(result: np.ndarray, inputs: list) -> bool:
    """Whether ``result`` is memory that was there before the call: that of an input, or of an
    object that exported it (``__array_interface__``, a buffer)."""
    root = result
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    if not isinstance(root, np.ndarray):
        return True
    r = result.view(np.ndarray)
    return any(np.may_share_memory(r, a.view(np.ndarray)) for a in inputs)


def _computes(name, result, inputs, out=None) -> bool:
    """Whether a call named ``name`` that returned ``result`` wrote new values."""
    if name in _ALLOCATING:
        return False
    if out is not None:
        return True
    if result is None:
        return name in _WRITING
    if name == "ndarray.__getitem__" and isinstance(result, np.generic):
        return False  # one element: a view on a GPU library (returned as a 0-d array)
    results = _arrays_in(result) + [r for r in _flat(result) if isinstance(r, np.generic)]
    if not results:
        return False  # metadata: shapes, flags, Python numbers
    return not all(isinstance(r, np.ndarray) and _is_view(r, inputs) for r in results)


def _flat(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    else:
        yield value


def _wrap(result, top: bool):
    """Results as ``Counted`` (numpy scalars of the outermost call as 0-d arrays)."""
    if isinstance(result, Counted):
        return result
    if isinstance(result, np.ndarray):
        return result.view(Counted)
    if top and isinstance(result, np.generic):
        return _ORIGINAL["asarray"](result).view(Counted)
    if isinstance(result, tuple):
        return tuple(_wrap(r, top) for r in result)
    if isinstance(result, list):
        return [_wrap(r, top) for r in result]
    return result


def _counting(name, call, inputs, out=None):
    """Run ``call()`` one level deeper; at the outermost level count ``name`` if it computed."""
    top = _State.depth == 0
    _State.depth += 1
    try:
        result = call()
    finally:
        _State.depth -= 1
    count = _State.count
    if top and count is not None:
        if _computes(name, result, inputs, out):
            count.add(name)
        if name not in _CONVERSIONS:
            count.untracked += [
                f"{name} took a plain ndarray ({a.dtype}, shape {a.shape}) at {_where()}"
                for a in inputs
                if type(a) is np.ndarray and a.size > 1 and a.flags.writeable
            ]
    return result, top


def _numpy_method(name):
    base = getattr(np.ndarray, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        inputs = [self, *_arrays_in(args), *_arrays_in(kwargs)]
        out = kwargs.get("out")
        if name in _WRITING_METHODS or (name == "__setitem__" and not _onto_itself(self, *args)):
            out = self  # writes into the array itself
        result, top = _counting(
            f"ndarray.{name}", lambda: base(self, *_plain_all(args), **kwargs), inputs, out
        )
        return _wrap(result, top)

    return method


def _onto_itself(array, key, value) -> bool:
    """Whether ``array[key] = value`` assigns elements their own values (``x[i] += y`` does, after
    the in-place add into the view ``x[i]``), which NumPy skips: a basic index whose view has
    ``value``'s data pointer, dtype, shape and strides."""
    if not isinstance(value, np.ndarray) or _arrays_in(key) or isinstance(key, list):
        return False
    if isinstance(key, tuple) and any(isinstance(k, list) for k in key):
        return False
    target = np.ndarray.__getitem__(array.view(np.ndarray), key)
    return (
        isinstance(target, np.ndarray)
        and target.__array_interface__["data"][0] == value.__array_interface__["data"][0]
        and target.dtype == value.dtype
        and target.shape == value.shape
        and target.strides == value.strides
    )


def _numpy_read(name):
    base = getattr(np.ndarray, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        if _State.depth == 0:
            _host_read(f"ndarray.{name}")
        _State.depth += 1
        try:
            return base(self.view(np.ndarray), *args, **kwargs)
        finally:
            _State.depth -= 1

    return method


#: ndarray methods that compute without going through a ufunc or an array function (or that
#: would be counted twice through one), counted like the functions.
_COUNTED_METHODS = (
    "__getitem__",
    "__setitem__",
    "__copy__",
    "__deepcopy__",
    "astype",
    "copy",
    "reshape",
    "ravel",
    "flatten",
    "take",
    "repeat",
    "compress",
    "choose",
    "nonzero",
    "argmax",
    "argmin",
    "argsort",
    "argpartition",
    "searchsorted",
    "dot",
    "sum",
    "prod",
    "mean",
    "std",
    "var",
    "max",
    "min",
    "any",
    "all",
    "clip",
    "round",
    "cumsum",
    "cumprod",
    "trace",
    "sort",
    "partition",
    "fill",
    "put",
)
#: Methods among them that write into the array (and return None); ``__setitem__`` too, unless it
#: assigns elements their own values.
_WRITING_METHODS = ("sort", "partition", "fill", "put")
_READ_METHODS = (
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__complex__",
    "item",
    "tolist",
    "tobytes",
    "__format__",
    "__repr__",
    "__str__",
)


class Counted(np.ndarray):
    """An ndarray whose operations :func:`numpy_ops` counts; every array computed from one is one.

    ``__array_ufunc__`` counts each ufunc call, its methods (``reduce``, ``accumulate``, ``at``,
    ``outer``, ``reduceat``) included; ``__array_function__`` each array function, except those
    whose results are views of an input, those that only allocate (``empty_like``) and those that
    return no array; the methods in ``_COUNTED_METHODS`` likewise (an indexing that is a basic
    slice is a view, one with an index array or a mask counts; an assignment into it counts).
    A read of a value (``_READ_METHODS``) inside a step is a host read. View an array as one with
    ``a.view(Counted)`` (:func:`counted`)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        out = kwargs.get("out")
        if method == "at":
            out = inputs[:1]  # written in place
        plain = {k: _plain_all(v) for k, v in kwargs.items()}
        args = tuple(_plain(a) for a in inputs)
        arrays = [a for a in inputs if isinstance(a, np.ndarray)]
        result, top = _counting(
            name, lambda: getattr(ufunc, method)(*args, **plain), arrays, out if out else None
        )
        if method == "at":
            return None
        if out:
            return out[0] if len(out) == 1 else out
        return _wrap(result, top)

    def __array_function__(self, func, types, args, kwargs):
        name = f"np.{func.__name__}"
        out = kwargs.get("out")
        inputs = _arrays_in(args) + _arrays_in(kwargs)
        result, top = _counting(
            name,
            lambda: super(Counted, self).__array_function__(func, types, args, kwargs),
            inputs,
            out,
        )
        if out is not None:
            return result
        return _wrap(result, top)

    def __array__(self, dtype=None, copy=None):
        if _State.depth == 0:
            _host_read("ndarray.__array__")
        a = self.view(np.ndarray)
        return a if dtype is None else a.astype(dtype, copy=bool(copy))


for _name in _COUNTED_METHODS:
    setattr(Counted, _name, _numpy_method(_name))
for _name in _READ_METHODS:
    setattr(Counted, _name, _numpy_read(_name))
del _name


def counted(a):
    """A NumPy array (or a Counted one) as a ``Counted`` view of the same memory."""
    return np.asarray(a).view(Counted) if not isinstance(a, Counted) else a


def counted_network(net):
    """Make ``net`` compute on ``Counted`` arrays: each entry of ``net.params`` rebound to a view
    (then packed again into one buffer where the dict can, ``params.flatten()``), and the
    batch-norm statistics (``net.buffers()``) through ``net.load_buffers``. Returns ``net``."""
    for key in list(net.params):
        net.params[key] = counted(net.params[key])
    flatten = getattr(net.params, "flatten", None)
    if flatten:
        flatten()
    buffers = net.buffers() if hasattr(net, "buffers") else {}
    if buffers:
        net.load_buffers({k: counted(v) for k, v in buffers.items()})
    return net


# The functions that make arrays without an array to dispatch on, patched while counting: the
# fills and allocations where portnet calls them (the array API namespace, array_api_compat.numpy:
# NumPy's own modules call numpy's, the host generator's permutation np.arange among them), the
# conversions in numpy itself (array_api_compat's asarray and portnet's NumPy paths call them).
_FILLING = ("zeros", "ones", "full", "arange", "eye", "linspace", "empty")
_CONVERTING = ("array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray")
_ORIGINAL = {name: getattr(np, name) for name in _CONVERTING}
_CONVERSIONS = frozenset(f"np.{name}" for name in _CONVERTING)


def _creation(module, name):
    original = getattr(module, name)

    @functools.wraps(original)
    def make(*args, **kwargs):
        if _State.depth:  # inside another counted call (numpy's own code)
            return original(*args, **kwargs)
        inputs = _arrays_in(args) + _arrays_in(kwargs)
        # counted unless it only allocates (empty) or returns a view (a conversion that copies
        # nothing): decided from the result, as for the array functions
        result, top = _counting(f"np.{name}", lambda: original(*_plain_all(args), **kwargs), inputs)
        return _wrap(result, top)

    return make


@contextlib.contextmanager
def numpy_ops():
    """Count the operations on ``Counted`` arrays inside the block (and the arrays NumPy makes
    from nothing there, which come out ``Counted``); yields the :class:`Count`."""
    count = Count()
    saved = _State.count
    _State.count = count
    import array_api_compat.numpy as compat_numpy

    with pytest.MonkeyPatch.context() as mp:
        for module, names in ((compat_numpy, _FILLING), (np, _CONVERTING)):
            for name in names:
                mp.setattr(module, name, _creation(module, name))
        try:
            yield count
        finally:
            _State.count = saved
