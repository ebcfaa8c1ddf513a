"""The collectives TensorRT-LLM's parallel layers do, over torch.distributed (gloo); no-ops for one rank.

tensorrt_llm/layers/linear.py: ColumnLinear keeps its output slice (gather_output=False inside blocks) or
all-gathers it (lm_head); RowLinear all-reduces and adds its bias once afterwards. tensorrt_llm/layers/embedding.py:
a vocab-sharded embedding (sharding_dim 0) masks ids outside its slice and all-reduces; sharding_dim 1 all-gathers
the hidden slices. Pipeline stages pass activations point to point (tensorrt_llm/functional.py send/recv).
"""

from __future__ import annotations

import torch

from runtime.reference.config import Mapping


class Parallel:
    def __init__(self, mapping: Mapping, rank: int):
        self.mapping = mapping
        self.rank = rank
        self.tp_size, self.pp_size = mapping.tp_size, mapping.pp_size
        self.tp_rank, self.pp_rank = mapping.tp_rank(rank), mapping.pp_rank(rank)
        self.tp_group = None
        if mapping.world_size > 1:
            import torch.distributed as dist

            # new_group must be called by every rank for every group, in the same order.
            for stage in range(self.pp_size):
                ranks = [stage * self.tp_size + t for t in range(self.tp_size)]
                group = dist.new_group(ranks) if self.tp_size > 1 else None
                if stage == self.pp_rank:
                    self.tp_group = group

    @property
    def first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @property
    def sampler_rank(self) -> int:
        """The rank that sees the final logits first: tp rank 0 of the last pipeline stage."""
        return (self.pp_size - 1) * self.tp_size

    def tp_all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return x
        import torch.distributed as dist

        x = x.contiguous()
        dist.all_reduce(x, group=self.tp_group)
        return x

    def tp_all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        if self.tp_size == 1:
            return x
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.tp_size)]
        dist.all_gather(parts, x.contiguous(), group=self.tp_group)
        return torch.cat(parts, dim=dim)

    def send_next(self, x: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.send(x.contiguous(), dst=self.rank + self.tp_size)

    def recv_prev(self, shape: tuple[int, ...]) -> torch.Tensor:
        import torch.distributed as dist

        x = torch.empty(shape, dtype=torch.float32)
        dist.recv(x, src=self.rank - self.tp_size)
        return x

    def broadcast(self, x: torch.Tensor, src: int) -> torch.Tensor:
        if self.mapping.world_size == 1:
            return x
        import torch.distributed as dist

        x = x.contiguous()
        dist.broadcast(x, src=src)
        return x
