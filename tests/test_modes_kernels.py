"""The three fused modes (``nsa_kernels.compat.sglang``) against their references, on poisoned
buffers with canary margins.

What must hold after a call (``reference`` gives exactly SGLang's written ranges):

* each flat array equals the reference over its written range and keeps the poison after it;
* each page-table row of the first ``rows`` rows equals the reference on its live prefix and
  keeps the poison past it (columns past ``max_len`` included); rows from ``rows`` on keep
  the poison; ``page_table_1=None`` leaves the wide table untouched;
* nothing is written around any buffer (1-D margins, margin rows and columns of the tables).
"""
import inspect

import nsa_kernels as nk  # noqa: F401  (first: interpreter switch)
from nsa_kernels.compat import sglang as compat
from nsa_kernels.modes import reference as ref_mod
from nsa_kernels.testing import DEVICE, Canary, assert_equal, assert_poisoned
from nsa_kernels.testing.strategies import cheap_sizes, examples

import numpy as np
import pytest
import torch
import triton
from hypothesis import given
from hypothesis import strategies as st

BOUNDARY_KV = [0, 1, 63, 64, 65, 2047, 2048, 2049]


class ModeRun:
    """Inputs, canary outputs, the call and the check of one mode on one case."""

    def __init__(self, mode, kv, *, width, page_size=64, topk=64, next_n=2, qo=None,
                 total_len=None, max_extend_len=None, static=False, has_pt1=True, has_ctx=False,
                 seq_dtype=torch.int64, pool_dtype=torch.int64, r2t_dtype=torch.int32,
                 strided_r2t=False, slack=3, col_slack=3, max_total_len=None, seed=0,
                 real_is_page_table_1=False):
        g = torch.Generator().manual_seed(seed)
        self.mode, self.width, self.page_size, self.topk = mode, width, page_size, topk
        self.next_n, self.static, self.has_ctx = next_n, static, has_ctx
        self.bs = bs = len(kv)
        self.seq = torch.tensor(kv, dtype=seq_dtype, device=DEVICE)
        pool_rows = 2 * bs + 3
        cols = width + 5
        table = torch.randint(0, 1 << 24, (pool_rows, cols + (11 if strided_r2t else 0)),
                              generator=g, dtype=torch.int64)
        self.r2t = table.to(DEVICE, r2t_dtype)
        if strided_r2t:
            self.r2t = self.r2t[:, :cols]
        self.pool = torch.randperm(pool_rows, generator=g)[:bs].to(DEVICE, pool_dtype)
        if mode == "draft_extend":
            self.max_extend_len = max_extend_len if max_extend_len is not None else max(
                [4] + list(qo or []))
            if static:
                qo = [self.max_extend_len] * bs
            self.ext = torch.tensor(qo, dtype=torch.int32, device=DEVICE)
            full = int(sum(qo))
            self.total_len = full if total_len is None else total_len
            self.max_total_len = max_total_len if max_total_len is not None else max(
                bs * self.max_extend_len, self.total_len)
            rows = self.total_len if bs else 0
        elif mode == "target_verify":
            rows = bs * next_n
        else:
            rows = bs
        self.rows = rows
        pages = triton.cdiv(width, page_size) + 1
        sizes = dict(cache_seqlens=bs + slack, cu_seqlens_k=bs + 1 + slack,
                     dsa_cache_seqlens=rows + slack, dsa_cu_seqlens_k=rows + 1 + slack,
                     page_table_1=(rows + slack, width + col_slack))
        if mode != "decode":
            sizes["seqlens_expanded"] = rows + slack
        if page_size > 1:
            sizes["real_page_table"] = (rows + slack, pages)
        self.canaries = {name: Canary(shape) for name, shape in sizes.items()}
        if has_ctx:  # SGLang's is a plain [bs, next_n] tensor: carve a contiguous one
            c = self.canaries["paged_mqa_ctx_lens_2d"] = Canary(bs * next_n)
            c.view2d = c.view.view(bs, next_n)
        self.has_pt1 = has_pt1
        self.real_is_page_table_1 = real_is_page_table_1

    def view(self, name):
        if name == "page_table_1" and not self.has_pt1:
            return None
        if name == "real_page_table" and self.page_size == 1:
            return self.view("page_table_1") if self.real_is_page_table_1 else None
        if name == "paged_mqa_ctx_lens_2d":
            return self.canaries[name].view2d if self.has_ctx else None
        return self.canaries[name].view

    def call(self, fn=None, **overrides):
        v = self.view
        if self.mode == "decode":
            args = dict(seq_lens=self.seq, req_pool_indices=self.pool, req_to_token=self.r2t,
                        cache_seqlens=v("cache_seqlens"), cu_seqlens_k=v("cu_seqlens_k"),
                        page_table_1=v("page_table_1"), dsa_cache_seqlens=v("dsa_cache_seqlens"),
                        dsa_cu_seqlens_k=v("dsa_cu_seqlens_k"),
                        real_page_table=v("real_page_table"), bs=self.bs, max_len=self.width,
                        dsa_index_topk=self.topk, physical_page_size=self.page_size)
            fn = fn or compat.fused_dsa_decode_metadata
        elif self.mode == "target_verify":
            args = dict(seq_lens=self.seq, req_pool_indices=self.pool, req_to_token=self.r2t,
                        cache_seqlens=v("cache_seqlens"), cu_seqlens_k=v("cu_seqlens_k"),
                        page_table_1=v("page_table_1"), seqlens_expanded=v("seqlens_expanded"),
                        dsa_cache_seqlens=v("dsa_cache_seqlens"),
                        dsa_cu_seqlens_k=v("dsa_cu_seqlens_k"),
                        real_page_table=v("real_page_table"), bs=self.bs,
                        max_seqlen_k=self.width, dsa_index_topk=self.topk,
                        physical_page_size=self.page_size, next_n=self.next_n,
                        paged_mqa_ctx_lens_2d=v("paged_mqa_ctx_lens_2d"))
            fn = fn or compat.fused_dsa_target_verify_metadata
        else:
            args = dict(seq_lens=self.seq, extend_seq_lens=self.ext, req_pool_indices=self.pool,
                        req_to_token=self.r2t, cache_seqlens=v("cache_seqlens"),
                        cu_seqlens_k=v("cu_seqlens_k"), page_table_1=v("page_table_1"),
                        seqlens_expanded=v("seqlens_expanded"),
                        dsa_cache_seqlens=v("dsa_cache_seqlens"),
                        dsa_cu_seqlens_k=v("dsa_cu_seqlens_k"),
                        real_page_table=v("real_page_table"), bs=self.bs,
                        total_len=self.total_len, max_seqlen_k=self.width,
                        dsa_index_topk=self.topk, physical_page_size=self.page_size,
                        max_extend_len=self.max_extend_len, max_total_len=self.max_total_len,
                        static_extend_len=self.static)
            fn = fn or compat.fused_dsa_draft_extend_metadata
        args.update(overrides)
        return fn(**args)

    def reference(self):
        if self.mode == "decode":
            return ref_mod.decode_reference(self.seq, self.pool, self.r2t, self.bs, self.width,
                                            self.topk, self.page_size)
        if self.mode == "target_verify":
            return ref_mod.target_verify_reference(self.seq, self.pool, self.r2t, self.bs,
                                                   self.width, self.topk, self.page_size,
                                                   self.next_n)
        return ref_mod.draft_extend_reference(self.seq, self.ext, self.pool, self.r2t, self.bs,
                                              self.rows, self.width, self.topk, self.page_size,
                                              self.max_extend_len, self.static)

    def check(self):
        """Every buffer against the reference; see the module docstring."""
        ref = self.reference()
        for name in ("cache_seqlens", "cu_seqlens_k", "seqlens_expanded", "dsa_cache_seqlens",
                     "dsa_cu_seqlens_k"):
            if name not in self.canaries:
                continue
            got = self.canaries[name].view.cpu()
            n = ref[name].shape[0]
            assert_equal(got[:n], ref[name].to(torch.int32), name)
            assert_poisoned(got[n:], what=f"{name}[{n}:]")
        if self.has_ctx:
            assert_equal(self.canaries["paged_mqa_ctx_lens_2d"].view2d.cpu(),
                         ref["paged_mqa_ctx_lens_2d"].to(torch.int32), "paged_mqa_ctx_lens_2d")
        tables = [("real_page_table", "real_live_cols")] if self.page_size > 1 else []
        if self.has_pt1:
            tables.append(("page_table_1", "live_cols"))
        for name, live_name in tables:
            got = self.canaries[name].view.cpu()
            expected, live = ref[name], ref[live_name]
            rows = expected.shape[0]
            assert rows == self.rows, (name, rows, self.rows)
            written = torch.arange(got.shape[1])[None, :] < live[:, None]
            padded = torch.zeros((rows, got.shape[1]), dtype=torch.int64)
            padded[:, :expected.shape[1]] = expected
            assert_equal(got[:rows][written], padded[written].to(torch.int32), f"{name} (live)")
            assert_poisoned(got[:rows][~written], what=f"{name} past the live prefix")
            assert_poisoned(got[rows:], what=f"{name}[{rows}:]")
        if not self.has_pt1:
            self.canaries["page_table_1"].assert_unchanged("page_table_1 (None: never written)")
        for name, c in self.canaries.items():
            c.assert_margins(name)
        return ref


