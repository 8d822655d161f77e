"""A ``PlanCache`` hit launches on the caller's tensors, and the cache keeps none of them alive.

A key holds addresses, shapes, strides and dtypes, not tensor objects. A tensor object that a
call passed may later be re-pointed (``set_``, ``.data =``, a growing ``resize_``) while another
tensor comes to sit at its old address: the next call with that tensor has the same key, and
must write into it, not into wherever the first call's object points now. The tests build that
situation deterministically: the second tensor is set onto the very storage of the first.
"""
import gc
import weakref

import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines
from nsa_kernels import launcher
from nsa_kernels.modes import extend as ex
from nsa_kernels.stages import stage5_zero_sync as s5

import pytest
import torch

TOPK = 2048
POISON = -123


def lengths(bs, seed):
    g = torch.Generator().manual_seed(seed)
    ext = torch.randint(0, 5, (bs,), generator=g, dtype=torch.int32)
    seq = ext + torch.randint(0, 3000, (bs,), generator=g, dtype=torch.int32)
    return ext.to(nk.DEVICE), seq.to(nk.DEVICE)


def on_storage(storage, n):
    """A new tensor object over the first ``n`` int32 entries of ``storage``."""
    return torch.empty(0, dtype=torch.int32, device=nk.DEVICE).set_(storage, 0, (n,))


def repoint(t, how):
    """Move ``t`` (the object) onto fresh memory, as a caller may between two calls."""
    elsewhere = torch.full(t.shape, POISON, dtype=t.dtype, device=t.device)
    if how == "set_":
        t.set_(elsewhere)
    else:
        t.data = elsewhere
    return elsewhere


@pytest.fixture
def fresh_plans(monkeypatch):
    plans = launcher.PlanCache(maxsize=4)
    monkeypatch.setattr(s5, "PLANS", plans)
    return plans


@pytest.mark.parametrize("how", ["set_", "data"])
def test_hit_writes_into_the_callers_tensor_not_the_first_calls_object(fresh_plans, how):
    ext, seq = lengths(30, seed=1)
    n = 150
    storage = torch.full((n,), POISON, dtype=torch.int32, device=nk.DEVICE).untyped_storage()
    first = on_storage(storage, n)
    cache = torch.full((n,), POISON, dtype=torch.int32, device=nk.DEVICE)
    status = torch.zeros(2, dtype=torch.int32, device=nk.DEVICE)
    s5.launch_zero_sync(ext, seq, TOPK, first, cache, status)
    elsewhere = repoint(first, how)
    second = on_storage(storage, n)  # same address, shape, stride, dtype: the same key
    second.fill_(POISON)
    ext2, seq2 = lengths(30, seed=2)
    ext.copy_(ext2)
    seq.copy_(seq2)
    s5.launch_zero_sync(ext, seq, TOPK, second, cache, status)
    assert fresh_plans.hits == 1
    want, _ = nk.reference(ext, seq, TOPK)
    assert torch.equal(second[: want.numel()].cpu(), want.cpu().to(torch.int32))
    assert bool((elsewhere == POISON).all()), "the hit wrote into the first call's object"


def test_extend_hit_writes_into_the_callers_buffers(monkeypatch):
    plans = launcher.PlanCache(maxsize=4)
    monkeypatch.setattr(ex, "PLANS", plans)
    qo = torch.tensor([3, 0, 5], dtype=torch.int32, device=nk.DEVICE)
    kv = torch.tensor([7, 4, 9], dtype=torch.int32, device=nk.DEVICE)
    pool = torch.tensor([2, 0, 1], dtype=torch.int32, device=nk.DEVICE)
    r2t = torch.arange(30, dtype=torch.int32, device=nk.DEVICE).view(3, 10)
    bufs = ex.ExtendBuffers.allocate(4, 16, 32, device=nk.DEVICE, fill=POISON)
    storage = bufs.page_table_1_flattened.untyped_storage()
    ex.launch_extend(kv, qo, pool, r2t, TOPK, bufs)
    elsewhere = repoint(bufs.page_table_1_flattened, "set_")
    bufs.page_table_1_flattened = on_storage(storage, 32)
    bufs.page_table_1_flattened.fill_(POISON)
    status = ex.launch_extend(kv, qo, pool, r2t, TOPK, bufs)
    assert plans.hits == 1 and int(status[0]) == 8
    want = torch.cat([r2t[2, :7], r2t[0, :4], r2t[1, :9]])
    assert torch.equal(bufs.page_table_1_flattened[:20].cpu(), want.cpu())
    assert bool((elsewhere == POISON).all()), "the hit wrote into the first call's object"


def test_cache_keeps_no_caller_tensor_alive(fresh_plans):
    ext, seq = lengths(8, seed=3)
    out = torch.empty(64, dtype=torch.int32, device=nk.DEVICE)
    cache = torch.empty(64, dtype=torch.int32, device=nk.DEVICE)
    status = torch.zeros(2, dtype=torch.int32, device=nk.DEVICE)
    refs = [weakref.ref(t) for t in (ext, seq, out, cache, status)]
    s5.launch_zero_sync(ext, seq, TOPK, out, cache, status)
    s5.launch_zero_sync(ext, seq, TOPK, out, cache, status)  # a hit, too
    assert len(fresh_plans) == 1
    del ext, seq, out, cache, status
    gc.collect()
    assert [r() is None for r in refs] == [True] * 5


def test_status_allocated_per_call_is_the_callers(fresh_plans):
    """With ``status=None`` each call gets its own status, also on hits."""
    ext, seq = lengths(8, seed=4)
    out = torch.empty(64, dtype=torch.int32, device=nk.DEVICE)
    cache = torch.empty(64, dtype=torch.int32, device=nk.DEVICE)
    first = s5.launch_zero_sync(ext, seq, TOPK, out, cache)
    second = s5.launch_zero_sync(ext, seq, TOPK, out, cache)
    assert fresh_plans.hits == 1 and first.data_ptr() != second.data_ptr()
    n = int(ext.sum())
    assert first.tolist() == [n, 0] and second.tolist() == [n, 0]
