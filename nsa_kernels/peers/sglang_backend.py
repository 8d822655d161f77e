"""SGLang 0.5.23's own DSA backend methods, run outside a server: the per-step metadata.

SGLang's files are loaded from its wheel by path (never installed, never copied here): the
``sglang/**.py`` files are extracted once into ``.peers/sglang-<version>-src/`` (ignored by
git), or read from ``$NSA_SGLANG_PATH`` when that is a folder holding ``sglang/...`` (the GPU
run's slim copy, ``.peers_slim``). The wheel is found as the other peers are
(``nsa_kernels.peers.sglang.peer_candidates``); ``python -m nsa_kernels.peers.fetch`` downloads
it. Absent third-party modules get the explicit stand-ins of ``sglang_standins``.

API::

    from nsa_kernels.peers import sglang_backend as sb
    cfg = sb.HarnessConfig(max_bs=8, width=1024, next_n=0, kv_dtype="bf16", wide_table=True)
    harness = sb.SGLangHarness(cfg)          # builds DeepseekSparseAttnBackend, graph state
    out = harness.decode(seq_lens, req_pool_indices)          # raw_bs = len(seq_lens)
    out = harness.decode(seq_lens, req_pool_indices, graph_bs=8)  # a padded replay
    out = harness.target_verify(seq_lens, req_pool_indices)   # needs next_n >= 1
    out = harness.draft_extend(seq_lens, req_pool_indices)    # draft_extend v2
    out = harness.extend(seq_lens, extend_seq_lens, req_pool_indices)  # init_forward_metadata
    out = harness.eager("decode", seq_lens, req_pool_indices)  # init_forward_metadata, no graph
    out.tensors   # {name: tensor}, cloned from backend.forward_metadata
    out.case      # MetadataCase: mode, bs, raw_bs, live lengths per row
    sb.compare_metadata(out_a, out_b)      # raises MetadataMismatch(tensor, row, column)

``harness.backend`` is the live ``DeepseekSparseAttnBackend``; ``harness.install(fn)`` applies
``fn(backend) -> backend`` to it (the install path: methods or ``_fused_*`` attributes replaced on
the instance), after which the same harness calls run through what was installed.
``integrations.sglang_conformance.run(cases, install=fn)`` runs every case twice, as shipped and
installed, and compares every tensor and host field (``python -m
nsa_kernels.peers.sglang_backend_check --conformance MODULE:FUNC`` runs its grid for ``fn``).
``harness.req_to_token`` is the request -> token-slot table (``[max_bs, width]`` int32, random
distinct slots) the page-table rows are gathered from.

What is real and what is not: every method called is SGLang's (the graph runner's order:
``init_cuda_graph_state``, then per graph bs a first ``init_forward_metadata_out_graph(...,
in_capture=True)`` that builds the static buffers, then one call per replay). The backend is
built the way ``sglang/test/kits/dsa_metadata_kit.py`` builds it (``object.__new__`` plus the
attributes the metadata methods read). Environment: ``SGLANG_OPT_USE_TOPK_V2=0`` (the top-k v2
plan is a CUDA kernel), the metadata glue graph and the kpool metadata fusion off; the runtime
context's single-rank overrides are entered once, at load, as a server enters them at start.

On a CPU SGLang's ``is_cuda()`` is false and it takes its torch fallback; its fused wrappers and
``seqlens_expand_triton`` assert CUDA tensors, so SGLang's modules (only those) are compiled
with ``optimize=1``, which strips asserts, and its Triton kernels run under the interpreter.
Without the wide table SGLang has no fallback (it writes the wide table): where its
``is_cuda()`` is false that configuration raises ``HarnessUnavailable``. On a GPU the same calls
take SGLang's fused path (``sglang_backend_check`` reports which ``_fused_*`` kernels ran).
Left out of ``tensors`` (``NOT_COMPARED``): DeepGEMM's ``paged_mqa_schedule_metadata`` (an SM
work split for its logits kernel, the stand-in's constant where DeepGEMM is absent) and the
top-k v2 plan (off); DeepGEMM's input ``paged_mqa_ctx_lens_2d`` is compared.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import marshal
import os
import shutil
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from nsa_kernels.peers import sglang_standins
from nsa_kernels.peers.sglang import REPO_ROOT, VERSION, PeerUnavailable, peer_candidates

import torch

SOURCE_CACHE = REPO_ROOT / ".peers" / f"sglang-{VERSION}-src"
BACKEND_MODULE = "sglang.srt.layers.attention.dsa_backend"
ENVIRONMENT = {
    # the top-k v2 plan is built by a CUDA JIT kernel with no CPU path: off on every device,
    # so that CPU and GPU run the same steps
    "SGLANG_OPT_USE_TOPK_V2": "0",
    "SGLANG_ENABLE_METADATA_GLUE_GRAPH": "0",
    "SGLANG_EXPERIMENTAL_DSA_KPOOL_METADATA_FUSION": "0",
}
# imported by SGLang's files at module level and used there for real (structs, models, regexes)
REAL_DEPENDENCIES = ("msgspec", "pydantic", "pydantic_core", "annotated_types",
                     "typing_inspection", "regex", "typing_extensions")
JIT_SOURCES = ("sglang/kernels/jit/include/", "sglang/kernels/jit/csrc/")
PAGE_SIZE = 64
TOPK = 2048


class HarnessUnavailable(PeerUnavailable):
    """SGLang's wheel is missing, or the configuration has no path on this device."""


