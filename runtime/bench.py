"""Throughput and latency of any runner on a synthetic workload: fixed input/output lengths and batch size; and of
any OpenAI-compatible endpoint at a sweep of concurrency levels (`bench_url`, below).

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


# ---------------------------------------------------------------------------------------------- endpoints
# `trtq bench --url`: any OpenAI-compatible server (trtq serve, trtllm-serve, vLLM), measured from the client side.
# Each request streams a completion (/v1/completions, or /v1/chat/completions with chat=True) of a seeded synthetic
# prompt and asks for exactly output_len tokens (ignore_eos, which trtq serve, trtllm-serve and vLLM accept), or with
# output_spread a seeded length around it: equal lengths make a closed loop's requests finish, and so arrive, in
# lockstep waves; spread lengths give the steady arrivals of real traffic (vLLM's --random-range-ratio).
# TTFT = request sent -> first text chunk; TPOT = (last chunk - first chunk) / (tokens - 1); tokens come from the
# final usage chunk (stream_options.include_usage) or, failing that, the number of text chunks. Per concurrency level
# at most `concurrency` requests are in flight; a level sends `requests` requests (at least `concurrency`) and stops
# issuing new ones after `max_seconds`.

_WORDS = [
    "the",
    "model",
    "reads",
    "a",
    "prompt",
    "and",
    "writes",
    "an",
    "answer",
    "one",
    "token",
    "at",
    "a",
    "time",
    "while",
    "the",
    "server",
    "batches",
    "many",
    "requests",
    "together",
    "so",
    "that",
    "each",
    "step",
    "of",
    "the",
    "decoder",
    "serves",
    "every",
    "sequence",
    "that",
    "is",
    "running",
    "at",
    "that",
    "moment",
]


@dataclass(frozen=True)
class EndpointWorkload:
    input_words: int = 64
    output_len: int = 32
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests: int = 16
    max_seconds: float = 120.0
    chat: bool = False
    seed: int = 0
    output_spread: float = 0.0  # request i asks for output_len * (1 + spread * u_i) tokens, u_i seeded in [-1, 1]

    def max_tokens(self, i: int) -> int:
        if not self.output_spread:
            return self.output_len
        u = random.Random(self.seed * 7919 + i).uniform(-1.0, 1.0)
        return max(1, round(self.output_len * (1.0 + self.output_spread * u)))

    def prompt(self, i: int) -> str:
        rng = random.Random(self.seed * 100_003 + i)
        return " ".join(rng.choice(_WORDS) for _ in range(self.input_words))


def _pcts(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    return {
        "mean": float(f"{statistics.fmean(xs):.6g}"),
        "p50": float(f"{_percentile(xs, 0.5):.6g}"),
        "p99": float(f"{_percentile(xs, 0.99):.6g}"),
    }


async def _one_stream(client, url: str, model: str, w: EndpointWorkload, i: int) -> dict[str, Any]:
    import json

    body: dict[str, Any] = {
        "model": model,
        "max_tokens": w.max_tokens(i),
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if w.chat:
        body["messages"] = [{"role": "user", "content": w.prompt(i)}]
        path = "/chat/completions"
    else:
        body["prompt"] = w.prompt(i)
        path = "/completions"
    t0 = time.perf_counter()
    first = last = None
    chunks, tokens = 0, None
    async with client.stream("POST", url + path, json=body) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")[:200]
            return {"error": f"HTTP {resp.status_code}: {text}"}
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            obj = json.loads(data)
            if obj.get("error"):
                return {"error": str(obj["error"])[:200]}
            if obj.get("usage"):
                tokens = int(obj["usage"].get("completion_tokens") or 0)
            for ch in obj.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content") if w.chat else ch.get("text")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    end = time.perf_counter()
    if first is None:
        return {"error": "no text in the stream"}
    n = tokens if tokens else chunks
    return {"ttft": first - t0, "latency": end - t0, "tokens": n, "tpot": (last - first) / (n - 1) if n > 1 else None}


async def _level(url: str, model: str, w: EndpointWorkload, concurrency: int, headers: dict[str, str]):
    import asyncio

    import httpx

    total = max(w.requests, concurrency)
    results: list[dict[str, Any]] = []
    next_i = 0
    deadline = time.perf_counter() + w.max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits, headers=headers) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < total and time.perf_counter() < deadline:
                i = next_i
                next_i += 1
                try:
                    res = await _one_stream(client, url, model, w, i)
                except (httpx.HTTPError, ValueError) as e:
                    res = {"error": f"{type(e).__name__}: {e}"[:200]}
                results.append({**res, "index": i})

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    out_tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_examples": sorted({r["error"] for r in results if "error" in r})[:3],
        "wall_s": float(f"{wall:.6g}"),
        "output_tokens": out_tokens,
        "output_tokens_per_s": float(f"{out_tokens / wall:.6g}") if wall > 0 else 0.0,
        "requests_per_s": float(f"{len(ok) / wall:.6g}") if wall > 0 else 0.0,
        "ttft_s": _pcts([r["ttft"] for r in ok]),
        # the requests after the first wave (the first `concurrency` arrive together, an initial burst)
        "ttft_after_first_wave_s": _pcts([r["ttft"] for r in ok if r["index"] >= concurrency]),
        "tpot_s": _pcts([r["tpot"] for r in ok if r["tpot"] is not None]),
        "latency_s": _pcts([r["latency"] for r in ok]),
    }


def bench_url(
    url: str, workload: EndpointWorkload, model: str | None = None, api_key: str | None = None, progress=None
) -> dict[str, Any]:
    """Measure an OpenAI-compatible endpoint (``url`` ends in /v1) at each concurrency level, one after another."""
    import asyncio

    import httpx

    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if model is None:
        r = httpx.get(url + "/models", headers=headers, timeout=30)
        r.raise_for_status()
        model = r.json()["data"][0]["id"]
    w = workload
    warm = asyncio.run(
        _level(
            url,
            model,
            EndpointWorkload(w.input_words, min(w.output_len, 4), (1,), 1, w.max_seconds, w.chat, w.seed + 1),
            1,
            headers,
        )
    )
    levels = []
    for c in w.concurrency:
        levels.append(asyncio.run(_level(url, model, w, c, headers)))
        if progress is not None:
            progress(levels[-1])
    return {
        "schema": SCHEMA,
        "kind": "endpoint",
        "url": url,
        "model": model,
        "workload": {
            "input_words": w.input_words,
            "output_len": w.output_len,
            "requests": w.requests,
            "max_seconds": w.max_seconds,
            "chat": w.chat,
            "concurrency": list(w.concurrency),
        },
        "warmup_errors": warm["errors"],
        "levels": levels,
    }
