"""Seeded inputs and poisoned outputs of the three fused modes, shaped as SGLang's graph runner
holds them, for the notebooks and the GPU check (tests build their own, smaller ones).

A *case* is a dict: ``mode``, ``bs``, ``width``, ``opts`` (page size, tables present, next_n,
static or varlen draft tokens...), the inputs ``seq``, ``pool``, ``r2t`` (and ``ext``,
``total_len``, ``max_total_len`` for draft extend) and ``rows`` (expanded rows written).
``call(module, case, outputs)`` runs a module's ``fused_dsa_*_metadata`` on it: ours
(``nsa_kernels.compat.sglang``) and SGLang's take the same arguments.
"""
import torch

from .._env import DEVICE

POISON = -123456
TOPK = 2048


def seq_lens_for(bs, width, room, gen):
    """Boundary lengths first (1, 63/64/65, 2047/2048/2049, up to the width), then random."""
    top = max(width - room, 0)
    boundary = [min(v, top) for v in (1, 63, 64, 65, 2047, 2048, 2049)] + [top, max(top - 1, 0), 0]
    rand = torch.randint(0, top + 1, (bs,), generator=gen).tolist()
    return [boundary[i] if i < len(boundary) else rand[i] for i in range(bs)]


def make_case(mode, bs, width, opts, seed=0, device=DEVICE, topk=TOPK):
    """``opts``: ``page_size``, ``has_pt1``; ``next_n``, ``has_ctx`` (verify); ``static``,
    ``draft`` (tokens per request), ``partial`` (max_total_len above total_len) for draft."""
    gen = torch.Generator().manual_seed(seed)
    next_n, draft = opts.get("next_n", 1), opts.get("draft", 1)
    kv = seq_lens_for(bs, width, next_n if mode == "target_verify" else 0, gen)
    pool_rows = bs + 16
    case = dict(mode=mode, bs=bs, width=width, opts=dict(opts), topk=topk,
                seq=torch.tensor(kv, dtype=torch.int64, device=device),
                pool=torch.randperm(pool_rows, generator=gen)[:bs].to(device),
                r2t=torch.randint(0, 1 << 24, (pool_rows, width), generator=gen,
                                  dtype=torch.int32).to(device))
    if mode == "target_verify":
        case["rows"] = bs * next_n
    elif mode == "draft_extend":
        qo = [draft] * bs if opts["static"] else \
            torch.randint(0, draft + 1, (bs,), generator=gen).tolist()
        case["ext"] = torch.tensor(qo, dtype=torch.int32, device=device)
        case["rows"] = case["total_len"] = sum(qo)
        case["max_total_len"] = bs * draft + (5 if opts.get("partial") else 0)
    else:
        case["rows"] = bs
    return case