def kv_mix(bs, width, seed, extra=()):
    """Boundary lengths first, then random ones up to past the width."""
    rng = np.random.default_rng(seed)
    values = list(extra) + [v for v in BOUNDARY_KV if v <= 2 * width + 2]
    out = [values[i % len(values)] if i < len(values) else int(rng.integers(0, 2 * width + 2))
           for i in range(bs)]
    return out


# --------------------------------------------------------------------------- decode
DECODE_CASES = {
    "bs0": dict(kv=[], width=64),
    # empty contexts at small bs: only cache_seqlens[:bs] written, the slack keeps its poison
    "bs1_empty_context": dict(kv=[0], width=64),
    "bs2_empty_contexts": dict(kv=[0, 0], width=300, has_pt1=False),
    "bs1_kv0": dict(kv=[0], width=64),
    "boundaries_w128": dict(kv=kv_mix(9, 128, 1), width=128, page_size=64),
    "boundaries_w2048": dict(kv=kv_mix(10, 2048, 2), width=2048, page_size=64, topk=2048),
    "boundaries_w2049": dict(kv=kv_mix(10, 2049, 3), width=2049, page_size=16, topk=64),
    "no_page_table_1": dict(kv=kv_mix(8, 1100, 4), width=1100, has_pt1=False),
    "page_size_1": dict(kv=kv_mix(6, 300, 5), width=300, page_size=1),
    "page_size_1_real_is_pt1": dict(kv=kv_mix(6, 300, 5), width=300, page_size=1,
                                    real_is_page_table_1=True),
    "page_size_1024": dict(kv=kv_mix(5, 3000, 6), width=3000, page_size=1024),
    "int32_inputs_strided_r2t": dict(kv=kv_mix(7, 500, 7), width=500, seq_dtype=torch.int32,
                                     pool_dtype=torch.int32, strided_r2t=True),
    "int64_req_to_token": dict(kv=kv_mix(5, 200, 8), width=200, r2t_dtype=torch.int64),
    "topk_1": dict(kv=kv_mix(5, 200, 9), width=200, topk=1),
    # past SMALL_BATCH: multi-request page tiles and the 256-row flat chunk
    "bs40_multi_request_tiles": dict(kv=kv_mix(40, 1100, 40), width=1100),
    "bs37_no_page_table_1": dict(kv=kv_mix(37, 700, 41), width=700, has_pt1=False),
}