# --- loading SGLang's files ---------------------------------------------------------------

def _extract(wheel):
    """SGLang's files, extracted once into the cache (atomically: a rename of a full copy)."""
    marker = SOURCE_CACHE / f".complete-{wheel.name}"
    if marker.exists():
        return SOURCE_CACHE
    scratch = SOURCE_CACHE.with_name(f"{SOURCE_CACHE.name}.tmp-{os.getpid()}")
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            # .py files, and the JIT kernel sources whose folders SGLang checks for at import
            wanted = name.endswith(".py") or name.startswith(JIT_SOURCES)
            if name.startswith("sglang/") and wanted and not name.endswith("/"):
                target = scratch / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    (scratch / marker.name).write_text(wheel.name)
    if SOURCE_CACHE.exists() and not marker.exists():
        shutil.rmtree(SOURCE_CACHE, ignore_errors=True)  # partial, or another wheel's files
    try:
        os.rename(scratch, SOURCE_CACHE)
    except OSError:  # another process renamed its full copy first
        shutil.rmtree(scratch, ignore_errors=True)
    return SOURCE_CACHE


def source_root():
    """The folder holding ``sglang/``: ``$NSA_SGLANG_PATH``, a ``.peers`` wheel, the cache."""
    for path in peer_candidates("NSA_SGLANG_PATH", "sglang", REPO_ROOT, SOURCE_CACHE):
        if path.is_file() and path.suffix == ".whl":
            return _extract(path)
        if (path / BACKEND_MODULE.replace(".", "/")).with_suffix(".py").is_file():
            return path
    raise HarnessUnavailable(
        f"SGLang {VERSION} not found: run `python -m nsa_kernels.peers.fetch` (or set "
        f"NSA_SGLANG_PATH to the wheel or to a folder holding sglang/)")


class _StrippedAssertLoader(importlib.machinery.SourceFileLoader):
    """Compiles with ``optimize=1`` (asserts stripped), caching to a ``.opt-nsa.pyc`` name of
    its own (an 8-byte source mtime, then the marshalled code: not CPython's pyc header, so
    never under a name CPython reads).

    SGLang's CUDA-only asserts guard its fused wrappers; the torch fallback they sit beside
    runs on any tensors. Only files under SGLang's root are loaded by this class. Several
    processes may load the same tree at once: the cache is written to a private file and
    renamed into place, and a cache that does not unmarshal is compiled again.
    """

    def get_code(self, fullname):
        source_path = self.get_filename(fullname)
        cache = importlib.util.cache_from_source(source_path, optimization="nsa")
        mtime = os.stat(source_path).st_mtime_ns
        try:
            with open(cache, "rb") as handle:
                stamp = handle.read(8)
                if int.from_bytes(stamp, "little") == mtime:
                    return marshal.loads(handle.read())
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile(self.get_data(source_path), source_path, "exec", dont_inherit=True,
                       optimize=1)
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            private = f"{cache}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(private, "wb") as handle:
                handle.write(mtime.to_bytes(8, "little") + marshal.dumps(code))
            os.replace(private, cache)
        return code


