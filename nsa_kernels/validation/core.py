"""One validation path for every stage and mode: it runs before any launch or write.

Static checks (types, dtypes, shapes, devices, strides, overlap) read only tensor metadata and
cost a few microseconds. Data checks (negative lengths, ``qo_len > kv_len``, values and sums
past int32, capacity) need the lengths on the host: stages that sync anyway get them from that
same transfer; the sync-free entry points offer them as an explicit option (``check=True``)
because they cost one device-to-host copy.

The general rules, for every entry point (each names the argument, and the request for data):

* ``as_index(name, value, minimum, maximum)``: an ``operator.index`` integer (not bool, not a
  tensor) in range, as a Python int.
* ``check_power_of_two(name, value, maximum)``: ``as_index`` plus power of two in 1..maximum.
* ``check_min_entries(name, tensor, n)``: at least ``n`` entries along dim 0 (a ``cu`` array
  needs 1 for its leading 0, a status 2).
* ``check_strides_2d(name, tensor)``: a 2-D table whose rows never alias: unit column stride and
  row stride >= width (``[N, 1]`` views, single rows and 0-column tables pass).
* ``check_no_overlap(outputs, inputs)``: no output shares a byte with another output or an
  input (metadata only); names both.
* ``check_int32_fits(name, values)``: every host value fits int32; names ``name[i]``.
* ``check_prefix_fits(name, values)``: every running sum fits int32 (computed in 64 bits);
  names the first request ``name[i]`` whose sum leaves int32. Returns the total.
* ``check_nsa_cu_fits(ext, seq, topk)`` / ``check_req_to_token_fits(rows, pool, live_cols)``:
  the same for ``nsa_cu_seqlens_k`` and for page-table entries (names the request).

The fill's own checks build on them: ``check_topk`` (returns the int to launch with),
``check_static(..., status=None)`` (metadata of lengths, outputs and status, overlap included),
``check_length_values(ext, seq)`` (the data rules; returns N), ``check_capacity`` and
``validate``. A sync-free launch's status ``[N, overflow]`` (``FillStatus``) is int32; N
saturates at INT32_MAX.
"""
import operator
from typing import NamedTuple

import numpy as np
import torch

from .._env import COMPILE_ONLY, INTERPRET

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
#: Whether host tensors may reach a kernel: under the interpreter, or when kernels are only
#: compiled for a named target (``NSA_COMPILE_ONLY``: planned, never launched).
_HOST_TENSORS_OK = INTERPRET or COMPILE_ONLY
_LENGTH_DTYPES = (torch.int32, torch.int64)


# --------------------------------------------------------------------------- general rules
def as_index(name, value, minimum=None, maximum=None):
    """``value`` as a Python int: anything ``operator.index`` accepts (numpy ints welcome) except
    bool and tensors, in ``[minimum, maximum]`` (either bound optional). The one integer parser
    of the package: every entry point words its integer errors through here."""
    # A 0-d tensor has __index__, but reading a device tensor would be a hidden host sync.
    if isinstance(value, (bool, np.bool_, torch.Tensor)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    low = minimum is not None and value < minimum
    if low or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            raise ValueError(f"{name} must lie in [{minimum}, {maximum}], got {value}")
        bound = f">= {minimum}" if low else f"<= {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_power_of_two(name, value, maximum=None):
    """``value`` as a Python int; a power of two in ``1..maximum``."""
    value = as_index(name, value)
    if value < 1 or value & (value - 1) or (maximum is not None and value > maximum):
        bound = f" in 1..{maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be a power of two{bound}, got {value}")
    return value


def check_min_entries(name, t, n):
    """``t`` holds at least ``n`` entries along dim 0 (its fixed entries are written always)."""
    if t.shape[0] < n:
        raise ValueError(f"{name} must hold at least {n} entries, got {t.shape[0]}")


def check_strides_2d(name, t):
    """A 2-D table whose rows and columns never alias one another."""
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    rows, cols = t.shape
    if rows == 0 or cols == 0:
        return
    if cols > 1 and t.stride(1) != 1:
        raise ValueError(f"{name} must have unit column stride, got strides {t.stride()}")
    if rows > 1 and t.stride(0) < cols:
        raise ValueError(f"{name} has row stride {t.stride(0)} for {cols} columns: its rows "
                         f"would overlap")


