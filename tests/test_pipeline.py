"""``launch_full_pipeline`` against ``pipeline_reference`` on poisoned, canary-guarded buffers.

What must hold after a launch (``written = min(N, capacity)``):

* ``cache_seqlens_int32[:bs]`` and ``cu_seqlens_k[:bs + 1]`` equal the reference (they are per
  request, never capacity-limited); entries past them keep the poison.
* ``seqlens_expanded`` / ``nsa_cache_seqlens`` on ``[:written]`` and ``nsa_cu_seqlens_k`` on
  ``[:written + 1]`` equal the reference prefix; the rest keeps the poison.
* ``page_table_1`` row t (t < written) equals the reference on its live prefix
  ``[:live_cols[t]]`` and keeps the poison past it (the kernel writes the live prefix only);
  ``real_page_table`` likewise on ``ceil(live_cols[t] / page_size)`` columns. Rows from
  ``written`` on keep the poison.
* status is ``[N, N > capacity]``; nothing is written around any buffer (canary margins; the
  page tables are strided views inside larger poisoned tables, margin rows and columns all
  round).
"""
import inspect
import re

import nsa_kernels as nk
from nsa_kernels.stages import stage6_full_pipeline as s6
from nsa_kernels.testing import DEVICE, Canary, assert_equal, assert_poisoned
from nsa_kernels.testing.strategies import cheap_sizes, examples

import pytest
import torch
import triton
from hypothesis import given
from hypothesis import strategies as st


def make_case(bs, seed, qo_max=4, width=100, page_size=64, topk=64, big_qo=(),
              dtype=torch.int32, seq_dtype=None, r2t_dtype=torch.int32, pool_dtype=torch.int64,
              strided_r2t=False):
    """Random valid inputs: kv spans [qo, qo + 2 * width] so live prefixes vary around width."""
    g = torch.Generator().manual_seed(seed)
    ext = torch.randint(0, qo_max + 1, (bs,), generator=g)
    for i, qo in big_qo:
        ext[i] = qo
    seq = ext + torch.randint(0, 2 * width + 1, (bs,), generator=g)
    pool_size = 2 * bs + 3
    cols = width + 8
    table = torch.randint(0, 1 << 24, (pool_size, cols + (13 if strided_r2t else 0)), generator=g)
    r2t = table.to(DEVICE, r2t_dtype)
    if strided_r2t:
        r2t = r2t[:, :cols]  # row stride != width: the kernel must use req_to_token.stride(0)
    pool = torch.randperm(pool_size, generator=g)[:bs]
    return dict(ext=ext.to(DEVICE, dtype), seq=seq.to(DEVICE, seq_dtype or dtype),
                pool=pool.to(DEVICE, pool_dtype), r2t=r2t, topk=topk, width=width,
                page_size=page_size)


class Buffers:
    """PipelineBuffers whose tensors are canary views (1-D margins, 2-D margin rows/columns)."""

    def __init__(self, max_bs, capacity, width, page_size, extra_rpt_cols=0, **capacities):
        pages = triton.cdiv(width, page_size) + extra_rpt_cols
        sizes = dict(cache_seqlens_int32=max_bs, cu_seqlens_k=max_bs + 1,
                     seqlens_expanded=capacity, nsa_cache_seqlens=capacity,
                     nsa_cu_seqlens_k=capacity + 1, page_table_1=(capacity, width),
                     real_page_table=(capacity, pages))
        sizes.update(capacities)
        self.canaries = {name: Canary(shape) for name, shape in sizes.items()}
        self.buffers = nk.PipelineBuffers(**{k: c.view for k, c in self.canaries.items()})
        self.status = Canary(2)

    def view(self, name):
        return self.canaries[name].view

    def assert_margins(self):
        for name, c in self.canaries.items():
            c.assert_margins(name)
        self.status.assert_margins("status")