@pytest.mark.parametrize("name", list(DECODE_CASES))
def test_decode_matches_reference(name):
    run = ModeRun("decode", **DECODE_CASES[name])
    run.call()
    run.check()


# --------------------------------------------------------------------------- target verify
VERIFY_CASES = {
    "bs0": dict(kv=[], width=64, next_n=2),
    "bs1_empty_context": dict(kv=[0], width=64, next_n=2, has_ctx=True),
    "bs2_empty_contexts": dict(kv=[0, 0], width=300, next_n=4),
    "next_n_2": dict(kv=kv_mix(9, 130, 10, extra=[62, 126, 127, 128]), width=130, next_n=2),
    "next_n_4_ctx": dict(kv=kv_mix(9, 2049, 11, extra=[2044, 2045, 2046]), width=2049,
                         next_n=4, has_ctx=True, topk=2048),
    "next_n_1": dict(kv=kv_mix(5, 100, 12), width=100, next_n=1, has_ctx=True),
    "no_page_table_1": dict(kv=kv_mix(8, 700, 13), width=700, next_n=3, has_pt1=False),
    "page_size_1": dict(kv=kv_mix(6, 300, 14), width=300, page_size=1, next_n=2),
    "int32_inputs": dict(kv=kv_mix(6, 300, 15), width=300, next_n=4, seq_dtype=torch.int32,
                         pool_dtype=torch.int32, strided_r2t=True, has_ctx=True),
    "bs35_multi_request_tiles": dict(kv=kv_mix(35, 1030, 42), width=1030, next_n=3,
                                     has_ctx=True),
}


@pytest.mark.parametrize("name", list(VERIFY_CASES))
def test_target_verify_matches_reference(name):
    run = ModeRun("target_verify", **VERIFY_CASES[name])
    run.call()
    run.check()


# --------------------------------------------------------------------------- draft extend
def _qo(bs, max_qo, seed):
    return np.random.default_rng(seed).integers(0, max_qo + 1, bs).tolist()