def require_tensor(name, t, *, host_ok=False):
    """``t`` is a ``torch.Tensor`` a kernel can touch (the first check of every tensor argument):
    not a meta tensor (no memory: every one reports address 0, so it would otherwise fail later
    as an overlap of unrelated buffers), and on a CUDA device unless the interpreter runs the
    kernels (a compiled kernel cannot read host memory) or ``host_ok`` (the journey's stages,
    whose stage 0 runs on any device)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_meta:
        raise ValueError(f"{name} is a meta tensor: a kernel needs memory to read and write")
    if not (host_ok or _HOST_TENSORS_OK or t.is_cuda):
        raise ValueError(f"{name} is on {t.device}: the kernels are compiled for the GPU and "
                         "read CUDA tensors only")


def byte_range(t):
    """``[first, last + 1)`` bytes that ``t`` spans (metadata only); None when it is empty."""
    n = t.numel()
    if n == 0:
        return None
    low = t.data_ptr()  # includes the storage offset
    size = t.element_size()
    if t.is_contiguous():  # the common case, and the cheap one
        return low, low + n * size
    high = low
    for extent, stride in zip(t.shape, t.stride()):
        step = (extent - 1) * stride * size
        if step < 0:
            low += step
        else:
            high += step
    return low, high + size


def _flat_span(t):
    """``byte_range`` of a tensor already checked 1-D and contiguous (the hot path's case)."""
    nbytes = t.nbytes
    if not nbytes:
        return None
    low = t.data_ptr()
    return low, low + nbytes


def first_overlap(written, read=()):
    """``(output, other)``: the first pair of names whose byte spans intersect, or None.

    ``written`` / ``read``: sequences of ``(name, span or None)``. Each output is compared with
    every later output and with every input; inputs may overlap each other (they are only read).
    Every overlap check of the package goes through here; each caller words its own error.
    """
    written = [(name, span) for name, span in written if span is not None]
    read = [(name, span) for name, span in read if span is not None]
    for i, (name, (low, high)) in enumerate(written):
        for other, (other_low, other_high) in written[i + 1:] + read:
            if low < other_high and other_low < high:
                return name, other
    return None


def _raise_if_overlapping(written, read):
    """``written`` / ``read``: lists of (name, span or None)."""
    pair = first_overlap(written, read)
    if pair is not None:
        raise ValueError(f"{pair[0]} and {pair[1]} overlap in memory: an output must not share "
                         f"memory with another output or an input")


def check_no_overlap(outputs, inputs=None):
    """No output shares memory with another output or with an input; names both.

    ``outputs`` and ``inputs`` map argument names to tensors (``None``: an optional buffer not
    given, skipped). Spans are byte ranges from metadata (pointer, shape, strides), so a
    strided view counts its gaps: conservative for interleaved views, exact for the contiguous
    buffers and row-strided tables used here. Inputs may overlap each other (they are only
    read). Pass tensors of one device (addresses of different devices could coincide).
    """
    _raise_if_overlapping(
        [(name, byte_range(t) if t is not None else None) for name, t in outputs.items()],
        [(name, byte_range(t) if t is not None else None) for name, t in (inputs or {}).items()])


def check_int32_fits(name, values):
    """Every host value fits int32; otherwise name the first ``name[i]``."""
    values = np.asarray(values)
    bad = (values < INT32_MIN) | (values > INT32_MAX)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{name}[{i}] = {int(values[i])} does not fit the int32 outputs "
                         f"(request {i})")


def check_prefix_fits(name, values, output=None):
    """Every running sum of ``values`` fits int32; returns the total (a Python int).

    Sums are exact (64 bits, each value first saturated at 2**32, so no batch below 2**31
    requests can wrap them); the error names the request where the sum first leaves int32.
    """
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0:
        return 0
    running = np.cumsum(np.minimum(values, 2**32))
    bad = running > INT32_MAX
    if bad.any():
        i = int(bad.argmax())
        what = f"{output} would hold {int(running[i])}" if output else \
            f"the running sum reaches {int(running[i])}"
        raise ValueError(f"{name}[{i}] = {int(values[i])} takes the sum of {name} past int32: "
                         f"{what} (request {i})")
    return int(running[-1])


