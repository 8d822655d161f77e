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


_IMPORTED_WITHOUT_INTERPRETER = (
    "nsa_kernels needs Triton's interpreter on this machine (no CUDA device), but triton was "
    "imported first without it: set TRITON_INTERPRET=1 before importing triton, or import "
    "nsa_kernels before triton")


def library_interpreted():
    """Whether triton, already imported, decorated its own library functions (``tl.sum``, ...)
    for the interpreter; None when ``triton.language`` is not imported yet."""
    standard = sys.modules.get("triton.language.standard")
    if standard is None:
        return None
    return type(standard.sum).__name__ == "InterpretedFunction"


if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    if "triton" in sys.modules:
        # Triton's own library functions were decorated for a GPU when triton was imported;
        # switching to the interpreter now would break every kernel.
        raise ImportError(_IMPORTED_WITHOUT_INTERPRETER)
    os.environ["TRITON_INTERPRET"] = "1"

#: True when Triton kernels run in the interpreter (CPU tensors, no GPU timings).
INTERPRET = interpret_requested(os.environ["TRITON_INTERPRET"]) \
    if "TRITON_INTERPRET" in os.environ else False

# TRITON_INTERPRET set (or cleared) after triton was imported: the library was decorated for the
# other mode, and every kernel would fail at its first launch ("Cannot call @triton.jit'd outside
# of the scope of a kernel"). Refused here, where the cause can still be named.
if library_interpreted() is not None and library_interpreted() != INTERPRET:
    if INTERPRET:
        raise ImportError(_IMPORTED_WITHOUT_INTERPRETER.replace(
            "on this machine (no CUDA device)", "(TRITON_INTERPRET is set)"))
    raise ImportError(
        "triton was imported with TRITON_INTERPRET on, which is now off: set TRITON_INTERPRET "
        "before importing triton, or import nsa_kernels before triton")

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
