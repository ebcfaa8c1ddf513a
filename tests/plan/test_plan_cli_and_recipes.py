"""Every shipped recipe validates, and `trtq plan` fits each engine recipe on the GPU its header states."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.planning.plan import GPUS, estimate, fit, gpu_spec, plan_report
from builder.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*/*.yaml"))
HUB = REPO / "tests" / "fixtures" / "hub_configs"


def trtq(*args, env=None):
    full = {**os.environ, "PYTHONPATH": str(REPO), "TRTQ_HUB_CONFIGS": str(HUB), **(env or {})}
    return subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def stated_gpu(path: Path) -> str | None:
    m = re.search(r"--gpu (\S+)", path.read_text().split("\nname:")[0])
    return m.group(1) if m else None


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.name}" for p in RECIPES])
def test_recipe_validates_and_fits_its_stated_gpu(path, monkeypatch):
    text = path.read_text()
    assert text.startswith(f"# trtq build recipes/{path.parent.name}/{path.name}"), "first line: the build command"
    assert "# yaml-language-server: $schema=../recipe.schema.json" in text
    recipe, recipe_dir = load_recipe(path, ())
    if "engine" not in recipe.targets:
        return  # no engine, no GPU to fit
    gpu = stated_gpu(path)
    assert gpu, f"{path}: an engine recipe states its GPU (`trtq plan ... --gpu NAME` in the header)"
    monkeypatch.setenv("TRTQ_HUB_CONFIGS", str(HUB))
    from builder.planning.model_config import model_config

    config, _ = model_config(recipe, recipe_dir)
    report = plan_report(config, recipe, gpu)
    assert report["fits"], f"{path} does not fit {gpu}: {report['reason']}"
    assert report["sequences_at_max_seq_len"] >= 1


def test_plan_cli_detail_and_exit_codes():
    recipe = REPO / "recipes/llama-3.1-8b-instruct/fp8-tp1.yaml"
    ok = trtq("plan", recipe, "--gpu", "h100-80gb")
    assert ok.returncode == 0, ok.stderr
    assert "on H100-80GB" in ok.stdout and "fits:" in ok.stdout and "64.00 KiB per token" in ok.stdout
    too_small = trtq("plan", recipe, "--gpu", "A10G")
    assert too_small.returncode == 1
    assert "fp8 needs compute capability 8.9+" in too_small.stdout
    assert "would fit: format int4_awq at tp=1 with kv_cache int8" in too_small.stdout
    unknown = trtq("plan", recipe, "--gpu", "V100")
    assert unknown.returncode == 2 and "unknown GPU 'V100'" in unknown.stderr


def test_plan_cli_table_and_json():
    recipe = REPO / "recipes/llama-3.1-70b-instruct/int4_awq-tp2.yaml"
    table = trtq("plan", recipe)
    assert table.returncode == 0
    assert all(name in table.stdout for name in GPUS)
    out = trtq("plan", recipe, "--gpu", "A100-80GB", "--json")
    data = json.loads(out.stdout)
    assert data["fits"] is True and data["tp"] == 2 and len(data["ranks"]) == 2
    assert data["gpu"] == {"name": "A100-80GB", "memory_bytes": 81920 * 1024**2, "compute_capability": "8.0"}
    assert data["config"].endswith("Llama-3.1-70B-Instruct/config.json")


def test_plan_config_flag_and_missing_hub_config(tmp_path):
    recipe = REPO / "recipes/qwen2.5-7b-instruct/fp8-tp1.yaml"
    flag = trtq("plan", recipe, "--gpu", "L4", "--config", HUB / "Qwen/Qwen2.5-7B-Instruct", "--json",
                env={"TRTQ_HUB_CONFIGS": str(tmp_path)})  # fmt: skip
    assert json.loads(flag.stdout)["fits"] is True
    missing = trtq("plan", recipe, "--gpu", "L4", env={"TRTQ_HUB_CONFIGS": str(tmp_path), "HF_HUB_OFFLINE": "1",
                                                        "HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert missing.returncode == 2
    assert "cannot read Qwen/Qwen2.5-7B-Instruct's config.json" in missing.stderr and "--config" in missing.stderr


def test_kv_cache_arithmetic():
    config = json.loads((HUB / "meta-llama/Llama-3.1-8B-Instruct/config.json").read_text())
    # 2 (K,V) x 32 layers x 8 KV heads x 128 dims x 2 bytes = 128 KiB per token; fp8 halves it; tp=2 halves it again
    assert estimate(config, "fp16", "none", 1, 1).kv_bytes_per_token == 128 * 1024
    assert estimate(config, "fp8", "fp8", 1, 1).kv_bytes_per_token == 64 * 1024
    assert estimate(config, "fp8", "fp8", 2, 1).kv_bytes_per_token == 32 * 1024
    # pp splits the layers; tp beyond the 8 KV heads replicates them
    assert estimate(config, "fp16", "none", 1, 2).kv_bytes_per_token == 64 * 1024
    assert estimate(config, "fp16", "none", 16, 1).kv_bytes_per_token == 16 * 1024
    _, mem, _ = gpu_spec("H100-80GB")
    est = estimate(config, "fp16", "none", 1, 1)
    f = fit(est, mem)
    assert f.kv_tokens == int((mem - est.weight_bytes[0] - est.headroom_bytes) * 0.9) // (128 * 1024)
