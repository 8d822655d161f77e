"""Every Triton kernel of the workbook on exact-size buffers, over edge cases and garbage
lengths: the run compute-sanitizer's memcheck watches on the GPU,

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        python -m pytest -q -p no:cacheprovider tests/gpu/test_memcheck.py

With the caching allocator off every tensor is its own ``cudaMalloc``, so a load or a store
one element past a buffer is an error the sanitizer reports (canary margins see stray stores
only, and only inside the margin). Buffers are exactly N long (capacity == N) or one short of
N. Outputs are compared with the reference too, so a run that passes memcheck but computes
garbage still fails; without the sanitizer these are plain correctness tests.

The garbage lengths are the registry of ``nsa_kernels.testing.garbage``: every sync-free entry
point runs with ``check=False`` on ``GARBAGE_CASES`` into exact-size buffers and its status
must be sane (entry points with a status of their own check it in their adapter). A case that
hits a known bug (``known_bug``: a hang, say) is skipped here; its strict-xfail reproducer is
in tests/test_garbage_lengths.py.

The edge cases run everywhere (the interpreter on the CPU); the workload sizes and the garbage
registry on exact buffers are ``gpu`` tests (on the CPU, test_garbage_lengths.py runs the same
registry on canary buffers).
"""
import nsa_kernels as nk
from nsa_kernels.bench import workloads
from nsa_kernels.stages.stage4_triton_autotuned import SEARCH_SPACE, launch_with_config
from nsa_kernels.stages.stage5_zero_sync import launch_zero_sync
from nsa_kernels.testing import assert_equal
from nsa_kernels.testing.garbage import GARBAGE_CASES, SYNC_FREE_ENTRY_POINTS, status_is_sane
from nsa_kernels.testing.strategies import LINEAR_SCAN_STAGES

import pytest
import torch

gpu_only = pytest.mark.gpu
TOPK = 2048
#: What an exact-size output starts as: a kernel that leaves an entry unwritten shows.
POISON = -7
#: Past this many requests the linear-scan stages are only slow; bs 1000 covers them.
LINEAR_SCAN_MAX_BS = 1000
#: The full pipeline's page tables grow with N: cases past this many tokens are left out.
PIPELINE_MAX_TOKENS = 20000
#: Page-table width of the full pipeline: the servers' on a GPU; under the interpreter one
#: narrower than the cases' kv lengths (rows clipped at the width), N x width stores cheap.
PIPELINE_WIDTH = 8192 if nk.DEVICE.type == "cuda" else 256


def lengths(ext, seq, dtype=torch.int32):
    return (torch.tensor(ext, dtype=dtype, device=nk.DEVICE),
            torch.tensor(seq, dtype=dtype, device=nk.DEVICE))


def _workload(make):
    def lengths_of():
        w = make()
        return w.extend_seq_lens, w.seq_lens
    return lengths_of


#: ``(ext, seq)`` factories: edge cases everywhere, workload sizes on a GPU.
CASES = [
    pytest.param(lambda: lengths([], []), id="bs0"),
    pytest.param(lambda: lengths([0, 0, 0], [5, 0, 9]), id="N0-all-zero-length"),
    pytest.param(lambda: lengths([1], [1]), id="one-token"),
    pytest.param(lambda: lengths([1, 2, 3] * 43, [100, 2000, 3000] * 43),
                 id="bs129-N-not-a-block-multiple"),
    pytest.param(lambda: lengths([3] * 200 + [0] * 57, [5000] * 257),
                 id="bs257-zero-length-tail"),
    *[pytest.param(_workload(lambda bs=bs: workloads.draft_extend(bs)), marks=gpu_only,
                   id=f"draft-bs{bs}") for bs in (1, 100, 1000, 4096)],
    *[pytest.param(_workload(lambda n=n: workloads.prefill(n)), marks=gpu_only,
                   id=f"prefill-N{n}") for n in (1023, 131072)],
]


def synchronize():
    if nk.DEVICE.type == "cuda":
        torch.cuda.synchronize()


def assert_fill_on_exact_buffers(fill, ext, seq):
    """``fill(ext, seq, topk, out_expanded, out_cache)`` into buffers exactly N long."""
    want, want_cache = nk.reference(ext, seq, TOPK)
    out = torch.full((want.shape[0],), POISON, dtype=torch.int32, device=ext.device)
    cache = out.clone()
    fill(ext, seq, TOPK, out, cache)
    synchronize()
    assert_equal(out, want, "seqlens_expanded")
    assert_equal(cache, want_cache, "nsa_cache_seqlens")


@pytest.mark.parametrize("make_case", CASES)
@pytest.mark.parametrize("stage", list(nk.STAGES))
def test_stage_on_exact_buffers(stage, make_case):
    ext, seq = make_case()
    if stage in LINEAR_SCAN_STAGES and ext.shape[0] > LINEAR_SCAN_MAX_BS:
        pytest.skip(f"linear scan at bs {ext.shape[0]}: slow, bs {LINEAR_SCAN_MAX_BS} covers it")
    assert_fill_on_exact_buffers(nk.STAGES[stage], ext, seq)


