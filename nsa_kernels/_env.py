"""Pick where kernels run, before any ``@triton.jit`` in this package is decorated.

Triton decides at decoration time whether a kernel is compiled for the GPU or run by
its interpreter (``TRITON_INTERPRET=1``), so this module must be imported first.
With no CUDA device the interpreter is switched on and tensors live on the CPU.
``TRITON_INTERPRET`` is read as Triton reads it (``interpret_requested``); set to a false
value on a machine without a GPU, nothing could run, so importing fails and says why.
"""
import os
import sys

import torch

#: Values Triton's ``getenv_bool`` reads as true (case-insensitive, no surrounding spaces).
_TRUE_VALUES = ("1", "true", "on", "yes", "y")


def interpret_requested(value):
    """True when Triton reads the ``TRITON_INTERPRET`` value ``value`` as on."""
    return value.lower() in _TRUE_VALUES


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
INTERPRET = interpret_requested(os.environ["TRITON_INTERPRET"]) \
    if "TRITON_INTERPRET" in os.environ else False

#: ``NSA_COMPILE_ONLY=1`` allows the compiler without a GPU: ``triton.compile`` for a named target
#: (tests that check a kernel's register use and spills on a CPU machine), never a launch.
COMPILE_ONLY = interpret_requested(os.environ.get("NSA_COMPILE_ONLY", "0"))

if not INTERPRET and not COMPILE_ONLY and not torch.cuda.is_available():
    raise ImportError(
        f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']!r} turns Triton's interpreter off, but "
        "this machine has no CUDA device, so no kernel could run: unset TRITON_INTERPRET (the "
        "interpreter is then switched on automatically) or set TRITON_INTERPRET=1 "
        "(NSA_COMPILE_ONLY=1 allows compiling for a named target without launching)")

#: Device that workloads and tests allocate on.
DEVICE = torch.device("cpu" if INTERPRET or not torch.cuda.is_available() else "cuda")
