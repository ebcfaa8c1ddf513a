"""The compute side of continuous batching over the reference runtime; every rank of a split checkpoint runs one.

Rank 0's scheduler (runtime/serve/scheduler.py) decides each iteration as a `Plan`: which sequences leave, which
join, whether to run a decode step. Every rank applies the same plan to its own shard (`BatchEngine.apply`), so the
collectives inside Decoder.forward line up; tp-rank 0 of the last pipeline stage samples and broadcasts the tokens
(as ReferenceRunner.generate does), so every rank holds the same per-row state.

An iteration: (1) free the rows of finished or cancelled sequences, keeping the running ones in rows 0..B-1; (2)
prefill each new sequence on its own (batch 1, no padding) into the next row and sample its first token; (3) one
decode step for all B rows at their own positions. A sequence's sampling is its own: its settings and a generator
seeded per request, so its tokens do not depend on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runtime.reference.sampling import next_tokens
from runtime.serve.kvcache import SlotCache


@dataclass(frozen=True)
class Admit:
    """A sequence joining the batch: its prompt token ids and sampling settings."""

    prompt: tuple[int, ...]
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Plan:
    """One iteration, broadcast from rank 0. ``free``: rows whose sequences leave (before anything else);
    ``admit``: new sequences, prefilled in order into the rows after the running ones; ``decode``: then one decode
    step for every running row; ``stop``: leave the serving loop."""

    free: tuple[int, ...] = ()
    admit: tuple[Admit, ...] = ()
    decode: bool = False
    stop: bool = False

    @property
    def empty(self) -> bool:
        return not (self.free or self.admit or self.decode or self.stop)


@dataclass
class StepResult:
    first: list[int] = field(default_factory=list)  # the first token of each admitted sequence, in order
    decoded: list[int] = field(default_factory=list)  # one token per running row (rows 0..B-1), after the prefills


def remove_row(items: list, row: int) -> None:
    """The compaction rule both sides apply: the last row moves into the freed one."""
    last = items.pop()
    if row < len(items):
        items[row] = last


class BatchEngine:
    """Per-row state and the KV-cache pool of one rank; `apply` runs one iteration of a plan."""

    def __init__(self, runner, max_rows: int, max_len: int):
        self.decoder, self.par = runner.decoder, runner.par
        self.rank = runner.rank
        l0 = self.decoder.layers[0]
        self.max_rows, self.max_len = max_rows, max_len
        self.cache = SlotCache(len(self.decoder.layers), l0.kv_heads, l0.head, max_rows, max_len)
        self.lengths: list[int] = []  # positions stored in each row's cache
        self.pending: list[int] = []  # each row's last sampled token (not yet in the cache)
        self.settings: list[tuple[float, int, float]] = []
        self.gens: list[torch.Generator] = []

    @property
    def running(self) -> int:
        return len(self.lengths)

    def apply(self, plan: Plan) -> StepResult:
        res = StepResult()
        with torch.inference_mode():
            for row in sorted(plan.free, reverse=True):
                self._free(row)
            for a in plan.admit:
                res.first.append(self._prefill(a))
            if plan.decode and self.running:
                res.decoded = list(self._decode())  # a copy: the engine keeps (and compacts) its own
        return res

    def reset(self) -> None:
        """Drop every running sequence (after a failed step on a single rank)."""
        self.lengths, self.pending, self.settings, self.gens = [], [], [], []

    # ---------------------------------------------------------------------------------------------- steps
    def _free(self, row: int) -> None:
        last = self.running - 1
        if row != last:
            self.cache.move(last, row, self.lengths[last])
        for items in (self.lengths, self.pending, self.settings, self.gens):
            remove_row(items, row)

    def _prefill(self, a: Admit) -> int:
        row, n = self.running, len(a.prompt)
        if row >= self.max_rows or n >= self.max_len:
            raise ValueError(f"prefill: row {row} / {n} tokens exceed {self.max_rows} rows x {self.max_len}")
        self.cache.ensure(row + 1, n)
        ids = torch.tensor([list(a.prompt)], dtype=torch.long)
        pos = torch.arange(n).view(1, n)
        mask = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
        logits = self.decoder.forward(ids, pos, mask, self.cache.prefill(row), last_only=True)
        gen = torch.Generator().manual_seed(int(a.seed))
        settings = (float(a.temperature), int(a.top_k), float(a.top_p))
        tok = self._sample(logits, [settings], [gen])
        self.lengths.append(n)
        self.pending.append(tok[0])
        self.settings.append(settings)
        self.gens.append(gen)
        return tok[0]

    def _decode(self) -> list[int]:
        b = self.running
        pos = torch.tensor(self.lengths, dtype=torch.long)
        self.cache.ensure(b, int(pos.max()) + 1)
        view = self.cache.decode(pos)
        ids = torch.tensor(self.pending, dtype=torch.long).view(b, 1)
        logits = self.decoder.forward(ids, pos.view(b, 1), view.mask(), view, last_only=True)
        toks = self._sample(logits, self.settings, self.gens)
        self.lengths = [n + 1 for n in self.lengths]
        self.pending = toks
        return toks

    def _sample(self, logits, settings: list[tuple[float, int, float]], gens: list[torch.Generator]) -> list[int]:
        """Next token per row on the sampler rank (tp-rank 0 of the last stage), broadcast to every rank."""
        par = self.par
        out = torch.zeros(len(settings), dtype=torch.long)
        if self.rank == par.sampler_rank:
            last = logits[:, -1].float()
            greedy = [i for i, (t, k, _) in enumerate(settings) if t <= 0.0 or k == 1]
            if greedy:
                out[greedy] = last[greedy].argmax(dim=-1)
            for i, (t, k, p) in enumerate(settings):
                if i not in greedy:
                    out[i] = next_tokens(last[i : i + 1], t, k, p, gens[i])[0]
        return [int(t) for t in par.broadcast(out, par.sampler_rank)]
