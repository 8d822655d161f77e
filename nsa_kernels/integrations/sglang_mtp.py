"""MTP draft decode: ``DeepseekSparseAttnMultiStepBackend.init_forward_metadata_out_graph``.

SGLang runs the fused decode kernel into fresh temporaries (a ``[bs, max_len]`` table among
them, ``_precompute_decode_mode``), then copies them whole, full width, into every draft
backend's graph buffers (``fused_metadata_copy_multi_cuda`` for the first three backends,
``fused_metadata_copy_cuda`` per further one, or per backend with ``speculative_num_steps <=
3``), then refreshes each backend's schedule. Installed, one ``MTPCopyFill`` launch computes the
decode metadata once and writes every draft backend's buffers over their live prefixes; then
each backend's tail runs (``sglang_replay``: DeepGEMM's schedule, the top-k plan, FlashMLA's
metadata) and its ``forward_metadata`` is pointed at its buffers.

One difference, deliberate: SGLang's multi-backend copy (``speculative_num_steps > 3``) does not
refresh the first three backends' DeepGEMM schedule (SGLang's own comment elsewhere: a stale
schedule can deadlock DeepGEMM's paged MQA); here every backend's is refreshed.
"""
from types import SimpleNamespace

from ..modes.mtp_copy import BackendBuffers, MTPCopyFill
from .sglang_replay import DECODE, replay_tail


class MultiStepReplay:
    """One bound MTP step: the copy fill over every draft backend, then each one's tail."""

    __slots__ = ("metadata", "fill", "tails", "backends")

    def __init__(self, backends, metadata, fill, tails):
        self.backends, self.metadata, self.fill, self.tails = backends, metadata, fill, tails

    def __call__(self):
        self.fill()
        for backend, metadata, tail in zip(self.backends, self.metadata, self.tails):
            backend.set_dsa_prefill_impl(forward_batch=None)
            tail()
            backend.forward_metadata = metadata


def bind_multi_step(sglang, backends, bs, seq_lens, req_pool_indices):
    """Check and bind the copy fill over ``backends``' captured buffers for ``bs``."""
    metadata = [b.decode_cuda_graph_metadata[bs] for b in backends]
    first = backends[0]
    width = metadata[0].page_table_1.shape[1]  # SGLang's precompute: backend 0's table width
    fill = MTPCopyFill(seq_lens, req_pool_indices, first.req_to_token,
                       [BackendBuffers.from_sglang(m) for m in metadata], bs, width,
                       first.dsa_index_topk, first.physical_page_size).launch
    tails = [replay_tail(b, sglang, m, bs, DECODE, bs, m.cache_seqlens_int32,
                   m.dsa_cache_seqlens_int32, False) for b, m in zip(backends, metadata)]
    return MultiStepReplay(backends, metadata, fill, tails)


def multi_step_out_graph(self, forward_batch, in_capture=False):
    """``init_forward_metadata_out_graph`` of the multi-step backend, installed: capture stays
    SGLang's; a replay is one launch for all draft backends plus their tails (in-graph mode:
    the graph refreshes the buffers, so only ``forward_metadata`` is re-pointed)."""
    installation = self._nsa_installation
    if in_capture:
        return installation.original("init_forward_metadata_out_graph")(forward_batch,
                                                                         in_capture=True)
    backends = self.attn_backends[: self.speculative_num_steps - 1]
    bs = forward_batch.batch_size
    if installation.in_graph:
        for backend in backends:
            backend.set_dsa_prefill_impl(forward_batch=None)
            backend.forward_metadata = backend.decode_cuda_graph_metadata[bs]
        return None
    seq_lens, pool = forward_batch.seq_lens, forward_batch.req_pool_indices
    key = (bs, seq_lens.data_ptr(), pool.data_ptr())
    step = installation.replays.get(key)
    if step is None or any(m is not b.decode_cuda_graph_metadata.get(bs)
                           for m, b in zip(step.metadata, backends)):
        step = installation.replays[key] = bind_multi_step(installation.sglang, backends, bs,
                                                           seq_lens, pool)
    step()
    return None





def multi_step_in_graph(self, forward_batch):
    """In-graph mode: each draft backend's decode fill and tail recorded into the graph, with
    the forward mode pinned to DECODE as SGLang's capture pins it (``build_inner_fb_view``)."""
    decode = self._nsa_installation.sglang.ForwardMode.DECODE
    view = SimpleNamespace(batch_size=forward_batch.batch_size, forward_mode=decode,
                           seq_lens=forward_batch.seq_lens,
                           req_pool_indices=forward_batch.req_pool_indices)
    for backend in self.attn_backends[: self.speculative_num_steps - 1]:
        backend.init_forward_metadata_in_graph(view)
