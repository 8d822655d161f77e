"""``nsa_kernels.integrations.sglang.install`` inside SGLang 0.5.23's own DSA backend.

SGLang's methods run from its wheel through ``nsa_kernels.peers.sglang_backend``; each
conformance case runs one twice, as shipped and on a twin with the workbook installed, and
compares every ``forward_metadata`` tensor and host field (``integrations.sglang_conformance``).
On a CPU the small grid runs under Triton's interpreter (SGLang takes its torch fallback); the
full grid, the in-graph mode and the host-cost probe need a GPU.
"""
import nsa_kernels  # noqa: F401  (first: it switches Triton to its interpreter on CPU)
from nsa_kernels import launcher
from nsa_kernels.integrations import sglang as nsg
from nsa_kernels.integrations import sglang_conformance as sc

import pytest
import torch

sb = pytest.importorskip("nsa_kernels.peers.sglang_backend")

ON_GPU = torch.cuda.is_available() and not nsa_kernels.INTERPRET
REPLACED = ("_apply_cuda_graph_metadata", "init_forward_metadata")


@pytest.fixture(scope="module")
def sglang():
    try:
        return sb.load()
    except sb.PeerUnavailable as e:
        pytest.skip(str(e))


def harness(**kwargs):
    kwargs.setdefault("width", 320)
    kwargs.setdefault("max_bs", 4)
    try:
        return sb.SGLangHarness(sb.HarnessConfig(**kwargs))
    except sb.HarnessUnavailable as e:
        pytest.skip(str(e))


def test_install_refuses_what_it_does_not_serve(sglang):
    with pytest.raises(TypeError, match="DeepseekSparseAttnBackend"):
        nsg.install(object())
    backend = harness().backend
    with pytest.raises(TypeError, match="in_graph"):
        nsg.install(backend, in_graph="yes")
    backend.dsa_index_kpool = 4
    with pytest.raises(ValueError, match="dsa_index_kpool"):
        nsg.install(backend)
    backend.dsa_index_kpool = 1
    backend.experimental_kpool_metadata_fusion = True
    with pytest.raises(ValueError, match="experimental_kpool_metadata_fusion"):
        nsg.install(backend)
    assert nsg.installation(backend) is None
    assert not set(REPLACED) & set(vars(backend))


def test_install_is_idempotent_and_uninstall_restores(sglang):
    backend = harness().backend

    def own_override(forward_batch):  # an instance override present before the install
        raise AssertionError("not called")
    backend.init_forward_metadata = own_override
    assert nsg.install(backend) is backend
    first = nsg.installation(backend)
    assert first is not None and set(REPLACED) <= set(vars(backend))
    assert nsg.install(backend) is backend and nsg.installation(backend) is first
    with pytest.raises(ValueError, match="in_graph"):
        nsg.install(backend, in_graph=True)
    assert nsg.uninstall(backend) is backend
    assert nsg.installation(backend) is None
    assert backend.init_forward_metadata is own_override
    assert "_apply_cuda_graph_metadata" not in vars(backend)
    assert nsg.uninstall(backend) is backend  # a no-op now


def test_multi_step_install_covers_every_draft_backend(sglang):
    pair = sc.MultiStepPair(sb, sb.HarnessConfig(max_bs=2, width=320), steps=4)
    shipped, installed = pair.sides
    assert all(nsg.installation(b) is not None for b in installed.multi.attn_backends)
    assert all(nsg.installation(b) is None for b in shipped.multi.attn_backends)
    nsg.uninstall(installed.multi)
    assert all(nsg.installation(b) is None for b in installed.multi.attn_backends)
    assert "init_forward_metadata_out_graph" not in vars(installed.multi)


@pytest.mark.parametrize("mode", sc.MODES)
def test_conformance(sglang, mode):
    rows, failures, skipped = sc.run(sc.cases(full=ON_GPU, modes=(mode,)))
    assert not failures, failures[:3]
    if not rows:
        pytest.skip(skipped[0][1] if skipped else "no case on this device")
    (row,) = rows
    assert row["equal"] == row["cases"] > 0 and row["tensors"] > 0


def test_conformance_sees_a_fill_that_writes_nothing(sglang, monkeypatch):
    # The comparison must be able to fail: with the workbook's bound launches launching nothing,
    # the installed replays keep their capture-time buffers and every case differs.
    for path in (launcher.TritonLaunch, launcher.DriverLaunch):
        monkeypatch.setattr(path, "__call__", lambda self: None)
    case_list = [sc.Case("decode", 3, 2, 320), sc.Case("target_verify", 3, 3, 320, 2)]
    rows, failures, _ = sc.run(case_list)
    assert [r["equal"] for r in rows] == [0, 0] and len(failures) == 2


