"""vLLM 0.33.0's DSA indexer decode metadata as it is built on Hopper (SM90), loaded by path.

What vLLM runs per decode step on Hopper (``vllm/v1/attention/backends/mla/indexer.py``,
``DeepseekV32IndexerMetadataBuilder.build``; capability family 9.x with DeepGEMM present):

* ``_supports_varlen_paged_mqa_logits()`` is false (it needs capability family 100), so
  ``supports_varlen`` is false and ``_indexer_decode_metadata_kernel`` (``v1/attention/ops/
  metadata.py``, ``peers.vllm``) is never launched: that kernel is vLLM's SM100 path.
* ``_use_flattening`` (``__init__``): false unless ``_supports_native_decode(next_n)`` is
  false or adaptive verification is on. On SM90 ``_supports_native_decode`` asks DeepGEMM's
  ``native_next_n_supported`` (``vllm/utils/deep_gemm.py``): ``next_n in (1, 2, 4)``.
* ``split_decodes_and_prefills`` (``v1/attention/backends/utils.py``): host only (reads
  ``query_start_loc_cpu``); with ``require_uniform`` (native path) a uniform batch is all
  decodes.
* ``build``, per step, for ``num_decodes > 0``:

  1. ``torch.diff(query_start_loc[:num_decodes + 1], out=decode_lens_buffer[:num_decodes])``
     (a device launch) and ``per_req_decode_lens_buffer[:num_decodes].copy_(...)`` (one more):
     outputs ``decode.decode_lens`` and ``decode.per_req_decode_lens``.
  2. ``torch.diff(query_start_loc_cpu[...])``, its ``max().item()`` / ``min().item()``: host
     only; they define ``decode.write_max_decode_len`` and ``decode.decode_is_uniform``.
  3. ``_prepare_decode_tensors`` (a builder method):

     - native path, ``next_n == 1`` (plain decode): no op at all; ``decode.seq_lens`` is
       ``common_attn_metadata.seq_lens[:num_decodes]`` and ``decode.block_table`` the
       request rows of the block table (views of the inputs).
     - native path, ``next_n in (2, 4)`` (target verify): ``decode_seq_lens_buffer[:B * n]
       .view(B, n)[:] = (seq_lens.unsqueeze(1) - n + 1 + offsets_buffer[:n]).clamp_(min=0)``
       (sub, add, add, clamp, copy: elementwise launches), so ``decode.seq_lens[b, j] =
       L_b - n + j + 1``; ``decode.block_table`` stays one row per request (the logits kernel
       reads it for all ``n`` rows); ``decode.requires_padding = min != max decode length``.
     - flattened path (``next_n`` 3, or adaptive verification), uniform lengths:
       ``PrepareUniformDecodeKernel`` (a Triton kernel in ``indexer.py``; one program per
       token) writes ``decode_seq_lens_buffer`` (``max(L_b - n + j + 1, 0)``),
       ``expanded_block_table_buffer`` (the request's row per token) and
       ``decode_lens_buffer`` (ones), then ``decode_seq_lens_buffer[T:] = 0``; non-uniform
       lengths take ``repeat_interleave``s instead.
  4. ``seq_lens.unsqueeze(-1)`` where 1-D (a view).
  5. ``get_paged_mqa_logits_metadata`` (DeepGEMM's SM work split) copied into
     ``scheduler_metadata_buffer``: ``decode.schedule_metadata``.

What this module runs: vLLM's own ``DeepseekV32IndexerMetadataBuilder`` (its ``__init__``
and ``build``), the metadata dataclasses, the path choices (``_supports_varlen_paged_mqa_logits``,
``_supports_flattened_device_query_lens``, ``_rocm_supports_flattened_device_query_lens``,
``_supports_native_decode``, ``_use_flattening``, ``dsa_indexer_uses_fp4``,
``get_max_prefill_buffer_size``), ``PrepareUniformDecodeKernel``, and, from their own files,
``split_decodes_and_prefills`` and ``native_next_n_supported``. Each is taken by name out of
vLLM's file (read from the wheel or ``NSA_VLLM_PATH``, as ``peers.vllm`` finds its file) and
compiled from that file's text, its line numbers kept (Triton reads the kernel's source back),
with ``from __future__ import annotations`` so that type hints naming vLLM classes are not
evaluated. The files' imports are not run (they pull in vLLM's config, distributed and
platform layers); the names those definitions use are these stand-ins, none changing an
output of the decode path:

* ``current_platform``: CUDA, capability family 90 (Hopper), not ROCm; ``has_deep_gemm``:
  true (vLLM on an H200 runs with DeepGEMM). Only the path choices read them.
* ``get_paged_mqa_logits_metadata``: DeepGEMM's schedule is left out, as the step benchmark
  leaves SGLang's out (``sglang_step``): it returns an empty ``[0, 2]`` int32 tensor (one per
  device, made once), so ``decode.schedule_metadata`` is an empty slice and its ``copy_``
  moves nothing.
* ``AttentionMetadataBuilder``: the base class's ``__init__`` as vLLM's (stores
  ``kv_cache_spec``, ``layer_names``, ``vllm_config``, ``device``); ``MLAAttentionSpec``: a
  class the spec is not an instance of (no KV compression: DeepSeek-V3.2's layout);
  ``num_compute_units``: 132 (an H200's SMs; sizes ``scheduler_metadata_buffer`` only);
  ``logger``: drops ``info_once``; ``triton`` / ``tl``: Triton itself.
* ``VllmTritonJitKernel`` / ``kernel_launcher`` / ``triton_scalar_specialization_rep``
  (``vllm/model_executor/warmup``): vLLM's launch binding without its warm-up machinery: the
  launcher calls ``__call__`` for ``(grid, kwargs)``, binds each argument to the kernel
  parameter ``name`` or ``name_ptr`` (vLLM's ``_launch_binding_plan`` rule) and launches
  ``kernel[grid](**kwargs)``.
* ``vllm_config``: a namespace with the fields ``__init__`` reads (single rank, no
  speculative config for plain decode, ``num_speculative_tokens = next_n - 1`` otherwise,
  ``indexer_kv_dtype`` fp8).

Left out: the prefill branch, DCP / PCP, KV compression (DeepSeek-V4) and the ROCm paths (each
needs a stand-in this module does not give; reaching one raises ``NameError``).

``load(require_gpu=False)`` returns the namespace; ``Builder`` drives one builder:
``Builder(peer, max_bs, width_pages, next_n).inputs(seq_lens, block_table)`` makes vLLM's
``CommonAttentionMetadata`` fields for a uniform decode batch and ``.step(common)`` runs
``build``. The whole path is torch plus one Triton kernel, so on a CPU it runs under the
interpreter.
"""
import __future__

