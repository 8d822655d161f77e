"""Importing ``nsa_kernels`` refuses a Triton whose library was decorated for another mode.

Triton decorates its own library functions (``tl.sum``, ...) when it is first imported, for the
interpreter or for the compiler as ``TRITON_INTERPRET`` says then. Setting the variable after
importing triton and before importing ``nsa_kernels`` leaves the two disagreeing: every
kernel would fail at its first launch ("Cannot call @triton.jit'd outside of the scope of a
kernel"). The import must fail instead, with the message that says what to do.
"""
import os
import subprocess
import sys
import textwrap

import nsa_kernels as nk

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(nk.__file__))


def run(code):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH", "")] if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter is only forced on CPU")
def test_interpreter_switched_on_after_triton_is_refused_at_import():
    proc = run("""
        import os
        import triton  # decorated for the compiler: TRITON_INTERPRET is unset here
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            import nsa_kernels
        except ImportError as err:
            print("REFUSED:", err)
        else:
            print("IMPORTED")
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REFUSED:" in proc.stdout, proc.stdout
    assert "TRITON_INTERPRET=1 before importing triton" in proc.stdout


def test_interpreter_set_before_triton_imports_and_runs():
    proc = run("""
        import os
        os.environ["TRITON_INTERPRET"] = "1"
        import triton
        import torch
        import nsa_kernels as nk
        ext = torch.tensor([1, 2], dtype=torch.int32)
        seq = torch.tensor([5, 2], dtype=torch.int32)
        out = torch.full((3,), -1, dtype=torch.int32)
        cache = out.clone()
        assert nk.STAGES["triton_bsearch"](ext, seq, 4, out, cache) == 3
        assert out.tolist() == [5, 1, 2], out
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
