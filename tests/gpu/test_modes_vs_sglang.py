"""``nsa_kernels.compat.sglang`` against SGLang 0.5.23's own fused DSA metadata kernels.

Both run on identical inputs into separately poisoned buffers; then every entry of every
buffer is compared:

* flat arrays and ``paged_mqa_ctx_lens_2d``: equal everywhere (so both write exactly the same
  range; poison left where the other wrote fails);
* ``cache_seqlens`` of a draft extend with ``total_len = 0``: equal over ``[:bs]``; SGLang's
  broadcast of a single request's length past bs is counted (``sglang_only``), not failed;
* page tables, on each row's live prefix ``[:min(len, width)]``: equal and written by both;
  past it, an entry we write and SGLang does not fails, an entry SGLang writes and we do not
  is counted (``sglang_only``: SGLang rounds each row up to its 128-column block; no consumer
  reads there) and recorded as a property of the test, not failed.

The production sizes are ``gpu`` tests (SGLang's wheel via ``nsa_kernels.peers.sglang``:
``NSA_SGLANG_PATH`` or ``.peers/``); the tiny sizes run everywhere, on the CPU under Triton's
interpreter with SGLang's CUDA asserts compiled out, so CI runs the same comparison.
"""
import nsa_kernels as nk
from nsa_kernels.bench.harness import ON_GPU
from nsa_kernels.compat import sglang as ours
from nsa_kernels.modes.inputs import POISON, allocate_outputs, call, live_cols, make_case
from nsa_kernels.peers import sglang as sglang_peer
from nsa_kernels.testing.interpreter import sglang_metadata_on_cpu

import pytest
import torch

CONFIGS = [  # (mode, options)
    ("decode", dict(page_size=64, has_pt1=True)),
    ("decode", dict(page_size=64, has_pt1=False)),
    ("decode", dict(page_size=1, has_pt1=True)),
    ("target_verify", dict(page_size=64, has_pt1=True, next_n=2, has_ctx=False)),
    ("target_verify", dict(page_size=64, has_pt1=False, next_n=2, has_ctx=True)),
    ("target_verify", dict(page_size=64, has_pt1=True, next_n=4, has_ctx=True)),
    ("target_verify", dict(page_size=1, has_pt1=True, next_n=4, has_ctx=False)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=True, draft=2)),
    ("draft_extend", dict(page_size=64, has_pt1=False, static=True, draft=4)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=False, draft=4)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=False, draft=2, partial=True)),
    ("draft_extend", dict(page_size=1, has_pt1=True, static=False, draft=3)),
]
#: ``(bs, width)`` the servers run: on a GPU only.
PRODUCTION_SIZES = [(bs, width) for bs in (1, 7, 32, 128, 1024) for width in (8192, 131072)]
#: Tiny ``(bs, width)`` that the interpreter runs in seconds: everywhere. Width 1100 spans
#: SGLang's 128-column row blocks and a partial page.
SMOKE_SIZES = [(1, 300), (7, 1100)]
#: Flat outputs compared entry for entry (decode has no ``seqlens_expanded`` of its own).
FLAT_OUTPUTS = ("cache_seqlens", "cu_seqlens_k", "seqlens_expanded", "dsa_cache_seqlens",
                "dsa_cu_seqlens_k", "paged_mqa_ctx_lens_2d")


def _cases():
    seed = 0
    for mode, opts in CONFIGS:
        described = "-".join(f"{k}={v}" for k, v in opts.items())
        for sizes, marks in ((SMOKE_SIZES, ()), (PRODUCTION_SIZES, pytest.mark.gpu)):
            for bs, width in sizes:
                seed += 1
                yield pytest.param(mode, opts, bs, width, seed, marks=marks,
                                   id=f"{mode}-bs{bs}-w{width}-{described}")


@pytest.fixture(scope="module")
def sglang():
    """SGLang's metadata module: its compiled kernels on a GPU, the interpreter's elsewhere."""
    try:
        return sglang_peer.load().metadata if ON_GPU else sglang_metadata_on_cpu()
    except sglang_peer.PeerUnavailable as exc:
        pytest.skip(str(exc))


