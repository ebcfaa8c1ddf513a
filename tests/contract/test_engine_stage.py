"""The engine stage against the strict stand-in: calls conform to 1.2.1, ranks map to files, preflight fails in one line."""

from __future__ import annotations

import json
import shlex

import pytest
from contract.fakes import fake_checkpoint
from contract.standin import load_record

from builder.errors import StageFailed, UsageError
from builder.recipe.schema import Recipe


def recipe(**over) -> Recipe:
    data = {"name": "tiny", "model": {"path": "/nonexistent"}, "parallel": {"tp": 2, "pp": 1}}
    for k, v in over.items():
        data[k] = v
    return Recipe.model_validate(data)


def test_builds_one_engine_per_rank_with_conforming_calls(standin, tmp_path):
    from builder.stages.build import build_engines

    ckpt = fake_checkpoint(tmp_path / "checkpoint", tp=2, pp=2)
    out = tmp_path / "out"
    r = recipe(parallel={"tp": 2, "pp": 2}, engine={"max_batch_size": 8, "max_seq_len": 512, "max_input_len": 256})
    result = build_engines(r, ckpt, out)
    assert sorted(p.name for p in out.glob("rank*.engine")) == [f"rank{i}.engine" for i in range(4)]
    for i in range(4):  # rank N's engine was built from rank N's shard
        assert (out / f"rank{i}.engine").read_bytes().startswith(b"standin-engine rank %d" % i)
    (bc,) = standin.called("tensorrt_llm.builder.BuildConfig")
    assert bc["max_batch_size"] == 8 and bc["max_seq_len"] == 512 and bc["max_input_len"] == 256
    assert bc["kv_cache_type"].value == "paged" and bc["strongly_typed"] is True
    assert bc["output_timing_cache"] == str(out / "timing.cache") and not (out / "timing.cache").exists()
    (pc,) = standin.called("tensorrt_llm.plugin.PluginConfig")
    assert pc["dtype"] == "float16" and pc["use_fused_mlp"] is True
    assert standin.called("tensorrt_llm.plugin.PluginConfig.validate") == [{}]  # as trtllm-build does
    (pb,) = standin.called("tensorrt_llm.commands.build.parallel_build")
    assert pb["ckpt_dir"] == str(ckpt) and pb["output_dir"] == str(out) and pb["workers"] == 1
    assert (out / "generation_config.json").is_file()  # runners find the EOS id next to the engines
    assert result["hardware"] == {
        "gpu": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "gpu_memory_bytes": 81559 * 1024 * 1024,
        "tensorrt_llm": "1.2.1",
        "tensorrt": "10.14.1",
    }
    assert result["ranks"] == 4


def test_equivalent_command_uses_only_recorded_trtllm_build_flags(tmp_path):
    from builder.stages.build import trtllm_build_args

    rec = load_record()["symbols"]
    flags = set()
    for f in rec["trtllm-build CLI"]["flags"]:
        flags.update(x for x in f.split("/") if x.startswith("--"))
    flags.update(f"--{p['name']}" for p in rec["tensorrt_llm.plugin.PluginConfig"]["params"])
    r = recipe(engine={"timing_cache": "/cache/model.cache", "workers": 2})
    args = trtllm_build_args(r.engine, tmp_path / "ckpt", tmp_path / "engine")
    used = [a for a in args if a.startswith("--")]
    assert set(used) <= flags, set(used) - flags
    assert args[args.index("--kv_cache_type") + 1] in rec["trtllm-build CLI"]["flags"]["--kv_cache_type"]["choices"]
    assert args[args.index("--context_fmha") + 1] in ("enable", "disable")
    assert "--input_timing_cache" in args and "--strongly_typed" not in args  # not a flag: always on


def test_quantized_checkpoint_turns_fused_mlp_off_like_trtllm_build(standin, tmp_path):
    from builder.stages.build import build_engines

    ckpt = fake_checkpoint(tmp_path / "ckpt", tp=1, quant_algo="W4A16_AWQ")
    build_engines(recipe(parallel={"tp": 1}, quantization={"format": "int4_awq"}), ckpt, tmp_path / "out")
    (pc,) = standin.called("tensorrt_llm.plugin.PluginConfig")
    assert pc["use_fused_mlp"] is False


def test_plugin_disable_maps_to_none_and_profiles(standin, tmp_path):
    from builder.stages.build import build_engines

    ckpt = fake_checkpoint(tmp_path / "ckpt", tp=1)
    plugins = {"gemm": "disable", "gpt_attention": "float16", "context_fmha": False, "multiple_profiles": True}
    build_engines(recipe(parallel={"tp": 1}, engine={"plugins": plugins}), ckpt, tmp_path / "out")
    (pc,) = standin.called("tensorrt_llm.plugin.PluginConfig")
    assert pc["gemm_plugin"] is None and pc["gpt_attention_plugin"] == "float16"
    assert pc["context_fmha"] is False and pc["multiple_profiles"] is True