class _SGLangFinder(importlib.abc.MetaPathFinder):
    """Finds ``sglang.*`` under one root. ``sglang/__init__.py`` itself is not run: it is the
    frontend language API (and patches transformers); the backend needs only the package."""

    def __init__(self, root):
        self.root = Path(root)

    def find_spec(self, name, path=None, target=None):
        if name != "sglang" and not name.startswith("sglang."):
            return None
        base = self.root.joinpath(*name.split("."))
        if name == "sglang" or (base.is_dir() and not (base / "__init__.py").exists()):
            if not base.is_dir():
                return None
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(base)]
            return spec
        if (base / "__init__.py").is_file():
            init = str(base / "__init__.py")
            return importlib.util.spec_from_file_location(
                name, init, loader=_StrippedAssertLoader(name, init),
                submodule_search_locations=[str(base)])
        file = base.with_suffix(".py")
        if file.is_file():
            return importlib.util.spec_from_file_location(
                name, str(file), loader=_StrippedAssertLoader(name, str(file)))
        return None


@dataclass
class LoadedSGLang:
    root: Path
    backend_module: object
    forward_mode: object
    envs: object
    seconds: float
    standins: list
    context_entries: int = 0
    modules: list = field(default_factory=list)
    _context: contextlib.ExitStack | None = None


_LOADED: LoadedSGLang | None = None


def _enter_runtime_context(loaded):
    """Single-rank runtime context, entered once for the process (a server does this once)."""
    from sglang.srt.runtime_context import get_parallel
    stack = contextlib.ExitStack()
    stack.enter_context(get_parallel().override(dcp_enabled=False, attn_cp_size=1))
    loaded._context = stack
    loaded.context_entries += 1


