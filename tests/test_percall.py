"""Per-call entry points with cached plans: the compat ``fused_dsa_*`` functions,
``launch_extend`` and ``extend_metadata``.

A cache hit must skip only what the key proves unchanged: every test here either changes the
contents between cached calls and compares with the reference, or changes one piece of
metadata and expects a miss, or passes a bad argument under a new key and expects the checks.
"""
import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines
from nsa_kernels.compat import sglang as compat
from nsa_kernels.launcher import PlanCache
from nsa_kernels.modes import extend as ex
from nsa_kernels.modes.extend_reference import EXTEND_KEYS, extend_reference
from nsa_kernels.testing import assert_equal

import pytest
import torch
from test_extend import CanaryBuffers, make_case, random_lengths
from test_modes_kernels import ModeRun, kv_mix

assert nk.DEVICE is not None
CACHE_NAMES = {"decode": "DECODE_PLANS", "target_verify": "VERIFY_PLANS",
               "draft_extend": "DRAFT_EXTEND_PLANS"}
MODES = list(CACHE_NAMES)


@pytest.fixture
def fresh_caches(monkeypatch):
    """Empty caches for this test, so that hit and miss counts start at zero."""
    caches = {mode: PlanCache(maxsize=32) for mode in MODES}
    for mode, name in CACHE_NAMES.items():
        monkeypatch.setattr(compat, name, caches[mode])
    monkeypatch.setattr(ex, "PLANS", PlanCache(maxsize=32))
    monkeypatch.setattr(ex, "ALLOCATING_PLANS", PlanCache(maxsize=32))
    return caches


def mode_run(mode, seed=0, **kwargs):
    kv = kv_mix(6, 300, seed)
    extra = dict(qo=[min(k, 3) for k in kv]) if mode == "draft_extend" else {}
    if mode == "target_verify":
        extra = dict(next_n=2, has_ctx=True)
    return ModeRun(mode, kv, width=300, seed=seed, **{**extra, **kwargs})


