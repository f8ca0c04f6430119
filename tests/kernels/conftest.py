"""Kernel tests: the Triton interpreter on machines without CUDA (set before any Triton kernel module is
imported; importing torch does not import Triton). With CUDA the Triton tests run the compiled kernels on
the GPU instead. The float64 reference step every path is compared with lives in kernel_steps.py."""

import os
import sys

import torch

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        # Triton binds its language to compiled mode at import; setting the variable now would not help.
        raise RuntimeError(
            "triton was imported before tests/kernels/conftest.py could set TRITON_INTERPRET=1; "
            "set TRITON_INTERPRET=1 in the environment or stop importing triton during collection"
        )
    os.environ["TRITON_INTERPRET"] = "1"
