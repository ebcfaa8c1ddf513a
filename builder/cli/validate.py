"""`trtq validate`: check recipes without building anything (no torch imported)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import set_option
from builder.errors import RecipeError, UsageError


@click.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def validate(recipes: tuple[Path, ...], overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate RECIPES and print every problem, each with file:line and field.

    \b
    Example:
      trtq validate recipes/smollm2-135m/*.yaml
      trtq validate recipes/smollm2-135m/bf16.yaml --set parallel.tp=3
    """
    from builder.recipe.load import load_recipe

    problems: list[str] = []
    results = []
    for path in recipes:
        try:
            recipe, _ = load_recipe(path, overrides)
        except RecipeError as e:
            problems += e.problems
            results.append({"recipe": str(path), "ok": False, "problems": e.problems})
            continue
        results.append({"recipe": str(path), "ok": True, "name": recipe.name})
        if not as_json:
            q, p = recipe.quantization, recipe.parallel
            click.echo(
                f"ok: {path} -> {recipe.name} ({q.format}, kv {q.kv_cache}, tp{p.tp} x pp{p.pp}, "
                f"targets {', '.join(recipe.targets)})"
            )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if problems:
        if as_json:
            raise SystemExit(2)
        raise RecipeError(problems)
    if not recipes:
        raise UsageError("no recipe given")
