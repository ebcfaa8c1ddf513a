"""Stage `resolve`: find the model's files (hub snapshot, local directory, or a GGUF file converted once).

Output: `resolve/source.json` = {kind, model_dir, commit, ...}; the work is builder/model/source.py.
"""

from __future__ import annotations

from typing import Any

NAME = VERB = "resolve"
AFTER: tuple[str, ...] = ()
LIBRARIES = ("transformers", "gguf", "huggingface-hub")
DELIVERABLE = False


def wanted(recipe) -> bool:
    return True


def reads(recipe, ctx) -> dict[str, Any]:
    from builder.model.source import identity

    return {"model": identity(recipe.model, ctx.recipe_dir)}


def run(ctx) -> dict[str, Any]:
    from builder.model.source import resolve

    return resolve(ctx.recipe.model, ctx.recipe_dir, ctx.out)


def intact(stage_dir) -> bool:
    from builder.model.source import intact as source_intact

    return source_intact(stage_dir)
