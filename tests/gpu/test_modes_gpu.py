"""GPU-only properties of the three fused modes: 64-bit row offsets past 2**31 elements, no host
sync, CUDA-graph capture following changed contents, few compiled variants over a bs sweep.
Skipped without a CUDA device (the interpreter cannot show any of them)."""
import dataclasses

import nsa_kernels as nk  # noqa: F401  (first: picks the Triton mode)
from nsa_kernels.bench import harness
from nsa_kernels.compat import sglang as compat
from nsa_kernels.modes import decode, inputs, target_verify, tiles

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not harness.ON_GPU, reason="needs a CUDA device")]


def _gib():
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if harness.ON_GPU else 0


@pytest.mark.skipif(_gib() < 24, reason="needs >= 24 GiB to place rows past 2**31 elements")
@pytest.mark.parametrize("where", ["page_table_1", "req_to_token"])
def test_verify_row_offsets_past_2_31_elements(where):
    width, stride, next_n = 64, 1 << 30, 2
    flat = torch.full((3 * stride,), -7, dtype=torch.int32, device="cuda")
    tokens = torch.arange(5000, 5000 + width, dtype=torch.int32, device="cuda")
    seq = torch.tensor([width - next_n], dtype=torch.int64, device="cuda")
    small = lambda n: torch.full((n,), -7, dtype=torch.int32, device="cuda")  # noqa: E731
    real = torch.full((2, 1), -7, dtype=torch.int32, device="cuda")
    if where == "req_to_token":
        r2t = flat.as_strided((3, width), (stride, 1))
        r2t[2] = tokens
        pool = torch.tensor([2], device="cuda")
        pt = torch.full((2, width), -7, dtype=torch.int32, device="cuda")
    else:
        r2t, pool = tokens.reshape(1, width), torch.tensor([0], device="cuda")
        pt = flat.as_strided((2, width), (2 * stride, 1))  # row 1 starts at element 2**31
    compat.fused_dsa_target_verify_metadata(seq, pool, r2t, small(1), small(2), pt, small(2),
                                            small(2), small(3), real, 1, width, 2048, 64, next_n)
    torch.cuda.synchronize()
    for row in range(2):
        assert torch.equal(pt[row], tokens), f"page_table_1 row {row}"
    assert real[:, 0].tolist() == [5000 // 64] * 2
    del flat
    torch.cuda.empty_cache()


@pytest.mark.parametrize("mode, opts", [
    ("decode", dict(page_size=64, has_pt1=False)),
    ("target_verify", dict(page_size=64, has_pt1=True, next_n=4, has_ctx=True)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=True, draft=2)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=False, draft=4)),
])
def test_no_sync_and_graph_replay_follows_contents(mode, opts):
    case = inputs.make_case(mode, 64, 8192, opts, seed=1, device="cuda")
    out = inputs.allocate_outputs(case)
    fill = inputs.fill(case, out)
    assert harness.count_syncs(fill) == 0
    assert harness.count_syncs(inputs.bind(compat, case, out)) == 0
    graph = harness.capture_graph(fill, 1)
    new = inputs.make_case(mode, 64, 8192, opts, seed=2, device="cuda")
    case["seq"].copy_(new["seq"])
    case["pool"].copy_(new["pool"])
    if mode == "draft_extend" and not opts["static"]:
        # same total: a permutation of the extend lengths
        case["ext"].copy_(case["ext"][torch.randperm(64, device="cuda")])
    for t in out.values():
        if t is not None:
            t.fill_(inputs.POISON)
    graph.replay()
    torch.cuda.synchronize()
    # the reference reads the new contents, and the new kv each page row covers (the mask of
    # live columns): the captured buffers' values, not the first case's lengths
    replayed = dict(case, inputs=dataclasses.replace(case["inputs"],
                                                     kv_lens=new["inputs"].kv_lens))
    assert inputs.check_outputs(replayed, out)


def test_few_compiled_variants_over_a_bs_sweep():
    before = (harness.compiled_variants(decode.decode_kernel),
              harness.compiled_variants(target_verify.target_verify_kernel))
    for bs in (1, 3, 17, 64, 255, 1000):
        for mode, opts in (("decode", dict(page_size=64, has_pt1=False)),
                           ("target_verify", dict(page_size=64, has_pt1=True, next_n=2))):
            case = inputs.make_case(mode, bs, 8192, opts, seed=bs, device="cuda")
            inputs.call(compat, case, inputs.allocate_outputs(case))
    after = (harness.compiled_variants(decode.decode_kernel),
             harness.compiled_variants(target_verify.target_verify_kernel))
    # one per flat-chunk bucket at most, plus the small-batch page tile (bs itself is a
    # run-time argument)
    buckets = len(tiles.FLAT_BUCKETS) + 1
    assert after[0] - before[0] <= buckets and after[1] - before[1] <= buckets, (before, after)
