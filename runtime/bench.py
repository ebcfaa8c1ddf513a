"""Throughput and latency of any runner on a synthetic workload: fixed input/output lengths and batch size.

Only the Runner protocol is used (runner.generate), so every backend is measured by the same
code. The workload: ``batch_size`` prompts of ``input_len`` random token ids (seeded; ids drawn from the vocabulary
minus the specials), greedy decoding with no end id, so every sequence produces exactly ``output_len`` tokens.

Per iteration: TTFT = the time to generate 1 token for the batch (prefill + first step); TPOT = (time to generate
``output_len`` tokens - TTFT) / (output_len - 1), the mean time per further output token; tokens/s = batch_size * output_len / total time.
Reported as mean (and p50/p90 over iterations) after ``warmup`` untimed iterations. Memory: peak resident set size of
this process (ru_maxrss) and, when CUDA is present, the GPU memory in use at the end of the run
(total - free from cudaMemGetInfo, which also counts TensorRT's allocations that torch does not see) and torch's
peak allocation.
"""

from __future__ import annotations

import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from runtime.runners.base import Sampling

SCHEMA = 1


@dataclass(frozen=True)
class Workload:
    input_len: int = 128
    output_len: int = 32
    batch_size: int = 1
    iterations: int = 3
    warmup: int = 1
    seed: int = 0

    def prompts(self, vocab_size: int, avoid: int = 0) -> list[list[int]]:
        """Random token ids in [avoid, vocab_size): the first ids are usually specials (pad, bos, eos)."""
        rng = random.Random(self.seed)
        lo = min(avoid, max(vocab_size - 1, 0))
        return [[rng.randrange(lo, vocab_size) for _ in range(self.input_len)] for _ in range(self.batch_size)]


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "mean": float(f"{statistics.fmean(xs):.6g}"),
        "p50": float(f"{_percentile(xs, 0.5):.6g}"),
        "p90": float(f"{_percentile(xs, 0.9):.6g}"),
    }


def _timed(runner, prompts: list[list[int]], n: int) -> float:
    # end_id -1 is never generated: every sequence runs to n tokens (TensorRT-LLM's benchmarks do the same)
    sampling = Sampling(max_new_tokens=n, temperature=0.0, end_id=-1, pad_id=0)
    t0 = time.perf_counter()
    runner.generate(prompts, sampling)
    return time.perf_counter() - t0


def _one(runner, prompts: list[list[int]], output_len: int) -> tuple[float, float]:
    """(ttft seconds, total seconds) of one batch: TTFT is a 1-token generation of the same batch (the prefill plus
    one sampling step), the total a full one; no streaming, whose cost and batching differ per backend."""
    return _timed(runner, prompts, 1), _timed(runner, prompts, output_len)


def peak_memory() -> dict[str, Any]:
    """Peak RSS of this process, and GPU memory when torch sees a CUDA device (None otherwise)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    out["gpu_used_bytes"] = out["gpu_peak_allocated_bytes"] = None
    torch = sys.modules.get("torch")  # only when a runner already imported it: bench never pays for torch itself
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out["gpu_used_bytes"] = int(total - free)
        out["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def bench(runner, vocab_size: int, workload: Workload, avoid_ids: int = 0) -> dict[str, Any] | None:
    """Run the workload on ``runner``; all ranks call it, rank 0 returns the result (the others None)."""
    w = workload
    if w.output_len < 1 or w.input_len < 1 or w.batch_size < 1 or w.iterations < 1:
        raise ValueError("bench: input_len, output_len, batch_size and iterations must be >= 1")
    prompts = w.prompts(vocab_size, avoid_ids)
    for _ in range(w.warmup):
        _one(runner, prompts, w.output_len)
    ttft, tpot, tps, total = [], [], [], []
    for _ in range(w.iterations):
        first, whole = _one(runner, prompts, w.output_len)
        ttft.append(first)
        total.append(whole)
        # two separate runs: on a tiny workload timing noise can exceed the decode time; never report < 0
        tpot.append(max(0.0, (whole - first) / (w.output_len - 1)) if w.output_len > 1 else 0.0)
        tps.append(w.batch_size * w.output_len / whole)
    if not runner.is_leader:
        return None
    return {
        "schema": SCHEMA,
        "backend": runner.backend,
        "world_size": runner.world_size,
        "workload": {
            "input_len": w.input_len,
            "output_len": w.output_len,
            "batch_size": w.batch_size,
            "iterations": w.iterations,
            "warmup": w.warmup,
        },
        "ttft_s": _stats(ttft),
        "tpot_s": _stats(tpot),
        "tokens_per_s": _stats(tps),
        "latency_s": _stats(total),
        "memory": peak_memory(),
    }