def launch(case, bufs, check=False):
    status = nk.launch_full_pipeline(case["ext"], case["seq"], case["pool"], case["r2t"],
                                     case["topk"], bufs.buffers, case["page_size"],
                                     status=bufs.status.view, check=check)
    assert status.data_ptr() == bufs.status.view.data_ptr()
    return status.cpu().tolist()


def check_pipeline(case, bufs, status):
    """Every buffer against pipeline_reference; see the module docstring. Returns N."""
    ref = nk.pipeline_reference(case["ext"], case["seq"], case["pool"], case["r2t"],
                                case["topk"], case["page_size"], case["width"])
    ref = {k: v.cpu() for k, v in ref.items()}
    bs = case["ext"].numel()
    n = ref["seqlens_expanded"].numel()
    capacity = bufs.buffers.capacity
    written = min(n, capacity)
    assert status == [n, int(n > capacity)], f"status {status}, N = {n}, capacity {capacity}"

    for name, length in (("cache_seqlens_int32", bs), ("cu_seqlens_k", bs + 1),
                         ("seqlens_expanded", written), ("nsa_cache_seqlens", written),
                         ("nsa_cu_seqlens_k", written + 1)):
        got = bufs.view(name).cpu()
        assert_equal(got[:length], ref[name][:length], name)
        assert_poisoned(got[length:], what=f"{name}[{length}:]")

    live = ref["live_cols"][:written].long()
    live_pages = (live + case["page_size"] - 1) // case["page_size"]
    for name, live_cols in (("page_table_1", live), ("real_page_table", live_pages)):
        got = bufs.view(name).cpu()
        expected = ref[name][:written]
        cols = torch.arange(got.shape[1])
        meaningful = cols[None, :] < live_cols[:, None]
        padded = torch.zeros((written, got.shape[1]), dtype=expected.dtype)
        padded[:, : expected.shape[1]] = expected
        assert_equal(got[:written][meaningful], padded[meaningful], f"{name} (live prefix)")
        assert_poisoned(got[:written][~meaningful], what=f"{name} past the live prefix")
        assert_poisoned(got[written:], what=f"{name}[{written}:]")
    bufs.assert_margins()
    return n


def run_case(case, capacity_slack=5, max_bs_slack=3, check=False, capacity=None, **buf_kwargs):
    bs = case["ext"].numel()
    n = int(case["ext"].long().sum()) if bs else 0
    capacity = n + capacity_slack if capacity is None else capacity
    bufs = Buffers(bs + max_bs_slack, capacity, case["width"], case["page_size"], **buf_kwargs)
    status = launch(case, bufs, check=check)
    return check_pipeline(case, bufs, status)