import ast
import dataclasses
import inspect
import sys
import types
import typing
from types import SimpleNamespace

import numpy as np
import torch

from . import vllm as vllm_peer
from .sglang import PeerUnavailable

VERSION = vllm_peer.VERSION
MODULE = "nsa_kernels.peers._vllm_hopper_taken"
INDEXER = "vllm/v1/attention/backends/mla/indexer.py"
BACKEND_UTILS = "vllm/v1/attention/backends/utils.py"
DEEP_GEMM = "vllm/utils/deep_gemm.py"
#: The definitions taken out of each file, by name.
TAKEN = {
    INDEXER: ("DSA_INDEXER_KV_DTYPES", "dsa_indexer_uses_fp4", "PrepareUniformDecodeKernel",
              "DeepseekV32IndexerPrefillChunkMetadata", "DeepseekV32IndexerPrefillMetadata",
              "DeepSeekV32IndexerDecodeMetadata", "DeepseekV32IndexerMetadata",
              "get_max_prefill_buffer_size", "_supports_varlen_paged_mqa_logits",
              "_supports_flattened_device_query_lens",
              "_rocm_supports_flattened_device_query_lens", "_supports_native_decode",
              "_use_flattening", "DeepseekV32IndexerMetadataBuilder",
              "_PREPARE_UNIFORM_DECODE_KERNEL"),
    BACKEND_UTILS: ("split_decodes_and_prefills",),
    DEEP_GEMM: ("native_next_n_supported",),
}
#: An H200's SM count (vLLM sizes its DeepGEMM schedule buffer with it).
H200_SMS = 132
PAGE_SIZE = 64
#: The ``config`` text of every ``vllm_hopper`` record.
CONFIG = (f"vLLM {VERSION} DeepseekV32IndexerMetadataBuilder.build on SM90 with DeepGEMM "
          "(v1/attention/backends/mla/indexer.py: torch.diff + _prepare_decode_tensors' native "
          "path), DeepGEMM's schedule left out")

__all__ = ["Builder", "CONFIG", "PeerUnavailable", "load", "outputs"]


# --------------------------------------------------------------------------- stand-ins

class _Hopper:
    """``vllm.platforms.current_platform`` as it answers on an H200 (the path choices only)."""

    @staticmethod
    def is_cuda():
        return True

    @staticmethod
    def is_rocm():
        return False

    @staticmethod
    def is_device_capability_family(family):
        return family == 90


_EMPTY_SCHEDULES = {}


def _no_schedule(context_lens, block_size, num_sms, indices=None):
    # DeepGEMM's schedule, left out (the step benchmark leaves SGLang's out too): an empty
    # result, made once per device so that the stand-in costs no allocation, makes build()'s
    # copy into scheduler_metadata_buffer move nothing
    device = context_lens.device
    if device not in _EMPTY_SCHEDULES:
        _EMPTY_SCHEDULES[device] = torch.empty(0, 2, dtype=torch.int32, device=device)
    return _EMPTY_SCHEDULES[device]


