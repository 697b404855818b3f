"""Shared test helpers: the one tolerance table, and comparisons that check more than values."""

from __future__ import annotations

import array_api_compat
import numpy as np

from portnet.backend import dtype_name, namespace_of, to_numpy

#: The only place tolerances live: per dtype, ``rtol``/``atol`` for results of a few operations,
#: and ``unit``, the unit roundoff u, for sums (:func:`sum_tolerance`).
TOLERANCE = {
    "float64": {"rtol": 1e-10, "atol": 1e-12, "unit": 2.0**-53},
    "float32": {"rtol": 1e-5, "atol": 1e-6, "unit": 2.0**-24},
}


def tolerance(dtype) -> dict:
    """``rtol`` and ``atol`` of ``dtype`` (a name or any library's dtype)."""
    entry = TOLERANCE[dtype if dtype in TOLERANCE else dtype_name(dtype)]
    return {"rtol": entry["rtol"], "atol": entry["atol"]}


def sum_tolerance(terms: int, magnitude, dtype) -> np.ndarray:
    """The absolute error a sum of ``terms`` products can have in ``dtype`` whatever order a BLAS
    adds them in: gamma_n * sum |a_i b_i| with gamma_n = n u / (1 - n u) (Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2nd ed., eq. 3.5). ``magnitude`` is sum |a_i b_i|, element
    by element (the same computation on the absolute values). A tolerance relative to the result
    cannot hold where the terms cancel: the result is small and the error is that of the terms."""
    unit = TOLERANCE[dtype if dtype in TOLERANCE else dtype_name(dtype)]["unit"]
    gamma = terms * unit / (1 - terms * unit)
    return gamma * np.asarray(magnitude, dtype=np.float64)


def assert_like(actual, backend, dtype=None, shape=None):
    """``actual`` is an array of the backend's namespace and device, with this dtype and shape."""
    assert namespace_of(actual) is backend.xp, (
        f"namespace {namespace_of(actual).__name__}, expected {backend.xp.__name__}"
    )
    assert array_api_compat.device(actual) == backend.device, (
        f"device {array_api_compat.device(actual)}, expected {backend.device}"
    )
    if dtype is not None:
        assert dtype_name(actual.dtype) == dtype_name(dtype), (
            f"dtype {actual.dtype}, expected {dtype}"
        )
    if shape is not None:
        assert tuple(actual.shape) == tuple(shape), (
            f"shape {tuple(actual.shape)}, expected {tuple(shape)}"
        )


def assert_close(actual, expected, backend, dtype, *, sums=None, **override):
    """Namespace, device, dtype and shape first, then the values against ``expected`` (NumPy).

    ``sums=(terms, magnitude)``: each value is a sum of up to ``terms`` products whose absolute
    values add up to ``magnitude``; its rounding error bound (:func:`sum_tolerance`) is allowed
    on top of the dtype's tolerance."""
    expected = np.asarray(expected)
    assert_like(actual, backend, dtype, expected.shape)
    allowed = {**tolerance(dtype), **override}
    err_msg = allowed.pop("err_msg", "")
    if sums is None:
        np.testing.assert_allclose(to_numpy(actual), expected, err_msg=err_msg, **allowed)
        return
    found = to_numpy(actual).astype(np.float64)
    bound = allowed["atol"] + sum_tolerance(*sums, dtype) + allowed["rtol"] * np.abs(expected)
    excess = np.abs(found - expected) / bound
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert not excess.size or excess[worst] <= 1, (
        f"{err_msg} {np.count_nonzero(excess > 1)} of {excess.size} values outside the rounding bound; at "
        f"{worst}: {found[worst]!r}, expected {expected[worst]!r}, allowed +-{bound[worst]:.3g}"
    )


def assert_prints(actual, printed: str, backend, dtype):
    """``actual`` shows the digits the book printed (NumPy's 8 decimals) in float64, to the digit;
    in float32 it is close to them within the float32 tolerance."""
    expected = np.array([float(v) for v in printed.replace("[", " ").replace("]", " ").split()])
    expected = expected.reshape(_printed_shape(printed))
    assert_like(actual, backend, dtype, expected.shape)
    host = to_numpy(actual)
    if dtype_name(dtype) == "float64":
        shown = np.array2string(host).replace("[", " ").replace("]", " ").split()
        assert shown == printed.replace("[", " ").replace("]", " ").split(), (
            f"prints {np.array2string(host)}, the book {printed}"
        )
    else:
        np.testing.assert_allclose(host, expected, **tolerance(dtype))


def _printed_shape(printed: str):
    depth = len(printed) - len(printed.lstrip("["))
    count = len(printed.replace("[", " ").replace("]", " ").split())
    return (1,) * (depth - 1) + (count,) if depth else ()


def on(backend, a, dtype=None):
    """A NumPy value as an array of ``backend`` (float data cast to ``dtype`` when given)."""
    a = np.asarray(a)
    if dtype is not None and a.dtype.kind == "f":
        a = a.astype(dtype_name(dtype))
    return backend.xp.asarray(a, device=backend.device)


def assert_backprop_matches_numerical(net, x, t, backend, bias_scale, what=""):
    """A float64 gradient check of ``net`` on ``(x, t)``: every parameter's backprop gradient within
    1e-6 (mean absolute difference) of the central differences, as an array of the backend.

    The biases are moved off zero first (``bias_scale`` x N(0, 1)): a ReLU input of exactly 0 (the
    book's zero bias on an emptied row) sits on the kink, where a central difference measures half
    the slope. Dropout masks are drawn once and shared by both sides."""
    rng = np.random.default_rng(1)
    for key, value in net.params.items():
        if key.startswith("b"):
            net.params[key] = value + on(
                backend, rng.normal(scale=bias_scale, size=tuple(value.shape))
            )
    net.gradient(x, t)  # draws the dropout masks...
    net.freeze_dropout()  # ...which both sides then share
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    assert set(numerical) == set(backprop) == set(net.params)
    for key in net.params:
        diff = np.mean(np.abs(to_numpy(backprop[key]) - to_numpy(numerical[key])))
        assert diff < 1e-6, f"{what} {key}: mean |backprop - numerical| = {diff:.3g}"
        assert_like(backprop[key], backend, "float64", tuple(net.params[key].shape))
