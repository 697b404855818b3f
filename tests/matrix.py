"""The backend matrix the tests (and the benchmarks) run: (id, backend, device, on a GPU).

array_api_strict's 'device1' catches any array made on the wrong device, without a GPU.
"""

MATRIX = (
    ("numpy", "numpy", None, False),
    ("array_api_strict", "array_api_strict", None, False),
    ("array_api_strict-device1", "array_api_strict", "device1", False),
    ("torch-cpu", "torch", "cpu", False),
    ("torch-cuda", "torch", "cuda", True),
    ("jax", "jax", None, False),
    ("cupy", "cupy", 0, True),
)