class _AttentionMetadataBuilder:
    """``vllm.v1.attention.backend.AttentionMetadataBuilder.__init__``: what it stores."""

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device):
        self.kv_cache_spec = kv_cache_spec
        self.layer_names = layer_names
        self.vllm_config = vllm_config
        self.device = device


class _NotThisSpec:
    """``MLAAttentionSpec``: the spec given is none, so the builder keeps compress_ratio 1."""


class _VllmTritonJitKernel:
    """``VllmTritonJitKernel``'s runtime launch, its warm-up and compile keys left out."""

    bind_launch_inputs = True

    def __class_getitem__(cls, key):
        return cls

    def launch(self, launch_spec, inputs):
        grid, launch_kwargs = launch_spec[:2]
        names = getattr(self.kernel, "arg_names", None) or inspect.signature(
            self.kernel.fn).parameters
        names = set(names)
        kwargs = dict(launch_kwargs)
        for name, value in inputs.items():
            # vLLM's _launch_binding_plan: an input binds to `name` or `name_ptr`
            target = next((c for c in (name, f"{name}_ptr", name.upper(), f"{name}_ptr".upper())
                           if c in names), None)
            if target is not None and target not in kwargs:
                kwargs[target] = value
        self.kernel[grid](**kwargs)
        return launch_spec[2] if len(launch_spec) == 3 else None


def _kernel_launcher(call_fn):
    signature = inspect.signature(call_fn)

    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        inputs = {k: v for k, v in bound.arguments.items() if k != "self"}
        return self.launch(call_fn(self, *args, **kwargs), inputs)
    wrapper.__wrapped__ = call_fn
    return wrapper


class _Logger:
    def info_once(self, *args, **kwargs):
        pass

    info = debug = warning = warning_once = info_once


def _namespace():
    import triton
    import triton.language as tl
    return {
        "torch": torch, "np": np, "triton": triton,
        "tl": tl, "dataclass": dataclasses.dataclass, "Any": typing.Any,
        "current_platform": _Hopper(), "has_deep_gemm": lambda: True,
        "get_paged_mqa_logits_metadata": _no_schedule,
        "num_compute_units": lambda index=None: H200_SMS,
        "AttentionMetadataBuilder": _AttentionMetadataBuilder, "MLAAttentionSpec": _NotThisSpec,
        "VllmTritonJitKernel": _VllmTritonJitKernel, "kernel_launcher": _kernel_launcher,
        "triton_scalar_specialization_rep": lambda value: value,
        "logger": _Logger(),
    }


# --------------------------------------------------------------------------- loading

