"""Where the host time of one launch goes: a kernel's arguments, its body, the launch path.

Times, on the host and without a sync (median of many calls), launching:
an empty kernel with no arguments; empty kernels with zero_sync's argument list (pointers
and ints) and with subsets of it; and the zero_sync request kernel itself, each through
``kernel[grid](...)`` and through ``BoundLaunch``. Prints compiled metadata that could add
per-launch work (global/profile scratch). GPU only.
"""
import statistics
import time

import torch
import triton
import triton.language as tl

from nsa_kernels.bench import workloads
from nsa_kernels.bound_launch import BoundLaunch
from nsa_kernels.stage5_zero_sync import pack_plan, plan_zero_sync


@triton.jit
def no_args():
    pass


@triton.jit
def one_pointer(a):
    pass


@triton.jit
def five_pointers(a, b, c, d, e):
    pass


@triton.jit(do_not_specialize=["x", "y", "z"])
def five_pointers_three_ints(a, b, c, d, e, x, y, z):
    pass


@triton.jit(do_not_specialize=["x", "y", "z"])
def same_signature(a, b, c, d, e, x, y, z, CLAMP: tl.constexpr, BR: tl.constexpr, BQ: tl.constexpr,
                   PB: tl.constexpr):
    pass


def host_us(fn, n=5000):
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    torch.cuda.synchronize()
    return statistics.median(samples) * 1e6


def main():
    w = workloads.draft_extend(32)
    out_e, out_c = w.buffers()
    status = torch.empty(2, dtype=torch.int32, device="cuda")
    kernel, grid, args, kwargs = plan_zero_sync(*w.args(out_e, out_c), status)
    p = args[:5]
    ints = args[5:]
    cases = [
        ("no arguments", no_args, (), {}),
        ("1 pointer", one_pointer, p[:1], {}),
        ("5 pointers", five_pointers, p, {}),
        ("5 pointers + 3 ints", five_pointers_three_ints, p + ints, {}),
        ("zero_sync's signature, empty body", same_signature, p + ints,
         dict(CLAMP=False, BR=128, BQ=4, PB=1024)),
        ("zero_sync request kernel", kernel, args, kwargs),
        ("zero_sync request kernel, packed (1 pointer)", *pack_plan(kernel, grid, args, kwargs)[::2],
         pack_plan(kernel, grid, args, kwargs)[3]),
    ]
    print(f"{'kernel':46s} {'kernel[grid]':>13s} {'BoundLaunch':>12s}  metadata")
    for name, k, a, kw in cases:
        bound = BoundLaunch(k, grid, a, kw)
        normal = host_us(lambda: k[grid](*a, **kw))
        direct = host_us(bound)
        meta = bound.direct[0].metadata if bound.is_direct else None
        extra = (f"scratch={getattr(meta, 'global_scratch_size', '?')} "
                 f"profile_scratch={getattr(meta, 'profile_scratch_size', '?')} "
                 f"shared={getattr(meta, 'shared', '?')} warps={getattr(meta, 'num_warps', '?')}") if meta else "no direct path"
        print(f"{name:46s} {normal:13.2f} {direct:12.2f}  {extra}", flush=True)


if __name__ == "__main__":
    main()