def load():
    """SGLang's backend module, imported once per process (about 690 files)."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    root = source_root()
    if "sglang" in sys.modules and not any(
            isinstance(f, _SGLangFinder) for f in sys.meta_path):
        raise HarnessUnavailable("another `sglang` is already imported in this process")
    for name, value in ENVIRONMENT.items():
        os.environ[name] = value
    start = time.perf_counter()
    standins = sglang_standins.install()
    if not any(isinstance(f, _SGLangFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SGLangFinder(root))
    try:
        backend_module = importlib.import_module(BACKEND_MODULE)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in REAL_DEPENDENCIES:
            raise HarnessUnavailable(
                f"SGLang's files need {e.name!r}: pip install -e '.[peers]' (msgspec, pydantic, "
                f"regex, typing_extensions)") from e
        raise
    from sglang.srt.environ import envs
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    seconds = time.perf_counter() - start
    _LOADED = LoadedSGLang(root=root, backend_module=backend_module, forward_mode=ForwardMode,
                           envs=envs, seconds=seconds, standins=standins)
    _enter_runtime_context(_LOADED)
    _LOADED.modules = sorted(n for n in sys.modules if n == "sglang" or n.startswith("sglang."))
    return _LOADED


# --- the backend, built as SGLang's test kit builds it ------------------------------------

@dataclass(frozen=True)
class HarnessConfig:
    """One backend configuration: graph sizes, page-table width (= max context), speculative
    draft tokens (``next_n``, 0 for plain decode), the KV dtype (``bf16``: PAGED top-k transform
    for extend, ``fp8``: RAGGED), and whether the graph state keeps the wide page table."""
    max_bs: int = 8
    width: int = 1024
    next_n: int = 0
    kv_dtype: str = "bf16"
    wide_table: bool = True
    page_size: int = PAGE_SIZE
    topk: int = TOPK
    pool_requests: int = 0  # rows of req_to_token; 0: max_bs
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0

    def __post_init__(self):
        if self.kv_dtype not in ("bf16", "fp8"):
            raise ValueError(f"kv_dtype must be 'bf16' or 'fp8', got {self.kv_dtype!r}")
        for name in ("max_bs", "width", "page_size", "topk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.next_n, int) or self.next_n < 0:
            raise ValueError(f"next_n must be an int >= 0, got {self.next_n!r}")


@dataclass
class MetadataCase:
    """What a comparison needs besides the tensors: the mode, the batch sizes and the live
    length of every row of the page tables (``cache_seqlens_int32`` repeated per query row)."""
    mode: str
    bs: int
    raw_bs: int
    next_n: int
    page_size: int
    row_lengths: torch.Tensor  # int64 on the host, one per page-table row
    # the inputs as SGLang's method saw them (padded to bs), int64 on the host
    seq_lens: torch.Tensor | None = None
    req_pool_indices: torch.Tensor | None = None
    extend_seq_lens: torch.Tensor | None = None


@dataclass
class MetadataResult:
    tensors: dict
    case: MetadataCase


class MetadataMismatch(AssertionError):
    def __init__(self, tensor, row=None, column=None, detail=""):
        where = tensor if row is None else f"{tensor}[{row}" + (
            "]" if column is None else f", {column}]")
        super().__init__(f"forward_metadata differs at {where}: {detail}")
        self.tensor, self.row, self.column = tensor, row, column


def _random_req_to_token(rows, width, seed, device):
    # distinct token slots per request row, so a row or column taken from the wrong place shows
    generator = torch.Generator().manual_seed(seed)
    slots = torch.randperm(rows * width, generator=generator, dtype=torch.int64)
    return slots.to(torch.int32).view(rows, width).to(device)


class SGLangHarness:
    """A ``DeepseekSparseAttnBackend`` for one configuration, driven as SGLang's runners drive
    it. See the module docstring for the calls."""

    def __init__(self, config: HarnessConfig):
        self.config = config
        self.sglang = load()
        device = torch.device(config.device)
        from sglang.srt.utils import is_cuda
        if not is_cuda() and not config.wide_table:
            raise HarnessUnavailable(
                "without the wide page table SGLang has no CPU path: its torch fallback writes "
                "the wide table; this configuration runs only on a GPU (fused path)")
        self.device = device
        rows = config.pool_requests or config.max_bs
        self.req_to_token = _random_req_to_token(rows, config.width, config.seed, device)
        self.backend = self._build_backend()
        self._graph_ready = set()
        self.calls = {}

    def install(self, install):
        """Apply ``install(backend) -> backend`` (e.g. ``nsa_kernels.integrations.sglang.install``)
        to the live backend, as a user would after the server started: the graph state exists,
        the graphs of the batch sizes already stepped are captured. Returns the backend."""
        backend = install(self.backend)
        if backend is None:
            raise TypeError("install(backend) must return the backend")
        self.backend = backend
        return backend

    def _build_backend(self):
        """The attributes the metadata methods read (init_forward_metadata,
        _build_forward_metadata_cuda_graph, _apply_cuda_graph_metadata and their helpers), set
        as ``dsa_metadata_kit.make_backend`` sets them; then SGLang's init_cuda_graph_state."""
        cfg, sgl = self.config, self.sglang
        module = sgl.backend_module
        from sglang.srt.layers.attention.dsa.dsa_topk_backend import DSATopKBackend
        from sglang.srt.utils.torch_memory_saver_adapter import TorchMemorySaverAdapter
        backend = object.__new__(module.DeepseekSparseAttnBackend)
        backend.device = self.device
        major = torch.cuda.get_device_capability()[0] if self.device.type == "cuda" else 0
        backend.device_sm_major = major
        backend.num_q_heads = 64
        backend.physical_page_size = cfg.page_size
        backend.dsa_index_topk = cfg.topk
        backend.dsa_index_kpool = 1
        backend.speculative_num_draft_tokens = cfg.next_n
        backend.dsa_kv_cache_store_fp8 = cfg.kv_dtype == "fp8"
        # sparse MLA for prefill and decode: flashmla_kv would ask FlashMLA for its own
        # metadata; the transform (PAGED / RAGGED) follows the KV dtype as on Hopper
        backend.dsa_decode_impl = "flashmla_sparse"
        backend.dsa_prefill_impl = "flashmla_sparse"
        backend.enable_auto_select_prefill_impl = False
        backend.use_mha = False
        backend.supports_mha_one_shot = False  # dense MHA prefill has no DSA metadata
        backend.use_fused_topk = True
        backend.hisparse_coordinator = None
        backend._kv_shard_pool = None
        backend._memory_saver_adapter = TorchMemorySaverAdapter.create(enable=False)
        kv_dtype = torch.float8_e4m3fn if cfg.kv_dtype == "fp8" else torch.bfloat16
        backend.token_to_kv_pool = SimpleNamespace(
            index_page_size=cfg.page_size, dtype=kv_dtype, page_size=cfg.page_size,
            size=self.req_to_token.numel() + cfg.page_size)
        backend.req_to_token = self.req_to_token
        backend.req_to_token_pool = SimpleNamespace(req_to_token=self.req_to_token,
                                                    size=self.req_to_token.shape[0])
        # attention-dispatch state only: no graph is being captured by a breakable backend
        backend._is_in_breakable_cuda_graph = lambda: False
        backend._is_in_tc_piecewise_cuda_graph = lambda: False
        backend._get_device_sm = lambda: major * 10
        backend._is_blackwell = lambda: major == 10
        backend.dsa_topk_backend = DSATopKBackend.SGL_KERNEL
        backend._arange_buf = torch.arange(16384, device=self.device, dtype=torch.int32)
        backend._init_kpool_metadata_fusion()
        max_tokens = cfg.max_bs * max(cfg.next_n, 1)
        v2 = sgl.envs.SGLANG_OPT_USE_TOPK_V2
        # SGLang drops the wide table only where the top-k v2 kernel reads the compact one;
        # the harness asks for that decision (v2 on while the graph state is sized), and
        # keeps v2 off for the steps themselves
        with v2.override(not cfg.wide_table):
            backend.init_cuda_graph_state(cfg.max_bs, max_tokens)
        if backend.dsa_drop_wide_page_table == cfg.wide_table:
            raise HarnessUnavailable(
                f"SGLang chose wide_table={not backend.dsa_drop_wide_page_table} for this "
                f"configuration (it drops the wide table only for plain decode on CUDA)")
        return backend

    # --- inputs ---------------------------------------------------------------------------
    def _lengths(self, name, tensor, count=None):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.dtype not in (
                torch.int32, torch.int64):
            raise TypeError(f"{name} must be a 1-D int32/int64 tensor, got "
                            f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
        if count is not None and tensor.numel() != count:
            raise ValueError(f"{name} must have {count} entries (one per request), "
                             f"got {tensor.numel()}")
        return tensor.to(device=self.device, dtype=torch.int64)

    def _check_batch(self, seq_lens, req_pool_indices, extra_kv=0, min_len=1):
        seq = self._lengths("seq_lens", seq_lens)
        req = self._lengths("req_pool_indices", req_pool_indices, seq.numel())
        host_seq, host_req = seq.cpu(), req.cpu()
        width, rows = self.config.width, self.req_to_token.shape[0]
        for i, (kv, r) in enumerate(zip(host_seq.tolist(), host_req.tolist())):
            if not min_len <= kv + extra_kv <= width:
                raise ValueError(f"seq_lens[{i}] = {kv}: request {i}'s kv length "
                                 f"{kv + extra_kv} must be in [{min_len}, width={width}]")
            if not 0 <= r < rows:
                raise ValueError(f"req_pool_indices[{i}] = {r} is outside req_to_token's "
                                 f"{rows} rows")
        return seq, req, host_seq

    # --- the CUDA-graph path: capture once per graph bs, then replay ------------------------
    def _graph_step(self, mode, seq_lens, req_pool_indices, graph_bs):
        cfg, fm = self.config, self.sglang.forward_mode
        forward_mode = {"decode": fm.DECODE, "target_verify": fm.TARGET_VERIFY,
                        "draft_extend": fm.DRAFT_EXTEND_V2}[mode]
        if mode != "decode" and cfg.next_n < 1:
            raise ValueError(f"{mode} needs next_n >= 1 in the HarnessConfig")
        if mode == "decode" and cfg.next_n:
            raise ValueError("decode graphs are captured for next_n = 0 (SGLang sizes the "
                             "decode graph state per draft token otherwise)")
        extra = cfg.next_n if mode == "target_verify" else 0
        min_len = cfg.next_n if mode == "draft_extend" else 1
        seq, req, host_seq = self._check_batch(seq_lens, req_pool_indices, extra, min_len)
        raw_bs = seq.numel()
        bs = raw_bs if graph_bs is None else graph_bs
        if not isinstance(bs, int) or not raw_bs <= bs <= cfg.max_bs or raw_bs == 0:
            raise ValueError(f"graph_bs must be an int in [len(seq_lens)={raw_bs}, "
                             f"max_bs={cfg.max_bs}] (raw_bs >= 1), got {graph_bs!r}")
        backend = self.backend
        # the runners' fill for padding rows (the draft-extend runner's is the same at kpool 1)
        fill = backend.get_cuda_graph_seq_len_fill_value()
        # the runner's static input buffers: padding rows keep the fill length and request 0
        static_seq = torch.full((bs,), fill, dtype=torch.int64, device=self.device)
        static_req = torch.zeros(bs, dtype=torch.int64, device=self.device)
        key = (mode, bs)
        if key not in self._graph_ready:
            capture = SimpleNamespace(
                batch_size=bs, forward_mode=forward_mode, seq_lens=static_seq.clone(),
                seq_lens_cpu=None, req_pool_indices=static_req.clone(), spec_info=None,
                out_cache_loc=None, actual_forward_mode=forward_mode)
            backend.init_forward_metadata_out_graph(capture, in_capture=True)
            self._graph_ready.add(key)
        static_seq[:raw_bs] = seq
        static_req[:raw_bs] = req
        view = SimpleNamespace(
            batch_size=bs, forward_mode=forward_mode, seq_lens=static_seq,
            seq_lens_cpu=static_seq.cpu(), req_pool_indices=static_req, spec_info=None,
            out_cache_loc=None, actual_forward_mode=forward_mode)
        self._timed(mode, backend.init_forward_metadata_out_graph, view)
        return self._result(mode, bs, raw_bs, static_seq.cpu(), static_req.cpu(), extra)

    def decode(self, seq_lens, req_pool_indices, graph_bs=None):
        """``_apply_cuda_graph_metadata`` for DECODE (a replay of the graph of ``graph_bs``)."""
        return self._graph_step("decode", seq_lens, req_pool_indices, graph_bs)

    def target_verify(self, seq_lens, req_pool_indices, graph_bs=None):
        """TARGET_VERIFY replay: ``seq_lens`` exclude the ``next_n`` draft tokens."""
        return self._graph_step("target_verify", seq_lens, req_pool_indices, graph_bs)

    def draft_extend(self, seq_lens, req_pool_indices, graph_bs=None):
        """DRAFT_EXTEND_V2 replay: ``seq_lens`` include the ``next_n`` draft tokens."""
        return self._graph_step("draft_extend", seq_lens, req_pool_indices, graph_bs)

    # --- the eager path: init_forward_metadata ---------------------------------------------
    def extend(self, seq_lens, extend_seq_lens, req_pool_indices):
        """``init_forward_metadata`` for EXTEND: ``extend_seq_lens[i] <= seq_lens[i]``, the
        difference being request i's cached prefix."""
        seq, req, host_seq = self._check_batch(seq_lens, req_pool_indices)
        ext = self._lengths("extend_seq_lens", extend_seq_lens, seq.numel())
        host_ext = ext.cpu()
        for i, (q, kv) in enumerate(zip(host_ext.tolist(), host_seq.tolist())):
            if not 1 <= q <= kv:
                raise ValueError(f"extend_seq_lens[{i}] = {q} must be in [1, seq_lens[{i}] = "
                                 f"{kv}]")
        fm = self.sglang.forward_mode
        batch = SimpleNamespace(
            batch_size=seq.numel(), forward_mode=fm.EXTEND, seq_lens=seq,
            seq_lens_cpu=host_seq, seq_lens_sum=int(host_seq.sum()),
            req_pool_indices=req, extend_seq_lens=ext.to(torch.int32),
            extend_seq_lens_cpu=host_ext.tolist(),
            extend_prefix_lens_cpu=(host_seq - host_ext).tolist(),
            extend_num_tokens=int(host_ext.sum()), spec_info=None,
            global_num_tokens_cpu=None, attn_cp_metadata=None)
        self._timed("extend", self.backend.init_forward_metadata, batch)
        return self._result("extend", seq.numel(), seq.numel(), host_seq, req.cpu(), 0, host_ext)

    def eager(self, mode, seq_lens, req_pool_indices):
        """``init_forward_metadata`` for decode / target_verify / draft_extend: the path of a
        batch larger than any captured graph."""
        cfg, fm = self.config, self.sglang.forward_mode
        if mode not in ("decode", "target_verify", "draft_extend"):
            raise ValueError(f"mode must be decode, target_verify or draft_extend, got {mode!r}")
        if mode != "decode" and cfg.next_n < 1:
            raise ValueError(f"{mode} needs next_n >= 1 in the HarnessConfig")
        extra = cfg.next_n if mode == "target_verify" else 0
        min_len = cfg.next_n if mode == "draft_extend" else 1
        seq, req, host_seq = self._check_batch(seq_lens, req_pool_indices, extra, min_len)
        bs = seq.numel()
        forward_mode = {"decode": fm.DECODE, "target_verify": fm.TARGET_VERIFY,
                        "draft_extend": fm.DRAFT_EXTEND_V2}[mode]
        batch = SimpleNamespace(
            batch_size=bs, forward_mode=forward_mode, seq_lens=seq, seq_lens_cpu=host_seq,
            seq_lens_sum=int(host_seq.sum()), req_pool_indices=req, spec_info=None,
            global_num_tokens_cpu=None, attn_cp_metadata=None, extend_seq_lens_cpu=None)
        if mode == "draft_extend":
            batch.extend_seq_lens = torch.full((bs,), cfg.next_n, dtype=torch.int32,
                                               device=self.device)
            batch.extend_seq_lens_cpu = [cfg.next_n] * bs
            batch.extend_prefix_lens_cpu = (host_seq - cfg.next_n).tolist()
            batch.extend_num_tokens = bs * cfg.next_n
        self._timed(f"eager_{mode}", self.backend.init_forward_metadata, batch)
        return self._result(f"eager_{mode}", bs, bs, host_seq, req.cpu(), extra)

    # --- results ---------------------------------------------------------------------------
    def _timed(self, name, method, *args, **kwargs):
        start = time.perf_counter()
        method(*args, **kwargs)
        self.calls.setdefault(name, []).append(time.perf_counter() - start)

    def _result(self, mode, bs, raw_bs, seq_lens, req_pool_indices, extra_kv, ext=None):
        cfg = self.config
        per_request = 1 if mode in ("decode", "extend", "eager_decode") else cfg.next_n
        lengths = (seq_lens + extra_kv).repeat_interleave(per_request)
        case = MetadataCase(mode=mode, bs=bs, raw_bs=raw_bs, next_n=cfg.next_n,
                            page_size=cfg.page_size, row_lengths=lengths, seq_lens=seq_lens,
                            req_pool_indices=req_pool_indices, extend_seq_lens=ext)
        return MetadataResult(tensors=metadata_tensors(self.backend.forward_metadata), case=case)


# schedules, not metadata: DeepGEMM's (a stand-in where DeepGEMM is absent) and the top-k plan
NOT_COMPARED = ("paged_mqa_schedule_metadata", "topk_v2_plan")


def metadata_tensors(metadata):
    """Every tensor of a ``DSAMetadata`` (tuples flattened as ``name.0``, ``name.1``), cloned."""
    import dataclasses
    out = {}
    for item in dataclasses.fields(metadata):
        value = getattr(metadata, item.name)
        if item.name in NOT_COMPARED:
            continue
        if isinstance(value, torch.Tensor):
            out[item.name] = value.clone()
        elif isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
            for k, v in enumerate(value):
                out[f"{item.name}.{k}"] = v.clone()
    return out


# page tables: SGLang guarantees a row only over its live prefix (the kit compares the same)
PAGE_ROWS = {"page_table_1": 1, "real_page_table": PAGE_SIZE}


def compare_metadata(a, b, case=None):
    """Raise ``MetadataMismatch`` naming the first differing tensor, row and column; return the
    number of tensors compared. ``a`` / ``b``: ``MetadataResult`` or ``{name: tensor}``; ``case``
    defaults to ``b``'s (then ``a``'s). Flat arrays are compared whole (shape, dtype, values);
    rows of ``page_table_1`` over ``[0, length)`` and of ``real_page_table`` over the pages
    holding ``[0, length)``, ``length`` from ``case.row_lengths``: SGLang's contract (its
    ``dsa_metadata_kit.assert_metadata_equal`` compares the same; entries past a row's live
    prefix are stale from earlier steps). The work runs on ``a``'s device."""
    case = case or getattr(b, "case", None) or a.case
    ta = a.tensors if isinstance(a, MetadataResult) else a
    tb = b.tensors if isinstance(b, MetadataResult) else b
    if ta.keys() != tb.keys():
        missing = sorted(set(ta) ^ set(tb))
        raise MetadataMismatch(missing[0], detail=f"present on one side only ({missing})")
    for name in sorted(ta):
        x, y = ta[name], tb[name]
        if x.dtype != y.dtype:
            raise MetadataMismatch(name, detail=f"dtype {x.dtype} vs {y.dtype}")
        y = y.to(x.device)
        step = PAGE_ROWS.get(name)
        if step is None:
            if x.shape != y.shape:
                raise MetadataMismatch(name, detail=f"shape {tuple(x.shape)} vs {tuple(y.shape)}")
            if x.numel() == 0:
                continue
            flat = x.dim() <= 1
            _first_difference(name, x.reshape(x.shape[0] if x.dim() else 1, -1),
                              y.reshape(y.shape[0] if y.dim() else 1, -1), flat)
            continue
        lengths = case.row_lengths.to(x.device)
        rows = lengths.numel()
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] < rows or y.shape[0] < rows:
            raise MetadataMismatch(name, detail=f"shapes {tuple(x.shape)} / {tuple(y.shape)}, "
                                                f"{rows} live rows")
        cols = -(-int(lengths.max()) // step) if rows else 0
        if x.shape[1] < cols or y.shape[1] < cols:
            raise MetadataMismatch(name, detail=f"{x.shape[1]} / {y.shape[1]} columns, "
                                                f"{cols} live")
        xs, ys = x[:rows, :cols], y[:rows, :cols]
        live = torch.arange(cols, device=x.device)[None, :] * step < lengths[:, None]
        _first_difference(name, xs.masked_fill(~live, 0), ys.masked_fill(~live, 0), False)
    return len(ta)


def _first_difference(name, x, y, flat):
    differs = x != y
    if bool(differs.any()):
        row, column = (int(v) for v in differs.nonzero()[0])
        if flat:
            raise MetadataMismatch(name, row, detail=f"{x[row, 0].item()} vs "
                                                     f"{y[row, 0].item()}")
        raise MetadataMismatch(name, row, column, detail=f"{x[row, column].item()} vs "
                                                         f"{y[row, column].item()}")