def test_replay_binds_once_and_allocates_nothing_per_step(sglang, monkeypatch):
    h = harness(next_n=3)
    nsg.install(h.backend)
    seq, pool = torch.tensor([63, 64, 65]), torch.tensor([2, 0, 3])
    h.draft_extend(seq, pool, graph_bs=4)  # capture, then the first replay binds
    served = nsg.installation(h.backend)
    binds = []
    original_bind = served.bind_replay
    monkeypatch.setattr(served, "bind_replay", lambda *a: binds.append(a) or original_bind(*a))
    fm = sglang.forward_mode.DRAFT_EXTEND_V2
    static_seq = torch.tensor([63, 64, 65, 3], dtype=torch.int64, device=h.device)
    static_pool = torch.tensor([2, 0, 3, 0], dtype=torch.int64, device=h.device)
    from types import SimpleNamespace
    view = SimpleNamespace(batch_size=4, forward_mode=fm, seq_lens=static_seq,
                           seq_lens_cpu=static_seq.cpu(), req_pool_indices=static_pool,
                           spec_info=None, out_cache_loc=None, actual_forward_mode=fm)
    h.backend.init_forward_metadata_out_graph(view)  # new input buffers: one bind
    assert len(binds) == 1

    def no_allocation(*args, **kwargs):
        raise AssertionError("a tensor was allocated in a bound replay step")
    for name in ("full", "empty", "zeros", "arange", "tensor"):
        monkeypatch.setattr(torch, name, no_allocation)
    for _ in range(3):
        h.backend.init_forward_metadata_out_graph(view)
    assert len(binds) == 1


def test_in_graph_methods_equal_sglang_without_the_graph(sglang):
    # Everything of the in-graph mode but the capture: its in-graph method run where a replay
    # would run it, then the out-of-graph re-pointing, against SGLang's shipped replay.
    from nsa_kernels.integrations.sglang_in_graph import check_in_graph
    rows = check_in_graph(sizes=(1, 3), replays=3, width=320, graphs=False)
    assert [r["equal"] for r in rows] == [3] * 8


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="the in-graph mode captures CUDA graphs: GPU only")
def test_in_graph_mode_equals_sglang(sglang):
    from nsa_kernels.integrations.sglang_in_graph import check_in_graph
    rows = check_in_graph(sizes=(1, 8, 32), replays=3)
    assert all(r["equal"] == r["replays"] for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="host times under Triton's interpreter say nothing")
def test_host_cost_probe_measures_both_sides(sglang):
    from nsa_kernels.integrations.sglang_host_cost import measure
    records = measure(modes=("decode", "extend"), sizes=(8,), rounds=2, calls=5)
    stages = {(r["workload"], r["stage"]) for r in records}
    assert {("decode", "sglang_step"), ("decode", "nsa_installed"), ("decode", "nsa_in_graph"),
            ("extend", "sglang_step"), ("extend", "nsa_installed")} <= stages
    assert all(r["host_us"] > 0 for r in records)


SIMULATED_CUDA = """
import sys
sys.path.insert(0, {tests!r})
import sglang_gpu_env as env
env.coerce_interpreter_masks()
sys.meta_path.insert(0, env.HideOtherPackages())
env.pretend_cuda()
from nsa_kernels.integrations import sglang_conformance as sc
from nsa_kernels.integrations.sglang_in_graph import check_in_graph
from nsa_kernels.peers import sglang_backend as sb
sb.load()
from sglang.srt.utils import is_cuda
assert is_cuda(), "SGLang must see CUDA here"
rows, failures, skipped = sc.run(sc.cases(False))
assert not failures and not skipped, (failures, skipped)
graph = check_in_graph(sizes=(1, 3), width=320, graphs=False)
assert all(r["equal"] == r["replays"] for r in graph), graph
print("CUDA-PATH OK", sum(r["equal"] for r in rows), "cases,", len(rows), "modes")
"""


@pytest.mark.skipif(ON_GPU, reason="on a GPU test_conformance runs SGLang's real CUDA path")
def test_conformance_on_sglangs_cuda_path_with_the_gpu_machines_packages(sglang):
    # SGLang's is_cuda() true (its fused kernels under the interpreter, DeepGEMM's schedule
    # stand-in, the wide table dropped for decode_narrow, paged_mqa_ctx_lens_2d compared), with
    # only the GPU machine's packages importable (tests/sglang_gpu_env.py), in a subprocess: the
    # installed tail's CUDA branch and every mode, before a GPU run.
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), TRITON_INTERPRET="1")
    code = SIMULATED_CUDA.format(tests=str(root / "tests"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=900, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = f"CUDA-PATH OK {len(sc.cases(False))} cases, {len(sc.MODES)} modes"
    assert expected in done.stdout, done.stdout[-3000:]
