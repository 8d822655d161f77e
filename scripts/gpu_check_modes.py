#!/usr/bin/env python
"""GPU check: ``nsa_kernels.compat.sglang`` against SGLang 0.5.23's own fused DSA metadata kernels.

For each case both run on identical inputs into separately poisoned buffers; then every entry
of every buffer is compared:

* flat arrays and ``paged_mqa_ctx_lens_2d``: equal everywhere (so both write exactly the same
  range; poison left where the other wrote is a FAIL);
* page tables, on each row's live prefix ``[:min(len, width)]``: equal and written by both;
  past it, an entry we write and SGLang does not is a FAIL, an entry SGLang writes and we do
  not is counted (``sglang_only``: SGLang rounds each row up to its 128-column block; no
  consumer reads there) and reported, not failed.

One PASS/FAIL line per case, a summary, the compiled-variant count of each of our kernels over
the sweep; exit status 1 on any FAIL. Results go to ``$OUT/gpu_check_modes.json`` if ``$OUT``
is set. Needs a CUDA device and SGLang's wheel (``NSA_SGLANG_PATH`` or ``.peers/``).

    python scripts/gpu_check_modes.py [--quick]
    python scripts/gpu_check_modes.py --cpu-smoke   # tiny sizes, Triton's interpreter
"""
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nsa_kernels  # noqa: E402,F401  (first: picks the Triton mode)
from nsa_kernels.bench.harness import compiled_variants  # noqa: E402
from nsa_kernels.compat import sglang as ours  # noqa: E402
from nsa_kernels.modes import decode, draft_extend, target_verify  # noqa: E402
from nsa_kernels.modes.inputs import POISON, allocate_outputs, call, live_cols, make_case  # noqa: E402
from nsa_kernels.peers import sglang as sglang_peer  # noqa: E402

import torch  # noqa: E402

#: Where the comparison runs: the GPU, or the CPU under Triton's interpreter (``--cpu-smoke``).
DEVICE = "cuda"
BATCH_SIZES = (1, 7, 32, 128, 1024)
WIDTHS = (8192, 131072)
CONFIGS = [  # (mode, options)
    ("decode", dict(page_size=64, has_pt1=True)),
    ("decode", dict(page_size=64, has_pt1=False)),
    ("decode", dict(page_size=1, has_pt1=True)),
    ("target_verify", dict(page_size=64, has_pt1=True, next_n=2, has_ctx=False)),
    ("target_verify", dict(page_size=64, has_pt1=False, next_n=2, has_ctx=True)),
    ("target_verify", dict(page_size=64, has_pt1=True, next_n=4, has_ctx=True)),
    ("target_verify", dict(page_size=1, has_pt1=True, next_n=4, has_ctx=False)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=True, draft=2)),
    ("draft_extend", dict(page_size=64, has_pt1=False, static=True, draft=4)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=False, draft=4)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=False, draft=2, partial=True)),
    ("draft_extend", dict(page_size=1, has_pt1=True, static=False, draft=3)),
]


