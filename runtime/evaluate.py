"""Perplexity of an artifact: teacher-forced next-token loss over fixed token windows, through its runner.

Backend-agnostic like runtime.generate: it needs only `runner.logits(batch)` (teacher-forced logits per sequence, on
rank 0; all ranks call it). The CPU reference runner has it. The engine and PyTorch-backend runners generate only
(TensorRT engines return context logits only when built with gather_context_logits, which costs memory in serving
builds), so scoring an artifact that has engines uses its TensorRT-LLM checkpoint on the reference runner: the
engines are built from exactly that checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from runtime.errors import BackendUnavailable


def windows(stream: Sequence[int], tokens: int, window: int) -> list[list[int]]:
    """Cut the first ``tokens`` tokens of ``stream`` into consecutive windows of ``window`` tokens (the last one may be
    shorter; a remainder under 2 tokens is dropped: it predicts nothing)."""
    if window < 2:
        raise ValueError(f"window {window}: a window needs at least 2 tokens")
    body = list(stream[:tokens])
    out = [body[i : i + window] for i in range(0, len(body), window)]
    return [w for w in out if len(w) >= 2]


def nll_of(logits, seq: Sequence[int]) -> float:
    """Summed next-token negative log-likelihood of ``seq`` under teacher-forced ``logits`` (T, vocab)."""
    import torch

    tgt = torch.tensor(list(seq[1:]), dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits[:-1].float(), tgt, reduction="sum"))


def summarize(nll: float, predicted: int, seconds: float | None = None) -> dict[str, Any]:
    """Perplexity record: ppl = exp(mean NLL per predicted token)."""
    out = {"ppl": float(f"{math.exp(nll / max(predicted, 1)):.6g}"), "nll": round(nll, 4), "predicted": predicted}
    if seconds is not None:
        out["seconds"] = round(seconds, 3)
    return out


def perplexity(runner, wins: Sequence[Sequence[int]], batch_size: int = 1) -> dict[str, Any] | None:
    """Perplexity of ``runner`` over ``wins``. All ranks call it; rank 0 gets the record, the others None.

    Windows are scored ``batch_size`` at a time (logits are (T, vocab) float32 each: a 49k vocab x 512 tokens is
    100 MB per window)."""
    import time

    if not hasattr(runner, "logits"):
        raise BackendUnavailable(
            f"the {runner.backend} runner cannot score tokens (it only generates): evaluate the artifact's "
            "TensorRT-LLM checkpoint with --backend reference"
        )
    t0 = time.perf_counter()
    nll, predicted = 0.0, 0
    for start in range(0, len(wins), batch_size):
        chunk = [list(w) for w in wins[start : start + batch_size]]
        lg = runner.logits(chunk)
        if lg is None:  # not the leader
            continue
        for logits, seq in zip(lg, chunk, strict=True):
            nll += nll_of(logits, seq)
            predicted += len(seq) - 1
    if not runner.is_leader:
        return None
    return summarize(nll, predicted, time.perf_counter() - t0)


def relative_increase(ppl: float, baseline: float) -> float:
    """(ppl - baseline) / baseline, rounded: 0.05 means 5% worse than the unquantized model."""
    return float(f"{(ppl - baseline) / baseline:.6g}")
