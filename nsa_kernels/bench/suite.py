"""What the notebooks run: each stage (and peer) on a workload, checked, then timed."""
import torch

from ..registry import STAGES
from ..stage1_triton_fused import launch_linear_scan
from ..stage3_triton_bsearch import launch_bsearch
from ..stage4_triton_autotuned import launch_autotuned
from .checks import check_fill
from .harness import floor_entries, measure_group

_KERNEL_ONLY = {
    "triton_fused": launch_linear_scan,
    "triton_inplace": launch_linear_scan,
    "triton_bsearch": launch_bsearch,
    "triton_autotuned": launch_autotuned,
}


def check_against_reference(fill, workload):
    """Run ``fill`` once on poisoned buffers of the workload's capacity; raise unless it wrote
    exactly the reference (``checks.check_fill`` on this one case)."""
    check_fill(fill, [(workload.name, workload.extend_seq_lens, workload.seq_lens, workload.topk)],
               slack=workload.capacity - workload.n_tokens)
    return True


def stage_call(name, workload):
    """``(hot-path closure, kernel-only closure or None)`` for stage ``name`` on ``workload``."""
    out_expanded, out_cache = workload.buffers()
    args = workload.args(out_expanded, out_cache)
    hot = STAGES[name].bound(*args)
    if STAGES[name].capturable:
        return hot, hot
    launcher = _KERNEL_ONLY.get(name)
    if launcher is None or workload.n_tokens == 0:
        return hot, None
    ends = torch.cumsum(workload.extend_seq_lens, 0)
    n = workload.n_tokens
    kernel = lambda: launcher(ends, workload.seq_lens, workload.topk, out_expanded, out_cache, n)
    return hot, kernel


def run_stages(workload, settings, names=None, floor=True, extra=()):
    """Check, then time each stage (and ``extra`` entries) on ``workload``, floor included."""
    entries = floor_entries() if floor else []
    for name in names or STAGES:
        check_against_reference(STAGES[name], workload)
        hot, kernel = stage_call(name, workload)
        entries.append({"name": name, "fn": hot, "capturable": STAGES[name].capturable, "kernel_fn": kernel})
    return measure_group(entries + list(extra), workload, settings)
