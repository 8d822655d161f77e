"""The forward modes of SGLang's DSA metadata, each a one-launch fill (kernel + thin launcher).

``decode``, ``target_verify`` and ``draft_extend`` follow SGLang 0.5.23's fused kernels'
output contract; ``reference`` holds their plain PyTorch oracles, ``tiles`` the pieces the
three kernels share. ``extend`` (prefill, with ``extend_reference``) replaces SGLang's eager
Python path. Their argument checks live in ``nsa_kernels.validation.modes`` / ``.extend``.
``nsa_kernels.compat.sglang`` exposes them under SGLang's exact names and signatures.

``SPECS`` maps every measured workload to its ``spec.ModeSpec`` (call, outputs, reference,
bytes, SGLang's production configurations, vLLM's peer): the benchmark, the notebooks and the
GPU checks read a mode from there. A new mode is its module plus one line below.
"""
from . import decode, draft_extend, extend_spec, target_verify
from .decode import DecodeFill, launch_decode, plan_decode
from .draft_extend import DraftExtendFill, launch_draft_extend, plan_draft_extend
from .extend import ExtendBuffers, ExtendFill, extend_metadata, launch_extend, plan_extend
from .extend_reference import extend_reference
from .reference import decode_reference, draft_extend_reference, target_verify_reference
from .spec import ModeSpec, Point, Variant
from .target_verify import TargetVerifyFill, launch_target_verify, plan_target_verify

#: Workload name -> its spec, in the order reports list them.
SPECS = {spec.name: spec for spec in (
    decode.SPEC,
    target_verify.SPEC,
    draft_extend.STATIC_SPEC,
    draft_extend.VARLEN_SPEC,
    extend_spec.SPEC,
)}

__all__ = ["SPECS", "DecodeFill", "DraftExtendFill", "ExtendBuffers", "ExtendFill", "ModeSpec",
           "Point", "TargetVerifyFill", "Variant", "decode_reference", "draft_extend_reference",
           "extend_metadata", "extend_reference", "launch_decode", "launch_draft_extend",
           "launch_extend", "launch_target_verify", "plan_decode", "plan_draft_extend",
           "plan_extend", "plan_target_verify", "target_verify_reference"]
