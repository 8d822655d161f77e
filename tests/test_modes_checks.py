"""Hardening of the three fused modes: bad input raises before anything is written, trusted
paths never write outside their buffers, the device status, and the compiled-variant count."""
import nsa_kernels as nk  # noqa: F401  (first: interpreter switch)
from nsa_kernels import modes
from nsa_kernels.compat import sglang as compat
from nsa_kernels.modes.tiles import (
    MAX_TINY_PROGRAMS,
    SMALL_BATCH,
    TINY_BLOCK_N,
    grid_size,
    pick_blocks,
    split_rows,
)
from nsa_kernels.testing import DEVICE
from nsa_kernels.validation.modes import DraftExtendStatus

import numpy as np
import pytest
import torch
from test_modes_kernels import ModeRun, kv_mix

MODES = ["decode", "target_verify", "draft_extend"]
COMPAT = {"decode": compat.fused_dsa_decode_metadata,
          "target_verify": compat.fused_dsa_target_verify_metadata,
          "draft_extend": compat.fused_dsa_draft_extend_metadata}
PLAN = {"decode": modes.plan_decode, "target_verify": modes.plan_target_verify,
        "draft_extend": modes.plan_draft_extend}


def zeros(*shape, dtype):
    """On the run's device, so that a check sees the wrong shape or dtype, not the device."""
    return torch.zeros(*shape, dtype=dtype, device=DEVICE)


def _run(mode, **kw):
    kw.setdefault("kv", kv_mix(5, 200, 1))
    kw.setdefault("width", 200)
    kw.setdefault("page_size", 16)
    kw.setdefault("qo", [1, 2, 0, 3, 2])
    kw.setdefault("max_extend_len", 3)
    return ModeRun(mode, kw.pop("kv"), **kw)


def _checked_call(run, **overrides):
    """The same call with data checks (the plan with check=True, then its launch)."""
    return run.call(fn=lambda **kw: PLAN[run.mode](*kw.values(), check=True)(), **overrides)


def _assert_nothing_written(run):
    for name, c in run.canaries.items():
        c.assert_unchanged(name)


def _raises(run, error, match, **overrides):
    with pytest.raises(error, match=match):
        run.call(**overrides)
    _assert_nothing_written(run)


# --------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "override, error, match",
    [
        (dict(bs=True), TypeError, "bs must be an int"),
        (dict(bs=2.0), TypeError, "bs must be an int"),
        (dict(bs=-1), ValueError, "bs must be >= 0"),
        (dict(bs=6), ValueError, "seq_lens holds 5 entries"),
        (dict(dsa_index_topk=0), ValueError, "dsa_index_topk"),
        (dict(physical_page_size=1025), ValueError, r"physical_page_size must lie in \[1, 1024\]"),
        (dict(physical_page_size=np.int64(0)), ValueError, "physical_page_size must lie in"),
        (dict(real_page_table=None), ValueError, "real_page_table is required"),
        (dict(seq_lens=zeros(5, dtype=torch.float32)), TypeError, "seq_lens"),
        (dict(req_pool_indices=zeros(4, dtype=torch.int64)), ValueError, "req_pool_indices"),
        (
            dict(req_to_token=zeros(3, 100, dtype=torch.int32)),
            ValueError,
            "req_to_token has 100",
        ),
        (
            dict(req_to_token=zeros(0, 300, dtype=torch.int32)),
            ValueError,
            "req_to_token has no rows",
        ),
        (dict(cu_seqlens_k=zeros(5, dtype=torch.int32)), ValueError, "cu_seqlens_k holds 5"),
        (dict(cache_seqlens=zeros(5, dtype=torch.int64)), TypeError, "cache_seqlens"),
        (dict(dsa_cu_seqlens_k=zeros(0, dtype=torch.int32)), ValueError, "dsa_cu_seqlens_k"),
    ],
)
def test_static_checks_name_the_argument(mode, override, error, match):
    run = _run(mode)
    _raises(run, error, match, **override)


@pytest.mark.parametrize("mode", MODES)
def test_numpy_ints_accepted(mode):
    run = _run(mode)
    extra = dict(total_len=np.int64(run.total_len)) if mode == "draft_extend" else {}
    run.call(
        bs=np.int32(run.bs),
        dsa_index_topk=np.int64(run.topk),
        physical_page_size=np.int64(run.page_size),
        **extra,
    )
    run.check()


@pytest.mark.parametrize("mode", MODES)
def test_page_size_1_needs_page_table_1(mode):
    run = _run(mode, page_size=1)
    _raises(run, ValueError, "page_table_1 is required", page_table_1=None)