DRAFT_CASES = {
    "bs0": dict(kv=[], qo=[], width=64, total_len=0),
    # total_len = 0 at small bs (SGLang's early return; its copy_ broadcasts at bs 1): only
    # cache_seqlens[:bs] and cu_seqlens_k[:bs + 1] written
    "varlen_bs1_no_rows": dict(kv=[70], qo=[0], width=100),
    "varlen_bs2_no_rows": dict(kv=[70, 0], qo=[0, 0], width=100),
    "varlen_bs1_cut_to_no_rows": dict(kv=[70], qo=[3], width=100, total_len=0),
    "static_bs1_no_rows": dict(kv=[70], width=100, static=True, max_extend_len=2, total_len=0),
    "varlen_bs1_empty_context": dict(kv=[0], qo=[2], width=100),
    "static_2": dict(kv=kv_mix(9, 130, 20), width=130, static=True, max_extend_len=2),
    "static_4_padded_rows": dict(kv=[1, 0, 3, 70, 2049, 1], width=2049, static=True,
                                 max_extend_len=4, topk=2048),
    "static_partial_bucket": dict(kv=kv_mix(5, 200, 21), width=200, static=True,
                                  max_extend_len=3, max_total_len=64),
    "static_cut_total_len": dict(kv=kv_mix(5, 200, 22), width=200, static=True,
                                 max_extend_len=3, total_len=7),
    "static_no_page_table_1": dict(kv=kv_mix(6, 1500, 23), width=1500, static=True,
                                   max_extend_len=2, has_pt1=False),
    "varlen": dict(kv=kv_mix(10, 300, 24), qo=_qo(10, 4, 24), width=300),
    "varlen_padded_rows": dict(kv=[2, 1, 0, 100, 3], qo=[3, 4, 2, 4, 4], width=90),
    "varlen_zero_lengths": dict(kv=kv_mix(8, 100, 25), qo=[0, 0, 3, 0, 1, 0, 0, 2], width=100),
    "varlen_all_zero": dict(kv=kv_mix(4, 100, 26), qo=[0, 0, 0, 0], width=100),
    "varlen_cut_total_len": dict(kv=kv_mix(8, 100, 27), qo=[3, 1, 4, 2, 2, 4, 1, 3], width=100,
                                 total_len=9),
    "varlen_long_extends": dict(kv=kv_mix(5, 600, 28, extra=[600, 400]),
                                qo=[33, 0, 17, 40, 5], width=600, max_extend_len=40),
    "varlen_page_size_1": dict(kv=kv_mix(6, 200, 29), qo=_qo(6, 4, 29), width=200, page_size=1),
    "varlen_no_page_table_1": dict(kv=kv_mix(6, 200, 30), qo=_qo(6, 4, 30), width=200,
                                   has_pt1=False, page_size=16),
    "varlen_split_rows_zero_and_cut": dict(kv=kv_mix(7, 300, 45), qo=[0, 3, 1, 0, 4, 2, 0],
                                           width=300, max_extend_len=4, total_len=6),
    "static_bs33_multi_request_tiles": dict(kv=kv_mix(33, 1100, 43), width=1100, static=True,
                                            max_extend_len=2),
    "varlen_bs34_multi_request_tiles": dict(kv=kv_mix(34, 1100, 44), qo=_qo(34, 3, 44),
                                            width=1100, max_extend_len=3),
}


@pytest.mark.parametrize("name", list(DRAFT_CASES))
def test_draft_extend_matches_reference(name):
    run = ModeRun("draft_extend", **DRAFT_CASES[name])
    run.call()
    run.check()


def test_draft_extend_padded_rows_by_hand():
    # kv 2 < qo 3: values max(2 - 3 + j + 1, 0) = 0, 1, 2; kv 5, qo 1: 5. topk 1 -> 0, 1, 1, 1.
    run = ModeRun("draft_extend", [2, 5], qo=[3, 1], width=8, page_size=4, topk=1)
    run.call()
    ref = run.check()
    P = -123456
    assert run.canaries["seqlens_expanded"].view.tolist() == [0, 1, 2, 5, P, P, P]
    assert run.canaries["dsa_cache_seqlens"].view.tolist() == [0, 1, 1, 1, P, P, P]
    assert run.canaries["dsa_cu_seqlens_k"].view.tolist() == [0, 0, 1, 2, 3, P, P, P]
    assert run.canaries["cu_seqlens_k"].view.tolist() == [0, 2, 7, P, P, P]
    assert ref["live_cols"].tolist() == [2, 2, 2, 5]


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("mode", ["decode", "target_verify", "draft_extend"])
def test_large_batch_width_1(mode):
    # bs 16384: the flat program walks 16 chunks with a carry; width 1 page rows.
    bs = 16384
    kv = np.random.default_rng(31).integers(0, 5, bs).tolist()
    run = ModeRun(mode, kv, width=1, page_size=1, next_n=2, static=True, max_extend_len=2,
                  qo=None)
    run.call()
    run.check()


