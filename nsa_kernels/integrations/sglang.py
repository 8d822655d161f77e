"""Install the workbook into a live SGLang 0.5.23 DSA backend: ``install(backend)``.

``install(backend)`` takes a ``DeepseekSparseAttnBackend`` (or the
``DeepseekSparseAttnMultiStepBackend`` that holds one per draft step) and replaces its per-step
metadata methods *on the instance*, so that every step fills SGLang's own buffers through this
project, one launch per step and mode; it returns the backend. Installing twice is a no-op;
``uninstall(backend)`` restores SGLang's methods. Anything else is refused with a ``TypeError``;
a backend configuration these fills do not reproduce (pooled index K, ``dsa_index_kpool > 1``,
or the experimental kpool metadata fusion) with a ``ValueError`` naming the attribute.

What is replaced, and what remains of SGLang's per-step launches (each named item stays
SGLang's and is called as before):

* **decode / target_verify / draft_extend_v2 replay** (``_apply_cuda_graph_metadata``, which
  ``init_forward_metadata_out_graph`` calls before every ``graph.replay()``): one bound fill
  (``DecodeFill`` / ``TargetVerifyFill`` / ``DraftExtendFill`` static), bound once per
  (mode, bs, input buffers) on SGLang's static buffers, checks at bind time (``sglang_replay``).
  draft_extend_v2's per-step ``torch.full(extend_seq_lens)`` is gone (its static path never
  reads it). Remains, on CUDA: DeepGEMM's ``get_paged_mqa_logits_metadata`` + its ``copy_``,
  the top-k v2 plan + ``copy_`` (when enabled); FlashMLA's metadata with ``flashmla_kv``.
  ``paged_mqa_ctx_lens_2d.copy_`` is dropped where that buffer already is the view the schedule
  reads (every mode on Hopper: a copy of a view onto itself, which torch skips too).
* **MTP draft decode** (the multi-step backend's ``init_forward_metadata_out_graph``): one
  ``MTPCopyFill`` launch writes every draft backend's buffers over their live prefixes, no
  temporary table, no whole-width copies (``sglang_mtp``). Remains, per draft backend: the
  schedule and the plan (FlashMLA's metadata with ``flashmla_kv``).
* **eager decode / verify / draft_extend_v2** (``init_forward_metadata``, batches above the
  largest graph): one launch into fresh tensors (``sglang_eager``). Remains: the schedule, the
  plan, FlashMLA's metadata.
* **prefill** (``init_forward_metadata``, EXTEND): the PAGED set, and RAGGED's extras when that
  transform is selected, in one launch, no host sync (``sglang_prefill``). Remains: the top-k v2
  plan, FlashMLA's metadata.

Batches a path does not serve (context / data parallel padding, a sharded KV pool, speculative
extend modes, ...; each module's ``*_unsupported`` says which) run SGLang's own method.

**In-graph** (``install(backend, in_graph=True)``): SGLang's graph runner calls
``init_forward_metadata_in_graph`` inside ``graph.capture()`` for backends that implement it
(DSA does not). Installed this way, that method launches the step's bound fill *and* the tail
above (the schedule reads the lengths the fill writes, so it must follow it inside the graph),
and a replay's ``init_forward_metadata_out_graph`` only re-points ``forward_metadata``: no host
launch for metadata at all. DeepGEMM's schedule, the top-k plan and FlashMLA's metadata must be
capturable for this (their kernels write static buffers through ``copy_``); the fills are
sync-free and allocation-free. Capture itself (``in_capture=True``) stays SGLang's.

Conformance: ``python -m nsa_kernels.integrations.sglang --conformance`` runs SGLang's method
twice per case (as shipped, and on a twin backend with this installed) and compares every
tensor of ``forward_metadata``; ``--host-cost`` times the host per step (GPU).
"""
import sys
import types

from .sglang_eager import eager_metadata, eager_unsupported
from .sglang_mtp import multi_step_in_graph, multi_step_out_graph
from .sglang_replay import apply_cuda_graph_metadata, bind_replay, replay_mode

__all__ = ["install", "installation", "uninstall"]

#: Replay steps kept per backend (captured batch sizes x modes x input buffers).
MAX_REPLAYS = 512
_SINGLE, _MULTI = "DeepseekSparseAttnBackend", "DeepseekSparseAttnMultiStepBackend"