def allocate_outputs(case, poison=POISON, slack=3):
    """Poisoned outputs with ``slack`` entries / rows past what is written."""
    bs, rows, width, opts = case["bs"], case["rows"], case["width"], case["opts"]
    ps = opts["page_size"]
    device = case["seq"].device

    def full(*shape):
        return torch.full(shape, poison, dtype=torch.int32, device=device)

    out = dict(cache_seqlens=full(bs + slack), cu_seqlens_k=full(bs + 1 + slack),
               dsa_cache_seqlens=full(rows + slack), dsa_cu_seqlens_k=full(rows + 1 + slack),
               seqlens_expanded=full(rows + slack),
               page_table_1=full(rows + slack, width) if (opts["has_pt1"] or ps == 1) else None)
    out["real_page_table"] = full(rows + slack, -(-width // ps)) if ps > 1 else out["page_table_1"]
    if opts.get("has_ctx"):
        out["paged_mqa_ctx_lens_2d"] = full(bs, opts["next_n"])
    return out


def call(module, case, out):
    """``module.fused_dsa_<mode>_metadata`` on ``case`` into ``out`` (no sync)."""
    bind(module, case, out)()


def bind(module, case, out):
    """A zero-argument callable of the same call, for timing and CUDA-graph capture."""
    fn, args, kwargs = _call(module, case, out)
    return lambda: fn(*args, **kwargs)


def fill(case, out):
    """Our bound ``*Fill`` on ``case``: checked and planned once, one direct launch per call."""
    from . import DecodeFill, DraftExtendFill, TargetVerifyFill
    fills = {"decode": DecodeFill, "target_verify": TargetVerifyFill,
             "draft_extend": DraftExtendFill}
    _, args, kwargs = _call(None, case, out)
    return fills[case["mode"]](*args, **kwargs)


def check_outputs(case, out, poison=POISON):
    """``out`` against the mode's reference: flat arrays over their written range, page-table
    rows on their live prefix, the poison everywhere else. Raises AssertionError; True."""
    from . import reference
    c, opts = case, case["opts"]
    if c["mode"] == "decode":
        ref = reference.decode_reference(c["seq"], c["pool"], c["r2t"], c["bs"], c["width"],
                                         c["topk"], opts["page_size"])
    elif c["mode"] == "target_verify":
        ref = reference.target_verify_reference(c["seq"], c["pool"], c["r2t"], c["bs"],
                                                c["width"], c["topk"], opts["page_size"],
                                                opts["next_n"])
    else:
        ref = reference.draft_extend_reference(c["seq"], c["ext"], c["pool"], c["r2t"], c["bs"],
                                               c["rows"], c["width"], c["topk"],
                                               opts["page_size"], opts["draft"], opts["static"])
    for name in ("cache_seqlens", "cu_seqlens_k", "seqlens_expanded", "dsa_cache_seqlens",
                 "dsa_cu_seqlens_k", "paged_mqa_ctx_lens_2d"):
        if name not in ref or out.get(name) is None:
            continue
        got = out[name].cpu().long()
        expected = ref[name]
        n = expected.shape[0]
        assert torch.equal(got[:n], expected), f"{name} differs from the reference"
        assert bool((got[n:] == poison).all()), f"{name} written past its range"
    tables = [("page_table_1", "live_cols")] if opts["has_pt1"] or opts["page_size"] == 1 else []
    if opts["page_size"] > 1:
        tables.append(("real_page_table", "real_live_cols"))
    for name, live_name in tables:
        got = out[name].cpu().long()
        rows = ref[name].shape[0]
        live = torch.arange(got.shape[1])[None, :] < ref[live_name][:, None]
        expected = torch.full((rows, got.shape[1]), poison, dtype=torch.int64)
        expected[:, :ref[name].shape[1]] = ref[name]
        expected[~live] = poison
        assert torch.equal(got[:rows], expected), f"{name} differs from the reference"
        assert bool((got[rows:] == poison).all()), f"{name} written past row {rows}"
    return True


def _call(module, case, out):
    mode, opts, c = case["mode"], case["opts"], case
    module = module or _NoModule
    if mode == "decode":
        fn, args = module.fused_dsa_decode_metadata, (
            c["seq"], c["pool"], c["r2t"], out["cache_seqlens"], out["cu_seqlens_k"],
            out["page_table_1"], out["dsa_cache_seqlens"], out["dsa_cu_seqlens_k"],
            out["real_page_table"], c["bs"], c["width"], c["topk"], opts["page_size"])
        kwargs = {}
    elif mode == "target_verify":
        fn, args = module.fused_dsa_target_verify_metadata, (
            c["seq"], c["pool"], c["r2t"], out["cache_seqlens"], out["cu_seqlens_k"],
            out["page_table_1"], out["seqlens_expanded"], out["dsa_cache_seqlens"],
            out["dsa_cu_seqlens_k"], out["real_page_table"], c["bs"], c["width"], c["topk"],
            opts["page_size"], opts["next_n"])
        kwargs = dict(paged_mqa_ctx_lens_2d=out.get("paged_mqa_ctx_lens_2d"))
    else:
        fn, args = module.fused_dsa_draft_extend_metadata, (
            c["seq"], c["ext"], c["pool"], c["r2t"], out["cache_seqlens"], out["cu_seqlens_k"],
            out["page_table_1"], out["seqlens_expanded"], out["dsa_cache_seqlens"],
            out["dsa_cu_seqlens_k"], out["real_page_table"], c["bs"], c["total_len"],
            c["width"], c["topk"], opts["page_size"], opts["draft"], c["max_total_len"])
        kwargs = dict(static_extend_len=opts["static"])
    return fn, args, kwargs


class _NoModule:
    """Stands in for a module when only the arguments are wanted."""
    fused_dsa_decode_metadata = fused_dsa_target_verify_metadata = None
    fused_dsa_draft_extend_metadata = None


def live_cols(case):
    """Per expanded row: its live page-table columns ``min(len, width)``."""
    seq, width, mode, opts = case["seq"], case["width"], case["mode"], case["opts"]
    if mode == "decode":
        live = seq
    elif mode == "target_verify":
        live = (seq + opts["next_n"]).repeat_interleave(opts["next_n"])
    else:
        live = seq.repeat_interleave(case["ext"].long())[:case["rows"]]
    return live.clamp(0, width)


def bytes_moved(case):
    """Bytes that must move: live page-table entries written (and their source entries read
    once per request), the flat arrays written and the lengths read. The floor's numerator."""
    opts = case["opts"]
    ps, has_pt1 = opts["page_size"], opts["has_pt1"] or opts["page_size"] == 1
    per_row = live_cols(case)
    per_request = case["seq"].clamp(0, case["width"])
    if case["mode"] == "target_verify":
        per_request = (case["seq"] + case["opts"]["next_n"]).clamp(0, case["width"])
    pages = lambda x: (x + ps - 1) // ps  # noqa: E731
    written = (int(per_row.sum()) if has_pt1 else 0) + (int(pages(per_row).sum()) if ps > 1 else 0)
    read = int(per_request.sum()) if has_pt1 else int(pages(per_request).sum())
    flat = 2 * (case["bs"] + 1) + 3 * case["rows"] + 1
    return 4 * (written + read + flat) + 16 * case["bs"]
