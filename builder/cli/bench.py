"""`trtq bench ARTIFACT`: throughput and latency on a synthetic workload, on whichever backend runs the artifact.

Exit codes: 0 ok, 1 the run failed, 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command()
@click.argument("artifact", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", default=None, help="Measure this OpenAI-compatible endpoint (…/v1) instead of running ARTIFACT.")
@click.option("--concurrency", default="1,2,4,8,16", show_default=True, help="--url: concurrent streams per level.")
@click.option(
    "--requests",
    "n_requests",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="--url: requests per level (at least its concurrency).",
)
@click.option(
    "--max-seconds",
    default=120.0,
    show_default=True,
    type=click.FloatRange(1.0),
    help="--url: stop issuing requests in a level after this long.",
)
@click.option("--input-words", default=64, show_default=True, type=click.IntRange(1), help="--url: prompt words.")
@click.option("--model", default=None, help="--url: model id (default: the first of /v1/models).")
@click.option("--api-key", envvar="TRTQ_API_KEY", default=None, help="--url: bearer key (also $TRTQ_API_KEY).")
@click.option("--chat", is_flag=True, help="--url: use /v1/chat/completions instead of /v1/completions.")
@click.option(
    "--output-spread",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 0.95),
    help="--url: request lengths spread +-this fraction around --output-len (seeded); 0 = all equal.",
)
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
def bench(
    artifact,
    url,
    concurrency,
    n_requests,
    max_seconds,
    input_words,
    model,
    api_key,
    chat,
    output_spread,
    input_len,
    output_len,
    batch_size,
    iterations,
    warmup,
    backend,
    save,
    as_json,
    verbose,
) -> None:
    """Time to first token, time per output token, tokens/s and peak memory of ARTIFACT, or of an endpoint (--url)
    at a sweep of concurrent streams.

    \b
    Examples:
      trtq bench engines/smollm2-135m-int8_sq --input-len 128 --output-len 32
      trtq bench engines/smollm2-135m-bf16 --batch-size 8 --json --save
      mpirun -n 2 trtq bench engines/smollm2-135m-tp2
      trtq bench --url http://127.0.0.1:8000/v1 --concurrency 1,4,16 --output-len 64
      trtq bench engines/smollm2-135m-bf16 --url http://127.0.0.1:8000/v1 --save   # kept for `trtq report`
    """
    if url is not None:
        _bench_url(
            artifact,
            url,
            concurrency,
            n_requests,
            max_seconds,
            input_words,
            output_len,
            model,
            api_key,
            chat,
            output_spread,
            save,
            as_json,
            verbose,
        )
        return
    if artifact is None:
        raise click.UsageError("give an ARTIFACT, or --url to measure an endpoint")
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


def _bench_url(
    artifact,
    url,
    concurrency,
    n_requests,
    max_seconds,
    input_words,
    output_len,
    model,
    api_key,
    chat,
    output_spread,
    save,
    as_json,
    verbose,
) -> None:
    import httpx

    from runtime.bench import EndpointWorkload, bench_url

    setup_logging(verbose, quiet=as_json)
    try:
        levels = tuple(int(c) for c in str(concurrency).split(",") if c.strip())
    except ValueError:
        raise click.BadParameter(
            f"{concurrency!r}: a comma-separated list of integers", param_hint="--concurrency"
        ) from None
    if not levels or min(levels) < 1:
        raise click.BadParameter("every level must be >= 1", param_hint="--concurrency")
    if save and artifact is None:
        raise click.UsageError(
            "--save with --url needs the ARTIFACT the endpoint serves (results go to ARTIFACT/bench/)"
        )
    w = EndpointWorkload(input_words, output_len, levels, n_requests, max_seconds, chat, output_spread=output_spread)

    def progress(level):
        if not as_json:
            click.echo(_level_line(level), err=True)

    try:
        result = bench_url(url, w, model=model, api_key=api_key, progress=progress)
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
        raise click.ClickException(f"{url}: {type(e).__name__}: {e}") from None
    if artifact is not None:
        result["artifact"] = str(artifact)
    if save:
        from builder.workspace import write_json_atomic

        name = f"endpoint-i{input_words}-o{output_len}-c{'_'.join(map(str, levels))}.json"
        (artifact / "bench").mkdir(exist_ok=True)
        write_json_atomic(artifact / "bench" / name, result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['url']} model {result['model']}: {input_words} prompt words, {output_len} tokens per request")
    click.echo("concurrency  requests  errors  tokens/s  req/s  TTFT p50 / p99 ms  TPOT p50 / p99 ms")
    for lv in result["levels"]:
        click.echo(_level_line(lv, table=True))


def _level_line(lv: dict, table: bool = False) -> str:
    def ms(stats, key):
        return f"{1000 * stats[key]:.0f}" if stats else "-"

    ttft, tpot = lv["ttft_s"], lv["tpot_s"]
    if table:
        return (
            f"{lv['concurrency']:>11}  {lv['requests']:>8}  {lv['errors']:>6}  {lv['output_tokens_per_s']:>8.1f}  "
            f"{lv['requests_per_s']:>5.2f}  {ms(ttft, 'p50'):>8} / {ms(ttft, 'p99'):<6}  {ms(tpot, 'p50'):>8} / "
            f"{ms(tpot, 'p99')}"
        )
    return (
        f"trtq bench: concurrency {lv['concurrency']}: {lv['requests']} requests, {lv['errors']} errors, "
        f"{lv['output_tokens_per_s']:.1f} tokens/s, TTFT p50 {ms(ttft, 'p50')} ms"
    )