# --------------------------------------------------------------------------- shapes
CASES = {
    "bs0": dict(bs=0, seed=0),
    "bs0_check": dict(bs=0, seed=0, check=True),
    "bs1": dict(bs=1, seed=1),
    "bs1_wide": dict(bs=1, seed=2, width=700, page_size=64),
    "few_width_512": dict(bs=5, seed=3, width=512, page_size=16),
    "few_width_513": dict(bs=5, seed=4, width=513, page_size=64, check=True),
    "few_width_700": dict(bs=6, seed=5, width=700, page_size=16),
    "page_size_1": dict(bs=4, seed=6, width=130, page_size=1),
    "page_size_512": dict(bs=4, seed=7, width=600, page_size=512),
    "page_size_not_dividing_width": dict(bs=4, seed=8, width=150, page_size=64),
    "topk_1": dict(bs=5, seed=9, topk=1),
    "topk_4096": dict(bs=5, seed=10, topk=4096, width=300),
    "larger_qo": dict(bs=4, seed=11, qo_max=40, width=300, page_size=16),
    "prefill_like": dict(
        bs=3, seed=12, qo_max=4, big_qo=((0, 600), (2, 257)), width=600, page_size=16, topk=256
    ),
    "int64_inputs": dict(
        bs=6, seed=13, dtype=torch.int64, r2t_dtype=torch.int64, pool_dtype=torch.int32
    ),
    "mixed_dtypes": dict(bs=6, seed=14, dtype=torch.int32, seq_dtype=torch.int64),
    "strided_req_to_token": dict(
        bs=6, seed=15, strided_r2t=True, width=200, page_size=16, check=True
    ),
    "zero_length_requests": dict(bs=8, seed=16, qo_max=1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pipeline_matches_reference(name):
    kwargs = dict(CASES[name])
    check = kwargs.pop("check", False)
    run_case(make_case(**kwargs), check=check)


def test_pipeline_bs_300():
    # 300 requests: prefix sums across BLOCK_R = 256 requests, two column blocks (700 > 512).
    case = make_case(300, seed=300, width=700, page_size=64, topk=512)
    assert run_case(case, capacity_slack=9, max_bs_slack=20) > 0


def test_pipeline_extra_real_page_table_columns():
    # real_page_table may be wider than ceil(width / page_size): the extra columns stay poisoned.
    case = make_case(5, seed=21, width=200, page_size=16)
    run_case(case, extra_rpt_cols=4)


def test_pipeline_all_zero_lengths():
    case = make_case(6, seed=22, qo_max=0)
    assert run_case(case) == 0


# --------------------------------------------------------------------------- overflow
@pytest.mark.parametrize("cut", [0.0, 0.3, 0.5, 0.99])
def test_pipeline_overflow(cut):
    case = make_case(20, seed=23, qo_max=6, width=300, page_size=16)
    n = int(case["ext"].sum())
    capacity = min(int(n * cut), n - 1)
    assert run_case(case, capacity=capacity) == n


def test_pipeline_overflow_capacity_from_shortest_buffer():
    # Page tables with more rows than seqlens_expanded: capacity is the minimum, and the page
    # table rows from capacity on must not be written although they exist.
    case = make_case(10, seed=24, qo_max=5, width=200, page_size=16)
    n = int(case["ext"].sum())
    capacity = n // 2
    bufs = Buffers(
        13,
        capacity,
        case["width"],
        case["page_size"],
        page_table_1=(n + 7, case["width"]),
        real_page_table=(n + 7, 13),
        nsa_cu_seqlens_k=n + 20,
    )
    assert bufs.buffers.capacity == capacity
    status = launch(case, bufs)
    assert check_pipeline(case, bufs, status) == n


def test_pipeline_exact_capacity():
    case = make_case(12, seed=25, qo_max=3, width=120, page_size=16)
    run_case(case, capacity_slack=0)


# --------------------------------------------------------------------------- padding rows
def test_pipeline_padding_rows_clamped():
    # CUDA-graph padding (kv < qo): lengths clamped at 0, page-table rows on their live prefix
    # min(kv, width). Worked by hand (topk 4, width 8, page_size 4):
    #   request 0: qo 2, kv 5, pool row 1 -> values 4, 5; cache 4, 4
    #   request 1: qo 3, kv 1, pool row 0 -> values -1, 0, 1 -> 0, 0, 1; cache 0, 0, 1
    #   nsa_cu = 0, 4, 8, 8, 8, 9; cu_seqlens_k = 0, 5, 6
    #   page_table_1: rows 0-1 = req_to_token[1, :5], rows 2-4 = req_to_token[0, :1]
    #   real_page_table: rows 0-1 = [116 // 4, 120 // 4], rows 2-4 = [100 // 4]
    ext = torch.tensor([2, 3], dtype=torch.int32, device=DEVICE)
    seq = torch.tensor([5, 1], dtype=torch.int32, device=DEVICE)
    pool = torch.tensor([1, 0], dtype=torch.int64, device=DEVICE)
    r2t = torch.arange(100, 132, dtype=torch.int32, device=DEVICE).reshape(2, 16)
    bufs = Buffers(3, 7, 8, 4)
    status = nk.launch_full_pipeline(
        ext, seq, pool, r2t, 4, bufs.buffers, 4, status=bufs.status.view
    )
    assert status.cpu().tolist() == [5, 0]
    P = -123456

    def v(name):
        return bufs.view(name).cpu().tolist()

    assert v("cache_seqlens_int32") == [5, 1, P]
    assert v("cu_seqlens_k") == [0, 5, 6, P]
    assert v("seqlens_expanded") == [4, 5, 0, 0, 1, P, P]
    assert v("nsa_cache_seqlens") == [4, 4, 0, 0, 1, P, P]
    assert v("nsa_cu_seqlens_k") == [0, 4, 8, 8, 8, 9, P, P]
    row0 = [116, 117, 118, 119, 120, P, P, P]
    row1 = [100] + [P] * 7
    assert v("page_table_1") == [row0, row0, row1, row1, row1] + [[P] * 8] * 2
    assert v("real_page_table") == [[29, 30], [29, 30], [25, P], [25, P], [25, P], [P, P], [P, P]]
    bufs.assert_margins()


# --------------------------------------------------------------------------- property
_CHEAP = cheap_sizes()


@st.composite
def pipeline_inputs(draw):
    bs = draw(st.integers(0, 12 if _CHEAP else 300))
    width = draw(st.one_of(st.integers(1, 700), st.sampled_from([1, 511, 512, 513, 1024])))
    page_size = draw(st.sampled_from([1, 2, 16, 64, 512]))
    topk = draw(st.one_of(st.integers(1, 4096), st.sampled_from([1, 64, 2048])))
    qo_max = draw(st.sampled_from([0, 1, 4, 9]))
    seed = draw(st.integers(0, 2**31 - 1))
    big = draw(
        st.lists(
            st.tuples(st.integers(0, max(bs - 1, 0)), st.integers(0, 300)), max_size=2 if bs else 0
        )
    )
    dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    strided = draw(st.booleans())
    return make_case(
        bs,
        seed,
        qo_max=qo_max,
        width=width,
        page_size=page_size,
        topk=topk,
        big_qo=big,
        dtype=dtype,
        strided_r2t=strided,
    )


@examples(25)
@given(case=pipeline_inputs(), slack=st.integers(-40, 40))
def test_property_pipeline(case, slack):
    n = int(case["ext"].long().sum()) if case["ext"].numel() else 0
    run_case(case, capacity=max(n + slack, 0))


# --------------------------------------------------------------------------- 64-bit offsets
def test_row_offsets_are_64_bit_in_source():
    # Weak guard, by reading the source: rows x width passes 2^31 at 1M-token contexts, which
    # cannot be allocated on a CPU test machine (the real check is the GPU test below). The
    # page-table row index and the req_to_token row offset must be widened to int64 before
    # they are multiplied by a row stride.
    source = inspect.getsource(s6.full_pipeline_kernel.fn)
    assert re.search(r"tl\.load\(pool_idx_ptr \+ r\)\.to\(tl\.int64\) \* r2t_stride", source)
    assert re.search(r"row = \(tokens_before \+ j\)\.to\(tl\.int64\)", source)
    assert "row[:, None] * pt_stride" in source and "row[:, None] * rpt_stride" in source


def _cuda_memory_gib():
    return (
        torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0
    )


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or _cuda_memory_gib() < 24,
    reason="needs a CUDA device with >= 24 GiB to place rows past 2^31 elements",
)
@pytest.mark.parametrize("where", ["page_table_1", "req_to_token"])
def test_row_offsets_past_2_31_elements(where):
    # One strided view whose row 2 starts at element 2^31 of an 8 GiB allocation: a 32-bit row
    # offset would wrap to a negative address (fault or a write in the wrong place).
    width, page_size, stride = 64, 16, 1 << 30
    flat = torch.full((2 * stride + width,), -7, dtype=torch.int32, device="cuda")
    ext = torch.tensor([3], dtype=torch.int32, device="cuda")
    seq = torch.tensor([width], dtype=torch.int32, device="cuda")
    tokens = torch.arange(5000, 5000 + width, dtype=torch.int32, device="cuda")
    if where == "req_to_token":
        r2t = flat.as_strided((3, width), (stride, 1))
        r2t[2] = tokens
        pool = torch.tensor([2], dtype=torch.int64, device="cuda")
        bufs = nk.PipelineBuffers.allocate(1, 3, width, page_size, "cuda")
    else:
        r2t = tokens.reshape(1, width)
        pool = torch.tensor([0], dtype=torch.int64, device="cuda")
        bufs = nk.PipelineBuffers.allocate(1, 3, width, page_size, "cuda")
        bufs.page_table_1 = flat.as_strided((3, width), (stride, 1))
    status = nk.launch_full_pipeline(ext, seq, pool, r2t, 64, bufs, page_size)
    torch.cuda.synchronize()
    assert status.tolist() == [3, 0]
    for row in range(3):
        assert torch.equal(bufs.page_table_1[row], tokens), f"page_table_1 row {row}"
        assert torch.equal(bufs.real_page_table[row], tokens[::page_size] // page_size)
    if where == "page_table_1":
        # nothing else of the big allocation was touched
        flat[0:width] = -7
        flat[stride : stride + width] = -7
        flat[2 * stride : 2 * stride + width] = -7
        assert bool((flat == -7).all())
    del flat
    torch.cuda.empty_cache()


# --------------------------------------------------------------------------- bound launch
def test_full_pipeline_fill_follows_changing_contents():
    # FullPipelineFill binds static buffers once; every call must follow the current contents
    # of the inputs (lengths and pool indices rewritten in place, as a graph runner does).
    bs, width, page_size = 6, 200, 16
    first = make_case(bs, seed=40, width=width, page_size=page_size)
    case = dict(first)
    case["ext"], case["seq"], case["pool"] = (
        first["ext"].clone(),
        first["seq"].clone(),
        first["pool"].clone(),
    )
    bufs = Buffers(bs + 2, bs * 4 + 3, width, page_size)
    fill = nk.FullPipelineFill(
        case["ext"],
        case["seq"],
        case["pool"],
        case["r2t"],
        case["topk"],
        bufs.buffers,
        page_size,
        status=bufs.status.view,
    )
    for seed in (40, 41, 42):
        new = make_case(bs, seed=seed, width=width, page_size=page_size)
        case["ext"].copy_(new["ext"])
        case["seq"].copy_(new["seq"])
        case["pool"].copy_(new["pool"])
        for c in bufs.canaries.values():
            c.view.fill_(c.poison)
        status = fill()
        assert status.data_ptr() == bufs.status.view.data_ptr()
        check_pipeline(case, bufs, status.cpu().tolist())


# --------------------------------------------------------------------------- hardening
def test_negative_earlier_length_moves_no_row_before_the_buffers():
    # Trusted path, ext = [-3, 2]: request 1's rows once started at -3 and wrote in front of
    # every output (margins). Negative lengths now count as 0 in every prefix.
    ext = torch.tensor([-3, 2], dtype=torch.int32, device=DEVICE)
    seq = torch.tensor([5, 5], dtype=torch.int32, device=DEVICE)
    pool = torch.tensor([0, 1], dtype=torch.int64, device=DEVICE)
    r2t = torch.arange(100, 132, dtype=torch.int32, device=DEVICE).reshape(2, 16)
    bufs = Buffers(2, 4, 8, 4)
    status = nk.launch_full_pipeline(
        ext, seq, pool, r2t, 4, bufs.buffers, 4, status=bufs.status.view
    )
    bufs.assert_margins()
    assert bufs.view("seqlens_expanded").tolist()[:2] == [4, 5]
    assert status.tolist() == [2, 0]


def test_garbage_extend_length_ends_and_stays_inside():
    # qo = 2**31 - 1 on the trusted path: work is bounded by the capacity, not the length.
    ext = torch.tensor([2**31 - 1, 1], dtype=torch.int64, device=DEVICE)
    seq = torch.tensor([2**31 - 1, 3], dtype=torch.int64, device=DEVICE)
    pool = torch.tensor([0, 1], dtype=torch.int64, device=DEVICE)
    r2t = torch.arange(100, 132, dtype=torch.int32, device=DEVICE).reshape(2, 16)
    bufs = Buffers(2, 5, 8, 4)
    status = nk.launch_full_pipeline(
        ext, seq, pool, r2t, 4, bufs.buffers, 4, status=bufs.status.view
    )
    bufs.assert_margins()
    assert status.tolist() == [2**31 - 1, 1]  # the 64-bit total saturates; overflow is exact


def _hardening_case(**kw):
    case = make_case(
        3, seed=50, width=16, page_size=4, dtype=torch.int64, r2t_dtype=torch.int64, **kw
    )
    return case, Buffers(5, 40, 16, 4)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(seq={1: 2**31}), r"seq_lens\[1\] = 2147483648"),
        (dict(seq={0: 2**30, 1: 2**30, 2: 2**30}), r"cu_seqlens_k would pass 2\*\*31 at request 1"),
        (
            dict(ext={2: 3}, seq={2: 2**30}, topk=2**30),
            r"nsa_cu_seqlens_k would pass 2\*\*31 at request 2",
        ),
        (dict(r2t=2**31), r"req_to_token\[.*\] = 2147483648 .*request 0"),
    ],
)
def test_check_rejects_what_int32_cannot_hold(bad, match):
    case, bufs = _hardening_case(topk=bad.get("topk", 64))
    for key in ("ext", "seq"):
        for i, v in bad.get(key, {}).items():
            case[key][i] = v
    if "r2t" in bad:
        case["r2t"][int(case["pool"][0]), 0] = bad["r2t"]
    with pytest.raises(ValueError, match=match):
        launch(case, bufs, check=True)
    for name, c in bufs.canaries.items():
        c.assert_unchanged(name)


