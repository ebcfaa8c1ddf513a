"""YAML loading that remembers where every value came from, so errors can say `file:line: field: problem`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Loc = tuple  # a field path such as ("quantization", "format") or ("verify", "prompts", 0)

# A recipe is a few dozen values; aliases can make a short file expand exponentially ("billion laughs").
MAX_VALUES = 10_000


class YamlProblem(Exception):
    """Unparseable YAML; ``line`` is 1-based."""

    def __init__(self, line: int, message: str):
        self.line = line
        super().__init__(message)


def load_with_lines(text: str) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML text; return the data and a map from field path to the 1-based line it is written on."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        raise _problem(e) from None
    except yaml.YAMLError as e:
        raise YamlProblem(1, f"not valid YAML: {one_line(e)}") from None
    lines: dict[Loc, int] = {}
    if node is None:
        return None, lines
    try:
        return _build(node, (), lines, _Budget()), lines
    except yaml.MarkedYAMLError as e:  # an unknown or unsafe tag (!!python/...), a malformed !!binary...
        raise _problem(e) from None


def one_line(e: BaseException | str) -> str:
    """PyYAML messages span lines (with a caret under the column): keep the words, on one line."""
    text = str(e)
    return " ".join(part.strip() for part in text.splitlines() if part.strip() and set(part.strip()) != {"^"})


def _problem(e: yaml.MarkedYAMLError) -> YamlProblem:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else 1
    words = " ".join(w for w in (e.context, e.problem) if w) or one_line(e)
    return YamlProblem(line, f"not valid YAML: {one_line(words)}")


class _Budget:
    def __init__(self) -> None:
        self.values = 0
        self.open: set[int] = set()  # nodes being built: meeting one again means an alias refers to itself


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], budget: _Budget) -> Any:
    line = node.start_mark.line + 1
    lines[loc] = line
    budget.values += 1
    if budget.values > MAX_VALUES:
        raise YamlProblem(line, f"the recipe expands to more than {MAX_VALUES} values (aliases that repeat aliases?)")
    if id(node) in budget.open:
        raise YamlProblem(line, "an alias (*name) refers to the value that contains it")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem(key_node.start_mark.line + 1, "keys must be plain names, not lists or mappings")
            key = _scalar(key_node)
            if key in out:
                raise YamlProblem(key_node.start_mark.line + 1, f"duplicate key '{key}'")
            budget.open.add(id(node))
            out[key] = _build(value_node, (*loc, key), lines, budget)
            budget.open.discard(id(node))
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        budget.open.add(id(node))
        items = [_build(item, (*loc, i), lines, budget) for i, item in enumerate(node.value)]
        budget.open.discard(id(node))
        return items
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError) as e:  # !!int abc, a date like 2024-13-45
        raise YamlProblem(node.start_mark.line + 1, f"{node.value!r} cannot be read as {_tag(node)}: {e}") from None
    finally:
        loader.dispose()


def _tag(node: yaml.Node) -> str:
    return node.tag.rsplit(":", 1)[-1] if node.tag else "a value"


def line_for(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of ``loc``, or of its nearest written parent (a missing field is reported at its section)."""
    loc = tuple(loc)
    while True:
        if loc in lines:
            return lines[loc]
        if not loc:
            return None
        loc = loc[:-1]


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")
