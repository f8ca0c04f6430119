"""Fused sparse encode/decode kernels for SAEs, their PyTorch references, and the backend dispatch.

Only pure-PyTorch modules are imported here; the Triton kernels (`triton_kernels`, `triton_ops`) load
lazily on the first CUDA call, so `TRITON_INTERPRET=1` can be set after importing this package.
"""

from vitsae.kernels.api import BACKENDS, Encoded, decode, encode, resolve_backend
from vitsae.kernels.codes import SparseCodes
from vitsae.kernels.sparse_torch import DENSE_DENSITY_THRESHOLD

__all__ = [
    "BACKENDS",
    "DENSE_DENSITY_THRESHOLD",
    "Encoded",
    "SparseCodes",
    "decode",
    "encode",
    "resolve_backend",
]
