"""`trtq plan RECIPE [--gpu NAME]`: per-rank memory before building, and whether it fits (no torch imported)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import set_option


def _size(n: int) -> str:
    for unit, div in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


@click.command()
@click.argument("recipe_file", metavar="RECIPE", type=click.Path(path_type=Path))
@click.option("--gpu", help="GPU to plan for (A10G, L4, RTX-4090, A100-40GB, L40S, A100-80GB, H100-80GB, H200, B200); "
              "without it, one line per GPU.")  # fmt: skip
@click.option("--config", "config", type=click.Path(path_type=Path), help="Model config.json (or its directory) to "
              "use instead of the recipe's model source.")  # fmt: skip
@set_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan(recipe_file: Path, gpu: str | None, config: Path | None, overrides, as_json: bool) -> None:
    """Predict per-rank weights, KV cache per token and KV capacity for RECIPE on a GPU.

    Exits 0 when it fits, 1 when it does not (the output says which tp or format would), 2 on bad input.

    \b
    Example:
      trtq plan recipes/llama-3.1-8b-instruct/fp8-tp1.yaml --gpu H100-80GB
      trtq plan recipes/llama-3.1-70b-instruct/int4_awq-tp2.yaml
      TRTQ_HUB_CONFIGS=tests/fixtures/hub_configs trtq plan recipes/qwen2.5-7b-instruct/fp8-tp1.yaml --gpu L4
    """
    from builder.errors import StageFailed, UsageError
    from builder.planning.model_config import model_config
    from builder.planning.plan import GPUS, gpu_spec, plan_report
    from builder.recipe.load import load_recipe

    recipe, recipe_dir = load_recipe(recipe_file, overrides)
    cfg, source = model_config(recipe, recipe_dir, config)
    names = [gpu] if gpu else list(GPUS)
    reports = []
    for name in names:
        try:
            reports.append(plan_report(cfg, recipe, name))
        except KeyError:
            raise UsageError(f"--gpu: unknown GPU '{name}': choose one of {', '.join(GPUS)}") from None
    if as_json:
        click.echo(json.dumps({"config": source, "plans": reports} if not gpu else {**reports[0], "config": source},
                              indent=2))  # fmt: skip
    elif gpu:
        _detail(reports[0], source)
    else:
        _table(reports, recipe, source)
    if gpu and not reports[0]["fits"]:
        raise StageFailed(f"{recipe.name} does not fit on {gpu_spec(gpu)[0]}: {reports[0]['reason']}")


def _detail(r: dict, source: str) -> None:
    g = r["gpu"]
    click.echo(f"{r['recipe']}: {r['format']} (kv {r['kv_cache']}), tp={r['tp']} x pp={r['pp']} on {g['name']} "
               f"({_size(g['memory_bytes'])}, compute capability {g['compute_capability']})")  # fmt: skip
    click.echo(f"model config: {source}")
    click.echo(f"{'rank':>4}  {'checkpoint shard':>16}  {'weights on GPU':>14}")
    for row in r["ranks"]:
        click.echo(f"{row['rank']:>4}  {_size(row['checkpoint_bytes']):>16}  {_size(row['weight_bytes']):>14}")
    lim = r["limits"]
    click.echo(f"KV cache: {_size(r['kv_bytes_per_token'])} per token per rank; headroom {_size(r['headroom_bytes'])} "
               f"(max_num_tokens {lim['max_num_tokens']}, max_batch_size {lim['max_batch_size']})")  # fmt: skip
    click.echo(f"KV capacity: {r['kv_tokens']:,} tokens = {r['sequences_at_max_seq_len']} sequence(s) of "
               f"max_seq_len {lim['max_seq_len']}")  # fmt: skip
    for note in r["notes"]:
        click.echo(f"note: {note}")
    click.echo(("fits: " if r["fits"] else "does not fit: ") + r["reason"].removeprefix("fits: "))
    for alt in r["alternatives"]:
        click.echo(f"would fit: {alt}")


def _table(reports: list[dict], recipe, source: str) -> None:
    q, p = recipe.quantization, recipe.parallel
    click.echo(f"{recipe.name}: {q.format} (kv {q.kv_cache}), tp={p.tp} x pp={p.pp}; model config: {source}")
    largest = max(r["weight_bytes"] for r in reports[0]["ranks"])
    click.echo(f"largest rank: {_size(largest)} of weights; KV {_size(reports[0]['kv_bytes_per_token'])}/token/rank")
    click.echo(f"{'GPU':<10} {'memory':>10} {'SM':>5}  {'fits':<4} {'KV tokens':>12} {'seqs':>6}  note")
    for r in reports:
        g = r["gpu"]
        note = "" if r["fits"] else r["reason"] + (f"; try {r['alternatives'][0]}" if r["alternatives"] else "")
        click.echo(f"{g['name']:<10} {_size(g['memory_bytes']):>10} {g['compute_capability']:>5}  "
                   f"{'yes' if r['fits'] else 'no':<4} {r['kv_tokens']:>12,} {r['sequences_at_max_seq_len']:>6}  "
                   f"{note}")  # fmt: skip