@pytest.mark.parametrize("mode", ["decode", "target_verify", "draft_extend"])
def test_long_contexts_topk_4096(mode):
    # 100k and ~1M-token contexts, topk 4096: prefix sums past 2**21, many column blocks.
    kv = [100_000, 4095, 1_000_000 - 7, 4097]
    run = ModeRun(mode, kv, width=1_000_000, page_size=64, topk=4096, next_n=2, static=True,
                  max_extend_len=2, has_pt1=False, col_slack=0)
    run.call()
    run.check()


# --------------------------------------------------------------------------- property
_CHEAP = cheap_sizes()


@st.composite
def mode_runs(draw):
    mode = draw(st.sampled_from(["decode", "target_verify", "draft_extend"]))
    bs = draw(st.integers(0, 9 if _CHEAP else 300))
    width = draw(st.one_of(st.integers(1, 1300), st.sampled_from([1, 127, 128, 129, 1024, 1025])))
    page_size = draw(st.sampled_from([1, 2, 16, 64]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kv = rng.integers(0, 2 * width + 3, bs).tolist()
    static = draw(st.booleans())
    max_extend_len = draw(st.integers(1, 6))
    qo = rng.integers(0, max_extend_len + 1, bs).tolist()
    full = bs * max_extend_len if static else sum(qo)
    total_len = draw(st.integers(0, full)) if draw(st.booleans()) else full
    return ModeRun(mode, kv, width=width, page_size=page_size,
                   topk=draw(st.sampled_from([1, 64, 2048, 4096])),
                   next_n=draw(st.integers(1, 4)), qo=qo, total_len=total_len,
                   max_extend_len=max_extend_len, static=static,
                   has_pt1=page_size == 1 or draw(st.booleans()),
                   has_ctx=mode == "target_verify" and bs > 0 and draw(st.booleans()),
                   seq_dtype=draw(st.sampled_from([torch.int32, torch.int64])),
                   strided_r2t=draw(st.booleans()), seed=seed)


@examples(20)
@given(run=mode_runs())
def test_property_modes(run):
    run.call()
    run.check()


# --------------------------------------------------------------------------- bound fills
@pytest.mark.parametrize("mode", ["decode", "target_verify", "draft_extend"])
def test_fill_follows_changing_contents(mode):
    # A *Fill binds static buffers once; every call must follow the inputs' current contents.
    from nsa_kernels import modes
    run = ModeRun(mode, kv_mix(6, 300, 40), width=300, page_size=16, next_n=3,
                  qo=[1, 2, 0, 4, 3, 1], max_extend_len=4)
    fill_class = {"decode": modes.DecodeFill, "target_verify": modes.TargetVerifyFill,
                  "draft_extend": modes.DraftExtendFill}[mode]
    fill = run.call(fn=lambda **kw: fill_class(*kw.values()))
    for seed in (41, 42):
        rng = np.random.default_rng(seed)
        run.seq.copy_(torch.tensor(rng.integers(0, 600, 6)))
        run.pool.copy_(run.pool.flip(0).clone())
        if mode == "draft_extend":
            run.ext.copy_(torch.tensor(rng.permutation(run.ext.cpu().numpy())))
        for c in run.canaries.values():
            c.base.fill_(c.poison)
        fill()
        run.check()


# --------------------------------------------------------------------------- compat
def _sglang_metadata():
    from nsa_kernels.peers import sglang
    try:
        return sglang.load(require_gpu=False).metadata
    except sglang.PeerUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", ["fused_dsa_decode_metadata", "fused_dsa_target_verify_metadata",
                                  "fused_dsa_draft_extend_metadata"])
def test_compat_signature_is_sglangs(name):
    # Names, order, defaults and annotations of the parameters, read from SGLang's own file.
    # Ours adds one keyword-only ``check=False`` after them, which no SGLang call passes.
    theirs = inspect.signature(getattr(_sglang_metadata(), name))
    ours = inspect.signature(getattr(compat, name))
    extra = ours.parameters["check"]
    assert (extra.kind, extra.default) == (inspect.Parameter.KEYWORD_ONLY, False)
    ours = ours.replace(parameters=[p for p in ours.parameters.values() if p.name != "check"])
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
           [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
    assert str(ours) == str(theirs)
