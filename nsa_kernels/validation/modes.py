"""Checks of the decode / target_verify / draft_extend fills, run before anything is written.

Static checks read tensor metadata only (a few µs): types, dtypes, devices, shapes, strides,
whether two buffers share bytes. Data checks (``check=True``) copy the inputs to the host
once and reject what the int32 outputs cannot represent or what would read outside
``req_to_token``; they name the argument and the request.

Integer parsing (``as_index``), the overlap check (``check_no_overlap``) and the tensor type
check are ``validation.core``'s; this module holds the modes' own shape rules.
"""
from typing import NamedTuple

import torch

from .core import INT32_MAX, as_index, read_status, require_tensor

_INDEX_DTYPES = (torch.int32, torch.int64)
#: Largest page size served. Any size in 1..MAX_PAGE_SIZE works, as in SGLang: a page belongs
#: to the tile holding its first column (``modes.tiles.write_page_rows``).
MAX_PAGE_SIZE = 1024


# --------------------------------------------------------------------------- tensors
def input_vector(name, t, device, min_len):
    """A 1-D int32/int64 input with unit stride holding at least ``min_len`` entries."""
    require_tensor(name, t)
    if t.dim() != 1 or t.dtype not in _INDEX_DTYPES:
        raise TypeError(
            f"{name} must be a 1-D int32 or int64 tensor, got {t.dtype} {tuple(t.shape)}"
        )
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if t.shape[0] < min_len:
        raise ValueError(f"{name} holds {t.shape[0]} entries but {min_len} are read")
    if min_len > 1 and t.stride(0) != 1:
        raise ValueError(f"{name} must have unit stride")
    return t


def req_to_token_table(t, device, min_cols, bs=0):
    require_tensor("req_to_token", t)
    if t.dim() != 2 or t.dtype not in _INDEX_DTYPES:
        raise TypeError(
            f"req_to_token must be a 2-D int32 or int64 tensor, got {t.dtype} {tuple(t.shape)}"
        )
    if t.device != device:
        raise ValueError(f"req_to_token is on {t.device}, expected {device}")
    if t.stride(1) != 1 and t.shape[1] > 1:
        raise ValueError("req_to_token must have unit column stride")
    if t.shape[1] < min_cols:
        raise ValueError(f"req_to_token has {t.shape[1]} columns but {min_cols} are read per row")
    if bs and min_cols and t.shape[0] == 0:
        raise ValueError("req_to_token has no rows but requests read from it")
    return t


