"""SGLang 0.5.23's own DSA backend methods, driven by ``nsa_kernels.peers.sglang_backend``.

Each test runs SGLang's method (from its wheel) and compares every ``forward_metadata`` tensor
with an independent computation from the plain references (``nsa_kernels.modes.reference``,
``extend_reference``): equality proves the harness drives SGLang's code on the intended
inputs, not ours. On a CPU SGLang takes its torch fallback under Triton's interpreter; on a GPU
its fused path. SGLang's ~690 files are imported once per session (the module fixtures).
"""
import nsa_kernels  # noqa: F401  (first: it switches Triton to its interpreter on CPU)
from nsa_kernels.modes import reference as ref

import pytest
import torch

sb = pytest.importorskip("nsa_kernels.peers.sglang_backend")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WIDTH = 1024


@pytest.fixture(scope="module")
def sglang():
    try:
        return sb.load()
    except sb.PeerUnavailable as e:
        pytest.skip(str(e))


def harness(sglang, **kwargs):
    kwargs.setdefault("width", WIDTH)
    kwargs.setdefault("max_bs", 8)
    kwargs.setdefault("device", DEVICE)
    try:
        return sb.SGLangHarness(sb.HarnessConfig(**kwargs))
    except sb.HarnessUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def decode_harness(sglang):
    return harness(sglang)


def _int32(values):
    return {k: v.to(torch.int32) for k, v in values.items()}


def _arange(n):
    return torch.arange(n, dtype=torch.int32)


def expected_graph(h, mode, seq, req, bs):
    """The reference's tensors under SGLang's names, for a replay of the graph of ``bs``."""
    cfg, raw_bs = h.config, seq.numel()
    fill = 1 if mode != "draft_extend" else max(1, cfg.next_n)
    seq = torch.cat([seq, torch.full((bs - raw_bs,), fill, dtype=torch.int64)])
    req = torch.cat([req, torch.zeros(bs - raw_bs, dtype=torch.int64)])
    table = h.req_to_token.cpu()
    if mode == "decode":
        out = ref.decode_reference(seq, req, table, bs, cfg.width, cfg.topk, cfg.page_size)
        out["seqlens_expanded"] = out["cache_seqlens"]
        rows = bs
    elif mode == "target_verify":
        out = ref.target_verify_reference(seq, req, table, bs, cfg.width, cfg.topk,
                                          cfg.page_size, cfg.next_n)
        out.pop("paged_mqa_ctx_lens_2d")  # DeepGEMM's input, built on the GPU path only
        rows = bs * cfg.next_n
    else:
        qo = torch.full((bs,), cfg.next_n, dtype=torch.int64)
        out = ref.draft_extend_reference(seq, qo, req, table, bs, bs * cfg.next_n, cfg.width,
                                         cfg.topk, cfg.page_size, cfg.next_n,
                                         static_extend_len=True)
        rows = bs * cfg.next_n
    q_rows = bs if mode == "decode" else rows
    return _int32({
        "cache_seqlens_int32": out["cache_seqlens"], "cu_seqlens_k": out["cu_seqlens_k"],
        "cu_seqlens_q": _arange(q_rows + 1), "page_table_1": out["page_table_1"],
        "real_page_table": out["real_page_table"],
        "dsa_cache_seqlens_int32": out["dsa_cache_seqlens"],
        "dsa_cu_seqlens_k": out["dsa_cu_seqlens_k"], "dsa_cu_seqlens_q": _arange(rows + 1),
        "dsa_seqlens_expanded": out["seqlens_expanded"]})


def random_batch(bs, low, high, rows, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(low, high + 1, (bs,), generator=g)
    req = torch.randperm(rows, generator=g)[:bs]
    return seq, req


def assert_equal(result, expected):
    on_device = {k: v.cpu() for k, v in result.tensors.items()}
    # tensors SGLang computes only on the GPU path (DeepGEMM's 2-D context lengths)
    on_device.pop("paged_mqa_ctx_lens_2d", None)
    sb.compare_metadata(on_device, expected, result.case)


@pytest.mark.parametrize("bs, graph_bs", [(1, 1), (3, 3), (3, 8), (8, 8)])
def test_decode_replay_equals_reference(decode_harness, bs, graph_bs):
    h = decode_harness
    for seed in range(2):
        seq, req = random_batch(bs, 1, WIDTH, 8, seed)
        seq[0] = (63, 64, 65)[seed % 3] if bs > 1 else seq[0]
        got = h.decode(seq, req, graph_bs=graph_bs)
        assert got.case.bs == graph_bs and got.case.raw_bs == bs
        assert_equal(got, expected_graph(h, "decode", seq, req, graph_bs))


def test_decode_boundary_lengths(decode_harness):
    seq = torch.tensor([1, 63, 64, 65, 2047, 1024, 2, 129])
    seq = seq.clamp(max=WIDTH)
    req = torch.arange(8).flip(0)
    assert_equal(decode_harness.decode(seq, req), expected_graph(decode_harness, "decode", seq,
                                                                 req, 8))


def test_decode_without_wide_table_needs_gpu(sglang):
    h = harness(sglang, wide_table=False)  # skips on a CPU: SGLang has no CPU path for it
    seq, req = random_batch(3, 1, WIDTH, 8, 0)
    got = h.decode(seq, req, graph_bs=8)
    assert "page_table_1" not in got.tensors
    expected = expected_graph(h, "decode", seq, req, 8)
    expected.pop("page_table_1")
    assert_equal(got, expected)


def test_compare_names_the_first_difference(decode_harness):
    h = decode_harness
    seq, req = random_batch(3, 100, WIDTH, 8, 5)
    got = h.decode(seq, req)
    expected = expected_graph(h, "decode", seq, req, 3)
    sb.compare_metadata(got, expected, got.case)
    broken = dict(expected, page_table_1=expected["page_table_1"].clone())
    broken["page_table_1"][2, int(seq[2]) - 1] += 1  # the last live entry of row 2
    with pytest.raises(sb.MetadataMismatch) as e:
        sb.compare_metadata(got, broken, got.case)
    assert (e.value.tensor, e.value.row, e.value.column) == ("page_table_1", 2, int(seq[2]) - 1)
    beyond = dict(expected, page_table_1=expected["page_table_1"].clone())
    beyond["page_table_1"][2, int(seq[2]):] = -7  # past the live prefix: not guaranteed
    sb.compare_metadata(got, beyond, got.case)
    flat = dict(expected, cu_seqlens_k=expected["cu_seqlens_k"].clone())
    flat["cu_seqlens_k"][3] += 1
    with pytest.raises(sb.MetadataMismatch, match=r"cu_seqlens_k\[3\]"):
        sb.compare_metadata(got, flat, got.case)


def test_bad_input_names_the_argument(decode_harness):
    h = decode_harness
    with pytest.raises(ValueError, match=r"seq_lens\[1\]"):
        h.decode(torch.tensor([5, WIDTH + 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"req_pool_indices\[0\]"):
        h.decode(torch.tensor([5]), torch.tensor([99]))
    with pytest.raises(TypeError, match="seq_lens"):
        h.decode(torch.tensor([5.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="graph_bs"):
        h.decode(torch.tensor([5, 6]), torch.tensor([0, 1]), graph_bs=1)


def test_runtime_context_entered_once(sglang, decode_harness):
    seq, req = random_batch(2, 1, WIDTH, 8, 1)
    for _ in range(3):
        decode_harness.decode(seq, req)
    harness(sglang, max_bs=4)
    assert sglang.context_entries == 1