def _kind(backend):
    names = {cls.__name__ for cls in type(backend).__mro__}
    if _MULTI in names and hasattr(backend, "attn_backends"):
        return _MULTI
    if _SINGLE in names and hasattr(backend, "_apply_cuda_graph_metadata"):
        return _SINGLE
    return None


def installation(backend):
    """The ``Installation`` on ``backend``, or ``None`` when the workbook is not installed."""
    return backend.__dict__.get("_nsa_installation")


def install(backend, in_graph=False):
    """Install the workbook into ``backend`` (see the module doc); returns ``backend``."""
    kind = _kind(backend)
    if kind is None:
        raise TypeError(f"install expects SGLang's {_SINGLE} or {_MULTI}, "
                        f"got {type(backend).__module__}.{type(backend).__qualname__}")
    if type(in_graph) is not bool:
        raise TypeError(f"in_graph must be a bool, got {type(in_graph).__name__}")
    current = installation(backend)
    if current is not None:
        if current.in_graph != in_graph:
            raise ValueError(f"backend is installed with in_graph={current.in_graph}: "
                             "uninstall it first")
        return backend
    if kind == _MULTI:
        for inner in backend.attn_backends:  # refuse before changing anything
            if _kind(inner) != _SINGLE:
                raise TypeError(f"attn_backends holds a {type(inner).__qualname__}, not "
                                f"SGLang's {_SINGLE}")
            _check_supported(inner)
            if installation(inner) is not None and installation(inner).in_graph != in_graph:
                raise ValueError(f"a draft backend is installed with in_graph="
                                 f"{installation(inner).in_graph}: uninstall it first")
        for inner in backend.attn_backends:
            install(inner, in_graph)
        MultiStepInstallation(backend, in_graph).apply()
    else:
        _check_supported(backend)
        Installation(backend, in_graph).apply()
    return backend


def uninstall(backend):
    """Restore SGLang's methods on ``backend`` (a no-op where nothing is installed)."""
    current = installation(backend)
    if current is None:
        return backend
    current.remove()
    for inner in getattr(backend, "attn_backends", ()):
        uninstall(inner)
    return backend


def _check_supported(backend):
    if getattr(backend, "dsa_index_kpool", 1) > 1:
        raise ValueError(f"dsa_index_kpool = {backend.dsa_index_kpool}: the pooled index K "
                         "metadata is not reproduced by the workbook's fills")
    if getattr(backend, "experimental_kpool_metadata_fusion", False):
        raise ValueError("experimental_kpool_metadata_fusion is set: the kpool metadata fusion "
                         "is not reproduced by the workbook's fills")


class _Patch:
    """Instance attributes set on a backend, and what they replaced (restored by ``remove``)."""

    def __init__(self, backend, in_graph):
        self.backend, self.in_graph = backend, in_graph
        # SGLang's dsa_backend module (also for a subclass defined elsewhere): its is_cuda,
        # DSAMetadata, ForwardMode, ... are the ones its methods use.
        shipped = next(c for c in type(backend).__mro__ if c.__name__ in (_SINGLE, _MULTI))
        self.sglang = sys.modules[shipped.__module__]
        self._saved = {}

    def original(self, name):
        """SGLang's ``name`` as it was before the install (an instance override, or the
        class's method bound to the backend)."""
        had, value = self._saved[name]
        return value if had else getattr(type(self.backend), name).__get__(self.backend)

    def _set(self, name, function):
        self._saved[name] = (name in self.backend.__dict__, self.backend.__dict__.get(name))
        setattr(self.backend, name, types.MethodType(function, self.backend))

    @property
    def replaced(self):
        """The names of the methods replaced on the backend instance."""
        return tuple(self._saved)

    def apply(self):
        for name, function in self.methods().items():
            self._set(name, function)
        self.backend._nsa_installation = self

    def remove(self):
        for name, (had, value) in self._saved.items():
            if had:
                setattr(self.backend, name, value)
            else:
                self.backend.__dict__.pop(name, None)
        self.backend.__dict__.pop("_nsa_installation", None)


