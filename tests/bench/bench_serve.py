"""Serving SmolLM2-135M-Instruct on the CPU reference runtime: batching gain and TTFT under load.

    PYTHONPATH=. python tests/bench/bench_serve.py [--work /tmp/trtq-serve-bench] [--output-len 64] [--requests 48]

Builds recipes/smollm2-135m/bf16.yaml (checkpoint only; cached), starts `trtq serve` on a free loopback port and
measures it with `trtq bench --url`'s code (runtime.bench.bench_url):

1. idle: one stream, 12 requests one after another;
2. under load: 16 concurrent streams in a closed loop (--requests in total), request lengths spread +-50% around
   --output-len, so requests arrive while the batch is busy, one or two at a time (steady traffic);
3. lockstep: the same with equal lengths: all 16 finish in the same step and the next 16 arrive together, so each
   wave queues 16 prefills (the worst case for TTFT on a CPU, where a prefill is compute-bound).

Prints the table the README shows: errors, output tokens/s (all streams), the batching gain (16 streams / 1),
TTFT p50/p99 and the TTFT p50 ratio under load vs idle. Requests and time are capped; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/trtq-serve-bench"))
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--input-words", type=int, default=64)
    ap.add_argument("--requests", type=int, default=64, help="requests at 16 streams (closed loop)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    art = args.work / "smollm2-135m-bf16"
    if not (art / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "builder.cli", "build", "recipes/smollm2-135m/bf16.yaml", "--root", str(args.work)],
            check=True,
            cwd=ROOT,
            env=env,
        )
    port = free_port()
    cmd = [sys.executable, "-m", "builder.cli", "serve", str(art), "--port", str(port), "--max-batch-size", "16"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    import httpx

    from runtime.bench import EndpointWorkload, bench_url

    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        runs = {}
        for label, streams, n, spread in (
            ("idle", 1, 12, 0.5),
            ("under load", 16, args.requests, 0.5),
            ("lockstep", 16, args.requests, 0.0),
        ):
            w = EndpointWorkload(args.input_words, args.output_len, (streams,), n, 1200.0, output_spread=spread)
            runs[label] = bench_url(url, w)["levels"][0]
            print(f"{label}: {json.dumps(runs[label])}", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    (args.work / "bench_serve.json").write_text(json.dumps(runs, indent=2))
    print(f"SmolLM2-135M bf16, reference runtime, {args.input_words} prompt words, ~{args.output_len} tokens/request")
    print(
        "| run | streams | requests | errors | tokens/s | TTFT p50 / p99 | TTFT p50 / p99 after the first wave "
        "| TPOT p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def ms(d):
        return f"{1000 * d['p50']:.0f} / {1000 * d['p99']:.0f} ms" if d else "-"

    for label, lv in runs.items():
        print(
            f"| {label} | {lv['concurrency']} | {lv['requests']} | {lv['errors']} | {lv['output_tokens_per_s']:.1f} | "
            f"{ms(lv['ttft_s'])} | {ms(lv['ttft_after_first_wave_s'])} | {ms(lv['tpot_s'])} |"
        )
    idle = runs["idle"]
    for label in ("under load", "lockstep"):
        lv = runs[label]
        steady = lv["ttft_after_first_wave_s"]
        print(
            f"{label}: batching gain {lv['output_tokens_per_s'] / idle['output_tokens_per_s']:.2f}x tokens/s, "
            f"TTFT p50 {lv['ttft_s']['p50'] / idle['ttft_s']['p50']:.2f}x idle, after the first wave "
            f"{steady['p50'] / idle['ttft_s']['p50']:.2f}x (goal <= 2x)"
        )


if __name__ == "__main__":
    main()