def output_vector(name, t, device, min_len):
    """A 1-D int32 output with unit stride holding at least ``min_len`` entries."""
    require_tensor(name, t)
    if t.dim() != 1 or t.dtype != torch.int32:
        raise TypeError(f"{name} must be a 1-D int32 tensor, got {t.dtype} {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if t.shape[0] < min_len:
        raise ValueError(f"{name} holds {t.shape[0]} entries but {min_len} are written")
    if t.shape[0] > 1 and t.stride(0) != 1:
        raise ValueError(f"{name} must have unit stride")
    return t


def output_table(name, t, device, min_rows, min_cols, dtype=torch.int32):
    """A 2-D output: unit column stride, rows that do not overlap (stride >= width)."""
    require_tensor(name, t)
    if t.dim() != 2 or t.dtype != dtype:
        raise TypeError(f"{name} must be a 2-D {dtype} tensor, got {t.dtype} {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    rows, cols = t.shape
    if rows < min_rows or cols < min_cols:
        raise ValueError(f"{name} is {rows} x {cols} but {min_rows} x {min_cols} are written")
    if cols > 1 and t.stride(1) != 1:
        raise ValueError(f"{name} must have unit column stride")
    if rows > 1 and t.stride(0) < max(cols, 1):
        raise ValueError(
            f"{name} has row stride {t.stride(0)} < its width {cols}: "
            f"{name} overlaps {name} (its rows share entries)"
        )
    return t


class DraftExtendStatus(NamedTuple):
    """The optional device status of ``draft_extend``, by name: int64 entries, in this order."""

    rows: int  # rows the requests expand to (the sum of their extend lengths)
    overflow: int  # 1 when rows > total_len (rows past total_len are not written)

    read = classmethod(read_status)


DRAFT_EXTEND_STATUS_ENTRIES = len(DraftExtendStatus._fields)


def status_vector(status, device):
    """The optional device status: int64 ``[rows needed, overflow]`` (``DraftExtendStatus``)."""
    if status is None:
        return None
    if not isinstance(status, torch.Tensor) or status.dim() != 1 or status.dtype != torch.int64:
        raise TypeError("status must be a 1-D int64 tensor")
    if status.device != device:
        raise ValueError(f"status is on {status.device}, expected {device}")
    if status.shape[0] < DRAFT_EXTEND_STATUS_ENTRIES or status.stride(0) != 1:
        raise ValueError(f"status must hold {DRAFT_EXTEND_STATUS_ENTRIES} contiguous entries, "
                         f"got {status.shape[0]}")
    return status


# --------------------------------------------------------------------------- data (host)
def host(t, n):
    return t[:n].to("cpu", torch.int64)


def lengths_in_int32(name, values, extra=0):
    """Every ``values[b] >= 0`` and ``values[b] + extra < 2**31``; names the first bad request."""
    bad = (values < 0) | (values + extra > INT32_MAX)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise ValueError(
            f"{name}[{b}] = {int(values[b])} gives a length outside int32 [0, 2**31) (request {b})"
        )


def prefix_in_int32(name, lengths):
    """The running sum of ``lengths`` (int64 on the host) stays below 2**31."""
    running = torch.cumsum(lengths, 0)
    bad = running > INT32_MAX
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise ValueError(
            f"{name} would pass 2**31 at request {b} (sum {int(running[b])}): it does not fit int32"
        )


def pool_rows(req_pool_indices, req_to_token, bs, live_cols):
    """Pool indices inside ``req_to_token``; token ids in ``[0, 2**31)`` over each live prefix."""
    pool = host(req_pool_indices, bs)
    rows = req_to_token.shape[0]
    bad = (pool < 0) | (pool >= rows)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise ValueError(
            f"req_pool_indices[{b}] = {int(pool[b])} is outside req_to_token's "
            f"{rows} rows (request {b})"
        )
    if bs == 0:
        return
    width = int(live_cols.max()) if live_cols.numel() else 0
    table = req_to_token[:, :width].to("cpu", torch.int64)[pool]
    live = torch.arange(width)[None, :] < live_cols[:, None]
    bad = ((table < 0) | (table > INT32_MAX)) & live
    if bool(bad.any()):
        b, c = bad.nonzero()[0].tolist()
        raise ValueError(
            f"req_to_token[{int(pool[b])}, {c}] = {int(table[b, c])} is outside "
            f"int32 [0, 2**31) (request {b})"
        )


# --------------------------------------------------------------------------- shared by modes
def page_tables(page_table_1, real_page_table, physical_page_size, rows, width, device):
    """``(page_table_1, real_page_table, has_page_table_1)`` as the kernels take them.

    As in SGLang: ``physical_page_size == 1`` means the real table *is* ``page_table_1``
    (``real_page_table`` is ignored and ``page_table_1`` is required); otherwise
    ``real_page_table`` is required and ``page_table_1`` may be ``None`` (not written).
    """
    page_size = as_index("physical_page_size", physical_page_size, minimum=1,
                         maximum=MAX_PAGE_SIZE)
    if page_size == 1:
        if page_table_1 is None:
            raise ValueError(
                "page_table_1 is required when physical_page_size == 1 "
                "(the real page table is page_table_1)"
            )
        output_table("page_table_1", page_table_1, device, rows, width)
        return page_table_1, page_table_1, True, page_size
    if real_page_table is None:
        raise ValueError("real_page_table is required when physical_page_size > 1")
    output_table("real_page_table", real_page_table, device, rows, -(-width // page_size))
    if page_table_1 is None:
        return real_page_table, real_page_table, False, page_size
    output_table("page_table_1", page_table_1, device, rows, width)
    return page_table_1, real_page_table, True, page_size


def topk_value(dsa_index_topk):
    return as_index("dsa_index_topk", dsa_index_topk, minimum=1)
