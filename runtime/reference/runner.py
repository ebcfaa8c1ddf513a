"""ReferenceRunner: the Runner protocol (runtime/runners/base.py) over a TensorRT-LLM checkpoint, one rank each.

Every rank loads only rank{N}.safetensors, runs its tensor/pipeline share and joins the collectives; the last
stage's tp-rank 0 picks the next tokens and broadcasts them, so every rank agrees on when to stop; rank 0 returns
outputs (and streams).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from runtime.errors import CheckpointError
from runtime.mpi import World, check_world, init_distributed, world_from_env
from runtime.reference.config import CheckpointConfig, read_config
from runtime.reference.model import Decoder
from runtime.reference.parallel import Parallel
from runtime.reference.sampling import next_tokens
from runtime.runners.base import Sampling, StreamCallback, TokenOutput

log = logging.getLogger("trtq.reference")


class ReferenceRunner:
    backend = "reference"

    def __init__(self, cfg: CheckpointConfig, world: World, decoder: Decoder, par: Parallel):
        self.cfg, self.world, self.decoder, self.par = cfg, world, decoder, par
        self.rank, self.world_size = world.rank, world.size

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def open(
        cls,
        checkpoint_dir: str | Path,
        rank: int | None = None,
        world_size: int | None = None,
        weight_only_tp: int = 1,
    ) -> ReferenceRunner:
        """Load this process's shard of the checkpoint. rank/world_size default to the launcher's environment.
        ``weight_only_tp``: compute an unsplit W8A16/W4A16 checkpoint as its tp=N engine would (see Decoder)."""
        ckpt = Path(checkpoint_dir)
        cfg = read_config(ckpt)
        world = world_from_env()
        if rank is not None and world_size is not None:
            world = World(rank, world_size, world.launcher)
        check_world(world, cfg.mapping.world_size, f"checkpoint {ckpt}")
        init_distributed(world)
        par = Parallel(cfg.mapping, world.rank)
        shard = ckpt / f"rank{world.rank}.safetensors"
        t0 = time.perf_counter()
        tensors = _load_shard(shard)
        with torch.inference_mode():
            decoder = Decoder(cfg, par, tensors, str(shard), weight_only_tp)
        del tensors
        log.info(
            "%s %s, quant %s, kv %s, rank %d/%d (tp %d, pp %d), loaded in %.1f s (%s)",
            cfg.architecture,
            cfg.dtype,
            cfg.quant_algo,
            cfg.kv_cache_quant_algo,
            world.rank,
            world.size,
            cfg.mapping.tp_size,
            cfg.mapping.pp_size,
            time.perf_counter() - t0,
            "exact float64 grid arithmetic" if cfg.exact else "float32 compute",
        )
        return cls(cfg, world, decoder, par)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        self.decoder = None

    # ---------------------------------------------------------------------------------------------- generation
    def generate(
        self, batch: Sequence[Sequence[int]], sampling: Sampling, stream: StreamCallback | None = None
    ) -> list[TokenOutput]:
        if not batch or any(len(p) == 0 for p in batch):
            raise CheckpointError("generate: every prompt needs at least one token")
        with torch.inference_mode():
            return self._generate([list(map(int, p)) for p in batch], sampling, stream)

    def _generate(self, prompts: list[list[int]], s: Sampling, stream: StreamCallback | None) -> list[TokenOutput]:
        par, b = self.par, len(prompts)
        longest = max(len(p) for p in prompts)
        total = longest + max(0, s.max_new_tokens)
        if self.cfg.position_embedding_type == "learned_absolute" and total > self.cfg.max_position_embeddings:
            raise CheckpointError(
                f"prompt ({longest} tokens) + max_new_tokens ({s.max_new_tokens}) exceeds the model's "
                f"{self.cfg.max_position_embeddings} positions"
            )
        ids, valid = _left_pad(prompts, s.pad_id if s.pad_id is not None else 0)
        cache = self.decoder.new_cache(b, total)
        gen = torch.Generator().manual_seed(int(s.seed))
        out: list[list[int]] = [[] for _ in range(b)]
        reason = ["length"] * b
        done = torch.zeros(b, dtype=torch.bool)
        positions = valid.long().cumsum(-1) - 1
        step_ids, step_pos = ids, positions.clamp_min(0)
        slots = valid  # (B, S) which cache slots hold real tokens
        for _step in range(max(0, s.max_new_tokens)):
            n = step_ids.shape[1]
            start = cache.length
            mask = _mask(slots, start, n)
            logits = self.decoder.forward(step_ids, step_pos, mask, cache, last_only=True)
            tok = torch.zeros(b, dtype=torch.long)
            if self.rank == par.sampler_rank:
                tok = next_tokens(logits[:, -1].float(), s.temperature, s.top_k, s.top_p, gen)
            tok = par.broadcast(tok, par.sampler_rank)
            new = []
            for i in range(b):
                if done[i]:
                    continue
                t = int(tok[i])
                out[i].append(t)
                new.append(i)
                if s.end_id is not None and t == s.end_id:
                    done[i], reason[i] = True, "eos"
                elif _ends_with_stop(out[i], s.stop_token_ids):
                    done[i], reason[i] = True, "stop"
            if stream is not None and self.is_leader:
                for i in new:
                    stream(i, [out[i][-1]])
            if bool(done.all()):
                break
            step_ids = tok.unsqueeze(1)
            step_pos = step_pos[:, -1:] + 1
            slots = torch.cat([slots, torch.ones(b, 1, dtype=torch.bool)], dim=1)
        if not self.is_leader:
            return []
        return [TokenOutput(token_ids=o, finish_reason=r) for o, r in zip(out, reason, strict=True)]

    # ---------------------------------------------------------------------------------------------- scoring
    def logits(self, batch: Sequence[Sequence[int]], through_cache: bool | None = None) -> list[torch.Tensor] | None:
        """Teacher-forced logits (T_i, vocab) of each sequence, on rank 0 (None elsewhere); all ranks call it.

        With a quantized KV cache (or through_cache=True) the sequence is fed one token at a time after the first,
        so every position attends to K/V read back from the quantized cache, as generation does; otherwise one
        context pass (context FMHA on fresh K/V)."""
        if through_cache is None:
            through_cache = self.cfg.kv_cache_quant_algo is not None
        with torch.inference_mode():
            seqs = [list(map(int, p)) for p in batch]
            ids, valid = _left_pad(seqs, 0)
            b, n = ids.shape
            positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
            cache = self.decoder.new_cache(b, n)
            chunks = [(0, n)] if not through_cache else [(0, 1)] + [(i, i + 1) for i in range(1, n)]
            parts = []
            for a, z in chunks:
                mask = _mask(valid[:, :z], a, z - a)
                lg = self.decoder.forward(ids[:, a:z], positions[:, a:z], mask, cache)
                if lg is not None:
                    parts.append(lg)
            par = self.par
            full = torch.cat(parts, dim=1) if parts else torch.empty(b, n, self.cfg.vocab_size)
            if par.pp_size > 1:  # the last stage has them; rank 0 is on the first
                full = par.broadcast(full.float().contiguous(), par.sampler_rank)
            if not self.is_leader:
                return None
            return [full[i, n - len(s) :].float() for i, s in enumerate(seqs)]


def _load_shard(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {path.name} is missing (the mapping in config.json needs it)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file: {e}") from None


def _left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    valid = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, n - len(s) :] = torch.tensor(s, dtype=torch.long)
        valid[i, n - len(s) :] = True
    return ids, valid


def _mask(slots: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """(B, 1, n, start+n) bool: causal over cache slots, and never a padding slot. A query on a padding slot sees
    itself only (its output is discarded), so no row is all -inf."""
    s = start + n
    keys = slots[:, :s]
    q_slot = torch.arange(start, s).view(1, n, 1)
    k_slot = torch.arange(s).view(1, 1, s)
    causal = k_slot <= q_slot
    m = causal & keys.unsqueeze(1)
    m = m | (k_slot == q_slot)
    return m.unsqueeze(1)


def _ends_with_stop(seq: list[int], stops: tuple[tuple[int, ...], ...]) -> bool:
    return any(len(st) and len(seq) >= len(st) and tuple(seq[-len(st) :]) == tuple(st) for st in stops)
