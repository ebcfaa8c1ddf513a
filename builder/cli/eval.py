"""`trtq eval ARTIFACT`: perplexity against the unquantized model (and smoke prompts), on demand.

Exit codes: 0 ok (or within --max-increase), 1 over --max-increase or a prompt check failed, 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command("eval")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--dataset",
    default="builtin",
    show_default=True,
    help="builtin (held out from calibration), a .txt/.jsonl/.parquet file, or hf:<dataset>.",
)
@click.option(
    "--text-field", default="text", show_default=True, help="Field/column with the text (.jsonl/.parquet/hf:)."
)
@click.option("--config", "ds_config", default=None, help="Dataset config name (hf:).")
@click.option("--split", default="test", show_default=True, help="Dataset split (hf:).")
@click.option("--tokens", default=4096, show_default=True, type=click.IntRange(16), help="Tokens of eval text scored.")
@click.option("--window", default=512, show_default=True, type=click.IntRange(8), help="Tokens per scored window.")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Unquantized HF model for the baseline (default: the artifact's resolved model).",
)
@click.option("--max-increase", type=click.FloatRange(0), help="Fail (exit 1) above this relative perplexity increase.")
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of smoke prompts ({prompt, expect?, regex?, chat?, max_tokens?}) to run as well.",
)
@click.option(
    "--gate",
    "use_gate",
    is_flag=True,
    help="Re-run the artifact's own gate: the perplexity settings and prompts of its recipe's verify section.",
)
@click.option(
    "--backend", default="auto", show_default=True, help="Runner for the prompts: auto, reference, engine, pytorch."
)
@click.option(
    "--save", is_flag=True, help="Also write the result to ARTIFACT/eval/<dataset>.json (`trtq report` reads it)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-v", "--verbose", is_flag=True)
def eval_(artifact, dataset, text_field, ds_config, split, tokens, window, source, max_increase, prompts_file,
          use_gate, backend, save, as_json, verbose) -> None:  # fmt: skip
    """Perplexity of ARTIFACT on eval text, and its increase over the unquantized model (baseline cached).

    \b
    Examples:
      trtq eval engines/smollm2-135m-int8_sq
      trtq eval engines/smollm2-135m-int8_sq --dataset wiki.txt --tokens 8192 --json
      mpirun -n 2 trtq eval engines/smollm2-135m-tp2 --max-increase 0.05
      trtq eval engines/smollm2-135m-int8_sq --gate
    """
    from builder.cli.verify import _resolved_source
    from builder.errors import StageFailed, UsageError
    from builder.verify.evaluate import gate
    from runtime.mpi import world_from_env

    world = world_from_env()
    setup_logging(verbose, quiet=world.rank != 0 or as_json)
    if source is None:
        source = _resolved_source(artifact)
    if source is None:
        click.echo(f"trtq eval: {artifact} has no resolved source model: no baseline (pass --source)", err=True)
        if max_increase is not None:
            raise UsageError(f"--max-increase needs a baseline: {artifact} has no resolve/ model: pass --source")
    prompts = []
    if prompts_file is not None:
        try:
            prompts = json.loads(prompts_file.read_text())
        except ValueError as e:
            raise UsageError(f"--prompts {prompts_file}: not valid JSON: {e}") from None
        if not isinstance(prompts, list) or not all(isinstance(p, dict) and "prompt" in p for p in prompts):
            raise UsageError(f"--prompts {prompts_file}: expected a JSON list of objects with a 'prompt' key")
    ppl = {"dataset": dataset, "text_field": text_field, "config": ds_config, "split": split, "tokens": tokens,
           "window": window, "max_increase": max_increase, "section": "flags"}  # fmt: skip
    base_dir = Path.cwd()
    if use_gate:
        ppl, prompts, base_dir = _recipe_gate(artifact)
    try:
        result = gate(artifact, source, {"perplexity": ppl, "prompts": prompts}, base_dir, backend)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if result is None:  # not rank 0
        return
    result["artifact"] = str(artifact)
    if save:
        from builder.workspace import write_json_atomic

        name = Path(dataset).stem if dataset != "builtin" else "builtin"
        (artifact / "eval").mkdir(exist_ok=True)
        write_json_atomic(artifact / "eval" / f"{name.replace(':', '_').replace('/', '_')}.json", result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        p = result["perplexity"]
        line = f"perplexity {p['ppl']:.4f} on {p['tokens']} tokens of {p['dataset']} ({p['windows']} x {p['window']})"
        if "baseline_ppl" in p:
            line += f"; unquantized {p['baseline_ppl']:.4f} ({p['increase']:+.2%})"
        click.echo(line)
        for r in (result.get("prompts") or {}).get("results", []):
            click.echo(f"prompt {r['prompt']!r}: {'ok' if r['passed'] else 'FAILED'}: {r['output']!r}")
    if not result["passed"]:
        raise StageFailed("eval: " + "; ".join(result["failed"]))


def _recipe_gate(artifact: Path) -> tuple[dict | None, list, Path]:
    """The perplexity spec, prompts and data directory of the recipe the artifact was built from."""
    from builder.errors import UsageError
    from runtime.manifest import read_manifest

    m = read_manifest(artifact)  # a ManifestError is a UsageError (exit 2)
    v = (m.recipe or {}).get("verify") or {}
    if not v.get("perplexity") and not v.get("prompts"):
        raise UsageError(f"--gate: {artifact}'s recipe has no verify.perplexity or verify.prompts")
    base = Path(m.recipe_file).parent if m.recipe_file else Path.cwd()
    return v.get("perplexity"), list(v.get("prompts") or []), base
