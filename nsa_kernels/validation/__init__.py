"""Every argument and data check, in one package; each runs before any launch or write.

``core``: the general primitives (integers, strides, byte-range overlap, int32 ranges) and the
journey stages' checks, re-exported here. ``modes``: the decode / target_verify / draft_extend
checks. ``extend``: the extend (prefill) checks. ``modes`` and ``extend`` are imported by name
(``from nsa_kernels.validation import modes``), not here: they read ``nsa_kernels.modes.tiles``,
whose package imports them back.
"""
from .core import (
    INT32_MAX,
    INT32_MIN,
    as_index,
    check_capacity,
    check_int32_fits,
    check_length_values,
    check_lengths,
    check_min_entries,
    check_no_overlap,
    check_nsa_cu_fits,
    check_outputs,
    check_power_of_two,
    check_prefix_fits,
    check_req_to_token_fits,
    check_static,
    check_status,
    check_strides_2d,
    check_topk,
    clamped_prefix,
    first_invalid_request,
    host_lengths,
    new_status,
    status_buffer,
    validate,
)

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "as_index",
    "check_capacity",
    "check_int32_fits",
    "check_length_values",
    "check_lengths",
    "check_min_entries",
    "check_no_overlap",
    "check_nsa_cu_fits",
    "check_outputs",
    "check_power_of_two",
    "check_prefix_fits",
    "check_req_to_token_fits",
    "check_static",
    "check_status",
    "check_strides_2d",
    "check_topk",
    "clamped_prefix",
    "first_invalid_request",
    "host_lengths",
    "new_status",
    "status_buffer",
    "validate",
]