def differences(case, theirs, mine):
    """Problems (empty: equal) and the count of SGLang-only entries past the live prefixes."""
    problems, sglang_only = [], 0
    for name in FLAT_OUTPUTS:
        if name == "seqlens_expanded" and case["mode"] == "decode":
            continue
        a, b = theirs.get(name), mine.get(name)
        if a is None:
            continue
        if name == "cache_seqlens" and case["mode"] == "draft_extend" and case["total_len"] == 0:
            # SGLang's total_len = 0 return copies seq_lens into the whole buffer (one
            # request's length broadcast past bs); we write [:bs] only.
            bs = case["bs"]
            if bool((b[bs:] != POISON).any()):
                problems.append(f"cache_seqlens: we write past bs = {bs}")
            sglang_only += int((a[bs:] != POISON).sum())
            a, b = a[:bs], b[:bs]
        diff = a != b
        if bool(diff.any()):
            i = diff.nonzero()[0].tolist()
            problems.append(f"{name}: {int(diff.sum())} entries differ, first at {i}: sglang "
                            f"{a[tuple(i)].item()} ours {b[tuple(i)].item()}")
    page_size = case["opts"]["page_size"]
    live = live_cols(case).to(nk.DEVICE)
    tables = [("page_table_1", live)] if theirs["page_table_1"] is not None else []
    if page_size > 1:
        tables.append(("real_page_table", (live + page_size - 1) // page_size))
    for name, row_live in tables:
        a, b = theirs[name], mine[name]
        cols = torch.arange(a.shape[1], device=nk.DEVICE)
        inside = torch.zeros(a.shape, dtype=torch.bool, device=nk.DEVICE)
        inside[:case["rows"]] = cols[None, :] < row_live[:, None]
        bad = inside & ((a != b) | (a == POISON))
        if bool(bad.any()):
            i = bad.nonzero()[0].tolist()
            problems.append(f"{name} live prefix: {int(bad.sum())} entries differ or unwritten, "
                            f"first at {i}: sglang {a[tuple(i)].item()} ours {b[tuple(i)].item()}")
        ours_only = ~inside & (b != POISON)
        if bool(ours_only.any()):
            i = ours_only.nonzero()[0].tolist()
            problems.append(f"{name}: we write {int(ours_only.sum())} entries past the live "
                            f"prefix, first at {i}")
        sglang_only += int((~inside & (a != POISON)).sum())
    if case["opts"].get("has_pt1") is False and mine.get("page_table_1") is not None:
        problems.append("page_table_1=None but a wide table was allocated")
    return problems, sglang_only


@pytest.mark.parametrize("mode, opts, bs, width, seed", list(_cases()))
def test_compat_equals_sglang_kernel(mode, opts, bs, width, seed, sglang, record_property,
                                     interpreter_scalar_masks):
    case = make_case(mode, bs, width, opts, seed, device=nk.DEVICE)
    theirs, mine = allocate_outputs(case), allocate_outputs(case)
    call(sglang, case, theirs)
    call(ours, case, mine)
    if ON_GPU:
        torch.cuda.synchronize()
    problems, sglang_only = differences(case, theirs, mine)
    record_property("sglang_only", sglang_only)
    assert not problems, "; ".join(problems)


def test_differences_catch_a_planted_error_and_a_write_past_the_live_prefix():
    """The comparison itself can fail: one flat entry changed, one entry past a live prefix."""
    case = make_case("decode", 3, 300, dict(page_size=64, has_pt1=True), 1, device=nk.DEVICE)
    theirs, mine = allocate_outputs(case), allocate_outputs(case)
    call(ours, case, theirs)
    call(ours, case, mine)
    assert differences(case, theirs, mine) == ([], 0)
    mine["cu_seqlens_k"][1] += 1
    live = int(live_cols(case)[0])
    mine["page_table_1"][0, live] = 5
    problems, _ = differences(case, theirs, mine)
    assert len(problems) == 2 and problems[0].startswith("cu_seqlens_k"), problems
    assert "past the live prefix" in problems[1], problems


def test_no_rows_at_bs_1_differs_from_sglang_only_past_bs(sglang, interpreter_scalar_masks):
    """total_len = 0 with one request: SGLang's ``cache_seqlens.copy_(seq_lens)`` broadcasts
    that request's length over the whole buffer (a graph's padding entries included); we write
    ``cache_seqlens[:1]`` only. Everything else is equal."""
    case = make_case("draft_extend", 1, 300, dict(page_size=64, has_pt1=True, static=False,
                                                  draft=4), 7, device=nk.DEVICE)
    case["inputs"].extend_seq_lens.zero_()
    case["inputs"].total_len = case["rows"] = case["total_len"] = 0
    theirs, mine = allocate_outputs(case), allocate_outputs(case)
    call(sglang, case, theirs)
    call(ours, case, mine)
    if ON_GPU:
        torch.cuda.synchronize()
    kv = int(case["seq"][0])
    assert theirs["cache_seqlens"].tolist() == [kv] * theirs["cache_seqlens"].numel()
    assert mine["cache_seqlens"].tolist() == [kv] + [POISON] * (mine["cache_seqlens"].numel() - 1)
    slack = theirs["cache_seqlens"].numel() - 1
    assert differences(case, theirs, mine) == ([], slack)
    mine["cache_seqlens"][1] = kv
    assert differences(case, theirs, mine)[0] == ["cache_seqlens: we write past bs = 1"]
