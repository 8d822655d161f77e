"""Pick where kernels run, before any ``@triton.jit`` in this package is decorated.

Triton decides at decoration time whether a kernel is compiled for the GPU or run by
its interpreter (``TRITON_INTERPRET=1``), so this module must be imported first.
With no CUDA device the interpreter is switched on and tensors live on the CPU.
"""
import os
import sys

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    if "triton" in sys.modules:
        # Triton's own library functions (tl.sum, tl.minimum, ...) were decorated for a GPU
        # when triton was imported; switching to the interpreter now would break every kernel.
        raise ImportError(
            "nsa_kernels needs Triton's interpreter on this machine (no CUDA device), but triton "
            "was imported first without it: set TRITON_INTERPRET=1 before importing triton, or "
            "import nsa_kernels before triton")
    os.environ["TRITON_INTERPRET"] = "1"

#: True when Triton kernels run in the interpreter (CPU tensors, no GPU timings).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

#: Device that workloads and tests allocate on.
DEVICE = torch.device("cpu" if INTERPRET or not torch.cuda.is_available() else "cuda")
