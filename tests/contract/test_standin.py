"""The stand-in itself is as strict as the record: wrong calls fail the way the 1.2.1 release fails them."""

from __future__ import annotations

import inspect
import json
import re

import pytest
from contract.standin import RECORD_PATH, load_record


def test_record_names_a_source_and_its_distance_to_the_tag_for_every_symbol():
    record = load_record()
    assert record["release"] == "1.2.1" and record["source"]["tag_read"] is False
    for name, sym in record["symbols"].items():
        assert sym.get("module_file"), f"{name} has no module file"
        assert sym.get("distance_to_tag"), f"{name} does not say how close to v1.2.1 its source is"
        for read in sym["read"]:  # a repository at a full commit, an index file id, a PR or a docs page
            assert (
                (re.fullmatch(r"[0-9a-f]{40}", read.get("commit", "")) and "/" in read["repo"])
                or read.get("file_id", "").isdigit()
                or read.get("pr")
                or read.get("url")
            ), (name, read)
    for point in record["source"]["release_points"]:
        assert re.fullmatch(r"[0-9a-f]{40}", point["commit"]), point


def test_the_live_test_the_record_names_exists():
    path = RECORD_PATH.parents[2] / load_record()["live_test"].split()[0]
    assert path.is_file(), path


def test_signatures_come_from_the_record(standin):
    import tensorrt_llm.runtime as rt

    rec = json.loads(RECORD_PATH.read_text())["symbols"]
    got = list(inspect.signature(rt.ModelRunnerCpp.from_dir).parameters)
    assert got == [p["name"] for p in rec["tensorrt_llm.runtime.ModelRunnerCpp.from_dir"]["params"]]
    assert inspect.signature(rt.ModelRunnerCpp.from_dir).parameters["rank"].default == 0


def test_unknown_keyword_and_missing_argument_are_refused(standin):
    from pydantic import ValidationError
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.commands.build import parallel_build
    from tensorrt_llm.plugin import PluginConfig

    # removed in 0.12; the pydantic release may drop an unknown keyword silently, the stand-in refuses it
    with pytest.raises(ValidationError, match="max_output_len"):
        BuildConfig(max_output_len=128)
    with pytest.raises(ValidationError, match="paged_context_fmha"):
        PluginConfig(paged_context_fmha=True)  # the field is use_paged_context_fmha
    with pytest.raises(TypeError):
        BuildConfig(1024)  # keywords only
    with pytest.raises(TypeError):
        parallel_build(None, "ckpt")  # build_config and output_dir missing
    import tensorrt_llm.runtime as rt

    with pytest.raises(TypeError):
        rt.ModelRunnerCpp.from_dir("engine", 0)  # rank is keyword-only


def test_plugin_and_build_config_values_are_validated_like_the_release(standin):
    from pydantic import ValidationError
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.llmapi.kv_cache_type import KVCacheType
    from tensorrt_llm.plugin import PluginConfig

    with pytest.raises(ValidationError):
        PluginConfig(gemm_plugin="int8")
    with pytest.raises(ValidationError, match="cannot be 'auto'"):
        PluginConfig(dtype="auto")
    assert PluginConfig(dtype="bfloat16", gpt_attention_plugin="auto").gpt_attention_plugin == "bfloat16"
    assert PluginConfig(context_fmha="disable").context_fmha is False
    assert PluginConfig(gemm_plugin="disable").gemm_plugin is None
    pc = PluginConfig()
    with pytest.raises(ValidationError):
        pc.tokens_per_block = "many"  # validate_assignment
    assert BuildConfig(kv_cache_type="paged").kv_cache_type is KVCacheType.PAGED  # pydantic validates the value
    assert BuildConfig(kv_cache_type=KVCacheType.PAGED).kv_cache_type is KVCacheType.PAGED
    with pytest.raises(ValidationError):
        BuildConfig(kv_cache_type="fast")
    with pytest.raises(ValidationError):
        BuildConfig(max_batch_size="eight")
    with pytest.raises(ValidationError):
        BuildConfig(plugin_config="default")
    assert KVCacheType("PAGED") is KVCacheType.PAGED
    assert BuildConfig().plugin_config.dtype == "float16" and BuildConfig().max_seq_len is None


