"""Seeded extend (prefill) batches with cached prefixes, for the notebook and the GPU script.

Each carries what SGLang's forward batch would hold: the device lengths, their host mirrors
(``seq_lens_cpu`` a host tensor, ``extend_seq_lens_cpu`` a list), the request pool indices and
a ``req_to_token`` table wide enough for every request.
"""
from dataclasses import dataclass

import torch

from .._env import DEVICE

KIND = "extend"


@dataclass
class ExtendWorkload:
    name: str
    bs: int
    seq_lens: torch.Tensor
    extend_seq_lens: torch.Tensor
    req_pool_indices: torch.Tensor
    req_to_token: torch.Tensor
    seq_lens_cpu: torch.Tensor
    extend_seq_lens_cpu: list
    topk: int = 2048
    kind: str = KIND

    @property
    def n_tokens(self):
        return sum(self.extend_seq_lens_cpu)

    @property
    def n_flat(self):
        return int(self.seq_lens_cpu.sum())

    def args(self):
        return (self.seq_lens, self.extend_seq_lens, self.req_pool_indices, self.req_to_token,
                self.topk)

    def mirrors(self):
        return {"seq_lens_cpu": self.seq_lens_cpu, "extend_seq_lens_cpu": self.extend_seq_lens_cpu}


def _build(name, qo, prefix, seed, device, topk, spare_rows=8):
    g = torch.Generator().manual_seed(seed)
    bs = qo.shape[0]
    kv = qo + prefix
    width = max(int(kv.max()) if bs else 1, 1)
    rows = bs + spare_rows
    # Token slots as a paged allocator hands them out: random, below 2^24.
    table = torch.randint(0, 1 << 24, (rows, width), generator=g, dtype=torch.int32)
    pool = torch.randperm(rows, generator=g)[:bs].to(torch.int32)
    return ExtendWorkload(name, bs, kv.to(device, torch.int64), qo.to(device, torch.int32),
                          pool.to(device), table.to(device), kv.to(torch.int64), qo.tolist(), topk)


def prefill_with_prefix(bs, seed=0, max_extend=1024, max_prefix=4096, device=DEVICE, topk=2048):
    """``bs`` requests extending by 1..max_extend tokens on 0..max_prefix cached ones."""
    g = torch.Generator().manual_seed(seed * 1000003 + bs)
    qo = torch.randint(1, max_extend + 1, (bs,), generator=g)
    prefix = torch.randint(0, max_prefix + 1, (bs,), generator=g)
    return _build(f"prefill/bs={bs}", qo, prefix, seed + bs, device, topk)


def chunked_prefill(bs, chunk, prefix, seed=0, device=DEVICE, topk=2048):
    """``bs`` requests each extending by one ``chunk`` on a ``prefix``-token cached context."""
    qo = torch.full((bs,), chunk, dtype=torch.int64)
    return _build(f"chunked/bs={bs}/chunk={chunk}/prefix={prefix}", qo,
                  torch.full((bs,), prefix, dtype=torch.int64), seed + bs, device, topk)
