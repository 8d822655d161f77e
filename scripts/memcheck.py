"""Run every Triton kernel of the workbook over edge cases, for ``compute-sanitizer``.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python scripts/memcheck.py

With the caching allocator off, every tensor is its own cudaMalloc, so a store one element
past a buffer is an error the sanitizer reports. Buffers are sized exactly (capacity == N)
where the case says so. Outputs are also compared with the reference, so a run that passes
memcheck but computes garbage still fails.
"""
import sys

import torch

import nsa_kernels as nk
from nsa_kernels.bench import workloads
from nsa_kernels.stage4_triton_autotuned import SEARCH_SPACE, launch_with_config
from nsa_kernels.stage5_zero_sync import launch_zero_sync


def lengths(ext, seq):
    dev = nk.DEVICE
    return torch.tensor(ext, dtype=torch.int32, device=dev), torch.tensor(seq, dtype=torch.int32, device=dev)


def cases():
    yield "bs 0", *lengths([], [])
    yield "N 0 (all zero-length)", *lengths([0, 0, 0], [5, 0, 9])
    yield "one token", *lengths([1], [1])
    yield "bs 129, N not a block multiple", *lengths([1, 2, 3] * 43, [100, 2000, 3000] * 43)
    yield "bs 257 with zero-length tail", *lengths([3] * 200 + [0] * 57, [5000] * 257)
    for bs in (1, 1000, 4096):
        w = workloads.draft_extend(bs)
        yield f"draft bs {bs}", w.extend_seq_lens, w.seq_lens
    for n in (1023, 131072):
        w = workloads.prefill(n)
        yield f"prefill N {n}", w.extend_seq_lens, w.seq_lens


def check(name, fill, ext, seq, capacity_slack=0):
    want_e, want_c = nk.reference(ext, seq, 2048)
    n = want_e.shape[0]
    out_e = torch.full((n + capacity_slack,), -7, dtype=torch.int32, device=ext.device)
    out_c = out_e.clone()
    fill(ext, seq, 2048, out_e, out_c)
    torch.cuda.synchronize()
    ok = torch.equal(out_e[:n], want_e) and torch.equal(out_c[:n], want_c)
    print(f"{'ok ' if ok else 'BAD'} {name}", flush=True)
    return ok


def main():
    failures = 0
    for case, ext, seq in cases():
        for stage_name, stage in nk.STAGES.items():
            if stage_name in ("triton_fused", "triton_inplace") and ext.shape[0] > 1000:
                continue  # the linear scan at bs 4096 is just slow; bs 1000 covers it
            failures += not check(f"{stage_name} / {case} / capacity == N", stage, ext, seq)
        for mapping in ("request", "token"):
            fill = lambda *a, m=mapping: launch_zero_sync(*a, mapping=m)  # noqa: E731
            failures += not check(f"zero_sync[{mapping}] / {case} / capacity == N", fill, ext, seq)
            packed = lambda *a, m=mapping: nk.ZeroSyncFill(*a, mapping=m, packed=True)()  # noqa: E731
            failures += not check(f"ZeroSyncFill packed [{mapping}] / {case} / capacity == N", packed, ext, seq)
            # overflow: buffers one short of N must not be written past their end
            n = int(ext.sum())
            if n:
                out = torch.empty(n - 1, dtype=torch.int32, device=ext.device)
                status = launch_zero_sync(ext, seq, 2048, out, out.clone(), mapping=mapping)
                torch.cuda.synchronize()
                ok = status.tolist() == [n, 1]
                failures += not ok
                print(f"{'ok ' if ok else 'BAD'} zero_sync[{mapping}] / {case} / overflow by one", flush=True)
        n = int(ext.sum())
        if n and ext.shape[0] <= 1000:
            for config in SEARCH_SPACE:
                def fill(e, s, topk, oe, oc, config=config):
                    launch_with_config(config, torch.cumsum(e, 0), s, topk, oe, oc, n)
                failures += not check(f"autotune config {config.kwargs}/{config.num_warps} / {case}", fill, ext, seq)
        # the full pipeline, exact-size buffers
        bs = ext.shape[0]
        if n <= 20000:
            width = 8192
            g = torch.Generator().manual_seed(bs)
            r2t = torch.randint(0, 1 << 22, (max(bs, 1), width), generator=g, dtype=torch.int32).cuda()
            pool = torch.randperm(max(bs, 1), generator=g)[:bs].to(torch.int32).cuda()
            buffers = nk.PipelineBuffers.allocate(bs, n, width, 64, "cuda")
            status = nk.launch_full_pipeline(ext, seq, pool, r2t, 2048, buffers, 64)
            want = nk.pipeline_reference(ext, seq, pool, r2t, 2048, 64, width)
            ok = status.tolist() == [n, 0] and torch.equal(buffers.nsa_cu_seqlens_k, want["nsa_cu_seqlens_k"]) \
                and torch.equal(buffers.cu_seqlens_k, want["cu_seqlens_k"])
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} full_pipeline / {case} / exact buffers", flush=True)
    print(f"memcheck driver: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
