"""Read a recipe file, apply `--set` overrides, validate, and report every problem at once.

Each problem is one line: `recipes/x.yaml:12: quantization.format: 'int4-awq' is not one of fp16, bf16, ...`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from builder.errors import RecipeError
from builder.recipe._yaml import Loc, YamlProblem, line_for, load_with_lines
from builder.recipe.overrides import OverrideProblem, apply_overrides
from builder.recipe.schema import Recipe


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, Path]:
    """Load and validate ``path`` with ``key.path=value`` overrides applied first.

    Returns the recipe and the recipe file's directory (relative model paths resolve against it).
    Raises RecipeError listing every problem.
    """
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{shown}: no such recipe file"]) from None
    except IsADirectoryError:
        raise RecipeError([f"{shown}: is a directory, not a recipe file"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError([f"{shown}: cannot read: {e}"]) from None
    try:
        data, lines = load_with_lines(text)
    except YamlProblem as e:
        raise RecipeError([f"{shown}:{e.line}: {e}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([f"{shown}:1: a recipe is a mapping of sections (name, model, ...), not {_kind(data)}"])

    overridden: dict[Loc, str] = {}
    try:
        data = apply_overrides(data, overrides, overridden)
    except OverrideProblem as e:
        raise RecipeError([f"--set {e.override}: {e}"]) from None

    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc, message = _refine(err)
            where = _where(shown, lines, overridden, loc)
            field = ".".join(str(p) for p in loc) or "(recipe)"
            problems.append(f"{where}: {field}: {message}")
        raise RecipeError(sorted(set(problems), key=_line_key)) from None
    return recipe, path.resolve().parent


def _refine(err: dict) -> tuple[Loc, str]:
    """Location and message of one error. Cross-field validators start their message with the field they blame
    ("max_input_len: ..." or "model.dtype: ..."): the error then points at that field's line."""
    loc = tuple(err["loc"])
    if err["type"] == "value_error":
        head, sep, rest = str((err.get("ctx") or {}).get("error", "")).partition(": ")
        parts = tuple(head.split(".")) if sep and " " not in head else ()
        if parts and parts[0] in _fields_at(loc):
            return (*loc, *parts), rest
    return loc, describe(err)


def _where(shown: str, lines: dict[Loc, int], overridden: dict[Loc, str], loc: Loc) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in overridden:
            return f"--set {overridden[loc[:n]]}"
    line = line_for(lines, loc)
    return f"{shown}:{line}" if line else shown


def _line_key(problem: str) -> tuple:
    head = problem.split(": ", 1)[0]
    _, _, num = head.rpartition(":")
    return (0, int(num)) if num.isdigit() else (1, 0)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class _Short:
    """repr() of a user's value, cut to a readable length (a recipe can hold a megabyte string)."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        text = repr(self.value)
        return text if len(text) <= 80 else text[:77] + "..."

    def __str__(self) -> str:
        text = str(self.value)
        return text if len(text) <= 80 else text[:77] + "..."


def describe(err: dict) -> str:
    """Turn one pydantic error into a sentence that names the valid choices or range."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, _Short(err.get("input"))
    if kind == "literal_error":
        choices = [c.strip().strip("'") for c in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        msg = f"{value!r} is not one of {', '.join(choices)}"
        close = difflib.get_close_matches(str(value)[:100], choices, n=1)
        return msg + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "extra_forbidden":
        field = err["loc"][-1]
        valid = _fields_at(err["loc"][:-1])
        close = difflib.get_close_matches(str(field), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown field; {hint}valid fields here: {', '.join(valid)}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()))
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        return f"{value!r} is out of range: must be {op} {bound}"
    if kind in ("too_short", "too_long"):
        return err["msg"].replace("Tuple", "list").replace("List", "list")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {value!r}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {value!r}"
    if kind in ("string_type",):
        return f"expected a string, got {value!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of fields, got {_kind(value.value)} {value!r}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_kind(value.value)} {value!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"]


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` inside Recipe (for 'valid fields here')."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_of(info.annotation) if info else None
    return list(model.model_fields) if model else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found:
            return found
    return None
