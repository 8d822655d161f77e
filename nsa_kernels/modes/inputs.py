"""The case-dict view of a mode's spec point, for callers written against it before the specs.

A *case* is a dict: ``mode`` (``decode``, ``target_verify``, ``draft_extend``), ``bs``,
``width``, ``opts`` (``page_size``, ``has_pt1``; ``next_n``, ``has_ctx`` for verify; ``static``,
``draft``, ``partial`` for draft extend), the inputs ``seq``, ``pool``, ``r2t`` (and ``ext``,
``total_len``, ``max_total_len``), ``rows`` (expanded rows written), and the spec's ``point``
and ``inputs`` it was built from (boundary lengths). Every function delegates to
``nsa_kernels.modes.spec``; new code uses that directly.
"""
from .._env import DEVICE
from . import SPECS, spec
from .spec import POISON, TOPK

__all__ = ["POISON", "allocate_outputs", "bind", "bytes_moved", "call", "check_outputs", "fill",
           "live_cols", "make_case"]


def _point(mode, bs, width, opts, seed, topk):
    workload = mode
    next_n = opts.get("next_n", 1)
    if mode == "draft_extend":
        workload = "draft_extend_static" if opts["static"] else "draft_extend_varlen"
        next_n = opts.get("draft", 1)
    tables = dict(page_table_1=bool(opts.get("has_pt1")), ctx_lens_2d=bool(opts.get("has_ctx")))
    variant = SPECS[workload].variant_for(**tables).name
    return spec.Point(workload, bs, width, next_n, variant, seed=seed,
                      page_size=opts["page_size"], lengths="boundary",
                      partial=5 if opts.get("partial") else 0, topk=topk, **tables)


def make_case(mode, bs, width, opts, seed=0, device=DEVICE, topk=TOPK):
    point = _point(mode, bs, width, opts, seed, topk)
    inputs = spec.make_inputs(point, device)
    return dict(mode=mode, bs=bs, width=width, opts=dict(opts), topk=topk, point=point,
                inputs=inputs, seq=inputs.seq_lens, pool=inputs.req_pool_indices,
                r2t=inputs.req_to_token, ext=inputs.extend_seq_lens, rows=inputs.total_len,
                total_len=inputs.total_len, max_total_len=spec_rows(point))


def spec_rows(point):
    return point.spec.rows(point)


def allocate_outputs(case, poison=POISON, slack=3):
    """Poisoned outputs with ``slack`` entries / rows past what is written."""
    return spec.allocate_outputs(case["point"], poison, slack, case["seq"].device)


def bind(module, case, out):
    """A zero-argument callable of ``module``'s ``fused_dsa_<mode>_metadata`` on ``case``."""
    point = case["point"]
    return spec.bind(getattr(module, point.spec.sglang), point, case["inputs"], out)


def call(module, case, out):
    bind(module, case, out)()


def fill(case, out):
    """Our bound ``*Fill`` on ``case``: checked and planned once, one direct launch per call."""
    point = case["point"]
    return point.spec.fill_class()(**point.spec.kwargs(point, case["inputs"], out))


def check_outputs(case, out, poison=POISON):
    """``out`` against the reference, the poison intact everywhere else; True or raise."""
    point = case["point"]
    spec.check_outputs(point, spec.live_reference(point, case["inputs"]), out, poison=poison)
    return True


def live_cols(case):
    """Per expanded row: its live page-table columns ``min(len, width)``."""
    return spec.row_live_columns(case["point"], case["inputs"])


def bytes_moved(case):
    return case["point"].spec.bytes_moved(case["point"], case["inputs"])
