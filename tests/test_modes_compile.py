"""The mode kernels (and stage 6) compile for an H100 (sm_90) on a machine without a GPU.

Triton's interpreter runs kernel bodies as Python, so it accepts code the compiler rejects
(say, a variable rebound to another type inside a run-time ``if``). This compiles the exact
launches the plans produce (constexprs and argument types taken from the plans, built from
CPU tensors' metadata) through Triton's real pipeline, down to a cubin, in a subprocess with
the interpreter off. Nothing is launched.
"""
import os
import subprocess
import sys
from pathlib import Path

import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import os
os.environ["TRITON_INTERPRET"] = "0"
os.environ["NSA_COMPILE_ONLY"] = "1"  # no GPU here: compile for sm_90, launch nothing
import nsa_kernels  # noqa: F401
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nsa_kernels import PipelineBuffers
from nsa_kernels.stages import stage6_full_pipeline as s6
from nsa_kernels.launcher import LaunchPlan
from nsa_kernels.modes import inputs, plan_decode, plan_draft_extend, plan_target_verify

PLANS = {"decode": plan_decode, "target_verify": plan_target_verify,
         "draft_extend_static": plan_draft_extend, "draft_extend_varlen": plan_draft_extend}
TYPES = {torch.int32: "*i32", torch.int64: "*i64"}


def compile_plan(plan):
    # The signature Triton would derive from the plan's arguments (CPU tensors: metadata only).
    names = [n for n in plan.kernel.arg_names if n not in plan.kwargs]
    sig = {n: TYPES[a.dtype] if isinstance(a, torch.Tensor) else "i32"
           for n, a in zip(names, plan.args, strict=True)}
    sig.update({n: "constexpr" for n in plan.kwargs})
    triton.compile(ASTSource(fn=plan.kernel, signature=sig, constexprs=dict(plan.kwargs)),
                   target=GPUTarget("cuda", 90, 32))
    print("compiled", plan.kernel.fn.__name__, sorted(plan.kwargs.items()))


for mode, opts in [("decode", dict(page_size=64, has_pt1=False)),
                   ("decode", dict(page_size=64, has_pt1=True)),
                   ("decode", dict(page_size=1, has_pt1=True)),
                   ("target_verify", dict(page_size=64, has_pt1=True, next_n=4, has_ctx=True)),
                   ("target_verify", dict(page_size=64, has_pt1=False, next_n=2)),
                   ("draft_extend", dict(page_size=64, has_pt1=True, static=True, draft=4)),
                   ("draft_extend", dict(page_size=64, has_pt1=False, static=False, draft=3))]:
    for bs, width in ((3, 100), (300, 2048)):
        case = inputs.make_case(mode, bs, width, opts, seed=1)
        point = case["point"]
        kwargs = point.spec.kwargs(point, case["inputs"], inputs.allocate_outputs(case))
        if mode == "draft_extend" and not opts["static"]:
            kwargs["status"] = torch.zeros(2, dtype=torch.int64)
        compile_plan(PLANS[point.workload](**kwargs))

ext = torch.ones(3, dtype=torch.int32)
bufs = PipelineBuffers.allocate(3, 8, 600, 64)
status = torch.zeros(2, dtype=torch.int32)
table = torch.zeros(3, 600, dtype=torch.int32)
compile_plan(LaunchPlan(*s6.plan_full_pipeline(ext, ext + 5, torch.arange(3), table, 64, bufs, 64,
                                                status)))
print("ALL COMPILED")
"""


@pytest.mark.skipif(not nk.INTERPRET, reason="a CPU-machine check: on a GPU every launch "
                    "compiles for real (tests/gpu/test_modes_gpu.py)")
def test_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "ALL COMPILED" in done.stdout, (
        done.stdout[-3000:] + done.stderr[-6000:]
    )
