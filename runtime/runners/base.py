"""The one interface every backend fronts, so `trtq run`, verify and bench treat them alike.

Token-level on purpose: tokenization, chat templates, stop strings and printing live in one place (runtime.generate),
not in each backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. temperature 0 (the default) is greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0
    seed: int = 0
    end_id: int | None = None  # EOS; generation of a sequence stops there
    pad_id: int | None = None
    stop_token_ids: tuple[tuple[int, ...], ...] = ()  # token sequences that end generation


@dataclass
class TokenOutput:
    """One finished sequence: generated token ids only (the prompt excluded), and why it stopped."""

    token_ids: list[int]
    finish_reason: str  # "eos", "stop" or "length"


# Called on rank 0 as tokens arrive: (index of the prompt in the batch, new token ids).
StreamCallback = Callable[[int, Sequence[int]], None]


class Runner(Protocol):
    backend: str  # "reference", "engine", "pytorch"
    rank: int
    world_size: int

    @property
    def is_leader(self) -> bool:
        """Rank 0: the only rank that returns outputs and prints."""
        ...

    def generate(
        self, batch: Sequence[Sequence[int]], sampling: Sampling, stream: StreamCallback | None = None
    ) -> list[TokenOutput]:
        """Generate for a batch of tokenized prompts. All ranks call it; non-leaders return []."""
        ...

    def close(self) -> None: ...
