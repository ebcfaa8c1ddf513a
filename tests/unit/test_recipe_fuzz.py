"""Property-based fuzzing of recipe files and `--set` overrides: never a traceback, always a RecipeError (exit 2)
whose every line names the recipe file (with a line and field) or the `--set` override it comes from."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from builder.errors import RecipeError  # noqa: E402
from builder.recipe.load import load_recipe  # noqa: E402
from builder.recipe.schema import Recipe  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

BASE = {
    "name": "fuzz",
    "model": {"path": "./model"},
    "quantization": {"format": "int4_awq", "kv_cache": "fp8"},
    "calibration": {"samples": 4, "seq_len": 32},
    "parallel": {"tp": 2, "pp": 1},
    "targets": ["checkpoint", "hf"],
    "engine": {"max_batch_size": 8, "plugins": {"gemm": "auto"}},
    "publish": [{"to": "file:///tmp/x"}],
}


def _field_paths(model, prefix=()) -> list[tuple]:
    out = []
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        out.append(path)
        from builder.recipe.load import _model_of

        sub = _model_of(info.annotation)
        if sub is not None and len(path) < 4:
            out += _field_paths(sub, path)
    return out


PATHS = _field_paths(Recipe)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["fp8", "int8_sq", "auto", "cuda", "../../etc", "hf:x", "checkpoint", "", "null", "~"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(PATHS) | st.lists(
    st.text(min_size=1, max_size=8) | st.integers(0, 3), min_size=1, max_size=4
).map(tuple)


def _set(data, path, value):
    node = data
    for part in path[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(part, {})
    if isinstance(node, dict):
        node[path[-1]] = value


def _check(problems: list[str], path) -> None:
    assert problems, "a RecipeError holds at least one problem"
    for line in problems:
        assert "\n" not in line and len(line.splitlines()) == 1, line
        assert line.startswith((str(path), "--set ")), f"the problem does not name the file or override: {line}"
        assert "Traceback" not in line


def _load(path, overrides=()):
    try:
        return load_recipe(path, overrides)
    except RecipeError as e:
        _check(e.problems, path)
        return None


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_a_recipe_or_a_located_error(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    _load(path)


YAML_BITS = st.sampled_from(
    ["!!python/name:os.system x", "&a [*a]", "!!binary '@@'", "!!int abc", "2001-13-45", "*nope", "{a: 1, a: 2}",
     "? [a]\n: b", "!!float nan", "!!timestamp 2024-99-99", "|\n  multi\n  line", "\"\\u2028\"", "'a\nb'", "[1, [2, [3]]]",
     "&x {b: 1}", "!!set {a}", "!!omap [a: 1]", "!!str", "1e400", "0x1F", "0o17", ".inf", "-.nan", "~", "@", "%YAML 9"]
)  # fmt: skip


@FUZZ
@given(path=keys, bit=YAML_BITS, indent=st.booleans())
def test_hostile_yaml_values_are_located_errors(tmp_path, path, bit, indent):
    lines = yaml.safe_dump(BASE, sort_keys=False).splitlines()
    field = ".".join(map(str, path))
    lines.append(f"{field.replace(':', '_') or 'x'}: {bit}" if not indent else f"engine:\n  x: {bit}")
    p = tmp_path / "r.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _load(p)


@FUZZ
@given(changes=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
def test_structurally_mutated_recipes_are_located_errors(tmp_path, changes):
    data = json.loads(json.dumps(BASE))
    for path, value in changes:
        _set(data, path, value)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    _load(p)


override_text = st.one_of(
    st.text(max_size=40),
    st.tuples(keys, values).map(lambda kv: ".".join(map(str, kv[0])) + "=" + json.dumps(kv[1])),
    st.tuples(keys, YAML_BITS).map(lambda kv: ".".join(map(str, kv[0])) + "=" + kv[1]),
)


@FUZZ
@given(overrides=st.lists(override_text, min_size=1, max_size=3))
def test_set_overrides_are_located_errors(tmp_path, overrides):
    p = tmp_path / "r.yaml"
    if not p.exists():
        p.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    _load(p, overrides)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80), override=override_text)
def test_cli_exits_2_with_one_located_line_per_problem(tmp_path, capsys, monkeypatch, text, override):
    """The same through the real `trtq validate` entry point (in-process): exit 0 or 2, never a traceback."""
    from builder.cli import main

    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["trtq", "validate", str(p), "--set", override])
    with pytest.raises(SystemExit) as e:
        main()
        raise SystemExit(0)
    err = capsys.readouterr().err
    assert e.value.code in (0, 2), err
    assert "Traceback" not in err
    if e.value.code == 2:
        for line in err.strip().splitlines():
            assert line.startswith((str(p), "--set ", f"error: {p}", "error: --set")), line


def test_known_hostile_inputs_each_name_their_line(tmp_path):
    cases = {
        "a: !!python/name:os.system x\n": "r.yaml:1: not valid YAML: could not determine a constructor",
        "name: &a [*a]\n": "r.yaml:1: an alias (*name) refers to the value that contains it",
        "name: !!int abc\n": "r.yaml:1: 'abc' cannot be read as int",
        "name: 2001-13-45\n": "r.yaml:1: '2001-13-45' cannot be read as timestamp",
    }
    for text, expect in cases.items():
        p = tmp_path / "r.yaml"
        p.write_text(text)
        with pytest.raises(RecipeError) as e:
            load_recipe(p)
        assert e.value.problems[0].startswith(str(tmp_path / expect)), e.value.problems
    laughs = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    p.write_text(laughs)
    with pytest.raises(RecipeError, match="expands to more than 10000 values"):
        load_recipe(p)
    p.write_text(yaml.safe_dump(BASE))
    for override, expect in {
        "parallel.²=1": "--set parallel.²=1: ",
        "targets=&a [*a]": "--set targets=&a [*a]: value refers to itself",
        "name=!!binary x": "--set name=!!binary x: value is not valid YAML:",
    }.items():
        with pytest.raises(RecipeError) as e:
            load_recipe(p, [override])
        assert e.value.problems[0].startswith(expect) and len(e.value.problems[0].splitlines()) == 1, e.value.problems