def clamped_prefix(x, topk):
    """``sum_{v=1..x} min(v, topk)`` for int64 host arrays (0 where x <= 0): exact in 64 bits
    for x, topk < 2**31. The kernels' closed form for ``nsa_cu_seqlens_k``."""
    x = np.maximum(np.asarray(x, dtype=np.int64), 0)
    low = np.minimum(x, topk)
    return low * (low + 1) // 2 + (x - low) * topk


def check_nsa_cu_fits(ext, seq, nsa_index_topk):
    """``nsa_cu_seqlens_k`` (running sum of ``min(v, topk)`` over every token) fits int32.

    ``ext``/``seq``: host lengths already checked (non-negative, ``qo <= kv``, int32). Names
    the first request whose tokens take the sum past int32. Returns the total.
    """
    ext = np.asarray(ext, dtype=np.int64)
    seq = np.asarray(seq, dtype=np.int64)
    per_request = clamped_prefix(seq, nsa_index_topk) - clamped_prefix(seq - ext, nsa_index_topk)
    running = np.cumsum(per_request)
    bad = running > INT32_MAX
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"nsa_cu_seqlens_k would hold {int(running[i])}, past int32, after "
                         f"request {i} (extend_seq_lens[{i}] = {int(ext[i])}, seq_lens[{i}] = "
                         f"{int(seq[i])}, nsa_index_topk = {nsa_index_topk})")
    return int(running[-1]) if running.size else 0


def check_req_to_token_fits(req_to_token_rows, req_pool_indices, live_cols):
    """The ``req_to_token`` entries copied into int32 page tables fit int32.

    ``req_to_token_rows``: host ``[bs, width]`` rows of the batch (``req_to_token[pool]``);
    only the first ``live_cols[r]`` entries of row r are copied, the rest are never read.
    """
    rows = torch.as_tensor(req_to_token_rows)
    if rows.dtype == torch.int32 or rows.numel() == 0:
        return
    live = torch.arange(rows.shape[1])[None, :] < torch.as_tensor(live_cols)[:, None]
    bad = live & ((rows < INT32_MIN) | (rows > INT32_MAX))
    if bool(bad.any()):
        r, c = bad.nonzero()[0].tolist()
        raise ValueError(f"req_to_token[{int(req_pool_indices[r])}, {c}] = {int(rows[r, c])} "
                         f"(request {r}, req_pool_indices[{r}]) does not fit the int32 page "
                         f"tables")


# --------------------------------------------------------------------------- this fill's checks
def _check_tensor(name, t):
    require_tensor(name, t, host_ok=True)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def check_topk(nsa_index_topk):
    """``nsa_index_topk`` as a Python int in 1..INT32_MAX (it is compared with int32 values)."""
    return as_index("nsa_index_topk", nsa_index_topk, minimum=1, maximum=INT32_MAX)


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
    """Static checks of int32 output buffers: 1-D, contiguous, on ``device``, int32-indexable."""
    for name, t in outputs.items():
        _check_tensor(name, t)
        if t.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but extend_seq_lens is on {device}")
        if t.shape[0] > INT32_MAX:  # kernels index tokens in int32
            raise ValueError(f"{name} holds {t.shape[0]} entries, more than int32 can index")


def read_status(cls, status):
    """A device status on the host as the named layout ``cls`` (a NamedTuple of its entries, in
    order): one device-to-host copy (a sync on a GPU). Each layout's ``read``."""
    return cls(*status[:len(cls._fields)].tolist())


class FillStatus(NamedTuple):
    """The device status of the sync-free journey fills (stages 5 and 6), by name: int32
    entries, in this order."""

    n_tokens: int  # N, saturated at INT32_MAX
    overflow: int  # 1 when N exceeds the buffers' capacity (nothing past it is written)

    read = classmethod(read_status)


FILL_STATUS_ENTRIES = len(FillStatus._fields)


