"""The mode kernels (and stage 6) compile for an H100 (sm_90) on a machine without a GPU.

Triton's interpreter runs kernel bodies as Python, so it accepts code the compiler rejects
(say, a variable rebound to another type inside a run-time ``if``). This compiles every
production variant through Triton's real pipeline, down to a cubin, in a subprocess with the
interpreter off. Nothing is launched.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import os
os.environ["TRITON_INTERPRET"] = "0"
import nsa_kernels  # noqa: F401
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nsa_kernels import stage6_full_pipeline as s6
from nsa_kernels.modes import decode, draft_extend, target_verify

I64 = {"seq_ptr": "*i64", "pool_idx_ptr": "*i64", "status_ptr": "*i64"}


def compile_one(kernel, constexprs):
    sig = {name: "constexpr" if name in constexprs else
           (I64.get(name, "*i32") if name.endswith("_ptr") else "i32") for name in kernel.arg_names}
    triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
                   target=GPUTarget("cuda", 90, 32))
    print("compiled", kernel.fn.__name__, sorted(constexprs.items()))


for pt1, ps in ((True, 1), (True, 64), (False, 64)):
    n = 1024 if pt1 else 128 * ps
    compile_one(decode.decode_kernel, dict(HAS_PAGE_TABLE_1=pt1, PAGE_SIZE=ps, BLOCK_B=4, BLOCK_N=n, FLAT=256))
    compile_one(target_verify.target_verify_kernel, dict(HAS_PAGE_TABLE_1=pt1, PAGE_SIZE=ps, HAS_CONTEXT_LENS=pt1, BLOCK_B=4, BLOCK_N=n, FLAT=4096))
    for static in (True, False):
        compile_one(draft_extend.draft_extend_kernel, dict(
            HAS_PAGE_TABLE_1=pt1, PAGE_SIZE=ps, STATIC_EXTEND_LEN=static, HAS_STATUS=not static,
            BLOCK_B=4, BLOCK_N=n, FLAT=1024, CHUNK=1024 if static else 256, BLOCK_J=1 if static else 4))
compile_one(s6.full_pipeline_kernel, dict(PAGE_SIZE=64, BLOCK_R=256, BLOCK_Q=4, BLOCK_N=512))
print("ALL COMPILED")
'''


def test_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="0",
               TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0 and "ALL COMPILED" in done.stdout, \
        done.stdout[-3000:] + done.stderr[-6000:]
