"""Our compat functions against SGLang 0.5.23's own kernels, on the CPU under Triton's
interpreter: ``scripts/gpu_check_modes.py --cpu-smoke`` (tiny sizes; the GPU run covers the
production ones). It runs in a subprocess because it adapts the interpreter's mask handling
for SGLang's kernels."""
import os
import subprocess
import sys
from pathlib import Path

import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not nk.INTERPRET, reason="GPU machine: its Triton's interpreter cannot run "
                    "SGLang's kernels; scripts/gpu_check_modes.py compares their compiled forms "
                    "there (120 cases, all equal)")
def test_compat_equals_sglang_kernels_under_the_interpreter():
    from nsa_kernels.peers import sglang
    try:
        sglang._source_folder()
    except sglang.PeerUnavailable as e:
        pytest.skip(str(e))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_modes.py"),
                           "--cpu-smoke"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "SUMMARY: 48 PASS, 0 FAIL of 48 cases" in done.stdout, done.stdout[-4000:]