class Installation(_Patch):
    """The workbook installed on one ``DeepseekSparseAttnBackend``."""

    def __init__(self, backend, in_graph):
        super().__init__(backend, in_graph)
        self.replays = {}

    def methods(self):
        methods = dict(_apply_cuda_graph_metadata=apply_cuda_graph_metadata,
                       init_forward_metadata=init_forward_metadata)
        if self.in_graph:
            methods.update(init_forward_metadata_out_graph=out_graph_in_graph_mode,
                           init_forward_metadata_in_graph=in_graph_metadata)
        return methods

    def bind_replay(self, metadata, bs, forward_mode, seq_lens, req_pool_indices, key):
        """Bind (checks at bind time) and keep the replay step under ``key``; ``None`` for a
        forward mode SGLang's replay body does not serve with a fill."""
        mode = replay_mode(forward_mode)
        if mode is None:
            return None
        step = bind_replay(self.backend, self.sglang, metadata, bs, mode, seq_lens,
                           req_pool_indices)
        if len(self.replays) >= MAX_REPLAYS:
            self.replays.pop(next(iter(self.replays)))
        self.replays[key] = step
        return step


def init_forward_metadata(self, forward_batch):
    """``init_forward_metadata`` with the workbook installed: prefill and the eager decode /
    verify / draft_extend_v2 paths in one launch each; other batches run SGLang's method."""
    installation = self._nsa_installation
    mode = replay_mode(forward_batch.forward_mode)
    if mode is not None:
        if eager_unsupported(self, forward_batch, mode) is None:
            return eager_metadata(self, installation.sglang, forward_batch, mode)
    else:
        from .sglang_prefill import prefill_metadata, prefill_unsupported
        if forward_batch.forward_mode.is_extend() and \
                prefill_unsupported(self, installation.sglang, forward_batch) is None:
            return prefill_metadata(self, installation.sglang, forward_batch)
    return installation.original("init_forward_metadata")(forward_batch)


# ----------------------------------------------------------------------------- in-graph mode

def in_graph_metadata(self, forward_batch):
    """Inside the model graph's capture (and its warm-up runs): the step's fill and the tail,
    recorded into the graph, so a replay refreshes the metadata with no host launch."""
    installation = self._nsa_installation
    bs = forward_batch.batch_size
    metadata = self.decode_cuda_graph_metadata.get(bs)
    if metadata is None:
        raise RuntimeError(f"no captured metadata for bs = {bs}: SGLang's "
                           "init_forward_metadata_out_graph(in_capture=True) must run first")
    seq_lens, pool = forward_batch.seq_lens, forward_batch.req_pool_indices
    key = (forward_batch.forward_mode, bs, seq_lens.data_ptr(), pool.data_ptr())
    step = installation.replays.get(key)
    if step is None or step.metadata is not metadata:
        step = installation.bind_replay(metadata, bs, forward_batch.forward_mode, seq_lens, pool,
                                        key)
        if step is None:
            raise ValueError(f"in-graph metadata serves decode, target_verify and "
                             f"draft_extend_v2, not {forward_batch.forward_mode}")
    step.fill()
    step.tail()


def out_graph_in_graph_mode(self, forward_batch, in_capture=False):
    """``init_forward_metadata_out_graph`` when the metadata is captured in the model's graph:
    capture builds SGLang's static buffers as before; a replay only points ``forward_metadata``
    at them (the graph's replay refreshes their contents)."""
    if in_capture:
        return self._nsa_installation.original("init_forward_metadata_out_graph")(
            forward_batch, in_capture=True)
    self.set_dsa_prefill_impl(forward_batch=None)
    self.forward_metadata = self.decode_cuda_graph_metadata[forward_batch.batch_size]


# ----------------------------------------------------------------------------- multi-step (MTP)

class MultiStepInstallation(_Patch):
    """The workbook installed on a ``DeepseekSparseAttnMultiStepBackend`` (each of its draft
    backends is installed too); see ``sglang_mtp``."""

    def __init__(self, backend, in_graph):
        super().__init__(backend, in_graph)
        self.replays = {}

    def methods(self):
        methods = dict(init_forward_metadata_out_graph=multi_step_out_graph)
        if self.in_graph:
            methods.update(init_forward_metadata_in_graph=multi_step_in_graph)
        return methods


if __name__ == "__main__":
    from .sglang_cli import main
    sys.exit(main())
