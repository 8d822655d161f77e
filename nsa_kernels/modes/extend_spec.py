"""The extend (prefill with cached prefixes) mode as a ``ModeSpec``.

Extend allocates its outputs (their sizes depend on N and sum(kv), which only the host mirrors
know), so it takes no buffers and is timed eagerly (call + synchronize). Both sides get the
forward batch's host mirrors of the lengths, as SGLang's scheduler hands them to
``init_forward_metadata`` (``seq_lens_cpu``, ``extend_seq_lens_cpu``): what the server pays,
without a device-to-host read that it does not make.
"""
import torch

from .extend_reference import extend_reference
from .spec import INT32, INT64, ModeSpec, Variant

#: Longest extend a request gets in the benchmark (prefixes fill the rest of the width).
MAX_EXTEND = 256


def _lengths(point, draw):
    ext = draw(1, min(MAX_EXTEND, point.width))
    seq = draw(0, point.width - ext) + ext
    return seq, ext, seq


def _kwargs(point, inputs, outputs):
    return dict(seq_lens=inputs.seq_lens, extend_seq_lens=inputs.extend_seq_lens,
                req_pool_indices=inputs.req_pool_indices, req_to_token=inputs.req_to_token,
                dsa_index_topk=point.topk, seq_lens_cpu=inputs.seq_lens.cpu(),
                extend_seq_lens_cpu=inputs.extend_seq_lens.tolist())


def _oracle(point, inputs):
    return extend_reference(inputs.seq_lens, inputs.extend_seq_lens, inputs.req_pool_indices,
                            inputs.req_to_token, point.topk)


def extend_bytes(point, inputs):
    """Inputs read once (``seq_lens`` and ``req_pool_indices`` int64, ``extend_seq_lens``
    int32, each request's live ``req_to_token`` entries) plus every output at its size (4 B
    entries, the oracle's shapes)."""
    bs = point.bs
    read = bs * (INT64 + INT64 + INT32) + int(inputs.kv_lens.sum()) * INT32
    written = sum(t.numel() for t in _oracle(point, inputs).values()) * INT32
    return read + written


def _check(point, reference, outputs, returned, who):
    """What the call returned against the oracle, every oracle key."""
    return {"keys vs oracle": len(compare_extend(returned, reference, f"{who} {point.name}",
                                                 keys=list(reference)))}


SPEC = ModeSpec(
    name="extend",
    ours="nsa_kernels.modes.extend:extend_metadata",
    sglang="nsa_kernels.peers.sglang_extend:sglang_extend_metadata",
    variants=(Variant("", "SGLang 0.5.23 eager extend (prefill with cached prefixes): "
                      "init_forward_metadata replayed (host lists, per-request torch ops); "
                      "call + synchronize", next_ns=(0,), vllm=False),),
    lengths=_lengths,
    kwargs=_kwargs,
    oracle=_oracle,
    bytes_moved=extend_bytes,
    reads_extend_lens=True,
    graph=False,
    takes_buffers=False,
    reference=_oracle,
    check=_check,
    max_bs=64,
)


def compare_extend(ours, theirs, what="extend", keys=None):
    """Exact equality of two extend metadata dicts (int64 compare, so ours' int32 and the
    oracle's int64 agree): over the same keys, or over ``keys`` where given."""
    if keys is None and set(ours) != set(theirs):
        raise AssertionError(f"{what}: keys differ: {sorted(set(ours) ^ set(theirs))}")
    missing = set(keys or ()) - (set(ours) & set(theirs))
    if missing:
        raise AssertionError(f"{what}: keys missing on one side: {sorted(missing)}")
    keys = sorted(keys or ours)
    for key in keys:
        a, b = ours[key], theirs[key]
        if a is None or b is None:
            if (a is None) != (b is None):
                raise AssertionError(f"{what}: {key} is None on one side only")
            continue
        pairs = list(zip(a, b)) if isinstance(a, (tuple, list)) else [(a, b)]
        for x, y in pairs:
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                if x != y:
                    raise AssertionError(f"{what}: {key} differs ({x!r} vs {y!r})")
            elif x.shape != y.shape or not torch.equal(x.to("cpu", torch.int64),
                                                       y.to("cpu", torch.int64)):
                raise AssertionError(
                    f"{what}: {key} differs (shapes {tuple(x.shape)} vs {tuple(y.shape)})")
    return keys
