"""Recipe validation: every problem at once, each with file:line, field path and the valid choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
name: tiny-fp16
model:
  path: ./model
quantization:
  format: fp16
parallel:
  tp: 2
targets: [checkpoint]
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(path, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, overrides)
    return e.value.problems


def test_good_recipe_loads_with_defaults(tmp_path):
    recipe, recipe_dir = load_recipe(write(tmp_path, GOOD))
    assert recipe.name == "tiny-fp16"
    assert recipe.parallel.tp == 2 and recipe.parallel.pp == 1 and recipe.parallel.world_size == 2
    assert recipe.quantization.exclude == ("lm_head",)
    assert recipe.calibration.dataset == "builtin"
    assert recipe.export_dtype == "float16"
    assert recipe_dir == tmp_path.resolve()


def test_unknown_key_names_line_and_suggests(tmp_path):
    p = write(tmp_path, GOOD.replace("  tp: 2", "  tp: 2\n  tpp: 4"))
    [msg] = problems(p)
    assert msg.startswith(f"{p}:8: parallel.tpp: unknown field; did you mean 'tp'?")
    assert "valid fields here: tp, pp" in msg


def test_bad_choice_lists_valid_choices_and_closest(tmp_path):
    p = write(tmp_path, GOOD.replace("format: fp16", "format: int4-awq"))
    [msg] = problems(p)
    assert msg == (
        f"{p}:5: quantization.format: 'int4-awq' is not one of fp16, bf16, int8_wo, int4_wo, int8_sq, int4_awq, "
        "w4a8_awq, fp8 (did you mean 'int4_awq'?)"
    )


def test_wrong_type_and_out_of_range_reported_together(tmp_path):
    text = GOOD + "calibration:\n  samples: 0\n  seq_len: long\n"
    p = write(tmp_path, text)
    got = problems(p)
    assert got == [
        f"{p}:10: calibration.samples: 0 is out of range: must be >= 1",
        f"{p}:11: calibration.seq_len: expected a whole number, got 'long'",
    ]


def test_unparseable_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "name: x\nmodel: {path: [unclosed\nparallel:\n  tp: 1\n")
    [msg] = problems(p)
    assert msg.startswith(f"{p}:") and "not valid YAML" in msg
    assert int(msg.split(":")[1]) >= 2


def test_duplicate_key_is_an_error(tmp_path):
    p = write(tmp_path, GOOD + "name: again\n")
    [msg] = problems(p)
    assert msg == f"{p}:9: duplicate key 'name'"


def test_missing_file(tmp_path):
    [msg] = problems(tmp_path / "nope.yaml")
    assert msg == f"{tmp_path / 'nope.yaml'}: no such recipe file"


def test_not_a_mapping(tmp_path):
    [msg] = problems(write(tmp_path, "- a\n- b\n"))
    assert "a recipe is a mapping of sections" in msg


def test_cross_field_contradiction_points_at_the_field(tmp_path):
    p = write(tmp_path, GOOD + "engine:\n  max_input_len: 4096\n  max_seq_len: 2048\n")
    [msg] = problems(p)
    assert msg.startswith(f"{p}:10: engine.max_input_len: 4096 is larger than max_seq_len (2048)")


def test_format_contradicts_dtype(tmp_path):
    p = write(tmp_path, GOOD.replace("  path: ./model", "  path: ./model\n  dtype: bfloat16"))
    [msg] = problems(p)
    assert msg.startswith(f"{p}:4: model.dtype: quantization.format fp16 exports float16 weights")


def test_hub_needs_a_pinned_revision(tmp_path):
    p = write(tmp_path, GOOD.replace("  path: ./model", "  hub: meta-llama/Llama-3.1-8B-Instruct"))
    [msg] = problems(p)
    assert msg.startswith(f"{p}:2: model.revision: required with hub: pin a commit sha")


def test_exactly_one_model_source(tmp_path):
    p = write(tmp_path, GOOD.replace("  path: ./model", "  path: ./model\n  gguf: x.gguf"))
    [msg] = problems(p)
    assert "give exactly one model source" in msg and "got path, gguf" in msg


def test_name_cannot_escape_the_artifact_root(tmp_path):
    p = write(tmp_path, GOOD.replace("name: tiny-fp16", "name: ../../etc"))
    [msg] = problems(p)
    assert msg.startswith(f"{p}:1: name: '../../etc' is not a valid artifact name")


def test_overrides_apply_before_validation(tmp_path):
    p = write(tmp_path, GOOD)
    recipe, _ = load_recipe(p, ["parallel.pp=2", "quantization.exclude=[lm_head, '*.mlp.*']", "targets=[hf]"])
    assert recipe.parallel.pp == 2
    assert recipe.quantization.exclude == ("lm_head", "*.mlp.*")
    assert recipe.targets == ("hf",)


def test_override_typo_fails_validation_and_names_the_override(tmp_path):
    p = write(tmp_path, GOOD)
    assert problems(p, ["parallel.tq=2"]) == [
        "--set parallel.tq=2: parallel.tq: unknown field; did you mean 'tp'? valid fields here: tp, pp"
    ]
    assert problems(p, ["parallel.tp=0"]) == ["--set parallel.tp=0: parallel.tp: 0 is out of range: must be >= 1"]


def test_override_syntax_error(tmp_path):
    p = write(tmp_path, GOOD)
    [msg] = problems(p, ["parallel.tp"])
    assert msg == "--set parallel.tp: expected key.path=value, e.g. --set parallel.tp=2"
    [msg] = problems(p, ["name.sub=1"])
    assert "cannot descend into 'name'" in msg


def test_every_shipped_recipe_validates():
    recipes = sorted((REPO / "recipes").rglob("*.yaml"))
    assert recipes, "no recipes shipped"
    for path in recipes:
        recipe, _ = load_recipe(path)
        first = path.read_text().splitlines()[0]
        assert first.startswith("# trtq build "), f"{path}: first line must show the command that builds it"
        assert "yaml-language-server: $schema=" in path.read_text(), f"{path}: reference the JSON Schema"


def test_committed_json_schema_is_current():
    from builder.cli.schema import recipe_schema

    committed = json.loads((REPO / "recipes" / "recipe.schema.json").read_text())
    assert committed == recipe_schema(), "run: trtq schema > recipes/recipe.schema.json"


def test_every_cross_field_rule_comes_from_the_format_table(tmp_path):
    """The unified HF checkpoint holds an fp8 KV cache only (issue 13: int8 KV + hf was accepted), and the valid
    alternatives in each message are the format table's."""
    from runtime.formats import FORMATS, KV_CACHES

    hf = GOOD.replace("format: fp16", "format: fp16\n  kv_cache: int8").replace("[checkpoint]", "[checkpoint, hf]")
    [msg] = problems(write(tmp_path, hf))
    assert "targets: the unified HF checkpoint cannot hold kv_cache int8" in msg and "with kv_cache none or fp8" in msg
    load_recipe(write(tmp_path, hf.replace("kv_cache: int8", "kv_cache: fp8"), "ok.yaml"))
    for fmt, spec in FORMATS.items():
        for kv in KV_CACHES:
            text = GOOD.replace("format: fp16", f"format: {fmt}\n  kv_cache: {kv}")
            path = write(tmp_path, text, f"{fmt}-{kv}.yaml")
            if kv in spec.kv_caches:
                load_recipe(path)
            else:
                [msg] = problems(path)
                assert f"quantization.kv_cache: {kv} cannot be combined with {fmt}" in msg