def test_plugin_validate_refuses_what_the_sm_lacks(standin):
    from tensorrt_llm.plugin import PluginConfig

    pc = PluginConfig(low_latency_gemm_plugin="fp8")
    pc.validate()  # SM 90: fine
    standin.sm = 100
    with pytest.raises(NotImplementedError, match="low_latency_gemm_plugin=fp8 is not supported on SM 100"):
        pc.validate()
    PluginConfig().validate()


def test_build_clips_max_input_len_to_max_seq_len_like_build(standin, tmp_path):
    from contract.fakes import fake_checkpoint
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.commands.build import parallel_build
    from tensorrt_llm.models import PretrainedConfig

    ckpt = fake_checkpoint(tmp_path / "c")
    cfg = PretrainedConfig.from_json_file(str(ckpt / "config.json"))
    parallel_build(cfg, str(ckpt), BuildConfig(max_input_len=4096, max_seq_len=1024), str(tmp_path / "e"))
    written = json.loads((tmp_path / "e" / "config.json").read_text())["build_config"]
    assert (written["max_input_len"], written["max_seq_len"], written["kv_cache_type"]) == (1024, 1024, "PAGED")
    parallel_build(cfg, str(ckpt), BuildConfig(), str(tmp_path / "d"))
    assert json.loads((tmp_path / "d" / "config.json").read_text())["build_config"]["max_seq_len"] == 512


@pytest.mark.parametrize(
    ("symbol", "param"),
    [
        ("tensorrt_llm.plugin.PluginConfig", "use_fused_mlp"),
        ("tensorrt_llm.builder.BuildConfig", "strongly_typed"),
        ("tensorrt_llm.commands.build.parallel_build", "workers"),
    ],
)
def test_trtq_fails_against_a_record_without_what_it_calls(monkeypatch, tmp_path, symbol, param):
    """The contract tests bite: take away one thing trtq's engine stage passes, and the stage fails."""
    from contract.fakes import fake_checkpoint
    from contract.standin import install

    from builder.recipe.schema import Recipe
    from builder.stages import build
    from runtime.gpu import Gpu

    record = load_record()
    sym = record["symbols"][symbol]
    sym["params"] = [p for p in sym["params"] if p["name"] != param]
    install(monkeypatch, record=record)
    monkeypatch.setattr(build, "local_gpus", lambda: [Gpu("NVIDIA H100", "9.0", 80 << 30)])
    recipe = Recipe.model_validate({"name": "t", "model": {"path": "x"}})
    with pytest.raises(Exception, match=param):
        build.build_engines(recipe, fake_checkpoint(tmp_path / "c"), tmp_path / "out")


def test_trtq_fails_against_a_record_without_plugin_validate(monkeypatch, tmp_path):
    from contract.fakes import fake_checkpoint
    from contract.standin import install

    from builder.recipe.schema import Recipe
    from builder.stages import build
    from runtime.gpu import Gpu

    record = load_record()
    del record["symbols"]["tensorrt_llm.plugin.PluginConfig"]["methods"]["validate"]
    install(monkeypatch, record=record)
    monkeypatch.setattr(build, "local_gpus", lambda: [Gpu("NVIDIA H100", "9.0", 80 << 30)])
    recipe = Recipe.model_validate({"name": "t", "model": {"path": "x"}})
    with pytest.raises(Exception, match="validate"):
        build.build_engines(recipe, fake_checkpoint(tmp_path / "c"), tmp_path / "out")


def test_calls_are_recorded(standin):
    from tensorrt_llm.plugin import PluginConfig

    PluginConfig(dtype="float16", gemm_plugin="auto")
    assert standin.called("tensorrt_llm.plugin.PluginConfig") == [{"dtype": "float16", "gemm_plugin": "auto"}]


def test_llm_rejects_arguments_outside_its_args(standin, tmp_path):
    import tensorrt_llm

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="invalid argument: max_output_len"):
        tensorrt_llm.LLM(str(tmp_path), max_output_len=5)
    with pytest.raises(TypeError):
        tensorrt_llm.SamplingParams(max_new_tokens=5)  # the LLM API calls it max_tokens
