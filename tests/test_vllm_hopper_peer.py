"""vLLM 0.33.0's Hopper (SM90) indexer decode metadata as a peer (``peers.vllm_hopper``): what
it loads, the path vLLM takes per next_n, and its outputs against a plain reference.

The reference is the formula vLLM's comments give: token ``j`` of a request with KV length
``L`` (counting the step's ``n`` tokens) attends to ``max(L - n + j + 1, 0)`` KV tokens and
reads its request's block-table row. vLLM's files are found as the loader finds them
(``NSA_VLLM_PATH``, else the wheel in ``.peers/``).
"""
import inspect
import sys
import zipfile

import nsa_kernels  # noqa: F401  (first: picks the interpreter)
from nsa_kernels.peers import vllm as vllm_peer
from nsa_kernels.peers import vllm_hopper as vh

import pytest
import torch

SOURCES = list(vllm_peer._candidates())


@pytest.fixture(scope="module")
def peer():
    try:
        return vh.load(require_gpu=False)
    except vh.PeerUnavailable as e:
        pytest.skip(str(e))


def _reference(seq_lens, table, n):
    j = torch.arange(n)
    lens = (seq_lens[:, None] - n + 1 + j[None, :]).clamp(min=0).to(torch.int32)
    return lens.reshape(-1), table.repeat_interleave(n, dim=0)


def _batch(bs, pages, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(4, pages * vh.PAGE_SIZE, (bs,), generator=g)
    table = torch.randperm(bs * pages * 3, generator=g)[:bs * pages].view(bs, pages)
    return seq, table.to(torch.int32)


@pytest.mark.parametrize("n,adaptive,flattened", [(1, False, False), (2, False, False),
                                                  (4, False, False), (3, False, True),
                                                  (2, True, True)])
@pytest.mark.parametrize("bs", [1, 5])
def test_outputs_equal_the_reference(peer, n, adaptive, flattened, bs):
    builder = vh.Builder(peer, 8, 6, n, device="cpu", adaptive=adaptive)
    # SM90: next_n 1, 2, 4 are native; 3 (or adaptive verification) is flattened
    assert builder.builder.use_flattening is flattened
    assert builder.builder.supports_varlen is False
    seq, table = _batch(bs, 6, seed=bs * 10 + n)
    builder.step(builder.inputs(seq + 7, table))  # other lengths first: the buffers are stale
    metadata = builder.step(builder.inputs(seq, table))
    out = vh.outputs(metadata, n)
    lens, rows = _reference(seq, table, n)
    assert torch.equal(out["dsa_seqlens_expanded"], lens)
    assert torch.equal(out["real_page_table"], rows)
    decode = metadata.decode
    assert decode.seq_lens.shape == ((bs * n, 1) if flattened else (bs, n))
    assert decode.decode_lens.tolist() == [1 if flattened else n] * (bs * n if flattened else bs)
    assert decode.per_req_decode_lens.tolist() == [n] * bs
    assert decode.requires_padding is False and decode.write_max_decode_len == n
    assert decode.schedule_metadata.numel() == 0  # DeepGEMM's schedule left out
    assert metadata.num_decodes == bs and metadata.num_prefills == 0


def test_the_flattened_uniform_path_is_vllms_triton_kernel(peer, monkeypatch):
    kernel = peer.ns._PREPARE_UNIFORM_DECODE_KERNEL
    calls = []
    original = type(kernel).launch

    def counted(self, spec, inputs):
        calls.append(spec[0])
        return original(self, spec, inputs)
    monkeypatch.setattr(type(kernel), "launch", counted)
    builder = vh.Builder(peer, 4, 3, 3, device="cpu")
    seq, table = _batch(4, 3, seed=3)
    builder.step(builder.inputs(seq, table))
    assert calls == [(12,)]  # one program per token


def test_what_runs_is_vllms_code(peer):
    build = peer.ns.DeepseekV32IndexerMetadataBuilder.build
    assert inspect.getsourcefile(build).endswith(vh.INDEXER)
    assert "_prepare_decode_tensors" in inspect.getsource(build)
    split = peer.ns.split_decodes_and_prefills
    assert inspect.getsourcefile(split).endswith(vh.BACKEND_UTILS)
    assert peer.ns.native_next_n_supported(4) and not peer.ns.native_next_n_supported(3)
    assert "vllm" not in sys.modules


def test_bad_inputs_name_the_argument(peer):
    builder = vh.Builder(peer, 4, 3, 2, device="cpu")
    seq, table = _batch(2, 3, seed=1)
    with pytest.raises(ValueError, match="seq_lens"):
        builder.inputs(torch.tensor([1, 9]), table)
    with pytest.raises(ValueError, match="block_table"):
        builder.inputs(seq, table[:, :2])
    with pytest.raises(ValueError, match="block_table"):
        builder.inputs(seq, table.long())
    with pytest.raises(ValueError, match="next_n"):
        vh.Builder(peer, 4, 3, 0, device="cpu")
    with pytest.raises(ValueError, match="adaptive"):
        vh.Builder(peer, 4, 3, 2, device="cpu", adaptive=1)


def _copy_files(target):
    """vLLM's three files from the first of ``SOURCES`` that holds them, into ``target``."""
    for path in SOURCES:
        if path.is_file() and path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if all(f in names for f in vh.TAKEN):
                    for f in vh.TAKEN:
                        (target / f).parent.mkdir(parents=True, exist_ok=True)
                        (target / f).write_bytes(zf.read(f))
                    return target
        elif path.is_dir() and all(vllm_peer._find_in_folder(path, f) for f in vh.TAKEN):
            for f in vh.TAKEN:
                (target / f).parent.mkdir(parents=True, exist_ok=True)
                (target / f).write_bytes(vllm_peer._find_in_folder(path, f).read_bytes())
            return target
    pytest.skip("no copy of vLLM's files here (NSA_VLLM_PATH or a .peers/ wheel)")


def test_loads_from_a_folder_and_says_what_a_file_lacks(tmp_path, monkeypatch):
    folder = _copy_files(tmp_path / "src")
    monkeypatch.setattr(vllm_peer, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(vllm_peer, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("NSA_VLLM_PATH", str(folder))
    assert set(vh.load(require_gpu=False).sources.values()) == {str(folder)}
    utils = folder / vh.BACKEND_UTILS
    utils.write_text(utils.read_text().replace("def split_decodes_and_prefills(",
                                               "def split_renamed("))
    with pytest.raises(vh.PeerUnavailable, match="split_decodes_and_prefills"):
        vh.load(require_gpu=False)
    monkeypatch.setenv("NSA_VLLM_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(vh.PeerUnavailable, match="pip download vllm==0.33.0"):
        vh.load(require_gpu=False)