@pytest.mark.parametrize("mode", MODES)
def test_narrow_tables_rejected(mode):
    run = _run(mode)
    wide = run.view("page_table_1")
    _raises(run, ValueError, "page_table_1 is", page_table_1=wide[:, :150])
    _raises(
        run, ValueError, "real_page_table is", real_page_table=run.view("real_page_table")[:, :5]
    )
    _raises(run, ValueError, "page_table_1 is", page_table_1=wide[:1])


# --------------------------------------------------------------------------- overlaps
def _overlaps(run):
    v = run.view
    pt = v("page_table_1")
    cases = {
        "same tensor": (
            dict(cu_seqlens_k=v("dsa_cu_seqlens_k")),
            "cu_seqlens_k and dsa_cu_seqlens_k overlap",
        ),
        "partial overlap": (
            dict(cu_seqlens_k=run.canaries["cache_seqlens"].base[60:75]),
            "cache_seqlens and cu_seqlens_k overlap",
        ),
        "output is an input": (
            dict(cache_seqlens=run.r2t.view(-1)[:8]),
            "cache_seqlens and req_to_token overlap",
        ),
        "row stride 0": (
            dict(page_table_1=pt[:1].expand(pt.shape[0], pt.shape[1])),
            "page_table_1 has row stride 0",
        ),
        "row stride < width": (
            dict(page_table_1=pt.as_strided(pt.shape, (pt.shape[1] - 1, 1))),
            "page_table_1 overlaps page_table_1",
        ),
        "tables overlap": (
            dict(real_page_table=pt[:, : run.canaries["real_page_table"].view.shape[1]]),
            "page_table_1 and real_page_table overlap",
        ),
    }
    return cases


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "case",
    [
        "same tensor",
        "partial overlap",
        "output is an input",
        "row stride 0",
        "row stride < width",
        "tables overlap",
    ],
)
def test_overlapping_buffers_rejected(mode, case):
    run = _run(mode)
    override, match = _overlaps(run)[case]
    _raises(run, ValueError, match, **override)


def test_verify_context_lens_shape_and_overlap():
    run = _run("target_verify", has_ctx=True, next_n=2)
    ctx = run.view("paged_mqa_ctx_lens_2d")
    _raises(
        run,
        ValueError,
        "paged_mqa_ctx_lens_2d must be 5 x 2",
        paged_mqa_ctx_lens_2d=torch.zeros(5, 3, dtype=torch.int32, device=DEVICE),
    )
    _raises(run, ValueError, "paged_mqa_ctx_lens_2d is 4 x 2", paged_mqa_ctx_lens_2d=ctx[:4])
    _raises(
        run,
        ValueError,
        "overlap",
        paged_mqa_ctx_lens_2d=run.view("dsa_cache_seqlens")[:10].view(5, 2),
    )


def test_draft_extend_static_argument_checks():
    run = _run("draft_extend", static=True)
    _raises(run, ValueError, "total_len = 16 exceeds max_total_len", total_len=16)
    _raises(run, ValueError, "exceeds bs \\* max_extend_len", total_len=16, max_total_len=99)
    _raises(run, TypeError, "static_extend_len must be a bool", static_extend_len=1)


# --------------------------------------------------------------------------- data checks
@pytest.mark.parametrize("mode", MODES)
def test_data_checks(mode):
    big = 2**31
    run = _run(mode, seq_dtype=torch.int64, r2t_dtype=torch.int64)
    seq = run.seq.clone()
    for bad, match in (
        (big, "seq_lens\\[2\\] = 2147483648.*request 2"),
        (-1, "seq_lens\\[2\\] = -1.*request 2"),
    ):
        run.seq.copy_(seq)
        run.seq[2] = bad
        with pytest.raises(ValueError, match=match):
            _checked_call(run)
        _assert_nothing_written(run)
    run.seq.copy_(seq)
    run.seq[:] = 2**30  # every length fits, the prefix sum does not
    with pytest.raises(ValueError, match="cu_seqlens_k would pass 2\\*\\*31 at request 1"):
        _checked_call(run)
    run.seq.copy_(seq)
    pool = run.pool.clone()
    run.pool[3] = run.r2t.shape[0]
    with pytest.raises(ValueError, match="req_pool_indices\\[3\\].*request 3"):
        _checked_call(run)
    run.pool.copy_(pool)
    run.seq[1] = 100
    run.r2t[int(pool[1]), 99] = big
    with pytest.raises(ValueError, match="req_to_token.*2147483648.*request 1"):
        _checked_call(run)
    run.r2t[int(pool[1]), 99] = 5
    _assert_nothing_written(run)
    _checked_call(run)
    run.check()


