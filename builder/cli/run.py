"""`trtq run ARTIFACT PROMPT...`: generate text from an artifact (or a TensorRT-LLM checkpoint directory).

One process per rank: a tp x pp artifact runs as `mpirun -n <tp*pp> trtq run ...`; rank 0 alone prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("prompts", nargs=-1)
@click.option(
    "--file",
    "prompt_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read prompts from a file, one per line (or a .jsonl with a 'prompt' field).",
)
@click.option("--chat", is_flag=True, help="Wrap each prompt in the model's chat template (as a user message).")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0.0), help="0 = greedy.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(0), help="0 = no top-k filter.")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--stop", multiple=True, help="Stop string (repeatable); it is not included in the output.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "reference", "engine", "pytorch"]),
    default="auto",
    show_default=True,
    help="auto: engine/ if built, else the checkpoint on the reference runtime, else hf/.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every completion (no streaming).")
@click.option("--no-stream", is_flag=True, help="Print each completion when done instead of streaming tokens.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    artifact,
    prompts,
    prompt_file,
    chat,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    seed,
    stop,
    backend,
    as_json,
    no_stream,
    verbose,
) -> None:
    """Generate from ARTIFACT for each PROMPT (all prompts form one batch).

    \b
    Examples:
      trtq run engines/smollm2-135m-int8_sq "The capital of France is"
      trtq run engines/smollm2-135m-int8_sq --chat "What is the capital of France?" --max-new-tokens 32
      mpirun -n 2 trtq run engines/smollm2-135m-tp2 --file prompts.txt --json
    """
    from runtime.generate import complete, load_tokenizer, print_stream
    from runtime.mpi import world_from_env
    from runtime.select import open_runner, tokenizer_dir

    world = world_from_env()
    setup_logging(verbose, quiet=not verbose and (world.rank != 0 or as_json))
    texts = list(prompts) + (_read_prompts(prompt_file) if prompt_file else [])
    if not texts:
        raise click.UsageError("give at least one PROMPT or --file")
    runner = open_runner(artifact, backend)
    tokenizer = load_tokenizer(tokenizer_dir(artifact))
    streaming = not as_json and not no_stream and len(texts) == 1
    results = complete(
        runner,
        tokenizer,
        texts,
        chat=chat,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop=stop,
        stream=print_stream if streaming and runner.is_leader else None,
    )
    runner.close()
    if not runner.is_leader:
        return
    if as_json:
        click.echo(json.dumps({"backend": runner.backend, "completions": [r.as_dict() for r in results]}, indent=2))
    elif streaming:
        sys.stdout.write("\n")
    else:
        for i, r in enumerate(results):
            head = f"[{i}] " if len(results) > 1 else ""
            click.echo(f"{head}{r.text}")


def _read_prompts(path: Path) -> list[str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if path.suffix == ".jsonl":
        out = []
        for n, ln in enumerate(lines, 1):
            try:
                out.append(str(json.loads(ln)["prompt"]))
            except (ValueError, KeyError, TypeError):
                raise click.UsageError(f"{path}:{n}: not a JSON object with a 'prompt' field") from None
        return out
    return lines
