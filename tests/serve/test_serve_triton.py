"""`trtq export-triton`: every config.pbtxt parses as Triton's ModelConfig (tritonclient's model_config_pb2), carries
the artifact's engine limits and paths, and the ensemble wires preprocessing -> tensorrt_llm -> postprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import cli

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (the dev extra)")


def engine_artifact(tmp_path: Path, world: int = 1) -> Path:
    art = tmp_path / "art"
    (art / "engine").mkdir(parents=True)
    (art / "checkpoint").mkdir()
    (art / "checkpoint" / "tokenizer.json").write_text("{}")
    (art / "checkpoint" / "config.json").write_text("{}")
    cfg = {
        "build_config": {"max_batch_size": 32, "max_beam_width": 2, "plugin_config": {"use_paged_context_fmha": True}},
        "pretrained_config": {"mapping": {"world_size": world}},
    }
    (art / "engine" / "config.json").write_text(json.dumps(cfg))
    return art


def export(*args) -> dict:
    r = CliRunner().invoke(cli, ["export-triton", *map(str, args), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_every_config_parses_and_holds_the_artifacts_values(tmp_path):
    from runtime.serve.triton import check_repo

    art = engine_artifact(tmp_path, world=2)
    out = tmp_path / "repo"
    res = export(art, out, "--engine-dir", "/models/engine", "--max-queue-size", "64")
    cfgs = check_repo(out)
    assert sorted(cfgs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]
    trt = cfgs["tensorrt_llm"]
    assert trt.backend == "tensorrtllm" and trt.max_batch_size == 32 and trt.model_transaction_policy.decoupled
    assert trt.dynamic_batching.default_queue_policy.max_queue_size == 64
    params = {k: v.string_value for k, v in trt.parameters.items()}
    assert params["gpt_model_path"] == "/models/engine" and params["gpt_model_type"] == "inflight_fused_batching"
    assert params["max_beam_width"] == "2" and params["enable_kv_cache_reuse"] == "true"
    assert params["max_tokens_in_paged_kv_cache"] == "${max_tokens_in_paged_kv_cache}"  # unset, as fill_template
    pre = {k: v.string_value for k, v in cfgs["preprocessing"].parameters.items()}
    assert pre["tokenizer_dir"] == str((art / "checkpoint").resolve())
    assert res["world_size"] == 2 and "--world_size 2" in res["launch"]
    assert res["missing"] == ["preprocessing/1/model.py", "postprocessing/1/model.py"]
    assert (out / "ensemble" / "1").is_dir() and (out / "tensorrt_llm" / "1").is_dir()


def test_the_ensemble_connects_the_models(tmp_path):
    from runtime.serve.triton import check_repo

    export(engine_artifact(tmp_path), tmp_path / "repo")
    cfgs = check_repo(tmp_path / "repo")
    steps = cfgs["ensemble"].ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["preprocessing", "tensorrt_llm", "postprocessing"]
    produced = {"text_input", "max_tokens"} | {i.name for i in cfgs["ensemble"].input}
    for s in steps:
        model = cfgs[s.model_name]
        assert set(s.input_map) <= {i.name for i in model.input}, s.model_name
        assert set(s.output_map) <= {o.name for o in model.output}, s.model_name
        assert set(s.input_map.values()) <= produced, s.model_name  # every input comes from an earlier step
        produced |= set(s.output_map.values())
    assert {o.name for o in cfgs["ensemble"].output} <= produced


def test_templates_dir_supplies_the_python_models(tmp_path):
    tpl = tmp_path / "tpl"
    for m in ("preprocessing", "postprocessing"):
        (tpl / m / "1").mkdir(parents=True)
        (tpl / m / "1" / "model.py").write_text(f"# {m}\n")
    res = export(engine_artifact(tmp_path), tmp_path / "repo", "--templates", tpl)
    assert res["missing"] == [] and (tmp_path / "repo" / "postprocessing" / "1" / "model.py").read_text() == (
        "# postprocessing\n"
    )


def test_a_placeholder_left_in_a_number_field_fails_the_check(tmp_path):
    from runtime.errors import CheckpointError
    from runtime.serve.triton import fill, parse, render

    text = fill(render("tensorrt_llm"), {"triton_backend": "tensorrtllm", "decoupled_mode": "true"})
    with pytest.raises(CheckpointError, match="not a valid Triton model config"):
        parse(text, "tensorrt_llm/config.pbtxt")


def test_no_engines_and_an_occupied_out_are_usage_errors(tmp_path):
    from tests._cli import run_trtq

    art = engine_artifact(tmp_path)
    p = run_trtq("export-triton", tmp_path, tmp_path / "repo")
    assert p.returncode == 2 and "no engines" in p.stderr and "Traceback" not in p.stderr
    assert run_trtq("export-triton", art, tmp_path / "repo").returncode == 0
    again = run_trtq("export-triton", art, tmp_path / "repo")
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_trtq("export-triton", art, tmp_path / "repo", "--force").returncode == 0
