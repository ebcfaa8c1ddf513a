"""Fake TensorRT-LLM checkpoints and artifacts for the contract tests (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

TINY_LLAMA = {
    "architecture": "LlamaForCausalLM",
    "dtype": "float16",
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 64,
    "head_size": 16,
    "intermediate_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
}


def fake_checkpoint(dest: Path, tp: int = 1, pp: int = 1, quant_algo: str | None = None, **extra) -> Path:
    """A TensorRT-LLM checkpoint directory shaped like trtq's export (config.json + rank{N}.safetensors stubs)."""
    dest.mkdir(parents=True, exist_ok=True)
    config = {**TINY_LLAMA, **extra, "mapping": {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}}
    config["quantization"] = {"quant_algo": quant_algo, "kv_cache_quant_algo": None}
    (dest / "config.json").write_text(json.dumps(config))
    for r in range(tp * pp):
        (dest / f"rank{r}.safetensors").write_bytes(b"\0" * 128)
    (dest / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    return dest


def write_manifest(artifact: Path, tp: int, pp: int, name: str = "tiny") -> None:
    from runtime.manifest import FILENAME, Manifest

    m = Manifest(
        name=name,
        status="complete",
        created="2026-11-22T00:00:00+00:00",
        trtq_version="0.1.0",
        recipe={},
        parallel={"tp": tp, "pp": pp, "world_size": tp * pp},
    )
    artifact.mkdir(parents=True, exist_ok=True)
    (artifact / FILENAME).write_text(json.dumps(m.model_dump(mode="json")))