def scramble_table(run, seed):
    """New ``req_to_token`` contents in place: same metadata, so the next call hits."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 1 << 24, run.r2t.shape, generator=g, dtype=torch.int64)
    run.r2t.copy_(values.to(run.r2t.device, run.r2t.dtype))


# --------------------------------------------------------------------------- compat
@pytest.mark.parametrize("mode", MODES)
def test_compat_hits_and_follows_contents(mode, fresh_caches):
    cache = fresh_caches[mode]
    run = mode_run(mode)
    for i in range(3):
        scramble_table(run, 100 + i)
        if mode == "decode":  # new lengths too: the data are never part of the key
            run.seq.copy_(torch.tensor(kv_mix(6, 300, 50 + i), dtype=run.seq.dtype))
        for c in run.canaries.values():  # the last call's longer rows must not count
            c.view.fill_(nk.testing.POISON)
        run.call()
        run.check()
        assert (cache.misses, cache.hits) == (1, i), (cache.misses, cache.hits)


METADATA_CHANGES = {
    "pointer": lambda run: dict(seq_lens=run.seq.clone()),
    "shape": lambda run: dict(cu_seqlens_k=run.canaries["cu_seqlens_k"].view[:run.bs + 1]),
    "int": lambda run: dict(dsa_index_topk=run.topk + 1),
    "optional tensor": lambda run: dict(page_table_1=None),
}


@pytest.mark.parametrize("change", list(METADATA_CHANGES))
@pytest.mark.parametrize("mode", MODES)
def test_compat_misses_on_changed_metadata(mode, change, fresh_caches):
    cache = fresh_caches[mode]
    run = mode_run(mode)
    run.call()
    run.call(**METADATA_CHANGES[change](run))
    assert (cache.misses, cache.hits) == (2, 0)


def test_compat_bool_is_part_of_the_key(fresh_caches):
    cache = fresh_caches["draft_extend"]
    run = mode_run("draft_extend", static=True)
    run.call()
    run.check()
    run.call(static_extend_len=False)  # all qo equal max_extend_len: the same entries
    assert (cache.misses, cache.hits) == (2, 0)
    run.check()
    with pytest.raises(TypeError, match="static_extend_len"):  # 1 is not True: checked, refused
        run.call(static_extend_len=1)
    assert len(cache) == 2


def test_compat_cache_is_bounded(monkeypatch):
    cache = PlanCache(maxsize=2)
    monkeypatch.setattr(compat, "DECODE_PLANS", cache)
    run = mode_run("decode")
    for topk in (5, 6, 7, 8):
        run.call(dsa_index_topk=topk)
    assert len(cache) == 2 and cache.misses == 4
    run.call(dsa_index_topk=5)  # evicted: planned again
    assert cache.misses == 5


BAD_CALLS = {  # each under a key the good call did not make
    "bs past seq_lens": (ValueError, "seq_lens", lambda run: dict(bs=run.bs + 1)),
    "float seq_lens": (TypeError, "seq_lens", lambda run: dict(seq_lens=run.seq.float())),
    "short cu_seqlens_k": (ValueError, "cu_seqlens_k",
                           lambda run: dict(cu_seqlens_k=run.canaries["cu_seqlens_k"].view[:2])),
    "list req_pool_indices": (TypeError, "req_pool_indices",
                              lambda run: dict(req_pool_indices=run.pool.tolist())),
}


@pytest.mark.parametrize("bad", list(BAD_CALLS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("after_good_call", [False, True])
def test_compat_bad_argument_raises_whatever_was_cached(mode, bad, after_good_call,
                                                        fresh_caches):
    error, match, change = BAD_CALLS[bad]
    run = mode_run(mode)
    if after_good_call:
        run.call()
        run.call()
        assert fresh_caches[mode].hits == 1
    before = {name: c.view.clone() for name, c in run.canaries.items()}
    with pytest.raises(error, match=match):
        run.call(**change(run))
    for name, c in run.canaries.items():
        assert_equal(c.view, before[name], f"{name} after a rejected call")
    with pytest.raises(error, match=match):  # and again: a failed key is never stored
        run.call(**change(run))


# --------------------------------------------------------------------------- launch_extend
def test_launch_extend_hits_and_follows_contents(fresh_caches):
    bs = 5
    seq_lens, ext, pool, table = make_case(*random_lengths(bs, 0), width=900, pool_rows=9)
    bufs = CanaryBuffers(bs + 2, 5 * 300 + 3, 5 * 900 + 7)
    status = torch.empty(ex.STATUS_ENTRIES, dtype=torch.int64, device=nk.DEVICE)
    for i in range(3):
        qo, kv = random_lengths(bs, 10 + i)
        seq_lens.copy_(torch.tensor(kv, dtype=seq_lens.dtype))
        ext.copy_(torch.tensor(qo, dtype=ext.dtype))
        for c in bufs.canaries.values():
            c.view.fill_(nk.testing.POISON)
        result = ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, status)
        assert result is status
        bufs.check(extend_reference(seq_lens, ext, pool, table, 64), bs)
        assert ex.decode_status(status)["n_tokens"] == sum(qo)
    assert (ex.PLANS.misses, ex.PLANS.hits) == (1, 2)


def test_launch_extend_repoints_its_own_status(fresh_caches):
    seq_lens, ext, pool, table = make_case([3, 5], [10, 7])
    bufs = CanaryBuffers(4, 20, 40)
    first = ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers)
    ext.copy_(torch.tensor([1, 2], dtype=ext.dtype))
    second = ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers)
    assert (ex.PLANS.misses, ex.PLANS.hits) == (1, 1)
    assert first.data_ptr() != second.data_ptr()
    assert ex.decode_status(first)["n_tokens"] == 8, "the second call wrote the first status"
    assert ex.decode_status(second)["n_tokens"] == 3


def test_launch_extend_misses_on_changed_metadata(fresh_caches):
    seq_lens, ext, pool, table = make_case([3, 5], [10, 7])
    bufs = CanaryBuffers(4, 20, 40)
    status = torch.empty(ex.STATUS_ENTRIES, dtype=torch.int64, device=nk.DEVICE)
    ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, status)
    ex.launch_extend(seq_lens, ext, pool, table, 65, bufs.buffers, status)
    ex.launch_extend(seq_lens, ext, pool, table.clone(), 64, bufs.buffers, status)
    ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, status.clone())
    ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, status, splits=2)
    assert (ex.PLANS.misses, ex.PLANS.hits) == (5, 0)


def test_launch_extend_bad_argument_after_cached_call(fresh_caches):
    seq_lens, ext, pool, table = make_case([3, 5], [10, 7])
    bufs = CanaryBuffers(4, 20, 40)
    status = torch.empty(ex.STATUS_ENTRIES, dtype=torch.int64, device=nk.DEVICE)
    ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, status)
    overlapping = ex.ExtendBuffers(**{**bufs.buffers.as_dict(),
                                      "indexer_ke": bufs.buffers.topk_indices_offset})
    for kwargs, error, match in [(dict(buffers=overlapping), ValueError, "overlap"),
                                 (dict(dsa_index_topk=0), ValueError, "dsa_index_topk"),
                                 (dict(seq_lens=seq_lens[:1]), ValueError, "one entry per")]:
        for c in bufs.canaries.values():
            c.view.fill_(nk.testing.POISON)
        args = dict(seq_lens=seq_lens, extend_seq_lens=ext, req_pool_indices=pool,
                    req_to_token=table, dsa_index_topk=64, buffers=bufs.buffers, status=status)
        args.update(kwargs)
        with pytest.raises(error, match=match):
            ex.launch_extend(**args)
        bufs.assert_unchanged()


def test_launch_extend_check_true_runs_data_checks_on_a_hit(fresh_caches):
    seq_lens, ext, pool, table = make_case([3, 5], [10, 7])
    bufs = CanaryBuffers(4, 20, 40)
    ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, check=True)
    ext[1] = 8  # qo > kv: the data check must see it although the key is the same
    with pytest.raises(ValueError, match="request 1"):
        ex.launch_extend(seq_lens, ext, pool, table, 64, bufs.buffers, check=True)


# --------------------------------------------------------------------------- extend_metadata
@pytest.mark.parametrize("mirrors", [False, True])
def test_extend_metadata_through_cached_plans(mirrors, fresh_caches):
    bs = 6
    seq_lens, ext, pool, table = make_case(*random_lengths(bs, 0), width=900, pool_rows=9)
    results = []
    for i in range(4):
        qo, kv = random_lengths(bs, 20 + i)
        seq_lens.copy_(torch.tensor(kv, dtype=seq_lens.dtype))
        ext.copy_(torch.tensor(qo, dtype=ext.dtype))
        table.copy_(torch.randint(0, 1 << 30, table.shape, dtype=table.dtype))
        extra = dict(seq_lens_cpu=torch.tensor(kv), extend_seq_lens_cpu=qo) if mirrors else {}
        got = ex.extend_metadata(seq_lens, ext, pool, table, 64, **extra)
        expected = extend_reference(seq_lens, ext, pool, table, 64)
        assert tuple(got) == EXTEND_KEYS
        for key in EXTEND_KEYS:
            assert got[key].dtype == torch.int32, key
            assert_equal(got[key], expected[key], key)
        results.append((got, expected))
    plans = ex.ALLOCATING_PLANS
    assert plans.misses + plans.hits == 4 and plans.hits >= 1, (plans.misses, plans.hits)
    for got, expected in results:  # every call's outputs are its own: later calls left them
        for key in EXTEND_KEYS:
            assert_equal(got[key], expected[key], f"{key}, after later calls")


def test_extend_metadata_reuses_a_plan_across_lengths_and_addresses(fresh_caches):
    for seed in range(3):  # new input tensors each time, lengths in one capacity bucket
        seq_lens, ext, pool, table = make_case([3, 5 + seed], [10, 20], seed=seed)
        got = ex.extend_metadata(seq_lens, ext, pool, table, 64)
        expected = extend_reference(seq_lens, ext, pool, table, 64)
        for key in EXTEND_KEYS:
            assert_equal(got[key], expected[key], key)
    assert (ex.ALLOCATING_PLANS.misses, ex.ALLOCATING_PLANS.hits) == (1, 2)


def test_extend_metadata_bad_argument_after_cached_call(fresh_caches):
    seq_lens, ext, pool, table = make_case([3, 5], [10, 7])
    ex.extend_metadata(seq_lens, ext, pool, table, 64)
    for kwargs, error, match in [
            (dict(dsa_index_topk=0), ValueError, "dsa_index_topk"),
            (dict(dsa_index_topk=True), TypeError, "dsa_index_topk"),
            (dict(req_to_token=table.float()), TypeError, "req_to_token"),
            (dict(req_pool_indices=pool[:1]), ValueError, "one entry per"),
            (dict(req_pool_indices=[0, 1]), TypeError, "req_pool_indices"),
            (dict(seq_lens_cpu=[10, 2], extend_seq_lens_cpu=[3, 5]), ValueError, "request 1")]:
        args = dict(seq_lens=seq_lens, extend_seq_lens=ext, req_pool_indices=pool,
                    req_to_token=table, dsa_index_topk=64)
        args.update(kwargs)
        with pytest.raises(error, match=match):
            ex.extend_metadata(**args)
    ex.extend_metadata(seq_lens, ext, pool, table, 64)  # the good layout still works


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100, 1000, 4097, 10**6, 2**31 - 1])
def test_capacity_bucket_bounds(n):
    cap = ex.capacity_bucket(n)
    assert n <= cap <= n + max(16, n // 4), (n, cap)


def test_capacity_buckets_are_few():
    caps = {ex.capacity_bucket(n) for n in range(1 << 16, 1 << 17)}
    assert len(caps) <= 5, sorted(caps)


@pytest.mark.parametrize("qo,kv", [([], []), ([0, 0], [0, 5]), ([1], [1]), ([16] * 3, [16] * 3),
                                   ([17] * 3, [40] * 3)])
def test_extend_metadata_edge_lengths(qo, kv, fresh_caches):
    """Empty batch, no tokens, and totals on and just past a capacity step (16, 48 -> 51)."""
    seq_lens, ext, pool, table = make_case(qo, kv)
    for _ in range(2):  # a miss, then a hit on the same plan
        got = ex.extend_metadata(seq_lens, ext, pool, table, 64)
        expected = extend_reference(seq_lens, ext, pool, table, 64)
        for key in EXTEND_KEYS:
            assert_equal(got[key], expected[key], key)
    assert (ex.ALLOCATING_PLANS.misses, ex.ALLOCATING_PLANS.hits) == (1, 1)
