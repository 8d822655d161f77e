"""The journey's stages, one module each, and ``STAGES``: those of the fill contract, in order.

``fill(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded, out_nsa_cache_seqlens)``
writes exactly the first N entries of both buffers and returns N. A stage also says whether
its hot path syncs with the host, and gives that hot path (``launch``) to the harness.

Stage 6 (``stage6_full_pipeline``) is not in ``STAGES``: it also takes the pool indices, the
``req_to_token`` table and a ``PipelineBuffers`` of seven outputs, so it has another contract.
"""
from collections.abc import Callable
from dataclasses import dataclass

from .stage0_python_baseline import fill_python_baseline
from .stage1_triton_fused import fill_triton_fused
from .stage2_triton_inplace import fill_triton_inplace
from .stage3_triton_bsearch import fill_triton_bsearch
from .stage4_triton_autotuned import fill_triton_autotuned
from .stage5_zero_sync import ZeroSyncFill, fill_zero_sync, launch_zero_sync


@dataclass(frozen=True)
class Stage:
    name: str
    fill: Callable
    summary: str
    host_syncs: int
    #: The call a serving loop would make; defaults to ``fill``. Same arguments.
    launch: Callable | None = None
    #: Binds the arguments once and returns a zero-argument hot-path callable (a serving loop
    #: with static buffers); defaults to calling ``hot_path`` with the bound arguments.
    bind: Callable | None = None

    def __call__(self, *args, **kwargs):
        return self.fill(*args, **kwargs)

    @property
    def hot_path(self):
        return self.launch or self.fill

    def bound(self, *args):
        if self.bind is not None:
            return self.bind(*args)
        hot_path = self.hot_path
        return lambda: hot_path(*args)

    @property
    def capturable(self):
        return self.host_syncs == 0


STAGES = {
    stage.name: stage
    for stage in (
        Stage("python_baseline", fill_python_baseline,
              "SGLang's original: 2 .tolist() syncs, arange per request, cat, clamp, copy_", 2),
        Stage("triton_fused", fill_triton_fused,
              "device cumsum, 1 sync for N, fused kernel (linear scan) into temporaries, copy_", 1),
        Stage("triton_inplace", fill_triton_inplace,
              "the same kernel writing straight into the buffers", 1),
        Stage("triton_bsearch", fill_triton_bsearch,
              "binary search for each token's request: O(log bs) instead of O(bs)", 1),
        Stage("triton_autotuned", fill_triton_autotuned,
              "BLOCK_SIZE and num_warps picked by triton.autotune per size bucket", 1),
        Stage("zero_sync", fill_zero_sync,
              "one launch, prefix sum in the kernel, grid from capacity: no host sync", 0,
              launch=launch_zero_sync, bind=ZeroSyncFill),
    )
}
