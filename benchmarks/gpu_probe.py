"""Two probes that ``benchmarks/gpu_check.py`` runs, each in its own process, each writing one JSON
object to ``--json`` (exit status 1 when it finds a fault).

    python benchmarks/gpu_probe.py parity --backends cupy,torch-cuda --data-dir DIR --json FILE
    python benchmarks/gpu_probe.py capture --backends cupy --data-dir DIR --json FILE

``parity``: the loss and gradients of the three networks on 100 MNIST images, in float32 and
float64, against NumPy float64 with the same weights and the same dropout masks: the largest
difference relative to the largest reference value (float32 rounding gives about 1e-6; a matmul
in TF32 about 1e-3, beyond :data:`LIMITS`).

``capture``: a training step of each network and an epoch's shuffle, each recorded by CUDA stream
capture on a non-blocking stream after a warm-up. Any synchronous transfer or wait inside raises
(``cupyx.allow_synchronize`` sees only ``.get()`` and ``Device.synchronize``; capture also sees
thrust's syncing sorts and copies from pageable memory). A loss read back (the control) must be
refused, or the probe proved nothing. On array_api_strict's device1, the CPU rehearsal's stand-in
for a GPU, capture is replaced by a block where any value read back to the host raises.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import portnet as pn  # noqa: E402
from portnet.randomness import Random  # noqa: E402
from tests.matrix import MATRIX  # noqa: E402

BATCH = 100
#: The largest relative difference from NumPy float64 that each dtype's rounding explains.
LIMITS = {"float32": 1e-4, "float64": 1e-10}


def networks(random_source):
    """The default model and the book's two ConvNets, seeded (the same weights on every backend)."""
    return {
        "multi-layer": lambda: pn.MultiLayerNet(784, [100, 100], 10, seed=0),
        "simple-conv": lambda: pn.SimpleConvNet(seed=0),
        "deep-conv": lambda: pn.DeepConvNet(seed=0, random_source=random_source),
    }


def matrix_row(backend_id):
    """(name, device) of a backend id of ``tests/matrix.py``."""
    for row_id, name, device, _ in MATRIX:
        if row_id == backend_id:
            return name, device
    raise SystemExit(f"gpu_probe: unknown backend {backend_id!r}")


def mnist(data_dir, n):
    """The first ``n`` training images (N, 1, 28, 28) and labels, NumPy."""
    with pn.use_backend("numpy"):
        (x, t), _ = pn.load_mnist(flatten=False, data_dir=data_dir, download=False)
    return x[:n], t[:n]


# --------------------------------------------------------------------------- parity
def _loss_and_grads(net, model, x, t, dtype):
    x = pn.asarray(x if model != "multi-layer" else x.reshape(x.shape[0], 784), dtype=dtype)
    loss, grads = net.loss_and_gradient(x, pn.asarray(t), check=False)
    return float(loss), {k: pn.to_numpy(g).astype(np.float64) for k, g in grads.items()}


def parity(ids, data_dir):
    x, t = mnist(data_dir, BATCH)
    make = networks("host")  # dropout masks drawn on the host: the same on every backend
    with pn.use_backend("numpy", dtype="float64"):
        reference = {
            model: _loss_and_grads(build(), model, x, t, "float64") for model, build in make.items()
        }
    rows = []
    for backend_id in ids:
        name, device = matrix_row(backend_id)
        for dtype in LIMITS:
            with pn.use_backend(name, device, dtype):
                for model, build in make.items():
                    loss, grads = _loss_and_grads(build(), model, x, t, dtype)
                    ref_loss, ref_grads = reference[model]
                    worst, key = max(
                        (float(np.max(np.abs(grads[k] - g)) / np.max(np.abs(g))), k)
                        for k, g in ref_grads.items()
                    )
                    row = {
                        "backend": backend_id,
                        "dtype": dtype,
                        "model": model,
                        "loss": abs(loss - ref_loss) / abs(ref_loss),
                        "gradient": worst,
                        "worst_parameter": key,
                    }
                    row["ok"] = bool(max(row["loss"], row["gradient"]) <= LIMITS[dtype])
                    rows.append(row)
    return {"limits": LIMITS, "rows": rows, "ok": all(r["ok"] for r in rows)}


# --------------------------------------------------------------------------- capture
class StreamCapture:
    """CuPy: each block recorded by CUDA stream capture on a non-blocking stream."""

    label = "CUDA stream capture (CuPy, non-blocking stream)"
    refusal = RuntimeError  # CUDARuntimeError, or CuPy's own check of a capturing stream

    def __init__(self):
        import cupy

        self.stream = cupy.cuda.Stream(non_blocking=True)

    def __enter__(self):
        self.stream.__enter__()
        return self

    def __exit__(self, *exc):
        return self.stream.__exit__(*exc)

    def synchronize(self):
        self.stream.synchronize()

    def capture(self, fn):
        self.stream.begin_capture()
        try:
            fn()
        except BaseException:
            with contextlib.suppress(
                Exception
            ):  # the capture is invalidated; end it, keep the first error
                self.stream.end_capture()
            raise
        self.stream.end_capture()


