"""Concurrent calls from several threads give every call its own correct result.

Triton's interpreter swaps module-level state of ``triton.language`` while a kernel runs, so
two interpreted launches at once corrupt each other (crashes, ``InterpreterError``, entries
left unwritten). On a GPU launches are independent. Each thread here owns its buffers and
calls the drop-ins and per-call entry points in a loop; every result is checked.
"""
import threading

import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines
from nsa_kernels.modes.extend import extend_metadata
from nsa_kernels.modes.extend_reference import extend_reference
from nsa_kernels.stages import stage5_zero_sync as s5

import torch
from test_extend import make_case, random_lengths
from test_modes_kernels import ModeRun, kv_mix

THREADS = 4
ROUNDS = 6


def run_threads(work):
    errors = []

    def body(index):
        try:
            work(index)
        except BaseException as exc:  # reported below, with the thread it came from
            errors.append((index, exc))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_drop_ins_from_several_threads():
    modes = ["decode", "target_verify", "draft_extend", "decode"]

    def work(index):
        mode = modes[index]
        for round_ in range(ROUNDS):
            kv = kv_mix(5, 200, seed=10 * index + round_)
            extra = dict(qo=[min(k, 3) for k in kv]) if mode == "draft_extend" else {}
            run = ModeRun(mode, kv, width=200, seed=index, **extra)
            run.call()
            run.check()

    run_threads(work)


def test_zero_sync_from_several_threads():
    def work(index):
        g = torch.Generator().manual_seed(index)
        for _ in range(ROUNDS):
            ext = torch.randint(0, 5, (40,), generator=g, dtype=torch.int32)
            seq = ext + torch.randint(0, 3000, (40,), generator=g, dtype=torch.int32)
            ext, seq = ext.to(nk.DEVICE), seq.to(nk.DEVICE)
            out = torch.full((200,), -1, dtype=torch.int32, device=nk.DEVICE)
            cache = torch.full((200,), -1, dtype=torch.int32, device=nk.DEVICE)
            status = s5.launch_zero_sync(ext, seq, 2048, out, cache)
            want, want_cache = nk.reference(ext, seq, 2048)
            n = want.numel()
            assert status.tolist() == [n, 0]
            assert torch.equal(out[:n].cpu(), want.cpu().to(torch.int32))
            assert torch.equal(cache[:n].cpu(), want_cache.cpu().to(torch.int32))
            assert bool((out[n:] == -1).all())

    run_threads(work)


def test_extend_metadata_from_several_threads():
    def work(index):
        for round_ in range(ROUNDS):
            qo, kv = random_lengths(7, seed=10 * index + round_, max_qo=40, max_prefix=60)
            case = make_case(qo, kv, seed=index)
            got = extend_metadata(*case, 64)
            want = extend_reference(*case, 64)
            for key, value in want.items():
                assert torch.equal(got[key].cpu(), value.cpu().to(torch.int32)), key

    run_threads(work)
