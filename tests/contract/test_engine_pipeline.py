"""The whole path on a tiny model: trtq's export -> engine stage (stand-in TensorRT-LLM) -> EngineRunner per rank.

And, without TensorRT-LLM: the build stops after the checkpoint with the container command (exit 1), while
`--until export` succeeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("modelopt", reason="needs nvidia-modelopt to export the checkpoint")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny import make_model

    return make_model(tmp_path_factory.mktemp("m") / "tiny_llama", "llama")


def write_recipe(path: Path, model: Path, **extra) -> Path:
    body = {
        "name": "tiny-eng",
        "model": {"path": str(model)},
        "quantization": {"format": "fp16"},
        "parallel": {"tp": 2, "pp": 1},
        "targets": ["checkpoint", "engine"],
        "engine": {"max_batch_size": 4, "max_input_len": 64, "max_seq_len": 128},
        **extra,
    }
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def test_pipeline_builds_engines_and_every_rank_runs(standin, tiny, tmp_path):
    from builder import pipeline
    from builder.recipe.load import load_recipe
    from runtime.manifest import read_manifest
    from runtime.runners.base import Sampling
    from runtime.runners.engine import EngineRunner

    recipe, recipe_dir = load_recipe(write_recipe(tmp_path / "r.yaml", tiny), ())
    outcome = pipeline.build(recipe, recipe_dir, tmp_path / "root")
    art = tmp_path / "root" / "tiny-eng"
    assert outcome.status == "complete" and "engine" in outcome.ran
    assert sorted(p.name for p in (art / "engine").glob("rank*.engine")) == ["rank0.engine", "rank1.engine"]
    stamp = json.loads((art / "engine" / ".stage.json").read_text())
    assert stamp["result"]["trtllm_build"].startswith("trtllm-build --checkpoint_dir ")
    assert stamp["inputs"]["reads"]["gpu_compute_capability"] == "9.0"
    m = read_manifest(art)
    assert m.hardware["compute_capability"] == "9.0" and m.hardware["tensorrt_llm"] == "1.2.1"
    assert {"engine/rank0.engine", "engine/rank1.engine", "engine/config.json"} <= {f.path for f in m.files}

    eos = json.loads((tiny / "config.json").read_text())["eos_token_id"]
    outputs = {}
    for rank in (0, 1):
        standin.rank, standin.world_size = rank, 2
        runner = EngineRunner.open(art, rank=rank, world_size=2)
        outputs[rank] = runner.generate([[5, 6, 7]], Sampling(max_new_tokens=4, end_id=eos))
    assert outputs[1] == [] and len(outputs[0]) == 1
    assert outputs[0][0].token_ids == standin.continue_([5, 6, 7], 4, eos)[0]

    standin.calls.clear()  # unchanged recipe and GPU: nothing is rebuilt
    again = pipeline.build(recipe, recipe_dir, tmp_path / "root")
    assert again.ran == [] and standin.called("tensorrt_llm.commands.build.parallel_build") == []


def test_without_tensorrt_llm_stops_with_the_container_command(tiny, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny, parallel={"tp": 1, "pp": 1})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "builder.cli", "build", str(recipe), "--root", str(tmp_path / "root")]
    ok = subprocess.run([*cmd, "--until", "export"], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "root" / "tiny-eng" / "checkpoint" / "rank0.safetensors").is_file()
    failed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, failed.stderr
    assert "nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in errors[0] and "--until export" in errors[0]
    assert f"trtllm-build --checkpoint_dir {tmp_path / 'root' / 'tiny-eng' / 'checkpoint'}" in errors[0]


def test_verify_prompts_run_on_the_engines_during_the_build(standin, tiny, tmp_path):
    """verify.prompts with an engine target: the gate opens the engine runner while the manifest does not exist yet
    (the pipeline drops it before the stages run and writes it last), reading the layout from engine/config.json."""
    from builder import pipeline
    from builder.errors import StageFailed
    from builder.recipe.load import load_recipe
    from runtime.manifest import read_manifest

    prompts = [{"prompt": "The capital of France is", "regex": ".", "max_tokens": 4, "chat": False}]
    body = {"parallel": {"tp": 1, "pp": 1}, "verify": {"reference": False, "prompts": prompts}}
    recipe, recipe_dir = load_recipe(write_recipe(tmp_path / "r.yaml", tiny, **body), ())
    outcome = pipeline.build(recipe, recipe_dir, tmp_path / "root")
    art = tmp_path / "root" / "tiny-eng"
    assert outcome.status == "complete" and {"engine", "verify"} <= set(outcome.ran)
    ran = json.loads((art / "verify" / "prompts.json").read_text())
    assert ran["backend"] == "engine" and ran["passed"] and ran["results"][0]["output"]
    (opened,) = standin.called("tensorrt_llm.runtime.ModelRunnerCpp.from_dir")
    assert opened["engine_dir"] == str(art / "engine") and opened["rank"] == 0
    (gen,) = standin.called("tensorrt_llm.runtime.ModelRunnerCpp.generate")
    assert gen["max_new_tokens"] == 4
    assert read_manifest(art).status == "complete"

    # the gate really judges the engines' output: an expectation they cannot meet fails the build
    prompts[0]["expect"] = "no toy model says this"
    recipe, recipe_dir = load_recipe(write_recipe(tmp_path / "r2.yaml", tiny, **body), ())
    with pytest.raises(StageFailed, match="does not contain 'no toy model says this'"):
        pipeline.build(recipe, recipe_dir, tmp_path / "root")
