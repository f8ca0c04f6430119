"""Fused sparse encode/decode kernels for SAEs, their PyTorch references, and the backend dispatch.

Only pure-PyTorch modules are imported here; the Triton kernels load lazily on first use on CUDA,
so `TRITON_INTERPRET=1` can still be set after importing this package but before the first call.
"""

from vitsae.kernels.codes import SparseCodes

__all__ = ["SparseCodes"]
