"""`--set key.path=value` overrides, applied to the raw recipe before validation (so a typo fails validation)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from builder.recipe._yaml import MAX_VALUES, one_line


class OverrideProblem(Exception):
    def __init__(self, override: str, message: str):
        self.override = override
        super().__init__(message)


def parse_override(text: str) -> tuple[tuple[str | int, ...], Any]:
    """``quantization.format=fp8`` -> (("quantization", "format"), "fp8"). Values are parsed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise OverrideProblem(text, "expected key.path=value, e.g. --set parallel.tp=2")
    parts: list[str | int] = []
    for part in key.strip().split("."):
        if not part:
            raise OverrideProblem(text, f"'{key}' has an empty path component")
        parts.append(int(part) if part.isascii() and part.isdigit() else part)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise OverrideProblem(text, f"value is not valid YAML: {one_line(e)}") from None
    except (ValueError, TypeError, OverflowError) as e:  # !!int abc, 2024-13-45
        raise OverrideProblem(text, f"value cannot be read: {e}") from None
    problem = _too_big(value)
    if problem:
        raise OverrideProblem(text, problem)
    return tuple(parts), value


def _too_big(value: Any) -> str | None:
    """YAML aliases can make a value refer to itself, or expand exponentially: refuse both before validation."""
    count = 0
    stack: list[tuple[Any, frozenset[int]]] = [(value, frozenset())]
    while stack:
        v, parents = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"value expands to more than {MAX_VALUES} items (aliases that repeat aliases?)"
        if isinstance(v, (list, dict)):
            if id(v) in parents:
                return "value refers to itself (a YAML alias inside its own anchor)"
            inner = list(v.values()) if isinstance(v, dict) else v
            stack.extend((x, parents | {id(v)}) for x in inner)
    return None


def apply_overrides(data: dict, overrides, overridden: dict | None = None) -> dict:
    """Return a copy of ``data`` with every override applied; ``overridden`` collects path -> override text."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, dict):
                if part not in node or node[part] is None:
                    node[part] = {}
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                node = None
            if not isinstance(node, (dict, list)):
                where = ".".join(map(str, path[: i + 1]))
                raise OverrideProblem(text, f"cannot descend into '{where}': it is not a section")
        last = path[-1]
        if isinstance(node, dict) or isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
        else:
            raise OverrideProblem(text, f"cannot set '{'.'.join(map(str, path))}': its parent is not a section")
        if overridden is not None:
            overridden[path] = text
    return data
