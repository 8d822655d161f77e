"""Seeded workloads and the two run profiles.

``draft_extend``: speculative-decoding draft extend; accept lengths 1..4, kv lengths
100..8000, topk 2048, buffers sized as SGLang's graph runner sizes them (bs x 4 tokens).
``prefill``: a few requests with extends in the thousands.
"""
from dataclasses import dataclass

import torch

from .._env import DEVICE

TOPK = 2048
MAX_ACCEPT = 4


@dataclass
class Workload:
    kind: str
    bs: int
    extend_seq_lens: torch.Tensor
    seq_lens: torch.Tensor
    topk: int
    capacity: int

    @property
    def n_tokens(self):
        return int(self.extend_seq_lens.sum())

    @property
    def max_extend(self):
        return int(self.extend_seq_lens.max()) if self.bs else 0

    @property
    def name(self):
        return f"{self.kind}/bs={self.bs}/N={self.n_tokens}"

    def buffers(self, poison=-1):
        """Fresh poisoned output buffers of the workload's capacity."""
        out = torch.full((self.capacity,), poison, dtype=torch.int32, device=self.seq_lens.device)
        return out, out.clone()

    def args(self, out_expanded, out_cache):
        return (self.extend_seq_lens, self.seq_lens, self.topk, out_expanded, out_cache)


def draft_extend(bs, seed=0, device=DEVICE, accept=(1, MAX_ACCEPT), kv=(100, 8000), topk=TOPK,
                 dtype=torch.int32):
    g = torch.Generator().manual_seed(seed * 100003 + bs)
    ext = torch.randint(accept[0], accept[1] + 1, (bs,), generator=g)
    seq = torch.randint(kv[0], kv[1] + 1, (bs,), generator=g) + ext
    return Workload("draft_extend", bs, ext.to(device, dtype), seq.to(device, dtype), topk,
                    max(bs * accept[1], 1))


def prefill(n_tokens, n_requests=4, seed=0, device=DEVICE, topk=TOPK, dtype=torch.int32):
    """``n_requests`` requests sharing about ``n_tokens`` extend tokens, on top of some history."""
    g = torch.Generator().manual_seed(seed * 100003 + n_tokens)
    weights = torch.rand(n_requests, generator=g) + 0.5
    ext = torch.floor(weights / weights.sum() * n_tokens).to(torch.int64)
    ext[0] += n_tokens - int(ext.sum())
    seq = ext + torch.randint(0, 4096, (n_requests,), generator=g)
    return Workload("prefill", n_requests, ext.to(device, dtype), seq.to(device, dtype), topk,
                    n_tokens)


#: What each profile measures. ``quick`` is sized for the interpreter on a 2-core CPU.
PROFILES = {
    "quick": {"draft_bs": [1, 8, 32], "prefill_tokens": [2048], "scaling_bs": [1, 8, 32, 128],
              "scaling_tokens": [1024, 4096], "iters": 5, "warmup": 1, "graph_calls": 16},
    "full": {"draft_bs": [1, 8, 32, 128, 512], "prefill_tokens": [4096, 16384],
             "scaling_bs": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
             "scaling_tokens": [1024, 4096, 16384, 65536, 131072], "iters": 200, "warmup": 20,
             "graph_calls": 16},
}


def profile_settings(profile, **overrides):
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    settings = dict(PROFILES[profile])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def standard_workloads(settings, seed=0):
    return ([draft_extend(bs, seed) for bs in settings["draft_bs"]]
            + [prefill(n, seed=seed) for n in settings["prefill_tokens"]])
