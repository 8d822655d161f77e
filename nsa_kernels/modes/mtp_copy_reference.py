"""The oracle of the MTP multi-backend copy: what every draft backend holds after SGLang 0.5.23's
``_precompute_decode_mode`` and its fused copies, on the entries SGLang defines.

SGLang computes the decode metadata once and copies it into each backend, so every backend holds
``decode_reference``'s values (one home for the decode formula): the flat arrays whole, each
page-table row over its live prefix (``live_cols`` / ``real_live_cols``). Past the live prefix
SGLang copies an uninitialised temporary: no value is defined there to compare against.
"""
from ..validation import modes as checks
from .reference import decode_reference


def mtp_copy_reference(seq_lens, req_pool_indices, req_to_token, n_backends, bs, max_len,
                       dsa_index_topk, physical_page_size):
    """One dict of int64 CPU tensors per backend (the same values for all ``n_backends``)."""
    n_backends = checks.as_index("n_backends", n_backends, minimum=1)
    shared = decode_reference(seq_lens, req_pool_indices, req_to_token, bs, max_len,
                              dsa_index_topk, physical_page_size)
    return [shared] * n_backends
