"""The stand-in itself is as strict as the record: wrong calls fail the way the 1.2.1 release fails them."""

from __future__ import annotations

import inspect
import json

import pytest
from contract.standin import RECORD_PATH, load_record


def test_record_names_a_source_for_every_symbol():
    record = load_record()
    assert record["release"] == "1.2.1"
    for name, sym in record["symbols"].items():
        assert sym.get("commit"), f"{name} has no recorded commit/file id"
        assert sym.get("module_file"), f"{name} has no module file"


def test_signatures_come_from_the_record(standin):
    import tensorrt_llm.runtime as rt

    rec = json.loads(RECORD_PATH.read_text())["symbols"]
    got = list(inspect.signature(rt.ModelRunnerCpp.from_dir).parameters)
    assert got == [p["name"] for p in rec["tensorrt_llm.runtime.ModelRunnerCpp.from_dir"]["params"]]
    assert inspect.signature(rt.ModelRunnerCpp.from_dir).parameters["rank"].default == 0


def test_unknown_keyword_and_missing_argument_raise_typeerror(standin):
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.commands.build import parallel_build

    with pytest.raises(TypeError):
        BuildConfig(max_output_len=128)  # removed in 0.12: the release rejects it
    with pytest.raises(TypeError):
        parallel_build(None, "ckpt")  # build_config and output_dir missing
    import tensorrt_llm.runtime as rt

    with pytest.raises(TypeError):
        rt.ModelRunnerCpp.from_dir("engine", 0)  # rank is keyword-only


def test_plugin_and_build_config_values_are_validated(standin):
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.llmapi.kv_cache_type import KVCacheType
    from tensorrt_llm.plugin import PluginConfig

    with pytest.raises(ValueError):
        PluginConfig(gemm_plugin="int8")
    with pytest.raises(ValueError):
        PluginConfig(dtype="auto")
    assert PluginConfig(dtype="bfloat16", gpt_attention_plugin="auto").gpt_attention_plugin == "bfloat16"
    assert PluginConfig(context_fmha="disable").context_fmha is False
    with pytest.raises(TypeError):
        BuildConfig(kv_cache_type="paged")  # needs the enum
    assert KVCacheType("PAGED") is KVCacheType.PAGED
    with pytest.raises(ValueError):
        BuildConfig(max_input_len=4096, max_seq_len=1024)


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