def compare(case, theirs, mine):
    """List of problems (empty: PASS) and the count of SGLang-only entries past live prefixes."""
    problems, sglang_only = [], 0
    for name in ("cache_seqlens", "cu_seqlens_k", "seqlens_expanded", "dsa_cache_seqlens",
                 "dsa_cu_seqlens_k", "paged_mqa_ctx_lens_2d"):
        if name == "seqlens_expanded" and case["mode"] == "decode":
            continue
        a, b = theirs.get(name), mine.get(name)
        if a is None:
            continue
        diff = a != b
        if bool(diff.any()):
            i = diff.nonzero()[0].tolist()
            problems.append(f"{name}: {int(diff.sum())} entries differ, first at {i}: sglang "
                            f"{a[tuple(i)].item()} ours {b[tuple(i)].item()}")
    ps = case["opts"]["page_size"]
    live = live_cols(case).to(DEVICE)
    rows = case["rows"]
    tables = [("page_table_1", live)] if theirs["page_table_1"] is not None else []
    if ps > 1:
        tables.append(("real_page_table", (live + ps - 1) // ps))
    for name, row_live in tables:
        a, b = theirs[name], mine[name]
        cols = torch.arange(a.shape[1], device=DEVICE)
        inside = torch.zeros(a.shape, dtype=torch.bool, device=DEVICE)
        inside[:rows] = cols[None, :] < row_live[:, None]
        bad = inside & ((a != b) | (a == POISON))
        if bool(bad.any()):
            i = bad.nonzero()[0].tolist()
            problems.append(f"{name} live prefix: {int(bad.sum())} entries differ or unwritten, "
                            f"first at {i}: sglang {a[tuple(i)].item()} ours {b[tuple(i)].item()}")
        ours_only = ~inside & (b != POISON)
        if bool(ours_only.any()):
            i = ours_only.nonzero()[0].tolist()
            problems.append(f"{name}: we write {int(ours_only.sum())} entries past the live "
                            f"prefix, first at {i}")
        sglang_only += int((~inside & (a != POISON)).sum())
    if case["opts"].get("has_pt1") is False and mine.get("page_table_1") is not None:
        problems.append("page_table_1=None but a wide table was allocated")
    return problems, sglang_only


def load_sglang_for_cpu():
    """SGLang's metadata module with its ``assert <tensor>.is_cuda`` lines turned into
    ``pass``, so that its kernels run on CPU tensors under Triton's interpreter: the same
    kernels, for a local cross-check (read from the wheel into a temporary file, never copied
    into this repository)."""
    import importlib.util
    import re
    import tempfile
    folder, _ = sglang_peer._source_folder()
    source = (folder / sglang_peer.FILES["metadata"]).read_text()
    source = re.sub(r"(?m)^(\s*)assert [\w.]+\.is_cuda\s*$", r"\1pass", source)
    path = Path(tempfile.mkdtemp(prefix="nsa_sglang_cpu_")) / "sglang_metadata_cpu.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("nsa_peer_sglang_metadata_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _coerce_interpreter_masks()
    return module


def _coerce_interpreter_masks():
    """Triton's interpreter refuses masks that are not a bool array of the pointers' shape
    (a scalar condition combined with a vector one); the compiler broadcasts them. SGLang's
    kernels use such masks, so for the CPU smoke run the interpreter gets them broadcast."""
    import numpy as np
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder

    def fix(ptrs, mask):
        data = np.broadcast_to(np.asarray(mask.data).astype(bool), np.shape(ptrs.data))
        return interpreter.TensorHandle(np.ascontiguousarray(data), mask.dtype)

    load, store = builder.create_masked_load, builder.create_masked_store
    builder.create_masked_load = lambda self, ptrs, mask, *a: load(self, ptrs, fix(ptrs, mask), *a)
    builder.create_masked_store = lambda self, ptrs, value, mask, *a: store(
        self, ptrs, value, fix(ptrs, mask), *a)


def main():
    global DEVICE
    quick = "--quick" in sys.argv
    if "--cpu-smoke" in sys.argv:  # the script's own logic, on tiny sizes, no GPU
        DEVICE = "cpu"
        peer = load_sglang_for_cpu()
        batch_sizes, widths = (1, 7), (300, 1100)
    else:
        if not torch.cuda.is_available():
            print("FAIL: needs a CUDA device")
            return 2
        try:
            peer = sglang_peer.load().metadata
        except sglang_peer.PeerUnavailable as e:
            print(f"FAIL: SGLang unavailable: {e}")
            return 2
        batch_sizes = BATCH_SIZES[:3] if quick else BATCH_SIZES
        widths = WIDTHS[:1] if quick else WIDTHS
    results, failures = [], 0
    print(f"{'case':<70} {'result':<6} {'sglang_only':>11}  detail")
    seed = 0
    for mode, opts in CONFIGS:
        for bs in batch_sizes:
            for width in widths:
                seed += 1
                described = " ".join(f"{k}={v}" for k, v in opts.items())
                name = f"{mode} bs={bs} width={width} {described}"
                t0 = time.time()
                try:
                    case = make_case(mode, bs, width, opts, seed, device=DEVICE)
                    theirs, mine = allocate_outputs(case), allocate_outputs(case)
                    call(peer, case, theirs)
                    call(ours, case, mine)
                    if DEVICE == "cuda":
                        torch.cuda.synchronize()
                    problems, sglang_only = compare(case, theirs, mine)
                except Exception as e:  # one failure must not stop the rest
                    problems, sglang_only = [f"exception: {e!r}"], None
                    traceback.print_exc()
                ok = not problems
                failures += not ok
                print(
                    f"{name:<70} {'PASS' if ok else 'FAIL':<6} {sglang_only!s:>11}  "
                    f"{'; '.join(problems)[:400]}",
                    flush=True,
                )
                results.append(
                    dict(
                        case=name,
                        mode=mode,
                        bs=bs,
                        width=width,
                        options=opts,
                        passed=ok,
                        problems=problems,
                        sglang_only=sglang_only,
                        seconds=round(time.time() - t0, 3),
                    )
                )
                theirs = mine = case = None
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
    variants = {
        k.fn.__name__: compiled_variants(k)
        for k in (
            decode.decode_kernel,
            target_verify.target_verify_kernel,
            draft_extend.draft_extend_kernel,
        )
    }
    print(
        f"\nSUMMARY: {len(results) - failures} PASS, {failures} FAIL of {len(results)} cases "
        f"(batch sizes {batch_sizes}, widths {widths})"
    )
    theirs_variants = {
        name: compiled_variants(getattr(peer, name))
        for name in (
            "_fused_dsa_decode_metadata_kernel",
            "_fused_dsa_target_verify_metadata_kernel",
            "_fused_dsa_draft_extend_metadata_kernel",
        )
    }
    print(
        "compiled variants over the whole sweep "
        f"({len(CONFIGS)} configs x {len(batch_sizes)} bs x {len(widths)} widths):\n"
        f"  ours:   {variants}\n  SGLang: {theirs_variants}"
    )
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(Path(out) / "gpu_check_modes.json", "w") as f:
            json.dump(
                dict(
                    results=results,
                    variants=variants,
                    sglang_variants=theirs_variants,
                    failures=failures,
                    device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                    sglang=peer.__file__,
                ),
                f,
                indent=1,
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
