"""The real thing: the contract record against the installed TensorRT-LLM, then a tiny model built and run on a GPU.

The record (tests/contract/trtllm_v1_2_1.json) could not be read at the v1.2.1 tag (see its `source`); these tests
are where the tag itself answers. Run inside the container:  pytest -m trtllm tests/trtllm -ra
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest

RECORD_FILE = Path(__file__).resolve().parents[1] / "contract" / "trtllm_v1_2_1.json"
RECORD = json.loads(RECORD_FILE.read_text())["symbols"]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


CALLABLES = [
    "tensorrt_llm.commands.build.parallel_build",
    "tensorrt_llm.runtime.ModelRunnerCpp.from_dir",
    "tensorrt_llm.runtime.ModelRunnerCpp.generate",
    "tensorrt_llm.runtime.ModelRunner.from_dir",
    "tensorrt_llm.LLM",
]


def test_release_is_1_2_1():
    import tensorrt_llm

    assert tensorrt_llm.__version__.startswith("1.2.1"), tensorrt_llm.__version__


@pytest.mark.parametrize("name", CALLABLES)
def test_recorded_parameters_exist_with_recorded_defaults(name):
    real = inspect.signature(_resolve(name))
    params = real.parameters
    for p in RECORD[name]["params"]:
        if p["name"] in ("self", "cls", "kwargs"):
            continue
        assert p["name"] in params or any(q.kind == q.VAR_KEYWORD for q in params.values()), (name, p["name"])
        if (
            p["name"] in params
            and p.get("default") not in ("<required>", None)
            and not str(p["default"]).startswith("<")
        ):
            assert params[p["name"]].default == p["default"], (name, p["name"], params[p["name"]].default)


@pytest.mark.parametrize("cls_name", ["tensorrt_llm.builder.BuildConfig", "tensorrt_llm.plugin.PluginConfig"])
def test_config_classes_are_the_recorded_pydantic_models(cls_name):
    """Both are pydantic models at the tag (PluginConfig read so; BuildConfig per PR #8330): their fields and defaults
    are the recorded ones. A difference means the record (and so the stand-in) must be corrected from this output."""
    cls = _resolve(cls_name)
    assert hasattr(cls, "model_fields"), f"{cls_name} is not a pydantic model at {_version()}: fix the record's kind"
    real = {name: f.default for name, f in cls.model_fields.items()}
    recorded = {p["name"]: p["default"] for p in RECORD[cls_name]["params"]}
    assert set(real) == set(recorded), {"missing from the record": set(real) - set(recorded),
                                        "not in the release": set(recorded) - set(real)}  # fmt: skip
    plain = {k for k, v in recorded.items() if not (isinstance(v, str) and v.startswith("<"))}
    assert {k: _plain(real[k]) for k in plain} == {k: recorded[k] for k in plain}


def test_plugin_validate_is_the_recorded_instance_method():
    from tensorrt_llm.plugin import PluginConfig

    method = inspect.getattr_static(PluginConfig, "validate")
    assert not isinstance(method, classmethod), "PluginConfig.validate is pydantic's classmethod, not TensorRT-LLM's"
    PluginConfig(dtype="float16").validate()
    from tensorrt_llm._utils import get_sm_version  # what validate() checks

    assert get_sm_version() > 0


def test_kv_cache_type_is_the_python_wrapper():
    from tensorrt_llm.llmapi.kv_cache_type import KVCacheType

    assert KVCacheType("paged") is KVCacheType.PAGED and KVCacheType("PAGED") is KVCacheType.PAGED


def _version() -> str:
    import tensorrt_llm

    return str(tensorrt_llm.__version__)


def _plain(value):
    """A default as the record writes it: enums by value, None/bool/int/str as is."""
    return getattr(value, "value", value)


@pytest.mark.parametrize("cls_name", ["tensorrt_llm.builder.BuildConfig", "tensorrt_llm.plugin.PluginConfig"])
def test_config_fields_trtq_sets_exist(cls_name):
    cls = _resolve(cls_name)
    fields = set(getattr(cls, "model_fields", {})) or set(inspect.signature(cls).parameters)
    used = {
        "tensorrt_llm.builder.BuildConfig": {"max_input_len", "max_seq_len", "max_batch_size", "max_beam_width",
                                             "max_num_tokens", "kv_cache_type", "strongly_typed", "input_timing_cache",
                                             "output_timing_cache", "plugin_config"},
        "tensorrt_llm.plugin.PluginConfig": {"dtype", "gemm_plugin", "gpt_attention_plugin", "context_fmha",
                                             "use_paged_context_fmha", "use_fp8_context_fmha", "multiple_profiles",
                                             "use_fused_mlp"},
    }[cls_name]  # fmt: skip
    assert used <= fields, used - fields


def test_tiny_engine_builds_and_matches_the_reference(tmp_path):
    """trtq build (fp16, tp=1) -> EngineRunner greedy == transformers greedy for the first tokens."""
    import torch
    from _tiny import make_model
    from transformers import AutoModelForCausalLM

    from builder import pipeline
    from builder.recipe.load import load_recipe
    from runtime.runners.base import Sampling
    from runtime.runners.engine import EngineRunner

    model = make_model(tmp_path / "m", "llama")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(json.dumps({
        "name": "tiny", "model": {"path": str(model)}, "quantization": {"format": "fp16"},
        "targets": ["checkpoint", "engine"], "engine": {"max_batch_size": 2, "max_input_len": 32, "max_seq_len": 64},
    }))  # fmt: skip
    recipe, recipe_dir = load_recipe(recipe_path, ())
    outcome = pipeline.build(recipe, recipe_dir, tmp_path / "root")
    assert outcome.status == "complete"
    art = tmp_path / "root" / "tiny"
    runner = EngineRunner.open(art, rank=0, world_size=1)
    prompt = [5, 17, 42, 9]
    (out,) = runner.generate([prompt], Sampling(max_new_tokens=8, end_id=2))
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float16).cuda().eval()
    ref = hf.generate(torch.tensor([prompt]).cuda(), max_new_tokens=8, do_sample=False, eos_token_id=2)[0, 4:].tolist()
    assert out.token_ids[:4] == ref[:4]
    runner.close()
