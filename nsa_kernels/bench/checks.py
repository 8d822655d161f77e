"""Correctness checks the notebooks show: random and edge inputs against ``reference``."""
import contextlib
import warnings

import torch

from .. import testing
from .._env import DEVICE


def edge_cases(device=DEVICE):
    def case(name, ext, seq, topk=2048, dtype=torch.int32):
        return (
            name,
            torch.tensor(ext, dtype=dtype, device=device),
            torch.tensor(seq, dtype=dtype, device=device),
            topk,
        )

    return [
        case("bs = 0", [], []),
        case("zero-length requests", [0, 3, 0, 0, 2, 0], [5, 9, 0, 7, 2, 4]),
        case("one token", [1], [1]),
        case("extend == seq", [4, 7], [4, 7]),
        case("around topk", [3, 3, 5], [2047, 2049, 2050]),
        case("topk = 1", [2, 3], [5, 3], topk=1),
        case("int64 inputs", [2, 1, 4], [100, 3000, 9000], dtype=torch.int64),
        case("prefill-size extend", [1500, 700], [4000, 700]),
    ]


def random_cases(seed, count=4, max_bs=64, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(count):
        bs = int(torch.randint(0, max_bs + 1, (1,), generator=g))
        ext = torch.randint(0, 6, (bs,), generator=g)
        seq = ext + torch.randint(0, 5000, (bs,), generator=g)
        topk = int(torch.randint(1, 4097, (1,), generator=g))
        cases.append(
            (
                f"random #{i} (bs={bs})",
                ext.to(device, torch.int32),
                seq.to(device, torch.int32),
                topk,
            )
        )
    return cases


def check_fill(fill, cases, slack=5):
    """``testing.check_fill`` on each case (canary buffers ``N + slack`` long); table rows.

    Raises ``AssertionError`` naming the case on the first mismatch, so a notebook cannot
    carry on past one.
    """
    rows = []
    for name, ext, seq, topk in cases:
        try:
            n = testing.check_fill(fill, ext, seq, topk, slack=slack)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        rows.append([name, len(ext), n, "equal; tail and margins untouched"])
    return rows


@contextlib.contextmanager
def sync_debug_mode(mode="error"):
    """``torch.cuda.set_sync_debug_mode(mode)`` inside the block, ``default`` after (GPU only).

    Torch warns once per process that the mode "is a prototype feature"; that note is silenced
    here, where the mode is switched, and only that one: the warnings the mode exists to raise
    (``mode="warn"``) still reach the caller.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype",
                                category=UserWarning)
        torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype",
                                    category=UserWarning)
            torch.cuda.set_sync_debug_mode("default")


def pipeline_inputs(workload, width, seed=0, device=DEVICE):
    """A random ``req_to_token`` pool (``2 bs`` rows of ``width``) and distinct pool indices."""
    g = torch.Generator().manual_seed(seed + workload.bs)
    pool = max(2 * workload.bs, 8)
    req_to_token = torch.randint(0, 1 << 22, (pool, width), generator=g, dtype=torch.int32)
    req_pool_indices = torch.randperm(pool, generator=g)[:workload.bs].to(torch.int32)
    return req_pool_indices.to(device), req_to_token.to(device)


def check_pipeline(buffers, workload, req_pool_indices, req_to_token, page_size, width):
    """Whether ``buffers`` hold ``pipeline_reference``'s result (page tables on live prefixes)."""
    from ..reference import pipeline_reference

    want = pipeline_reference(workload.extend_seq_lens, workload.seq_lens, req_pool_indices,
                              req_to_token, workload.topk, page_size, width)
    ok = all(torch.equal(getattr(buffers, k)[:len(want[k])], want[k]) for k in
             ("cache_seqlens_int32", "cu_seqlens_k", "seqlens_expanded", "nsa_cache_seqlens",
              "nsa_cu_seqlens_k"))
    for t, cols in enumerate(want["live_cols"].tolist()):
        pages = -(-cols // page_size)
        ok = ok and torch.equal(buffers.page_table_1[t, :cols], want["page_table_1"][t, :cols])
        ok = ok and torch.equal(
            buffers.real_page_table[t, :pages], want["real_page_table"][t, :pages]
        )
    return bool(ok)


def mode_check_rows(points, slack=3):
    """Ours on each mode point (``nsa_kernels.modes.spec``): poisoned outputs with ``slack``
    spare entries and rows, every written entry equal to the reference, the poison intact
    everywhere else. Table rows; raises AssertionError naming the point on a mismatch."""
    from ..modes import spec

    rows = []
    for point in points:
        inputs = spec.make_inputs(point)
        outputs = spec.allocate_outputs(point, slack=slack)
        spec.bind(point.spec.ours_function(), point, inputs, outputs)()
        counts = spec.check_outputs(point, spec.live_reference(point, inputs), outputs,
                                    poison=spec.POISON)
        tables = ", ".join(name for name in ("page_table_1", "real_page_table",
                                             "paged_mqa_ctx_lens_2d") if name in counts)
        rows.append([point.workload, point.variant or "—", point.bs, point.width,
                     point.page_size, tables, f"{sum(counts.values()):,} entries equal; "
                     "nothing else written"])
    return rows