class ReadbackStandIn:
    """array_api_strict's device1 (the rehearsal): each block refuses any value read back to the host."""

    label = "stand-in: no host read-back (array_api_strict device1)"

    @property
    def refusal(self):
        from tests.test_gpu import HostReadback

        return HostReadback

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def capture(self, fn):
        from tests.test_gpu import no_host_readback

        with no_host_readback():
            fn()


def _where(exc) -> str:
    """The innermost line of portnet (else of this probe) that the error passed through."""
    frames = traceback.extract_tb(exc.__traceback__)
    for place in (str(ROOT / "portnet"), __file__):
        inside = [f for f in frames if f.filename.startswith(place)]
        if inside:
            return f"{Path(inside[-1].filename).relative_to(ROOT)}:{inside[-1].lineno} in {inside[-1].name}"
    return "outside portnet"


def _stepper(net, x, t, order):
    """One training step as the Trainer takes it: a gather on the device, loss and gradients
    (labels checked once, not per step), an Adam update."""
    xp, optimizer = pn.get_namespace(), pn.Adam(lr=0.001)
    idx = order[:BATCH]

    def step():
        loss, grads = net.loss_and_gradient(
            xp.take(x, idx, axis=0), xp.take(t, idx, axis=0), check=False
        )
        optimizer.update(net.params, grads)
        return loss

    return step


def capture(backend_id, data_dir):
    name, device = matrix_row(backend_id)
    if name == "cupy":
        recorder = StreamCapture
    elif name == "array_api_strict" and device is not None:
        recorder = ReadbackStandIn
    else:
        raise SystemExit(
            f"gpu_probe: stream capture probes CuPy (array_api_strict's device1 in a rehearsal), "
            f"not {backend_id}"
        )
    x, t = mnist(data_dir, 1000)
    with pn.use_backend(name, device), recorder() as rec:
        xp = pn.get_namespace()
        images, labels = pn.asarray(x), pn.asarray(t)
        rng = Random(xp, pn.backend.active().device, seed=0)
        order = rng.permutation(x.shape[0])
        targets = {}
        for model, build in networks("native").items():
            data = xp.reshape(images, (x.shape[0], 784)) if model == "multi-layer" else images
            targets[f"{model} training step"] = _stepper(build(), data, labels, order)
        targets["an epoch's shuffle (permutation on the device)"] = lambda: rng.permutation(
            x.shape[0]
        )
        for fn in targets.values():  # kernels compiled, memory pool filled, Adam's state made
            fn()
            fn()
        rec.synchronize()
        step = targets["multi-layer training step"]
        targets["control: a loss read back (must be refused)"] = lambda: float(step())
        results = {}
        for what, fn in targets.items():
            try:
                rec.capture(fn)
                results[what] = "captured"
            except Exception as exc:
                outcome = "refused" if isinstance(exc, rec.refusal) else "error"
                results[what] = (
                    f"{outcome}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} ({_where(exc)})"
                )
    control = [k for k in results if k.startswith("control")]
    ok = all(
        results[k].startswith("refused") if k in control else results[k] == "captured"
        for k in results
    )
    return {"backend": backend_id, "recorder": recorder.label, "results": results, "ok": ok}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=("parity", "capture"))
    parser.add_argument("--backends", required=True, help="comma-separated ids of tests/matrix.py")
    parser.add_argument("--data-dir", required=True, help="the MNIST directory")
    parser.add_argument("--json", required=True, type=Path, help="where to write the result")
    args = parser.parse_args(argv)
    ids = [b for b in args.backends.split(",") if b]
    if args.probe == "parity":
        result = parity(ids, args.data_dir)
    else:
        result = {"captures": [capture(b, args.data_dir) for b in ids]}
        result["ok"] = all(c["ok"] for c in result["captures"])
    args.json.write_text(json.dumps(result, indent=1))
    if args.probe == "parity":
        for r in result["rows"]:
            print(
                f"{r['backend']} {r['dtype']} {r['model']}: loss {r['loss']:.1e}, gradient {r['gradient']:.1e} "
                f"({r['worst_parameter']}){'' if r['ok'] else ' BEYOND ' + format(LIMITS[r['dtype']], '.0e')}"
            )
    else:
        for c in result["captures"]:
            print(
                "\n".join(
                    f"{c['backend']}, {what}: {outcome}" for what, outcome in c["results"].items()
                )
            )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