def _defined_names(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def _take(path, names, namespace):
    """Compile the top-level definitions ``names`` of ``path`` (in file order, lines kept)
    into ``namespace``; raise ``PeerUnavailable`` naming any ``names`` the file lacks."""
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    chosen = [node for node in tree.body if _defined_names(node) & set(names)]
    missing = set(names) - set().union(*(_defined_names(n) for n in chosen))
    if missing:
        raise PeerUnavailable(f"vLLM's {path.name} has no {sorted(missing)}: not vLLM {VERSION}")
    module = ast.Module(body=chosen, type_ignores=[])
    code = compile(module, str(path), "exec", flags=__future__.annotations.compiler_flag,
                   dont_inherit=True)
    exec(code, namespace)


def load(require_gpu=True):
    """vLLM's Hopper decode path as ``(ns, sources, version)``: ``ns`` holds the definitions
    taken (``ns.DeepseekV32IndexerMetadataBuilder``, ...). ``require_gpu``: raise
    ``PeerUnavailable`` without a GPU (timings are a GPU's); the path itself runs on a CPU."""
    if require_gpu and not torch.cuda.is_available():
        raise PeerUnavailable("no GPU: vLLM's Hopper indexer metadata is measured on a GPU only")
    # a module of its own (dataclasses look their class's module up in sys.modules), under a
    # private name: no ``vllm`` module is ever registered
    module = types.ModuleType(MODULE)
    module.__dict__.update(_namespace())
    sys.modules[MODULE] = module
    sources = {}
    for file in (DEEP_GEMM, BACKEND_UTILS, INDEXER):
        path, source = vllm_peer.source_file(file)
        _take(path, TAKEN[file], module.__dict__)
        sources[file] = source
    return SimpleNamespace(ns=module, sources=sources, version=VERSION)


# --------------------------------------------------------------------------- driving it

def _vllm_config(max_bs, next_n, max_num_batched_tokens, adaptive):
    speculative = None if next_n == 1 else SimpleNamespace(
        num_speculative_tokens=next_n - 1, enable_adaptive_verification=adaptive)
    return SimpleNamespace(
        scheduler_config=SimpleNamespace(max_num_batched_tokens=max_num_batched_tokens,
                                         max_num_seqs=max_bs),
        parallel_config=SimpleNamespace(decode_context_parallel_size=1,
                                        tensor_parallel_size=1,
                                        prefill_context_parallel_size=1,
                                        cp_kv_cache_interleave_size=1),
        speculative_config=speculative,
        num_speculative_tokens=next_n - 1,
        attention_config=SimpleNamespace(resolve_indexer_kv_dtype=lambda default: default,
                                         sparse_mla_prefill_workspace_factor=5),
        model_config=SimpleNamespace(max_model_len=163840, architectures=[]))


class Builder:
    """One ``DeepseekV32IndexerMetadataBuilder`` as vLLM's runner holds it (buffers sized for
    ``max_bs`` requests of ``next_n`` tokens; block-table rows ``width_pages`` wide).

    ``adaptive=True`` turns adaptive verification on (vLLM then flattens: the
    ``PrepareUniformDecodeKernel`` path); vLLM's default is off.
    """

    def __init__(self, peer, max_bs, width_pages, next_n=1, device=None, adaptive=False,
                 max_num_batched_tokens=8192):
        for name, value in (("max_bs", max_bs), ("width_pages", width_pages),
                            ("next_n", next_n)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(adaptive, bool):
            raise ValueError(f"adaptive must be a bool, got {adaptive!r}")
        self.peer, self.next_n, self.width_pages = peer, next_n, width_pages
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokens = max(max_num_batched_tokens, max_bs * next_n)
        config = _vllm_config(max_bs, next_n, tokens, adaptive)
        spec = SimpleNamespace(num_states=PAGE_SIZE)  # block size of the indexer's KV pages
        self.builder = peer.ns.DeepseekV32IndexerMetadataBuilder(
            spec, ["indexer"], config, self.device, block_table_width=width_pages)

    def inputs(self, seq_lens, block_table):
        """vLLM's ``CommonAttentionMetadata`` fields for ``len(seq_lens)`` decode requests of
        ``next_n`` tokens each. ``seq_lens``: KV lengths counting the step's own tokens, as
        vLLM's do; ``block_table``: ``[bs, >= width_pages]`` page ids (int32)."""
        seq_lens = torch.as_tensor(seq_lens)
        if seq_lens.dim() != 1 or seq_lens.numel() == 0:
            raise ValueError(f"seq_lens must be a non-empty 1-D tensor, got shape "
                             f"{tuple(seq_lens.shape)}")
        if int(seq_lens.min()) < self.next_n:
            raise ValueError(f"seq_lens must be >= next_n ({self.next_n}): each counts the "
                             f"step's tokens, got min {int(seq_lens.min())}")
        bs = seq_lens.numel()
        if block_table.dim() != 2 or block_table.shape[0] != bs \
                or block_table.shape[1] < self.width_pages or block_table.dtype != torch.int32:
            raise ValueError(f"block_table must be int32 [{bs}, >= {self.width_pages}], got "
                             f"{block_table.dtype} {tuple(block_table.shape)}")
        q = self.next_n
        query_start_loc_cpu = torch.arange(bs + 1, dtype=torch.int32) * q
        seq_cpu = seq_lens.to(torch.int32).cpu()
        return SimpleNamespace(
            num_reqs=bs, num_actual_tokens=bs * q, max_query_len=q,
            max_seq_len=int(seq_cpu.max()),
            query_start_loc=query_start_loc_cpu.to(self.device),
            query_start_loc_cpu=query_start_loc_cpu,
            seq_lens=seq_cpu.to(self.device),
            slot_mapping=torch.zeros(bs * q, dtype=torch.int64, device=self.device),
            block_table_tensor=block_table.to(self.device)[:, :self.width_pages],
            dcp_local_seq_lens=None, is_prefilling=None)

    def step(self, common):
        """One ``build`` (what vLLM's runner calls per step for this layer group)."""
        return self.builder.build(0, common)


def outputs(metadata, next_n):
    """The outputs of a ``build`` the workbook also defines, in the workbook's layout:
    ``dsa_seqlens_expanded`` (per-token KV lengths, one per query token) and
    ``real_page_table`` (page ids per query token: vLLM's native path keeps one row per
    request, which its logits kernel reads for all ``next_n`` rows, so each row is repeated
    ``next_n`` times here; the flattened path already has one row per token)."""
    decode = metadata.decode
    lens = decode.seq_lens.reshape(-1)
    table = decode.block_table
    if table.shape[0] != lens.numel():
        table = table.repeat_interleave(next_n, dim=0)
    return {"dsa_seqlens_expanded": lens.clone(), "real_page_table": table.clone()}
