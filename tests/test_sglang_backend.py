"""SGLang 0.5.23's own DSA backend methods, driven by ``nsa_kernels.peers.sglang_backend``.

Each test runs SGLang's method (from its wheel) and compares every ``forward_metadata`` tensor
with an independent computation from the plain references (``nsa_kernels.modes.reference``,
``extend_reference``): equality proves the harness drives SGLang's code on the intended
inputs, not ours. On a CPU SGLang takes its torch fallback under Triton's interpreter; on a GPU
its fused path. SGLang's ~690 files are imported once per session (the module fixtures).
"""
import nsa_kernels  # noqa: F401  (first: it switches Triton to its interpreter on CPU)
from nsa_kernels.peers import sglang_backend as sb
from nsa_kernels.peers.sglang_backend_check import expected_metadata

import pytest
import torch

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


def random_batch(bs, low, high, rows, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(low, high + 1, (bs,), generator=g)
    req = torch.randperm(rows, generator=g)[:bs]
    return seq, req


def expected(h, result):
    return expected_metadata(h.config, h.req_to_token, result.case)


def assert_equal(result, expected):
    on_device = {k: v.cpu() for k, v in result.tensors.items()}
    sb.compare_metadata(on_device, expected, result.case)


@pytest.mark.parametrize("bs, graph_bs", [(1, 1), (3, 3), (3, 8), (8, 8)])
def test_decode_replay_equals_reference(decode_harness, bs, graph_bs):
    h = decode_harness
    for seed in range(2):
        seq, req = random_batch(bs, 1, WIDTH, 8, seed)
        seq[0] = (63, 64, 65)[seed % 3] if bs > 1 else seq[0]
        got = h.decode(seq, req, graph_bs=graph_bs)
        assert got.case.bs == graph_bs and got.case.raw_bs == bs
        assert_equal(got, expected(h, got))


def test_decode_boundary_lengths(decode_harness):
    seq = torch.tensor([1, 63, 64, 65, 2047, 1024, 2, 129])
    seq = seq.clamp(max=WIDTH)
    req = torch.arange(8).flip(0)
    got = decode_harness.decode(seq, req)
    assert_equal(got, expected(decode_harness, got))


def test_decode_without_wide_table_needs_gpu(sglang):
    h = harness(sglang, wide_table=False)  # skips on a CPU: SGLang has no CPU path for it
    seq, req = random_batch(3, 1, WIDTH, 8, 0)
    got = h.decode(seq, req, graph_bs=8)
    assert "page_table_1" not in got.tensors
    assert_equal(got, expected(h, got))


def test_compare_names_the_first_difference(decode_harness):
    h = decode_harness
    seq, req = random_batch(3, 100, WIDTH, 8, 5)
    got = h.decode(seq, req)
    want = expected(h, got)
    assert_equal(got, want)
    broken = dict(want, page_table_1=want["page_table_1"].clone())
    broken["page_table_1"][2, int(seq[2]) - 1] += 1  # the last live entry of row 2
    with pytest.raises(sb.MetadataMismatch) as e:
        assert_equal(got, broken)
    assert (e.value.tensor, e.value.row, e.value.column) == ("page_table_1", 2, int(seq[2]) - 1)
    beyond = dict(want, page_table_1=want["page_table_1"].clone())
    beyond["page_table_1"][2, int(seq[2]):] = -7  # past the live prefix: not guaranteed
    assert_equal(got, beyond)
    flat = dict(want, cu_seqlens_k=want["cu_seqlens_k"].clone())
    flat["cu_seqlens_k"][3] += 1
    with pytest.raises(sb.MetadataMismatch, match=r"cu_seqlens_k\[3\]"):
        assert_equal(got, flat)


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


def test_runtime_context_entered_once(sglang, monkeypatch):
    """SGLang's runtime-context overrides are entered at load, never per harness or step."""
    from sglang.srt.runtime_context import get_parallel
    parallel = get_parallel()
    assert parallel.attn_cp_size == 1 and parallel.dcp_enabled is False
    entered = []
    real = type(parallel).override

    def counted(self, **kwargs):
        entered.append(kwargs)
        return real(self, **kwargs)
    monkeypatch.setattr(type(parallel), "override", counted)
    h = harness(sglang, max_bs=4, next_n=2, width=256)
    seq, req = random_batch(2, 2, 200, 4, 1)
    for _ in range(3):
        h.target_verify(seq, req)
        h.eager("draft_extend", seq, req)
    h.extend(seq, seq, req)
    assert entered == [] and sglang.context_entries == 1


@pytest.fixture(scope="module")
def spec_harness(sglang):
    return harness(sglang, next_n=3)


@pytest.mark.parametrize("mode", ["target_verify", "draft_extend"])
@pytest.mark.parametrize("bs, graph_bs", [(1, 1), (3, 8), (8, 8)])
def test_speculative_replay_equals_reference(spec_harness, mode, bs, graph_bs):
    h = spec_harness
    seq, req = random_batch(bs, 3, WIDTH - 3, 8, bs)
    seq[0] = 3 if mode == "draft_extend" else 1  # the shortest request each mode admits
    got = getattr(h, mode)(seq, req, graph_bs=graph_bs)
    assert got.case.bs == graph_bs
    assert got.tensors["dsa_seqlens_expanded"].numel() == graph_bs * 3
    assert_equal(got, expected(h, got))


@pytest.mark.parametrize("next_n", [2, 4])
def test_speculative_next_n(sglang, next_n):
    h = harness(sglang, next_n=next_n, max_bs=4, width=256)
    seq, req = random_batch(3, next_n, 256 - next_n, 4, next_n)
    for mode in ("target_verify", "draft_extend"):
        got = getattr(h, mode)(seq, req, graph_bs=4)
        assert_equal(got, expected(h, got))


@pytest.mark.parametrize("mode", ["decode", "target_verify", "draft_extend"])
def test_eager_path_equals_reference(sglang, spec_harness, decode_harness, mode):
    h = decode_harness if mode == "decode" else spec_harness
    seq, req = random_batch(8, 3, WIDTH - 3, 8, 11)
    got = h.eager(mode, seq, req)
    assert got.case.mode == f"eager_{mode}"
    assert_equal(got, expected(h, got))


@pytest.mark.parametrize("kv_dtype", ["bf16", "fp8"])
@pytest.mark.parametrize("prefix", [False, True])
def test_extend_equals_reference(sglang, kv_dtype, prefix):
    h = harness(sglang, kv_dtype=kv_dtype)
    seq = torch.tensor([1, 63, 64, 65, 700, 129, 2, 1000])
    ext = torch.tensor([1, 10, 64, 1, 300, 129, 1, 64]) if prefix else seq.clone()
    req = torch.arange(8).flip(0)
    got = h.extend(seq, ext, req)
    # PAGED (bf16) leaves out the RAGGED transform's offsets; the flattened table needs a
    # cached prefix as well
    assert ("topk_indices_offset" in got.tensors) == (kv_dtype == "fp8")
    assert ("page_table_1_flattened" in got.tensors) == (kv_dtype == "fp8" and prefix)
    assert ("cu_seqlens_q" in got.tensors)
    assert_equal(got, expected(h, got))


def test_extend_bad_lengths_name_the_request(sglang):
    h = harness(sglang, max_bs=4, width=256)
    with pytest.raises(ValueError, match=r"extend_seq_lens\[1\]"):
        h.extend(torch.tensor([5, 6]), torch.tensor([5, 7]), torch.tensor([0, 1]))


def test_sglang_method_is_what_runs(sglang, decode_harness, monkeypatch):
    """The harness calls SGLang's class method, once per replay."""
    cls = sglang.backend_module.DeepseekSparseAttnBackend
    real = cls._apply_cuda_graph_metadata
    seen = []

    def counted(self, *args, **kwargs):
        seen.append(kwargs["bs"])
        return real(self, *args, **kwargs)
    monkeypatch.setattr(cls, "_apply_cuda_graph_metadata", counted)
    seq, req = random_batch(3, 1, WIDTH, 8, 2)
    decode_harness.decode(seq, req, graph_bs=8)
    decode_harness.decode(seq, req, graph_bs=8)
    assert seen == [8, 8]
    assert cls.__module__ == "sglang.srt.layers.attention.dsa_backend"
    assert str(sglang.root) in sglang.backend_module.__file__


def test_a_standin_changing_a_tensor_is_detected(sglang, spec_harness, monkeypatch):
    """A stand-in for a piece of SGLang's step that changed a tensor would not go unseen: here
    the expansion (CPU path) or the fused verify kernel (GPU path) is replaced by one that is
    off by one on the last row."""
    h = spec_harness
    module = sglang.backend_module
    if h.device.type == "cuda":
        real = h.backend._fused_verify_metadata

        def off_by_one(**kwargs):
            real(**kwargs)
            kwargs["seqlens_expanded"][kwargs["bs"] * 3 - 1] += 1
        monkeypatch.setattr(h.backend, "_fused_verify_metadata", off_by_one)
    else:
        real = module.seqlens_expand_triton

        def off_by_one(*args):
            out = real(*args)
            out[-1] += 1
            return out
        monkeypatch.setattr(module, "seqlens_expand_triton", off_by_one)
    seq, req = random_batch(3, 1, WIDTH - 3, 8, 3)
    got = h.target_verify(seq, req)
    with pytest.raises(sb.MetadataMismatch) as e:
        assert_equal(got, expected(h, got))
    assert e.value.tensor in ("dsa_seqlens_expanded", "dsa_cache_seqlens_int32")
    assert e.value.row == 8


def test_standins_only_for_absent_modules(sglang):
    import importlib.util
    import sys
    for name in sglang.standins:
        assert getattr(sys.modules[name], "__nsa_standin__", False), name
    assert "torch" not in sglang.standins and "pydantic" not in sglang.standins
    assert importlib.util.find_spec("msgspec") is not None


def test_standins_raise_when_used(sglang):
    """Every stand-in that could compute something raises when called or constructed, so a
    metadata step that reached one would fail every test here; the exceptions are named:
    DeepGEMM's schedule (left out of the comparison), pickling and a logger factory."""
    import inspect
    import sys

    from nsa_kernels.peers import sglang_standins as st
    allowed = {"get_num_sms", "get_paged_mqa_logits_metadata", "dumps", "loads", "get_logger"}
    for name in sglang.standins:
        for attr, value in vars(sys.modules[name]).items():
            if attr.startswith("__") or attr in allowed:
                continue
            if inspect.isfunction(value):
                with pytest.raises(RuntimeError, match="stand-in called"):
                    value()
            elif inspect.isclass(value) and issubclass(value, st._Placeholder):
                with pytest.raises(RuntimeError, match="stand-in called"):
                    value()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the fused path for real: "
                    "python -m nsa_kernels.peers.sglang_backend_check --full")