def test_engine_dir_config_keeps_the_build_limits(standin, tmp_path):
    from builder.stages.build import build_engines

    ckpt = fake_checkpoint(tmp_path / "ckpt", tp=1)
    build_engines(recipe(parallel={"tp": 1}, engine={"max_seq_len": 300, "max_input_len": 200}), ckpt, tmp_path / "o")
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["build_config"]["max_seq_len"] == 300 and config["build_config"]["kv_cache_type"] == "PAGED"
    assert config["pretrained_config"]["mapping"]["world_size"] == 1


# ---------------------------------------------------------------------------------------------- preflight
def test_preflight_refuses_a_release_without_the_trt_backend(standin, tmp_path):
    from builder.stages.build import preflight

    standin_mod = __import__("tensorrt_llm")
    standin_mod.__version__ = "1.3.0rc21"
    with pytest.raises(StageFailed, match="no TensorRT engine backend"):
        preflight(recipe(parallel={"tp": 1}), fake_checkpoint(tmp_path / "c"))
    standin_mod.__version__ = "1.3.0rc20"
    assert preflight(recipe(parallel={"tp": 1}), fake_checkpoint(tmp_path / "c")).compute_capability == "9.0"


def test_preflight_needs_a_gpu(standin, fake_gpu, tmp_path):
    from builder.stages.build import preflight

    fake_gpu(None)
    with pytest.raises(StageFailed, match="no GPU"):
        preflight(recipe(parallel={"tp": 1}), fake_checkpoint(tmp_path / "c"))


def test_preflight_checks_the_format_against_compute_capability(standin, fake_gpu, tmp_path):
    from builder.stages.build import preflight

    fake_gpu("NVIDIA A100-SXM4-80GB", "8.0", 81920)
    with pytest.raises(UsageError, match=r"fp8 needs compute capability 8.9\+.*8.0: use"):
        preflight(recipe(parallel={"tp": 1}, quantization={"format": "fp8"}), fake_checkpoint(tmp_path / "c"))
    with pytest.raises(UsageError, match="kv_cache: fp8"):
        preflight(recipe(parallel={"tp": 1}, quantization={"format": "int4_awq", "kv_cache": "fp8"}),
                  fake_checkpoint(tmp_path / "c"))  # fmt: skip


def test_preflight_checks_memory_for_the_largest_rank(standin, fake_gpu, tmp_path):
    from builder.stages.build import preflight

    fake_gpu("tiny GPU", "9.0", 1024)  # 1 GiB: less than the fixed headroom
    with pytest.raises(UsageError, match="largest rank needs .* more than the GPU's 1.0 GiB"):
        preflight(recipe(parallel={"tp": 1}), fake_checkpoint(tmp_path / "c"))


def test_without_tensorrt_llm_the_error_names_the_container_command(tmp_path, monkeypatch):
    import importlib.util

    from builder.stages.build import build_engines

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tensorrt_llm" else real(n, *a))
    ckpt = fake_checkpoint(tmp_path / "art" / "checkpoint")
    with pytest.raises(StageFailed) as e:
        build_engines(recipe(parallel={"tp": 1}), ckpt, tmp_path / "out", recipe_file="recipes/x.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert "nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in msg and "trtq build recipes/x.yaml" in msg
    hand = msg.split("by hand there: ")[1].split("; or stop")[0]
    assert shlex.split(hand)[:3] == ["trtllm-build", "--checkpoint_dir", str(ckpt)]


# ---------------------------------------------------------------------------------------------- fingerprint
def test_compute_capability_feeds_the_engine_fingerprint(fake_gpu, tmp_path):
    from builder import pipeline
    from builder.workspace import Workspace

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    r = recipe(parallel={"tp": 1}, targets=["checkpoint", "engine"], model={"path": str(model)})
    ws = Workspace(tmp_path, r.name)

    def engine_fp():
        steps = pipeline.plan(r, tmp_path, ws).by_name()
        return steps["engine"].fingerprint, steps["engine"].inputs["reads"]

    fake_gpu("NVIDIA H100", "9.0")
    fp_h100, reads = engine_fp()
    assert reads["gpu_compute_capability"] == "9.0"
    fake_gpu("NVIDIA L40S", "8.9")
    fp_l40s, _ = engine_fp()
    fake_gpu("NVIDIA H200", "9.0", 143771)
    assert fp_l40s != fp_h100 and engine_fp()[0] == fp_h100  # same SM: the engines are reused


def test_trtllm_version_parsing():
    from builder.stages.build import check_trtllm_version

    for ok in ("1.2.1", "1.2.0rc4", "1.3.0rc20", "1.0.0", "1.2.1.post1"):
        check_trtllm_version(ok)
    for bad in ("1.3.0rc21", "1.3.0", "2.0.0"):
        with pytest.raises(StageFailed):
            check_trtllm_version(bad)


def test_workers_are_capped_by_ranks_and_gpus(standin, fake_gpu, tmp_path):
    from builder.stages.build import build_engines

    ckpt = fake_checkpoint(tmp_path / "ckpt", tp=4)
    build_engines(recipe(parallel={"tp": 4}, engine={"workers": 8}), ckpt, tmp_path / "out")
    assert standin.called("tensorrt_llm.commands.build.parallel_build")[0]["workers"] == 1  # one (fake) GPU