def new_status(device):
    """A fresh device status ``[N, overflow]`` (``FillStatus``, int32) for a sync-free launch."""
    return torch.empty(FILL_STATUS_ENTRIES, dtype=torch.int32, device=device)


def check_status(status, device):
    """Static checks of a caller's status buffer: int32, 1-D, contiguous, >= 2 entries."""
    check_outputs(device, status=status)
    check_min_entries("status", status, FILL_STATUS_ENTRIES)


def status_buffer(status, device):
    """The device status ``[N, overflow]`` of a sync-free launch: checked, or a new one."""
    if status is None:
        return new_status(device)
    check_status(status, device)
    return status


def check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens, status=None):
    """Every metadata check of one fill (``status``, when given, is an output too)."""
    check_lengths(extend_seq_lens, seq_lens, nsa_index_topk)
    device = extend_seq_lens.device
    check_outputs(device, out_seqlens_expanded=out_seqlens_expanded,
                  out_nsa_cache_seqlens=out_nsa_cache_seqlens)
    # check_no_overlap, with the cheap spans of tensors already checked 1-D and contiguous
    written = [("out_seqlens_expanded", _flat_span(out_seqlens_expanded)),
               ("out_nsa_cache_seqlens", _flat_span(out_nsa_cache_seqlens))]
    if status is not None:
        check_status(status, device)
        written.append(("status", _flat_span(status)))
    _raise_if_overlapping(written, [("extend_seq_lens", _flat_span(extend_seq_lens)),
                                    ("seq_lens", _flat_span(seq_lens))])


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


def check_length_values(ext, seq):
    """Data checks of host lengths; returns N. Every value and N must fit the int32 outputs."""
    first_invalid_request(ext, seq, raise_error=True)
    check_int32_fits("extend_seq_lens", ext)
    check_int32_fits("seq_lens", seq)
    return check_prefix_fits("extend_seq_lens", ext, output="N")


def host_lengths(extend_seq_lens, seq_lens, extend_seq_lens_cpu=None, seq_lens_cpu=None):
    """Both length arrays on the host (numpy int64, extend first): from host mirrors when both
    are given (SGLang's ``extend_seq_lens_cpu`` / ``seq_lens_cpu``: no sync), else through one
    device-to-host transfer."""
    if extend_seq_lens_cpu is not None and seq_lens_cpu is not None:
        qo, kv = _host_array(extend_seq_lens_cpu), _host_array(seq_lens_cpu)
        if kv.shape[0] != seq_lens.shape[0] or qo.shape[0] != seq_lens.shape[0]:
            raise ValueError(
                f"seq_lens_cpu / extend_seq_lens_cpu must hold {seq_lens.shape[0]} entries, "
                f"got {kv.shape[0]} and {qo.shape[0]}")
        return qo, kv
    if extend_seq_lens.dtype == seq_lens.dtype:  # the common case: one stack, one copy
        both = torch.stack((extend_seq_lens, seq_lens)).cpu().numpy().astype(np.int64)
    else:
        both = (
            torch.stack((extend_seq_lens.to(torch.int64), seq_lens.to(torch.int64))).cpu().numpy()
        )
    return both[0], both[1]


def _host_array(values):
    """A host mirror as a 1-D int64 numpy array; a CPU tensor's memory is read in place."""
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu":
            values = values.cpu()
        values = values.numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


def check_capacity(n_tokens, **outputs):
    """Each named buffer holds ``n_tokens`` entries; names the first one too short."""
    for name, t in outputs.items():
        if t.shape[0] < n_tokens:
            raise ValueError(f"{name} holds {t.shape[0]} entries but N = {n_tokens} are needed")


def validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
             out_nsa_cache_seqlens, lengths=None, status=None):
    """Every check; returns N. ``lengths`` passes host lists a stage already holds."""
    check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens, status)
    ext, seq = lengths if lengths is not None else host_lengths(extend_seq_lens, seq_lens)
    n_tokens = check_length_values(ext, seq)
    check_capacity(n_tokens, out_seqlens_expanded=out_seqlens_expanded,
                   out_nsa_cache_seqlens=out_nsa_cache_seqlens)
    return n_tokens
