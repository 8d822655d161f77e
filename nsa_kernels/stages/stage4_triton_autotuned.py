"""Stage 4: stage 3's kernel with BLOCK_SIZE and num_warps picked by ``triton.autotune``.

Tuning is keyed on the power-of-two bucket of N: the first call in a bucket runs the
autotuner (which benchmarks every config), later calls launch the chosen config directly,
skipping the autotuner's per-call bookkeeping. Without a GPU the autotuner cannot benchmark
(Triton raises "0 active drivers"), so the interpreter runs ``DEFAULT_CONFIG`` instead.
"""
import triton

from .._env import INTERPRET
from ..validation import check_topk
from .stage1_triton_fused import prepare
from .stage3_triton_bsearch import expand_bsearch_kernel, search_steps

SEARCH_SPACE = [
    triton.Config({"BLOCK_SIZE": block}, num_warps=warps)
    for block in (128, 256, 512, 1024)
    for warps in (1, 2, 4, 8)
    if block // (32 * warps) >= 1
]
#: What runs where the autotuner cannot benchmark (no GPU): stage 3's own choice.
DEFAULT_CONFIG = triton.Config({"BLOCK_SIZE": 256}, num_warps=4)

_autotuned_kernel = triton.autotune(configs=SEARCH_SPACE, key=["n_tokens"])(expand_bsearch_kernel)
#: Bucket of N (a power of two) -> the config the autotuner picked for it.
CHOSEN = {}


def size_bucket(n_tokens):
    return triton.next_power_of_2(max(n_tokens, 1))


def launch_with_config(config, ends, seq_lens, nsa_index_topk, out_expanded, out_cache,
                       n_tokens):
    block = config.kwargs["BLOCK_SIZE"]
    expand_bsearch_kernel[(triton.cdiv(n_tokens, block),)](
        ends, seq_lens, out_expanded, out_cache, n_tokens, ends.shape[0],
        search_steps(ends.shape[0]), nsa_index_topk, BLOCK_SIZE=block,
        num_warps=config.num_warps)


def launch_autotuned(ends, seq_lens, nsa_index_topk, out_expanded, out_cache, n_tokens):
    if INTERPRET:
        return launch_with_config(DEFAULT_CONFIG, ends, seq_lens, nsa_index_topk, out_expanded,
                                  out_cache, n_tokens)
    bucket = size_bucket(n_tokens)
    config = CHOSEN.get(bucket)
    if config is not None:
        return launch_with_config(config, ends, seq_lens, nsa_index_topk, out_expanded,
                                  out_cache, n_tokens)
    _autotuned_kernel[lambda meta: (triton.cdiv(n_tokens, meta["BLOCK_SIZE"]),)](
        ends, seq_lens, out_expanded, out_cache, n_tokens, ends.shape[0],
        search_steps(ends.shape[0]), nsa_index_topk)
    CHOSEN[bucket] = _autotuned_kernel.best_config


def fill_triton_autotuned(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                          out_nsa_cache_seqlens):
    nsa_index_topk = check_topk(nsa_index_topk)  # a numpy integer becomes a Python int
    ends, n_tokens = prepare(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                             out_nsa_cache_seqlens)
    if n_tokens:
        launch_autotuned(ends, seq_lens, nsa_index_topk, out_seqlens_expanded,
                         out_nsa_cache_seqlens, n_tokens)
    return n_tokens
