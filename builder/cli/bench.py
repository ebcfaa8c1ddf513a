"""`trtq bench ARTIFACT`: throughput and latency on a synthetic workload, on whichever backend runs the artifact.

Exit codes: 0 ok, 1 the run failed, 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--input-len", default=128, show_default=True, type=click.IntRange(1), help="Prompt tokens.")
@click.option("--output-len", default=32, show_default=True, type=click.IntRange(1), help="Generated tokens.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Prompts per batch.")
@click.option("--iterations", default=3, show_default=True, type=click.IntRange(1), help="Timed runs.")
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--backend", default="auto", show_default=True, help="auto, reference, engine, pytorch.")
@click.option(
    "--save", is_flag=True, help="Also write the result to ARTIFACT/bench/<backend>-i<in>-o<out>-b<batch>.json."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-v", "--verbose", is_flag=True)
def bench(artifact, input_len, output_len, batch_size, iterations, warmup, backend, save, as_json, verbose) -> None:
    """Time to first token, time per output token, tokens/s and peak memory of ARTIFACT.

    \b
    Examples:
      trtq bench engines/smollm2-135m-int8_sq --input-len 128 --output-len 32
      trtq bench engines/smollm2-135m-bf16 --batch-size 8 --json --save
      mpirun -n 2 trtq bench engines/smollm2-135m-tp2
    """
    from runtime.bench import Workload
    from runtime.bench import bench as run_bench
    from runtime.generate import load_tokenizer
    from runtime.mpi import world_from_env
    from runtime.select import open_runner, tokenizer_dir

    world = world_from_env()
    setup_logging(verbose, quiet=world.rank != 0 or as_json)
    tok = load_tokenizer(tokenizer_dir(artifact))
    specials = [i for i in (tok.all_special_ids or []) if i is not None]
    vocab = len(tok)
    avoid = min(max(specials, default=-1) + 1, vocab // 2)
    runner = open_runner(artifact, backend)
    try:
        w = Workload(input_len, output_len, batch_size, iterations, warmup)
        result = run_bench(runner, vocab, w, avoid)
    finally:
        runner.close()
    if result is None:
        return
    result["artifact"] = str(artifact)
    if save:
        from builder.workspace import write_json_atomic

        name = f"{result['backend']}-i{input_len}-o{output_len}-b{batch_size}.json"
        (artifact / "bench").mkdir(exist_ok=True)
        write_json_atomic(artifact / "bench" / name, result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    mem = result["memory"]
    click.echo(
        f"{result['backend']} x{result['world_size']}: in {input_len} out {output_len} batch {batch_size}: "
        f"TTFT {1000 * result['ttft_s']['mean']:.1f} ms, TPOT {1000 * result['tpot_s']['mean']:.1f} ms, "
        f"{result['tokens_per_s']['mean']:.1f} tokens/s, peak RSS {mem['peak_rss_bytes'] / 2**20:.0f} MiB"
        + (f", GPU {mem['gpu_used_bytes'] / 2**30:.2f} GiB" if mem.get("gpu_used_bytes") else "")
    )
