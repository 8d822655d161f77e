"""vLLM 0.33.0 as a peer: the loader (wheel, folder, missing), the stand-in import, and output
equality with the reference (expanded lengths, page-granular rows, token -> request).

Triton 3.9's interpreter rejects the scalar masks of vLLM's ``_indexer_decode_metadata_kernel``
("mask has unsupported dtype"); with the test shim ``interpreter_scalar_masks`` (a fixture of
conftest.py) it runs on CPU tensors, so equality is checked here and again on a GPU. vLLM's
file is found as the loader finds it (``NSA_VLLM_PATH``, else the wheel in ``.peers/``).
"""
import sys
import zipfile
from types import SimpleNamespace

import nsa_kernels as nk  # noqa: F401  (first: picks the interpreter)
from nsa_kernels.bench import harness, modes
from nsa_kernels.modes import spec
from nsa_kernels.peers import vllm as vllm_peer

import pytest
import torch

#: Where the loader looks for vLLM (``NSA_VLLM_PATH``, the ``.peers/`` wheels, its cache), read
#: before any test isolates the loader from them.
SOURCES = list(vllm_peer._candidates())


def _source_file():
    """vLLM's ``metadata.py`` from the first of ``SOURCES`` that holds it."""
    for path in SOURCES:
        if path.is_file() and path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                if vllm_peer.FILE in zf.namelist():
                    return zf.read(vllm_peer.FILE)
        elif path.is_dir() and vllm_peer._find_in_folder(path) is not None:
            return vllm_peer._find_in_folder(path).read_bytes()
    pytest.skip("no copy of vLLM's metadata.py here (NSA_VLLM_PATH or a .peers/ wheel)")


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No repository copy and a private cache: only what the test points at is found."""
    monkeypatch.delenv("NSA_VLLM_PATH", raising=False)
    monkeypatch.setattr(vllm_peer, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(vllm_peer, "CACHE", tmp_path / "cache")
    return tmp_path


def _check_module(peer):
    assert peer.version == "0.33.0"
    assert hasattr(peer.metadata, "_indexer_decode_metadata_kernel")
    assert callable(peer.metadata.compute_token_to_req_indices)
    # the stand-in lived in sys.modules only while the file executed
    assert "vllm.triton_utils" not in sys.modules and "vllm" not in sys.modules


def test_loads_from_a_folder_holding_vllm(isolated, monkeypatch):
    target = isolated / "src" / vllm_peer.FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(_source_file())
    monkeypatch.setenv("NSA_VLLM_PATH", str(isolated / "src"))
    peer = vllm_peer.load(require_gpu=False)
    assert peer.source == str(isolated / "src")
    _check_module(peer)


def test_loads_from_the_package_folder_itself(isolated, monkeypatch):
    target = isolated / "pkg" / "v1" / "attention" / "ops" / "metadata.py"
    target.parent.mkdir(parents=True)
    target.write_bytes(_source_file())
    monkeypatch.setenv("NSA_VLLM_PATH", str(isolated / "pkg"))
    _check_module(vllm_peer.load(require_gpu=False))


def test_loads_from_a_wheel_in_peers(isolated):
    peers = isolated / "repo" / ".peers"
    peers.mkdir(parents=True)
    with zipfile.ZipFile(peers / "vllm-0.33.0-cp38-abi3-any.whl", "w") as zf:
        zf.writestr(vllm_peer.FILE, _source_file())
    peer = vllm_peer.load(require_gpu=False)
    assert peer.source == "vllm-0.33.0-cp38-abi3-any.whl"
    assert (isolated / "cache" / vllm_peer.FILE).is_file()
    _check_module(peer)


def test_a_real_vllm_in_sys_modules_is_left_alone(isolated, monkeypatch):
    target = isolated / "src" / vllm_peer.FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(_source_file())
    monkeypatch.setenv("NSA_VLLM_PATH", str(isolated / "src"))
    sentinel = SimpleNamespace(name="someone's vllm")
    monkeypatch.setitem(sys.modules, "vllm", sentinel)
    vllm_peer.load(require_gpu=False)
    assert sys.modules["vllm"] is sentinel and "vllm.triton_utils" not in sys.modules


def test_missing_copy_says_how_to_get_one(isolated, monkeypatch):
    monkeypatch.setenv("NSA_VLLM_PATH", str(isolated / "nowhere"))
    with pytest.raises(vllm_peer.PeerUnavailable, match="pip download vllm==0.33.0 --no-deps"):
        vllm_peer.load(require_gpu=False)


def test_a_wheel_without_the_file_is_skipped(isolated, monkeypatch):
    wheel = isolated / "vllm-0.0.0-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("vllm/__init__.py", "")
    monkeypatch.setenv("NSA_VLLM_PATH", str(wheel))
    with pytest.raises(vllm_peer.PeerUnavailable, match="not found"):
        vllm_peer.load(require_gpu=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_no_gpu_is_refused_with_the_reason(isolated):
    with pytest.raises(vllm_peer.PeerUnavailable, match="no GPU"):
        vllm_peer.load()


WIDTH = 8192 if harness.ON_GPU else 512


@pytest.mark.parametrize("point", [spec.Point("decode", 5, WIDTH, 1, "real_only"),
                                   spec.Point("target_verify", 7, WIDTH, 4),
                                   spec.Point("draft_extend_static", 3, WIDTH, 2),
                                   spec.Point("draft_extend_varlen", 9, WIDTH, 4)],
                         ids=lambda p: p.name)
def test_vllm_outputs_equal_the_reference_on_live_regions(point, interpreter_scalar_masks):
    try:
        peer = vllm_peer.load(require_gpu=harness.ON_GPU)
    except vllm_peer.PeerUnavailable as exc:
        pytest.skip(str(exc))
    inputs = spec.make_inputs(point)
    view = modes.vllm_inputs(point, inputs)
    out = modes.vllm_buffers(point, capacity=None if harness.ON_GPU else 300)
    vllm_peer.decode_metadata_call(peer, view.query_start_loc, view.seq_lens, view.block_table,
                                   out, point.bs, inputs.total_len)()
    counts = spec.check_outputs(point, spec.live_reference(point, inputs),
                              modes.vllm_outputs(out), "vllm")
    assert set(counts) == {"seqlens_expanded", "real_page_table", "token_to_request"}
    # vLLM zeroes the expanded lengths past the tokens, up to its capacity
    assert bool((out.seq_lens[inputs.total_len:] == 0).all())


def test_vllm_token_to_request_equals_the_reference(interpreter_scalar_masks):
    """``compute_token_to_req_indices`` (vLLM's graph-safe token -> request map) against the
    reference's token -> request of a varlen draft extend; tokens past the mapped ones get 0."""
    try:
        peer = vllm_peer.load(require_gpu=harness.ON_GPU)
    except vllm_peer.PeerUnavailable as exc:
        pytest.skip(str(exc))
    point = spec.Point("draft_extend_varlen", 11, 512, 4)
    inputs = spec.make_inputs(point)
    view = modes.vllm_inputs(point, inputs)
    out = torch.full(
        (inputs.total_len + 300,), -1, dtype=torch.int32, device=inputs.seq_lens.device
    )
    n = inputs.total_len + 7
    got = peer.metadata.compute_token_to_req_indices(view.query_start_loc, out, inputs.total_len, n)
    expected, _ = spec.live_reference(point, inputs)["token_to_request"]
    assert spec.compare_live("vllm token->request", got, expected) == inputs.total_len
    assert got[inputs.total_len:].tolist() == [0] * 7 and bool((out[n:] == -1).all())
