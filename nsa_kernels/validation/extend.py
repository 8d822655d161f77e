"""Checks of the extend metadata's inputs and buffers, run before anything is written.

Static checks read tensor metadata only (types, shapes, devices, byte ranges) and cost a few
microseconds; they always run. Data checks need the lengths on the host (one device-to-host
copy, or none when the caller passes SGLang's host mirrors) and run when asked.

Integer parsing, byte ranges, the overlap search, the tensor type check and the clamped prefix
sums are ``validation.core``'s; the wording of the errors stays this module's.
"""
import numpy as np
import torch

from .core import INT32_MAX, as_index, byte_range, clamped_prefix, first_overlap, require_tensor


def check_int_param(name, value, low, high):
    """``operator.index(value)`` within ``[low, high]``; bools and tensors are refused."""
    value = as_index(name, value, noun="an int")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


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


def check_no_overlap(inputs, outputs):
    """``ValueError`` naming both tensors when an output shares bytes with another output or
    with an input (inputs may share bytes among themselves: they are only read)."""
    pair = first_overlap(
        [(name, byte_range(t)) for name, t in outputs.items()],
        [(name, byte_range(t)) for name, t in inputs.items()],
    )
    if pair is not None:
        raise ValueError(
            f"{pair[0]} and {pair[1]} overlap in memory: outputs must not share bytes "
            f"with each other or with an input"
        )


def host_lengths(seq_lens, extend_seq_lens, seq_lens_cpu=None, extend_seq_lens_cpu=None):
    """Both length arrays as host int64 numpy arrays: from the host mirrors when given (no sync),
    else through one device-to-host copy."""
    if seq_lens_cpu is not None and extend_seq_lens_cpu is not None:
        kv, qo = _host_array(seq_lens_cpu), _host_array(extend_seq_lens_cpu)
        if kv.shape[0] != seq_lens.shape[0] or qo.shape[0] != seq_lens.shape[0]:
            raise ValueError(
                f"seq_lens_cpu / extend_seq_lens_cpu must hold {seq_lens.shape[0]} entries, "
                f"got {kv.shape[0]} and {qo.shape[0]}"
            )
        return kv, qo
    both = torch.stack((seq_lens.to(torch.int64), extend_seq_lens.to(torch.int64))).cpu().numpy()
    return both[0], both[1]


def _host_array(values):
    """A host mirror as a 1-D int64 numpy array; a CPU tensor's memory is read in place."""
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu":
            values = values.cpu()
        values = values.numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


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
