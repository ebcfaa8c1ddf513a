"""Stage `hf` (step `export`): the unified Hugging Face checkpoint that TensorRT-LLM's PyTorch backend loads
(ModelOpt's export_hf_checkpoint of the calibrated model; builder/checkpoint/export.py)."""

from __future__ import annotations

from typing import Any

NAME = "hf"
VERB = "export"
AFTER = ("resolve", "quantize")
LIBRARIES = ("torch", "transformers", "nvidia-modelopt", "safetensors")
DELIVERABLE = True


def wanted(recipe) -> bool:
    return "hf" in recipe.targets


def reads(recipe, ctx) -> dict[str, Any]:
    q = recipe.quantization  # the same fields as the checkpoint's export, without the layout
    return {"dtype": recipe.model.dtype, "format": q.format, "kv_cache": q.kv_cache, "exclude": list(q.exclude)}


def run(ctx) -> None:
    from builder.checkpoint.export import export_hf

    export_hf(ctx.recipe, ctx.model_dir, ctx.quantize_dir, ctx.out)
