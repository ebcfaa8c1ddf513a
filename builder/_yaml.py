"""YAML loading that remembers where every value came from, so errors can say `file:line: field: problem`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Loc = tuple  # a field path such as ("quantization", "format") or ("verify", "prompts", 0)


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
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlProblem(line, f"not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise YamlProblem(1, f"not valid YAML: {e}") from None
    lines: dict[Loc, int] = {}
    if node is None:
        return None, lines
    return _build(node, (), lines), lines


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem(key_node.start_mark.line + 1, "keys must be plain names, not lists or mappings")
            key = _scalar(key_node)
            if key in out:
                raise YamlProblem(key_node.start_mark.line + 1, f"duplicate key '{key}'")
            out[key] = _build(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


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