@pytest.mark.parametrize("make_case", CASES)
@pytest.mark.parametrize("bound", [False, True], ids=["launch_zero_sync", "ZeroSyncFill"])
@pytest.mark.parametrize("mapping", ["request", "token"])
def test_zero_sync_on_exact_buffers(mapping, bound, make_case):
    def fill(*args):
        if bound:
            nk.ZeroSyncFill(*args, mapping=mapping)()
        else:
            launch_zero_sync(*args, mapping=mapping)
    assert_fill_on_exact_buffers(fill, *make_case())


@pytest.mark.parametrize("make_case", CASES)
@pytest.mark.parametrize("mapping", ["request", "token"])
def test_zero_sync_one_short_of_n_reports_the_overflow(mapping, make_case):
    """Buffers one short of N: nothing written past their end (the sanitizer's part) and the
    status says N and overflow."""
    ext, seq = make_case()
    n = int(ext.sum())
    if not n:
        pytest.skip("N = 0: no buffer can be one short")
    out = torch.empty(n - 1, dtype=torch.int32, device=ext.device)
    status = launch_zero_sync(ext, seq, TOPK, out, out.clone(), mapping=mapping)
    synchronize()
    assert status.tolist() == [n, 1]


@pytest.mark.parametrize("make_case", CASES)
@pytest.mark.parametrize("config", [
    pytest.param(config, marks=() if i < 2 else gpu_only,
                 id=f"block{config.kwargs['BLOCK_SIZE']}-warps{config.num_warps}")
    for i, config in enumerate(SEARCH_SPACE)])
def test_autotune_config_on_exact_buffers(config, make_case):
    ext, seq = make_case()
    n = int(ext.sum())
    if not n or ext.shape[0] > LINEAR_SCAN_MAX_BS:
        pytest.skip("N = 0 launches nothing" if not n else f"bs {ext.shape[0]}: the stage's "
                    "own runs cover it")

    def fill(e, s, topk, out, cache):
        launch_with_config(config, torch.cumsum(e, 0), s, topk, out, cache, n)
    assert_fill_on_exact_buffers(fill, ext, seq)


@pytest.mark.parametrize("make_case", CASES)
def test_full_pipeline_on_exact_buffers(make_case):
    ext, seq = make_case()
    n, bs, width = int(ext.sum()), ext.shape[0], PIPELINE_WIDTH
    if n > PIPELINE_MAX_TOKENS:
        pytest.skip(f"N = {n}: page tables past {PIPELINE_MAX_TOKENS} tokens")
    g = torch.Generator().manual_seed(bs)
    r2t = torch.randint(0, 1 << 22, (max(bs, 1), width), generator=g, dtype=torch.int32)
    pool = torch.randperm(max(bs, 1), generator=g)[:bs].to(torch.int32)
    r2t, pool = r2t.to(nk.DEVICE), pool.to(nk.DEVICE)
    buffers = nk.PipelineBuffers.allocate(bs, n, width, 64, nk.DEVICE)
    status = nk.launch_full_pipeline(ext, seq, pool, r2t, TOPK, buffers, 64)
    want = nk.pipeline_reference(ext, seq, pool, r2t, TOPK, 64, width)
    synchronize()
    assert status.tolist() == [n, 0]
    assert_equal(buffers.nsa_cu_seqlens_k, want["nsa_cu_seqlens_k"], "nsa_cu_seqlens_k")
    assert_equal(buffers.cu_seqlens_k, want["cu_seqlens_k"], "cu_seqlens_k")


@gpu_only
@pytest.mark.parametrize("case", GARBAGE_CASES, ids=[case[0] for case in GARBAGE_CASES])
@pytest.mark.parametrize("entry", SYNC_FREE_ENTRY_POINTS,
                         ids=[entry.name for entry in SYNC_FREE_ENTRY_POINTS])
def test_garbage_lengths_on_exact_buffers(entry, case):
    _what, ext, seq, dtype, topk, capacity = case
    ext, seq = lengths(ext, seq, dtype)
    reason = entry.known_bug and entry.known_bug(ext, seq)
    if reason:
        pytest.skip(f"known bug, see test_garbage_lengths.py: {reason}")
    out = torch.empty(capacity, dtype=torch.int32, device=nk.DEVICE)
    cache = torch.empty(capacity, dtype=torch.int32, device=nk.DEVICE)
    status = torch.empty(2, dtype=torch.int32, device=nk.DEVICE)
    entry.launch(ext, seq, topk, out, cache, status)
    synchronize()
    if not entry.own_status:  # else its adapter checked its own status (and raised if insane)
        assert status_is_sane(status.tolist(), capacity), (status.tolist(), capacity)