def test_draft_extend_data_checks():
    run = _run("draft_extend", qo=[1, 2, 0, 3, 2], max_extend_len=3)
    run.ext[3] = 4
    with pytest.raises(ValueError, match="extend_seq_lens\\[3\\] = 4 is outside.*request 3"):
        _checked_call(run)
    run.ext[3] = 0  # sum 5 < total_len 8
    with pytest.raises(ValueError, match="sums to 5 < total_len = 8"):
        _checked_call(run)
    static = _run("draft_extend", static=True, max_extend_len=3)
    static.ext[2] = 2
    with pytest.raises(ValueError, match="extend_seq_lens\\[2\\] = 2 but static_extend_len"):
        _checked_call(static)
    _assert_nothing_written(run)
    _assert_nothing_written(static)


# --------------------------------------------------------------------------- trusted paths
GARBAGE = [-5, 2**40, 0, -(2**40), 2**31 - 1]


@pytest.mark.parametrize("mode", MODES)
def test_trusted_path_stays_inside_buffers(mode):
    # Lengths no valid batch has (negative, huge, qo > kv): whatever is written, it is written
    # inside the buffers, and the launch ends.
    run = _run(
        mode,
        kv=[0] * 5,
        qo=[0, 0, 0, 0, 0],
        seq_dtype=torch.int64,
        max_extend_len=3,
        total_len=6,
        page_size=16,
    )
    run.seq.copy_(torch.tensor(GARBAGE))
    if mode == "draft_extend":
        run.ext.copy_(torch.tensor([2**31 - 1, -3, 3, -(2**31), 2], dtype=torch.int32))
    run.call()
    for name, c in run.canaries.items():
        c.assert_margins(name)
    tail = {
        "cache_seqlens": run.bs,
        "cu_seqlens_k": run.bs + 1,
        "dsa_cache_seqlens": run.rows,
        "seqlens_expanded": run.rows,
        "dsa_cu_seqlens_k": run.rows + 1,
    }
    for name, n in tail.items():
        if name in run.canaries:
            run.canaries[name].assert_poisoned_from(n, name)
    for name in ("page_table_1", "real_page_table"):
        run.canaries[name].assert_poisoned_from(run.rows, name)


def test_varlen_negative_earlier_length_moves_no_row_before_the_buffer():
    # ext = [-3, 2]: the second request's rows must not start at -3.
    run = _run(
        "draft_extend", kv=[5, 5], qo=[0, 2], max_extend_len=2, total_len=2, page_size=4, width=8
    )
    run.ext.copy_(torch.tensor([-3, 2], dtype=torch.int32))
    run.call()
    for name, c in run.canaries.items():
        c.assert_margins(name)
    assert run.canaries["seqlens_expanded"].view[:2].tolist() == [4, 5]


# --------------------------------------------------------------------------- status
@pytest.mark.parametrize("static", [False, True])
def test_draft_extend_status(static):
    run = _run("draft_extend", static=static, qo=[1, 2, 0, 3, 2], max_extend_len=3, total_len=5)
    status = torch.full((2,), -9, dtype=torch.int64, device=DEVICE)
    run.call(fn=lambda **kw: modes.launch_draft_extend(*kw.values(), status=status))
    needed = 15 if static else 8
    assert status.tolist() == [needed, 1]
    assert DraftExtendStatus.read(status) == DraftExtendStatus(rows=needed, overflow=1)
    run.check()  # the first total_len rows, nothing past them
    ok = _run("draft_extend", static=static, qo=[1, 2, 0, 3, 2], max_extend_len=3)
    ok.call(fn=lambda **kw: modes.launch_draft_extend(*kw.values(), status=status))
    assert status.tolist() == [needed, 0]


def test_status_overlap_rejected():
    run = _run("draft_extend")
    status = run.canaries["dsa_cu_seqlens_k"].view[:4].view(torch.int64)
    with pytest.raises(ValueError, match="dsa_cu_seqlens_k and status overlap"):
        run.call(fn=lambda **kw: modes.plan_draft_extend(*kw.values(), status=status))
    _assert_nothing_written(run)


# --------------------------------------------------------------------------- variants
def test_compiled_variants_over_a_sweep():
    # bs, widths, total_len and lengths are run-time arguments: the constexprs (what Triton
    # compiles a variant for, next to pointer alignment) stay within two width buckets x the
    # flat-chunk buckets per (mode, page size, tables present).
    seen = {m: set() for m in MODES}
    for bs in (1, 7, 32, 128, 600):
        for width in (1, 100, 128, 129, 2048):
            for mode in MODES:
                run = _run(
                    mode,
                    kv=[1] * bs,
                    qo=[2] * bs,
                    max_extend_len=2,
                    static=True,
                    width=width,
                    page_size=64,
                    slack=0,
                    col_slack=0,
                )
                plan = run.call(fn=lambda mode=mode, **kw: PLAN[mode](*kw.values()))
                seen[mode].add(tuple(sorted(plan.kwargs.items())))
    for mode, variants in seen.items():
        # {narrow, wide} tiles x the 3 flat buckets the sweep reaches (32, 256, 1024 or 4096),
        # plus the one-request wide tile of bs <= SMALL_BATCH with the buckets small bs reach
        assert 6 <= len(variants) <= 7, (mode, variants)
        assert {dict(v)["BLOCK_B"] for v in variants} == {1, 4, 32}, (mode, variants)
    # Without page_table_1 (the decode graph's case): one bucket for every width.
    assert len({pick_blocks(w, 64, False) for w in (1, 100, 8192, 131072)}) == 1
    # Production widths land in the wide bucket too (no table of that size allocated here).
    assert {pick_blocks(w, 64) for w in (8192, 65536, 131072, 1 << 20)} == {pick_blocks(2048, 64)}


