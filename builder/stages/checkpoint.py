"""Stage `checkpoint` (step `export`): the TensorRT-LLM checkpoint, config.json and one rank file per tp x pp rank.

Sliced from the quantize stage's unsharded checkpoint when there is one, else exported by ModelOpt
(builder/checkpoint/export.py).
"""

from __future__ import annotations

from typing import Any

NAME = "checkpoint"
VERB = "export"
AFTER = ("resolve", "quantize")
LIBRARIES = ("torch", "transformers", "nvidia-modelopt", "safetensors")
DELIVERABLE = True


def wanted(recipe) -> bool:
    return "checkpoint" in recipe.targets or "engine" in recipe.targets


def reads(recipe, ctx) -> dict[str, Any]:
    q = recipe.quantization  # the hf stage's reads, plus the layout
    return {
        "dtype": recipe.model.dtype,
        "format": q.format,
        "kv_cache": q.kv_cache,
        "exclude": list(q.exclude),
        "parallel": recipe.parallel.model_dump(mode="json"),
    }


def run(ctx) -> dict[str, Any]:
    from builder.checkpoint.export import export_checkpoint

    config = export_checkpoint(ctx.recipe, ctx.model_dir, ctx.quantize_dir, ctx.out)
    return {"quantization": config.get("quantization"), "dtype": config.get("dtype")}
