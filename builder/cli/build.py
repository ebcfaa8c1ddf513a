"""`trtq build RECIPE`: run the pipeline, reusing every stage whose inputs did not change."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from builder.cli._common import root_option, set_option, setup_logging
from builder.errors import UsageError
from builder.pipeline import VERBS


@click.command()
@click.argument("recipe_file", metavar="RECIPE", type=click.Path(path_type=Path))
@set_option
@root_option
@click.option("--until", type=click.Choice(VERBS), help="Stop after this step (e.g. --until export on a CPU box).")
@click.option("--force", is_flag=True, help="Re-run every stage even when its inputs are unchanged.")
@click.option("--dry-run", is_flag=True, help="Print which stages would run or be reused, and why; change nothing.")
@click.option("--wait", is_flag=True, help="If another build holds this artifact, wait for it instead of refusing.")
@click.option(
    "--publish", is_flag=True, help="After a complete build, publish to every `publish:` target of the recipe."
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, and the libraries' own warnings.")
def build(recipe_file, overrides, root, until, force, dry_run, wait, publish, as_json, verbose) -> None:
    """Build the artifact described by RECIPE into ROOT/<name>.

    \b
    Example:
      trtq build recipes/smollm2-135m/bf16.yaml
      trtq build recipes/smollm2-135m/bf16.yaml --set parallel.pp=2 --dry-run
      trtq build recipes/llama-3.1-8b/fp8-tp1.yaml --until export
    """
    from builder import pipeline
    from builder.launcher_env import single_process
    from builder.recipe.load import load_recipe
    from builder.workspace import Workspace

    setup_logging(verbose)
    t0 = time.perf_counter()
    leaked = single_process()
    if leaked:
        logging.getLogger("trtq.build").debug(
            "dropped MPI/Slurm launcher variables (one-process build): %s", ", ".join(leaked)
        )
    recipe, recipe_dir = load_recipe(recipe_file, overrides)
    if dry_run:
        ws = Workspace(root, recipe.name)
        the_plan = pipeline.plan(recipe, recipe_dir, ws, force=force, until=until)
        rows = [{"stage": s.stage.NAME, "action": s.action, "reason": s.reason} for s in the_plan.steps]
        if as_json:
            click.echo(json.dumps({"artifact": str(ws.dir), "dry_run": True, "stages": rows}, indent=2))
        else:
            for r in rows:
                click.echo(f"{r['stage']:<11} {'would run' if r['action'] == 'run' else 'reuse':<10} {r['reason']}")
        return
    if publish and not recipe.publish:
        raise UsageError(f"{recipe_file}: --publish was given but the recipe has no publish: targets")
    outcome = pipeline.build(recipe, recipe_dir, root, force=force, until=until, wait=wait, recipe_path=recipe_file)
    seconds = time.perf_counter() - t0
    artifact = outcome.manifest.parent if outcome.manifest else Path(root) / recipe.name
    published = []
    if publish:
        from builder.publish import publish_artifact

        for target in recipe.publish:
            published.append(publish_artifact(artifact, target.to))
            click.echo(f"published {artifact} -> {target.to}", err=True)
    elif recipe.publish:
        logging.getLogger("trtq.build").info("publish targets not uploaded: add --publish to upload them")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "artifact": str(artifact),
                    "status": outcome.status,
                    "ran": outcome.ran,
                    "reused": [s.stage.NAME for s in outcome.plan.steps if s.action == "reuse"],
                    "seconds": round(seconds, 3),
                    "published": published,
                },
                indent=2,
            )
        )
    elif not outcome.ran:
        click.echo(f"{artifact}: up to date, nothing to do ({seconds:.1f} s)")
    else:
        click.echo(f"{artifact}: {outcome.status} (ran {', '.join(outcome.ran)} in {seconds:.1f} s)")
