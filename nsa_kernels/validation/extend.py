"""Checks of the extend metadata's inputs and buffers, run before anything is written.

Static checks read tensor metadata only (types, shapes, devices, byte ranges) and cost a few
microseconds; they always run. Data checks need the lengths on the host (one device-to-host
copy, or none when the caller passes SGLang's host mirrors) and run when asked.

Integer parsing, the overlap check, the host lengths (mirrors or one copy), the tensor type
check and the clamped prefix sums are ``validation.core``'s; this module holds extend's rules,
and the device status by which the kernel reports what they would reject (``ExtendStatus``,
its flags, and ``raise_on_mirror_mismatch``).
"""
from typing import NamedTuple

import numpy as np
import torch

from .core import (
    INT32_MAX,
    as_index,
    check_no_overlap,
    clamped_prefix,
    host_lengths,
    read_status,
    require_tensor,
)

_LENGTHS = (torch.int32, torch.int64)

# The device status of the extend kernel: its flags, and its layout by name. The kernel sets the
# flags for what these checks would reject, so a trusted launch reports it instead of raising.
TOKENS_OVERFLOW, FLAT_OVERFLOW, INT32_OVERFLOW, INVALID_REQUEST = 1, 2, 4, 8
TOKENS_MISMATCH, FLAT_MISMATCH = 16, 32  # device totals differ from the host's expected sizes


class ExtendStatus(NamedTuple):
    """The device status's layout, by name (int64 entries, in this order)."""

    n_tokens: int
    n_flat: int
    flags: int  # TOKENS_OVERFLOW | FLAT_OVERFLOW | INT32_OVERFLOW | INVALID_REQUEST | ...
    first_invalid_request: int  # -1 for none

    read = classmethod(read_status)


STATUS_ENTRIES = len(ExtendStatus._fields)


def check_tensor(name, t, dims, dtypes, device=None):
    """A tensor of ``dims`` dimensions and one of ``dtypes``, on ``device``; 1-D ones contiguous,
    2-D ones with unit column stride (rows may be strided)."""
    require_tensor(name, t)
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if (dims == 1 and t.shape[0] > 1 and t.stride(0) != 1) or (
        dims == 2 and t.shape[1] > 1 and t.stride(1) != 1
    ):
        raise ValueError(
            f"{name} must have unit stride along its last dimension, got strides {t.stride()}"
        )
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but seq_lens is on {device}")


def _first(mask):
    return int(np.argmax(mask)) if mask.any() else None


def check_lengths_data(kv, qo, width, dsa_index_topk):
    """Per-request and summed-length checks on host int64 arrays; returns ``(N, sum kv)``.

    Every int32 output must hold its value: ``cu_seqlens_k`` (and with it ``topk_indices_offset``
    and ``indexer_ke``, which never exceed its last entry), ``dsa_cu_seqlens_k`` and the sizes.
    The common case costs a handful of numpy calls; the request is located only on failure.
    """
    if len(kv) == 0:
        return 0, 0
    # One mask for the common case (kv < 0 implies qo < 0 or qo > kv); the request is located
    # only on failure.
    if ((qo < 0) | (qo > kv) | (kv > width)).any():
        bad = (qo < 0) | (qo > kv)
        if bad.any():
            r = _first(bad)
            raise ValueError(
                f"request {r}: need 0 <= extend_seq_lens[{r}] = {qo[r]} <= seq_lens[{r}] = {kv[r]}"
            )
        r = _first(kv > width)
        raise ValueError(
            f"request {r}: seq_lens[{r}] = {kv[r]} exceeds req_to_token's {width} columns"
        )
    n_tokens, n_flat = int(qo.sum()), int(kv.sum())  # each <= width, a tensor dimension: no wrap
    if n_flat > INT32_MAX:
        r = _first(np.cumsum(kv) > INT32_MAX)
        raise ValueError(
            f"request {r}: seq_lens sum to {int(np.cumsum(kv)[r])} by request {r}, past "
            f"int32 (cu_seqlens_k, topk_indices_offset, indexer_ke are int32)"
        )
    if n_tokens * dsa_index_topk > INT32_MAX:  # dsa_cu_seqlens_k <= N * topk: exact check only then
        dsa = np.cumsum(
            clamped_prefix(kv, dsa_index_topk) - clamped_prefix(kv - qo, dsa_index_topk)
        )
        r = _first(dsa > INT32_MAX)
        if r is not None:
            raise ValueError(
                f"request {r}: dsa_cu_seqlens_k passes int32 by request {r} "
                f"(extend_seq_lens x dsa_index_topk too large)"
            )
    return n_tokens, n_flat


def check_pool_data(req_pool_indices, rows):
    pool = req_pool_indices.cpu().numpy().astype(np.int64)
    r = _first((pool < 0) | (pool >= rows))
    if r is not None:
        raise ValueError(
            f"request {r}: req_pool_indices[{r}] = {pool[r]} is not a row of "
            f"req_to_token ({rows} rows)"
        )


