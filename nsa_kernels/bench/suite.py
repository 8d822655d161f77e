"""What the notebooks run: each stage (and peer) on a workload, checked, then timed with the
floors."""
import torch

from ..stages import STAGES
from ..stages.stage1_triton_fused import launch_linear_scan
from ..stages.stage3_triton_bsearch import launch_bsearch
from ..stages.stage4_triton_autotuned import launch_autotuned
from .checks import check_fill
from .floors import measure_with_floors, skip_notes

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


def check_peer_against_reference(fill, workload):
    """``check_against_reference`` for a peer that fills the buffers but returns nothing (N
    would cost it a host sync, and its callers know N already): the same checks of every
    entry written and not written, with the workload's N standing in for the return value."""
    def returning_n(*args):
        got = fill(*args)
        return workload.n_tokens if got is None else got
    return check_against_reference(returning_n, workload)


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

    def kernel():
        return launcher(ends, workload.seq_lens, workload.topk, out_expanded, out_cache, n)

    return hot, kernel


def run_stages(workload, settings, names=None, floor=True, extra=(), skipped=None):
    """Check, then time each stage (and ``extra`` entries) on ``workload`` with the five floors
    (``floors.FLOORS``) in the same rounds; every record carries ``host_us``.

    The floors this machine cannot measure are appended to ``skipped`` (a notebook's list of
    ``{"what", "reason"}``), once each however many workloads share the list.
    """
    entries = []
    for name in names or STAGES:
        check_against_reference(STAGES[name], workload)
        hot, kernel = stage_call(name, workload)
        entries.append({"name": name, "fn": hot, "capturable": STAGES[name].capturable,
                        "kernel_fn": kernel})
    records, floor_skips = measure_with_floors(entries + list(extra), workload, settings,
                                               floors=floor)
    if skipped is not None:
        skipped.extend(note for note in skip_notes(floor_skips) if note not in skipped)
    return records
