"""One validation path for every stage: it runs before any launch or write.

Static checks (types, dtypes, shapes, devices, contiguity) read only tensor metadata and
cost nothing. Data checks (negative lengths, ``qo_len > kv_len``, capacity) need the lengths
on the host: stages that sync anyway get them from that same transfer; the sync-free stage
offers them as an explicit option because they cost one device-to-host copy.
"""
import numpy as np
import torch

_LENGTH_DTYPES = (torch.int32, torch.int64)


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def check_topk(nsa_index_topk):
    if isinstance(nsa_index_topk, bool) or not isinstance(nsa_index_topk, int):
        raise TypeError(f"nsa_index_topk must be an int, got {type(nsa_index_topk).__name__}")
    if nsa_index_topk < 1:
        raise ValueError(f"nsa_index_topk must be >= 1, got {nsa_index_topk}")


def check_lengths(extend_seq_lens, seq_lens, nsa_index_topk):
    """Static checks of the two length tensors and topk."""
    for name, t in (("extend_seq_lens", extend_seq_lens), ("seq_lens", seq_lens)):
        _check_tensor(name, t)
        if t.dtype not in _LENGTH_DTYPES:
            raise TypeError(f"{name} must be int32 or int64, got {t.dtype}")
    if extend_seq_lens.shape[0] != seq_lens.shape[0]:
        raise ValueError(
            f"extend_seq_lens and seq_lens must have the same length, got "
            f"{extend_seq_lens.shape[0]} and {seq_lens.shape[0]}")
    if seq_lens.device != extend_seq_lens.device:
        raise ValueError(
            f"seq_lens is on {seq_lens.device} but extend_seq_lens is on {extend_seq_lens.device}")
    check_topk(nsa_index_topk)


def check_outputs(device, **outputs):
    """Static checks of int32 output buffers: 1-D, contiguous, on ``device``."""
    for name, t in outputs.items():
        _check_tensor(name, t)
        if t.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but extend_seq_lens is on {device}")


def status_buffer(status, device):
    """The device status ``[N, overflow]`` of a sync-free launch: checked, or a new one."""
    if status is None:
        return torch.empty(2, dtype=torch.int32, device=device)
    check_outputs(device, status=status)
    if status.shape[0] < 2:
        raise ValueError(f"status must hold 2 entries, got {status.shape[0]}")
    return status


def check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens):
    check_lengths(extend_seq_lens, seq_lens, nsa_index_topk)
    check_outputs(extend_seq_lens.device, out_seqlens_expanded=out_seqlens_expanded,
                  out_nsa_cache_seqlens=out_nsa_cache_seqlens)


def first_invalid_request(ext, seq, raise_error=False):
    """Index of the first request with a negative length or ``qo_len > kv_len``.

    ``ext`` and ``seq`` are host array-likes; the scan is vectorised so that it costs a few
    microseconds at any batch size (a Python loop would dominate the stages' latency).
    """
    ext = np.asarray(ext, dtype=np.int64)
    seq = np.asarray(seq, dtype=np.int64)
    bad = (ext < 0) | (seq < 0) | (ext > seq)
    if not bad.any():
        return None
    i = int(bad.argmax())
    if raise_error:
        qo, kv = int(ext[i]), int(seq[i])
        if qo < 0:
            raise ValueError(f"extend_seq_lens[{i}] = {qo} is negative")
        if kv < 0:
            raise ValueError(f"seq_lens[{i}] = {kv} is negative")
        raise ValueError(f"extend_seq_lens[{i}] = {qo} exceeds seq_lens[{i}] = {kv} "
                         f"(request {i} needs qo_len <= kv_len)")
    return i


def host_lengths(extend_seq_lens, seq_lens):
    """Both length arrays on the host (numpy int64), through one device-to-host transfer."""
    if extend_seq_lens.dtype == seq_lens.dtype:  # the common case: one stack, one copy
        both = torch.stack((extend_seq_lens, seq_lens)).cpu().numpy().astype(np.int64)
    else:
        both = torch.stack((extend_seq_lens.to(torch.int64), seq_lens.to(torch.int64))).cpu().numpy()
    return both[0], both[1]


def check_capacity(n_tokens, **outputs):
    for name, t in outputs.items():
        if t.shape[0] < n_tokens:
            raise ValueError(f"{name} holds {t.shape[0]} entries but N = {n_tokens} are needed")


def validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
             out_nsa_cache_seqlens, lengths=None):
    """Every check; returns N. ``lengths`` passes host lists a stage already holds."""
    check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens)
    ext, seq = lengths if lengths is not None else host_lengths(extend_seq_lens, seq_lens)
    first_invalid_request(ext, seq, raise_error=True)
    n_tokens = int(np.sum(ext, dtype=np.int64))
    check_capacity(n_tokens, out_seqlens_expanded=out_seqlens_expanded,
                   out_nsa_cache_seqlens=out_nsa_cache_seqlens)
    return n_tokens
