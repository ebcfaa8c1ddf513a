"""The house's layering, read statically from every module's imports (module level and inside functions).

runtime/ never imports builder/ (a serving box needs only runtime); the rooms (builder/recipe, model, quant,
checkpoint, planning, verify, publish) never import a stage, the pipeline or the CLI; a stage never imports another
stage; and the import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, resolved to trtq module names where they are ours."""
    tree = ast.parse(path.read_text())
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in ("builder", "runtime")}


def _graph() -> dict[str, set[str]]:
    files = [p for top in ("builder", "runtime") for p in (REPO / top).rglob("*.py")]
    modules = {_module(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path):
            while imp and imp not in modules:  # `from builder.stages import build` -> builder.stages.build
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


GRAPH = _graph()
STAGES = {m for m in GRAPH if m.startswith("builder.stages.")}
ROOMS = ("builder.recipe", "builder.model", "builder.quant", "builder.checkpoint", "builder.planning", "builder.verify",
         "builder.publish")  # fmt: skip


def test_runtime_never_imports_builder():
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith("runtime") for d in deps
                 if d.startswith("builder"))  # fmt: skip
    assert not bad, bad


def test_rooms_import_no_stage_pipeline_or_cli():
    upper = ("builder.stages", "builder.pipeline", "builder.cli")
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith(ROOMS) for d in deps
                 if d.startswith(upper))  # fmt: skip
    assert not bad, bad


def test_no_stage_imports_another_stage():
    bad = sorted(f"{m} -> {d}" for m in STAGES for d in GRAPH[m] if d in STAGES)
    assert not bad, bad


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if d.rpartition(".")[0] == m or m.rpartition(".")[0] == d:
                continue  # a package and its own submodules (registration in __init__) are one unit
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)