def test_small_batch_shapes_keep_the_grid_small():
    # The one-request, half-wide and row-split shapes pay off only while the SMs are idle
    # (H100: splitting rows over 1024+ programs was slower); the rule must keep them there.
    for width in (129, 2048, 8192, 65536, 131072):
        for bs in range(1, 65):
            for rows in (1, 2, 4, 8, 16):
                block_b, block_n = pick_blocks(width, 64, True, bs)
                assert (block_b == 1) == (bs <= SMALL_BATCH), (width, bs)
                col_blocks = -(-width // block_n)
                split = split_rows(bs, rows, block_b, col_blocks)
                programs = grid_size(bs, width, block_b, block_n, rows if split else 1)[0]
                if split:
                    assert 1 < rows <= 8 and programs - 1 <= MAX_TINY_PROGRAMS, (width, bs, rows)
                if block_n == TINY_BLOCK_N:
                    assert bs * col_blocks <= MAX_TINY_PROGRAMS, (width, bs)
    # production points: split at bs 1 of an 8192-wide table, never at 131072
    assert split_rows(1, 4, 1, 8192 // TINY_BLOCK_N)
    assert not split_rows(1, 4, 1, 131072 // TINY_BLOCK_N)
    assert pick_blocks(131072, 64, True, 8) == (1, 1024)


# --------------------------------------------------------------------------- check=True
def _all_valid_cases():
    from test_modes_kernels import DECODE_CASES, DRAFT_CASES, VERIFY_CASES

    for mode, cases in (
        ("decode", DECODE_CASES),
        ("target_verify", VERIFY_CASES),
        ("draft_extend", DRAFT_CASES),
    ):
        for name, kw in cases.items():
            yield pytest.param(mode, kw, id=f"{mode}-{name}")


@pytest.mark.parametrize("mode, kw", list(_all_valid_cases()))
def test_data_checks_accept_every_valid_case(mode, kw):
    # check=True must not reject what SGLang accepts (padded rows, cut totals, empty batches).
    run = ModeRun(mode, **kw)
    _checked_call(run)
    run.check()


# --------------------------------------------------------------------------- ints that size blocks
# next_n and max_extend_len set the block that holds a request's rows (its next power of two);
# past Triton's 2**20 entries the launch failed inside Triton ("numel exceeds triton maximum").
# The planners refuse them first, naming the argument; the buffers here are large enough that
# only that bound can refuse the call.
def _plain(n, dtype=torch.int32):
    return torch.zeros(n, dtype=dtype, device=DEVICE)


def _verify_args(next_n, bs=1, width=64, pages=1):
    rows = bs * next_n
    return (_plain(bs, torch.int64), _plain(bs, torch.int64), _plain((bs, width)), _plain(bs),
            _plain(bs + 1), None, _plain(rows), _plain(rows), _plain(rows + 1),
            _plain((rows, pages)), bs, width, 64, 64, next_n)


def _draft_static_args(max_extend_len, bs=1, width=64, pages=1):
    rows = bs * max_extend_len
    return (_plain(bs, torch.int64), _plain(bs), _plain(bs, torch.int64), _plain((bs, width)),
            _plain(bs), _plain(bs + 1), None, _plain(rows), _plain(rows), _plain(rows + 1),
            _plain((rows, pages)), bs, rows, width, 64, 64, max_extend_len, rows, True)


def test_next_n_past_the_row_block_refused():
    with pytest.raises(ValueError, match=r"next_n must lie in \[1, 4096\], got 2097152"):
        modes.plan_target_verify(*_verify_args(2**21))
    assert modes.plan_target_verify(*_verify_args(4096)).kwargs["BLOCK_J"] == 4096


def test_static_max_extend_len_past_the_row_block_refused():
    with pytest.raises(ValueError, match=r"max_extend_len must lie in \[0, 4096\], got 4194304"):
        modes.plan_draft_extend(*_draft_static_args(2**22))
    assert modes.plan_draft_extend(*_draft_static_args(4096)).kwargs["BLOCK_J"] == 4096


def test_grid_past_cuda_limit_refused():
    with pytest.raises(ValueError, match="more than a grid holds"):
        grid_size(2**20, 2**40, 1, 1024)
