"""The MTP multi-backend decode copy (``nsa_kernels.modes.mtp_copy``) against its oracle, with
K = 1, 3, 5 draft backends on poisoned buffers with canary margins.

After one launch every backend holds the decode metadata: the flat arrays on ``[:bs]`` /
``[:bs + 1]`` (poison after), each page-table row on its live prefix with the poison kept past
it (the documented contract: rows beyond the live prefix are not written), rows from ``bs`` on
untouched, nothing around any buffer changed. Bad arguments raise naming the backend and the
argument, before anything is written.
"""
import nsa_kernels as nk  # noqa: F401  (first: interpreter switch)
from nsa_kernels.modes import mtp_copy as mc
from nsa_kernels.modes.mtp_copy_reference import mtp_copy_reference
from nsa_kernels.testing import DEVICE, POISON, Canary, assert_equal, assert_poisoned

import pytest
import torch

BOUNDARY_KV = [0, 1, 63, 64, 65, 2047, 2048, 2049]


class Backend:
    """One draft backend's buffers as canaries: ``rows`` >= bs rows (a graph runner's buffers
    are sized for its largest batch), 1-D buffers with slack."""

    def __init__(self, rows, width, page_size, slack=3):
        self.canaries = {
            "cache_seqlens_int32": Canary(rows + slack),
            "cu_seqlens_k": Canary(rows + 1 + slack),
            "page_table_1": Canary((rows, width)),
            "dsa_cache_seqlens_int32": Canary(rows + slack),
            "dsa_cu_seqlens_k": Canary(rows + 1 + slack),
            "real_page_table": Canary((rows, -(-width // page_size))) if page_size > 1 else None,
        }
        self.buffers = mc.BackendBuffers(
            **{k: c.view if c is not None else None for k, c in self.canaries.items()})

    def check(self, ref, bs):
        flat = {"cache_seqlens_int32": ("cache_seqlens", bs),
                "cu_seqlens_k": ("cu_seqlens_k", bs + 1),
                "dsa_cache_seqlens_int32": ("dsa_cache_seqlens", bs),
                "dsa_cu_seqlens_k": ("dsa_cu_seqlens_k", bs + 1)}
        for name, c in self.canaries.items():
            if c is None:
                continue
            c.assert_margins(name)
            if name in flat:
                key, n = flat[name]
                assert_equal(c.view[:n], ref[key], name)
                c.assert_poisoned_from(n, name)
                continue
            live = ref["live_cols" if name == "page_table_1" else "real_live_cols"]
            for b in range(bs):
                cols = int(live[b])
                assert_equal(c.view[b, :cols], ref[name][b, :cols], f"{name}[{b}]")
                assert_poisoned(c.view[b, cols:], what=f"{name}[{b}, {cols}:]")
            c.assert_poisoned_from(bs, name)

    def assert_unchanged(self):
        for name, c in self.canaries.items():
            if c is not None:
                c.assert_unchanged(name)


def make_inputs(kv, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    bs = len(kv)
    rows = 2 * bs + 3
    return dict(
        seq_lens=torch.tensor(kv, dtype=torch.int32, device=DEVICE),
        req_pool_indices=torch.randperm(rows, generator=g)[:bs].to(DEVICE),
        req_to_token=torch.randint(0, 1 << 24, (rows, width + 5), generator=g,
                                   dtype=torch.int32).to(DEVICE),
    )


def run_case(kv, width, k, *, page_size=64, topk=64, rows=None, seed=0, bound=False):
    bs = len(kv)
    inputs = make_inputs(kv, width, seed)
    backends = [Backend(rows or bs + 2, width, page_size) for _ in range(k)]
    args = (inputs["seq_lens"], inputs["req_pool_indices"], inputs["req_to_token"],
            [b.buffers for b in backends], bs, width, topk, page_size)
    if bound:
        mc.MTPCopyFill(*args)()
    else:
        mc.launch_mtp_copy(*args)
    refs = mtp_copy_reference(inputs["seq_lens"], inputs["req_pool_indices"],
                              inputs["req_to_token"], k, bs, width, topk, page_size)
    for backend, ref in zip(backends, refs, strict=True):
        backend.check(ref, bs)
    return inputs, backends


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("page_size", [64, 1])
def test_boundary_lengths(k, page_size):
    run_case(BOUNDARY_KV, 2100, k, page_size=page_size, topk=2048)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("seed", range(2))
def test_random_batches(k, seed):
    g = torch.Generator().manual_seed(seed)
    bs = int(torch.randint(1, 48, (1,), generator=g))
    kv = torch.randint(0, 400, (bs,), generator=g).tolist()
    run_case(kv, 300, k, seed=seed, topk=[7, 256][seed], bound=seed == 1)


def test_bs1_and_lengths_past_the_width():
    """kv > max_len: the row is written over [:max_len] only (decode's contract)."""
    run_case([500], 300, 3)
    run_case([301, 299, 300], 300, 3)


def test_bs0_writes_only_the_leading_zeros():
    _, backends = run_case([], 64, 3)
    for b in backends:
        assert int(b.canaries["cu_seqlens_k"].view[0]) == 0


def test_width_131072_once():
    run_case([131072, 70000, 1], 131072, 3, topk=2048)


def test_bound_fill_follows_new_lengths():
    inputs = make_inputs([10, 200, 65], 256)
    backends = [Backend(3, 256, 64) for _ in range(3)]
    fill = mc.MTPCopyFill(inputs["seq_lens"], inputs["req_pool_indices"],
                          inputs["req_to_token"], [b.buffers for b in backends], 3, 256, 64, 64)
    fill()
    inputs["seq_lens"][:] = torch.tensor([11, 201, 66])  # the next draft step: one token more
    fill()
    refs = mtp_copy_reference(inputs["seq_lens"], inputs["req_pool_indices"],
                              inputs["req_to_token"], 3, 3, 256, 64, 64)
    for b, ref in zip(backends, refs):
        b.check(ref, 3)


def _shared_buffer(backends):
    backends[2].buffers.cu_seqlens_k = backends[0].buffers.cu_seqlens_k


def _other_stride(backends):
    wide = Canary((4, 320))
    backends[1].buffers.page_table_1 = wide.view[:, :300]


def _wrong_dtype(backends):
    backends[1].buffers.dsa_cache_seqlens_int32 = torch.zeros(8, dtype=torch.int64,
                                                              device=DEVICE)


def _short(backends):
    backends[2].buffers.real_page_table = backends[2].buffers.real_page_table[:, :2]


def _no_page_table_1(backends):
    backends[0].buffers.page_table_1 = None


BAD = [
    ("shared", _shared_buffer, ValueError, r"backends\[0\].cu_seqlens_k and backends\[2\]"),
    ("stride", _other_stride, ValueError, r"backends\[1\]: page-table row strides"),
    ("dtype", _wrong_dtype, TypeError, r"backends\[1\]: dsa_cache_seqlens"),
    ("short", _short, ValueError, r"backends\[2\]: real_page_table"),
    ("no_pt1", _no_page_table_1, ValueError, r"backends\[0\]: page_table_1 is required"),
]


@pytest.mark.parametrize("name, mutate, error, match", BAD, ids=[b[0] for b in BAD])
def test_bad_backends_raise_before_writing(name, mutate, error, match):
    inputs = make_inputs([10, 200, 65, 1], 300)
    backends = [Backend(4, 300, 64) for _ in range(3)]
    mutate(backends)
    with pytest.raises(error, match=match):
        mc.launch_mtp_copy(inputs["seq_lens"], inputs["req_pool_indices"],
                           inputs["req_to_token"], [b.buffers for b in backends], 4, 300, 64, 64)
    for b in backends:
        b.assert_unchanged()


@pytest.mark.parametrize("backends, error", [
    (None, TypeError), ([], ValueError), ([object()], TypeError),
])
def test_bad_backend_lists(backends, error):
    inputs = make_inputs([3], 64)
    with pytest.raises(error, match="backends"):
        mc.launch_mtp_copy(inputs["seq_lens"], inputs["req_pool_indices"],
                           inputs["req_to_token"], backends, 1, 64, 64, 64)


def test_data_checks_name_the_request():
    inputs = make_inputs([10, 20], 64)
    inputs["req_pool_indices"][1] = 10**6
    backends = [Backend(2, 64, 64) for _ in range(3)]
    with pytest.raises(ValueError, match=r"^req_pool_indices\[1\] = 1000000 is outside"):
        mc.launch_mtp_copy(inputs["seq_lens"], inputs["req_pool_indices"],
                           inputs["req_to_token"], [b.buffers for b in backends], 2, 64, 64, 64,
                           check=True)
    for b in backends:
        b.assert_unchanged()


def test_from_sglang_reads_dsa_metadata_names():
    class Metadata:  # the attribute names of SGLang's DSAMetadata
        pass

    m = Metadata()
    for i, name in enumerate(mc.TABLE_ROWS):
        setattr(m, name, torch.full((i + 1,), i, dtype=torch.int32))
    b = mc.BackendBuffers.from_sglang(m)
    assert [int(getattr(b, name)[0]) for name in mc.TABLE_ROWS] == list(range(6))


# --------------------------------------------------------------------------- SGLang's own code
@pytest.fixture(scope="module")
def sglang_draft_backends():
    """Five of SGLang 0.5.23's ``DeepseekSparseAttnBackend`` (the harness, decode graphs of up
    to 8 requests, page 64, topk 2048): the draft backends of a multi-step backend. Their
    ``req_to_token`` tables are equal (one seed), as the draft backends share one pool."""
    sb = pytest.importorskip("nsa_kernels.peers.sglang_backend")
    try:
        return sb, [sb.SGLangHarness(sb.HarnessConfig(max_bs=8, width=2100, device=str(DEVICE)))
                    for _ in range(5)]
    except sb.PeerUnavailable as e:
        pytest.skip(str(e))


def sglang_multi_step(sb, harnesses, bs, seq, req):
    """SGLang's ``DeepseekSparseAttnMultiStepBackend.init_forward_metadata_out_graph`` over
    ``len(harnesses)`` draft backends (``speculative_num_steps`` one more), after each
    backend's capture of the graph of ``bs``: its precompute and its copies (the fused multi-
    backend copy on a GPU from 3 backends on; SGLang falls back to its per-tensor copies where
    that kernel cannot be built)."""
    from types import SimpleNamespace
    module = harnesses[0].sglang.backend_module
    decode = harnesses[0].sglang.forward_mode.DECODE
    multi = object.__new__(module.DeepseekSparseAttnMultiStepBackend)
    multi.topk, multi.speculative_num_steps = 1, len(harnesses) + 1
    multi._sink_pad_cache = {}
    multi.attn_backends = [h.backend for h in harnesses]
    for h in harnesses:
        if ("mtp", bs) not in h._graph_ready:
            capture = SimpleNamespace(
                batch_size=bs, forward_mode=decode, seq_lens=torch.ones(bs, dtype=torch.int64,
                                                                       device=DEVICE),
                seq_lens_cpu=None, req_pool_indices=torch.zeros(bs, dtype=torch.int64,
                                                                device=DEVICE),
                spec_info=None, out_cache_loc=None, actual_forward_mode=decode)
            h.backend.init_forward_metadata_out_graph(capture, in_capture=True)
            h._graph_ready.add(("mtp", bs))
    step = SimpleNamespace(batch_size=bs, forward_mode=decode, seq_lens=seq,
                           seq_lens_cpu=seq.cpu(), req_pool_indices=req, spec_info=None,
                           out_cache_loc=None, actual_forward_mode=decode)
    multi.init_forward_metadata_out_graph(step)
    return [h.backend.decode_cuda_graph_metadata[bs] for h in harnesses]


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("kv", [[70, 1, 2049, 64], [2048, 63, 65, 2047, 130, 5, 1, 2100]])
def test_equals_sglang_multi_step_copy(sglang_draft_backends, k, kv):
    """Every backend's buffers after one launch equal what SGLang's multi-step backend leaves
    in its draft backends' graph buffers: flat arrays whole, page rows over their live prefix
    (beyond it SGLang copies an uninitialised temporary)."""
    sb, harnesses = sglang_draft_backends
    harnesses = harnesses[:k]
    bs = len(kv)
    seq = torch.tensor(kv, dtype=torch.int64, device=DEVICE)
    req = torch.randperm(8, generator=torch.Generator().manual_seed(bs))[:bs].to(DEVICE)
    theirs = sglang_multi_step(sb, harnesses, bs, seq, req)
    h0 = harnesses[0]
    width = theirs[0].page_table_1.shape[1]
    ours = [Backend(bs, width, h0.config.page_size) for _ in range(k)]
    mc.MTPCopyFill(seq, req, h0.req_to_token, [b.buffers for b in ours], bs, width,
                   h0.config.topk, h0.config.page_size)()
    lengths = torch.tensor(kv).clamp(max=width)
    case = sb.MetadataCase(mode="decode", bs=bs, raw_bs=bs, next_n=0,
                           page_size=h0.config.page_size, row_lengths=lengths)
    for i, (metadata, mine) in enumerate(zip(theirs, ours, strict=True)):
        names = [n for n in mc.TABLE_ROWS if getattr(metadata, n) is not None]
        sglang_side = {n: getattr(metadata, n)[:bs + 1 if n.startswith("cu") or
                                               n.startswith("dsa_cu") else bs] for n in names}
        our_side = {n: getattr(mine.buffers, n)[:sglang_side[n].shape[0]] for n in names}
        assert sb.compare_metadata(sglang_side, our_side, case) == len(names), f"backend {i}"


# --------------------------------------------------------------------------- GPU only
def _gib():
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if DEVICE.type == "cuda" \
        else 0


@pytest.mark.gpu
@pytest.mark.skipif(_gib() < 24, reason="needs a CUDA device with >= 24 GiB to place rows "
                    "past 2**31 elements")
def test_row_offsets_past_2_31_elements():
    """Two backends' page tables whose second rows start 2**31 elements after their first
    (one shared row stride; the spans kept apart, as the overlap check is conservative for
    interleaved views): 64-bit row offsets."""
    width, stride, k = 128, 1 << 30, 2
    span = 2 * stride + width
    flat = torch.full((k * span,), -7, dtype=torch.int32, device="cuda")
    tokens = torch.arange(5000, 5000 + width, dtype=torch.int32, device="cuda")
    small = lambda n: torch.full((n,), -7, dtype=torch.int32, device="cuda")  # noqa: E731
    backends = [mc.BackendBuffers(small(2), small(3),
                                  flat.as_strided((2, width), (2 * stride, 1), i * span),
                                  small(2), small(3),
                                  torch.full((2, 2), -7, dtype=torch.int32, device="cuda"))
                for i in range(k)]
    seq = torch.tensor([width, width], dtype=torch.int32, device="cuda")
    mc.launch_mtp_copy(seq, torch.tensor([0, 0], device="cuda"), tokens.reshape(1, width),
                       backends, 2, width, 2048, 64)
    torch.cuda.synchronize()
    for i, b in enumerate(backends):
        for row in range(2):
            assert torch.equal(b.page_table_1[row], tokens), f"backend {i} row {row}"
    del flat, backends
    torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_bound_fill_is_graph_safe():
    inputs = make_inputs([10, 200, 65], 256)
    backends = [Backend(3, 256, 64) for _ in range(3)]
    fill = mc.MTPCopyFill(inputs["seq_lens"], inputs["req_pool_indices"],
                          inputs["req_to_token"], [b.buffers for b in backends], 3, 256, 64, 64)
    fill()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fill()
    inputs["seq_lens"].copy_(torch.tensor([11, 201, 66], dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    refs = mtp_copy_reference(inputs["seq_lens"], inputs["req_pool_indices"],
                              inputs["req_to_token"], 3, 3, 256, 64, 64)
    for b, ref in zip(backends, refs):
        b.check(ref, 3)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_bound_fill_is_one_kernel_and_no_sync():
    from torch.profiler import ProfilerActivity, profile
    inputs = make_inputs([10, 200, 65], 256)
    backends = [Backend(3, 256, 64) for _ in range(5)]
    fill = mc.MTPCopyFill(inputs["seq_lens"], inputs["req_pool_indices"],
                          inputs["req_to_token"], [b.buffers for b in backends], 3, 256, 64, 64)
    fill()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fill()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fill()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(names) == 1 and "mtp_copy_kernel" in names[0], names


def test_garbage_lengths_stay_inside_the_buffers():
    """Unchecked lengths (negative, past the width, past int32 as int64) write only inside
    every backend's buffers: rows are clamped to [0, max_len]."""
    inputs = make_inputs([5, 6, 7, 8], 128)
    inputs["seq_lens"] = torch.tensor([-3, 10**9, 2**40, 64], dtype=torch.int64, device=DEVICE)
    backends = [Backend(4, 128, 64) for _ in range(3)]
    mc.launch_mtp_copy(inputs["seq_lens"], inputs["req_pool_indices"], inputs["req_to_token"],
                       [b.buffers for b in backends], 4, 128, 64, 64)
    for b in backends:
        for name, c in b.canaries.items():
            c.assert_margins(name)
        assert bool((b.canaries["page_table_1"].view[0] == POISON).all())
