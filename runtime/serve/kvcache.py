"""A KV cache of independent rows, one per running sequence, for continuous batching over the reference runtime.

Row r holds its sequence's positions 0..len-1 contiguously, so a sequence can join or leave the batch at any step.
Running sequences always occupy rows 0..B-1 (a finished row is refilled by moving the last one into it), so a decode
step attends over a view of the first B rows, with no gather. The pool grows (rows and positions, doubling) as the
load needs it, up to its limits.

Layer.forward (runtime/reference/model.py) calls ``update(li, k, v, kv_q, kv_scale)`` and Decoder.forward
``advance(n)`` on whatever cache it is given; the two views below implement that protocol with the same semantics
as the reference KVCache: the context phase attends to the fresh K/V while the cache stores the quantize ->
dequantize of what was written (a quantized KV cache); a decode step reads every position back from the cache.
"""

from __future__ import annotations

import torch


class SlotCache:
    """K/V storage: per layer a (rows, kv_heads, positions, head) float32 tensor, grown on demand."""

    def __init__(self, n_layers: int, kv_heads: int, head: int, max_rows: int, max_len: int):
        self.n_layers, self.kv_heads, self.head = n_layers, kv_heads, head
        self.max_rows, self.max_len = max_rows, max_len
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self._alloc(min(4, max_rows), min(256, max_len))

    def _alloc(self, rows: int, length: int) -> None:
        old_k, old_v = self.k, self.v
        shape = (rows, self.kv_heads, length, self.head)
        self.k = [torch.zeros(shape) for _ in range(self.n_layers)]
        self.v = [torch.zeros(shape) for _ in range(self.n_layers)]
        if old_k:
            r, t = min(rows, old_k[0].shape[0]), min(length, old_k[0].shape[2])
            for new, old in zip(self.k + self.v, old_k + old_v, strict=True):
                new[:r, :, :t] = old[:r, :, :t]

    @property
    def rows(self) -> int:
        return self.k[0].shape[0]

    @property
    def length(self) -> int:
        return self.k[0].shape[2]

    def ensure(self, rows: int, length: int) -> None:
        """Room for ``rows`` rows of ``length`` positions (grows by doubling; never beyond the limits)."""
        if rows > self.max_rows or length > self.max_len:
            raise ValueError(f"KV cache: {rows} rows x {length} positions exceeds {self.max_rows} x {self.max_len}")
        if rows <= self.rows and length <= self.length:
            return
        new_rows, new_len = self.rows, self.length
        while new_rows < rows:
            new_rows = min(2 * new_rows, self.max_rows)
        while new_len < length:
            new_len = min(2 * new_len, self.max_len)
        self._alloc(new_rows, new_len)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy row ``src``'s first ``length`` positions into row ``dst`` (compaction after a sequence leaves)."""
        for t in self.k + self.v:
            t[dst, :, :length] = t[src, :, :length]

    def prefill(self, row: int) -> PrefillView:
        return PrefillView(self, row)

    def decode(self, positions: torch.Tensor) -> DecodeView:
        return DecodeView(self, positions)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class PrefillView:
    """One sequence's prompt (batch 1, positions 0..n-1) written into row ``row``; attention on the fresh K/V."""

    def __init__(self, pool: SlotCache, row: int):
        self.pool, self.row = pool, row

    def update(self, li: int, k, v, kv_q=None, kv_scale=None):
        n = k.shape[2]
        self.pool.k[li][self.row : self.row + 1, :, :n] = kv_q(k, kv_scale) if kv_q else k
        self.pool.v[li][self.row : self.row + 1, :, :n] = kv_q(v, kv_scale) if kv_q else v
        return k, v

    def advance(self, n: int) -> None:
        pass


class DecodeView:
    """One new token for each of rows 0..B-1, written at ``positions[b]`` (that row's length); attention reads the
    rows' first max(positions)+1 slots back from the cache (the caller masks each row's slots beyond its own)."""

    def __init__(self, pool: SlotCache, positions: torch.Tensor):
        self.pool, self.pos = pool, positions
        self.rows = torch.arange(positions.shape[0])
        self.span = int(positions.max()) + 1

    def update(self, li: int, k, v, kv_q=None, kv_scale=None):
        b = self.pos.shape[0]
        kk, vv = self.pool.k[li], self.pool.v[li]
        kk[self.rows, :, self.pos] = (kv_q(k, kv_scale) if kv_q else k)[:, :, 0]
        vv[self.rows, :, self.pos] = (kv_q(v, kv_scale) if kv_q else v)[:, :, 0]
        return kk[:b, :, : self.span], vv[:b, :, : self.span]

    def advance(self, n: int) -> None:
        pass

    def mask(self) -> torch.Tensor:
        """(B, 1, 1, span) bool: each row attends to its own slots 0..positions[b]."""
        return (torch.arange(self.span).view(1, -1) <= self.pos.view(-1, 1)).view(-1, 1, 1, self.span)