def test_fused_path_with_the_gpu_machines_packages(sglang):
    """SGLang's CUDA path (is_cuda() true, fused kernels under the interpreter, DeepGEMM's
    schedule stand-in, the wide table dropped) with only the GPU machine's packages importable:
    every mode equals the reference, graph replays run the fused kernels (the GPU command's
    self-check at CPU sizes: tests/sglang_gpu_env.py, in a subprocess)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(root / "tests" / "sglang_gpu_env.py")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FUSED-PATH OK 39" in done.stdout, done.stdout[-3000:]


def test_conformance_of_an_install_that_changes_nothing(sglang, capsys):
    """Shipped against installed, with an install that returns the backend as it is: every
    case equal. ``--conformance MODULE:FUNC`` runs the one sweep
    (``integrations.sglang_conformance``); here its first case of each mode."""
    from nsa_kernels.integrations import sglang_conformance as sc
    from nsa_kernels.peers import sglang_backend_check as check
    first = {}
    for case in sc.cases(False):
        first.setdefault(case.mode, case)
    rows, failures, skipped = sc.run(list(first.values()), install=lambda backend: backend)
    assert not failures, failures
    assert {r["mode"] for r in rows} | {c.mode for c, _ in skipped} == set(sc.MODES)
    assert all(r["equal"] == r["cases"] > 0 for r in rows), rows
    assert all("no CPU path" in reason for _, reason in skipped), skipped
    assert check.conformance(lambda backend: backend, modes=["decode"]) == 0
    assert "MISMATCH" not in capsys.readouterr().out


def test_conformance_names_what_an_install_breaks(sglang, tmp_path, capsys):
    """An install whose decode step writes one live page-table entry wrong is caught, named,
    through ``sglang_backend_check``'s entry point to the sweep (exit status 1, the JSON)."""
    import json

    from nsa_kernels.peers import sglang_backend_check as check

    def broken(backend):
        real = backend.init_forward_metadata_out_graph

        def step(batch, in_capture=False):
            real(batch, in_capture=in_capture)
            if not in_capture and batch.batch_size > 1:
                backend.forward_metadata.page_table_1[1, 0] += 1
        backend.init_forward_metadata_out_graph = step
        return backend
    path = tmp_path / "conformance.json"
    assert check.conformance(broken, modes=["decode"], json_path=str(path)) == 1
    report = json.loads(path.read_text())
    (row,) = report["conformance"]
    failed = report["failures"]
    assert failed and all("page_table_1[1, 0]" in message for _, message in failed), failed
    assert 0 < row["equal"] < row["cases"]  # bs 1 has no row 1
    assert "MISMATCH" in capsys.readouterr().out


def test_fetch_is_idempotent_and_offline_tolerant(tmp_path, monkeypatch):
    import io
    import subprocess
    from types import SimpleNamespace

    from nsa_kernels.peers import fetch
    ran = []

    def offline(command, **kwargs):
        ran.append(command)
        return SimpleNamespace(returncode=1, stdout="", stderr="ERROR: No matching distribution")
    monkeypatch.setattr(subprocess, "run", offline)
    out = io.StringIO()
    assert fetch.fetch_wheel(tmp_path, out=out) is None
    assert "could not download" in out.getvalue() and "No matching distribution" in out.getvalue()
    assert ran and ran[0][1:4] == ["-m", "pip", "download"]
    with pytest.raises(SystemExit):
        fetch.fetch_wheel(tmp_path, strict=True, out=io.StringIO())
    wheel = tmp_path / f"sglang-{sb.VERSION}-cp311-cp311-manylinux_2_34_x86_64.whl"
    wheel.write_bytes(b"")
    ran.clear()
    assert fetch.fetch_wheel(tmp_path, out=io.StringIO()) == wheel
    assert ran == []  # present: no pip call
