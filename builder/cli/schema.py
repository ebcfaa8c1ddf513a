"""`trtq schema`: the recipe JSON Schema, for editors (yaml-language-server) and other tools."""

from __future__ import annotations

import json

import click


def recipe_schema() -> dict:
    from builder.recipe.schema import Recipe

    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtq recipe"
    return schema


@click.command()
def schema() -> None:
    """Print the recipe JSON Schema.

    \b
    Example:
      trtq schema > recipes/recipe.schema.json
    """
    click.echo(json.dumps(recipe_schema(), indent=2, sort_keys=True))
