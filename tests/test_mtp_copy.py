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

import pytest
import torch
from nsa_testing import DEVICE, Canary, assert_equal, assert_poisoned

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