def test_overlapping_buffers_rejected():
    case, bufs = _hardening_case()
    b = bufs.buffers
    with pytest.raises(ValueError, match="seqlens_expanded and nsa_cache_seqlens overlap"):
        nk.launch_full_pipeline(
            case["ext"],
            case["seq"],
            case["pool"],
            case["r2t"],
            64,
            nk.PipelineBuffers(**dict(b.as_dict(), nsa_cache_seqlens=b.seqlens_expanded)),
            4,
        )
    with pytest.raises(ValueError, match="status and cu_seqlens_k overlap"):
        nk.launch_full_pipeline(
            case["ext"], case["seq"], case["pool"], case["r2t"], 64, b, 4, status=b.cu_seqlens_k[:2]
        )
    with pytest.raises(ValueError, match="page_table_1 has row stride"):
        pt = b.page_table_1
        nk.launch_full_pipeline(
            case["ext"],
            case["seq"],
            case["pool"],
            case["r2t"],
            64,
            nk.PipelineBuffers(**dict(b.as_dict(), page_table_1=pt.as_strided(pt.shape, (3, 1)))),
            4,
        )
    with pytest.raises(ValueError, match="nsa_cu_seqlens_k must hold at least 1"):
        nk.launch_full_pipeline(
            case["ext"],
            case["seq"],
            case["pool"],
            case["r2t"],
            64,
            nk.PipelineBuffers(**dict(b.as_dict(), nsa_cu_seqlens_k=b.nsa_cu_seqlens_k[:0])),
            4,
        )
    for name, c in bufs.canaries.items():
        c.assert_unchanged(name)


def test_integer_parameters_accept_numpy_and_refuse_bool():
    import numpy as np

    case, bufs = _hardening_case()
    status = nk.launch_full_pipeline(
        case["ext"],
        case["seq"],
        case["pool"],
        case["r2t"],
        np.int64(64),
        bufs.buffers,
        np.int32(4),
        status=bufs.status.view,
    )
    check_pipeline(dict(case, topk=64), bufs, status.tolist())
    with pytest.raises(TypeError, match="page_size must be an int, got bool"):
        nk.launch_full_pipeline(
            case["ext"], case["seq"], case["pool"], case["r2t"], 64, bufs.buffers, True
        )