def check_table_values(req_to_token, req_pool_indices, kv, chunk_entries=1 << 24):
    """An int64 ``req_to_token``'s live entries must fit the int32 flattened table."""
    if req_to_token.dtype != torch.int64 or len(kv) == 0:
        return
    width = req_to_token.shape[1]
    per_chunk = max(1, chunk_entries // max(width, 1))
    kv_dev = torch.from_numpy(kv).to(req_to_token.device)
    columns = torch.arange(width, device=req_to_token.device)
    for r0 in range(0, len(kv), per_chunk):
        rows = req_to_token[req_pool_indices[r0 : r0 + per_chunk].long()]
        live = columns[None, :] < kv_dev[r0 : r0 + per_chunk, None]
        bad = live & ((rows > INT32_MAX) | (rows < -INT32_MAX - 1))
        if bool(bad.any()):
            r, c = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"request {r0 + r}: req_to_token[req_pool_indices[{r0 + r}], {c}] = "
                f"{int(rows[r, c])} does not fit int32 (page_table_1_flattened is int32)"
            )


def check_inputs(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk):
    """Metadata-only checks of the inputs; returns topk as an int."""
    check_tensor("seq_lens", seq_lens, 1, _LENGTHS)
    device = seq_lens.device
    check_tensor("extend_seq_lens", extend_seq_lens, 1, _LENGTHS, device)
    check_tensor("req_pool_indices", req_pool_indices, 1, _LENGTHS, device)
    check_tensor("req_to_token", req_to_token, 2, _LENGTHS, device)
    bs = seq_lens.shape[0]
    if extend_seq_lens.shape[0] != bs or req_pool_indices.shape[0] != bs:
        raise ValueError(
            f"seq_lens, extend_seq_lens and req_pool_indices must have one entry per "
            f"request, got {bs}, {extend_seq_lens.shape[0]} and {req_pool_indices.shape[0]}"
        )
    return as_index("dsa_index_topk", dsa_index_topk, minimum=1, maximum=INT32_MAX)


def check_static(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
                 outputs, status, status_entries):
    """Metadata-only checks (a few µs) of the inputs, the output buffers (``outputs``: name ->
    tensor, the ``ExtendBuffers`` fields) and ``status``; returns topk. ``status=None`` is a
    status the caller allocates itself."""
    topk = check_inputs(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk)
    device, bs = seq_lens.device, seq_lens.shape[0]
    for name, t in outputs.items():
        check_tensor(name, t, 1, (torch.int32,), device)
    if outputs["cu_seqlens_k"].shape[0] < bs + 1:
        raise ValueError(
            f"cu_seqlens_k holds {outputs['cu_seqlens_k'].shape[0]} entries, bs + 1 = {bs + 1} "
            f"needed")
    if outputs["dsa_cu_seqlens_k"].shape[0] < 1:
        raise ValueError("dsa_cu_seqlens_k needs at least 1 entry (its leading 0)")
    if status is not None:
        check_tensor("status", status, 1, (torch.int64,), device)
        if status.shape[0] < status_entries:
            raise ValueError(
                f"status must hold {status_entries} int64 entries, got {status.shape[0]}")
        outputs = {**outputs, "status": status}
    check_no_overlap(outputs, {"seq_lens": seq_lens, "extend_seq_lens": extend_seq_lens,
                               "req_pool_indices": req_pool_indices, "req_to_token": req_to_token})
    return topk


def check_data(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
               capacities=None, seq_lens_cpu=None, extend_seq_lens_cpu=None, table_values=True):
    """Every data check (lengths, sums against int32, pool rows, table values, and the buffers'
    ``capacities = (tokens, flat)``); returns ``(N, sum kv)``. Costs device-to-host copies
    unless the host mirrors are given."""
    qo, kv = host_lengths(extend_seq_lens, seq_lens, extend_seq_lens_cpu, seq_lens_cpu)
    n_tokens, n_flat = check_lengths_data(kv, qo, req_to_token.shape[1], dsa_index_topk)
    if table_values:
        check_pool_data(req_pool_indices, req_to_token.shape[0])
        check_table_values(req_to_token, req_pool_indices, kv)
    if capacities is not None:
        if n_tokens > capacities[0]:
            raise ValueError(
                f"the token buffers hold {capacities[0]} entries but N = {n_tokens} are needed")
        if n_flat > capacities[1]:
            raise ValueError(
                f"page_table_1_flattened holds {capacities[1]} entries but "
                f"sum(seq_lens) = {n_flat} are needed")
    return n_tokens, n_flat


def raise_on_mirror_mismatch(status, n_tokens, n_flat):
    """Read the status (one sync) and raise when the device disagreed with the host mirrors
    the outputs were sized from, or found an invalid request."""
    device_tokens, device_flat, flags, first_bad = ExtendStatus.read(status)
    if flags & TOKENS_MISMATCH:
        raise ValueError(
            f"extend_seq_lens_cpu disagrees with the device: it sums to N = {n_tokens}, "
            f"extend_seq_lens on the device to {device_tokens} (a stale host mirror?)")
    if flags & FLAT_MISMATCH:
        raise ValueError(
            f"seq_lens_cpu disagrees with the device: it sums to {n_flat}, seq_lens on the "
            f"device to {device_flat} (a stale host mirror?)")
    if flags & INVALID_REQUEST:
        raise ValueError(
            f"request {first_bad}: the device lengths or pool row are invalid (negative, qo > kv, "
            f"kv past req_to_token's width, or a row outside req_to_token), though the host "
            f"mirrors passed the checks")
