"""What trtq corrects in ModelOpt's TensorRT-LLM export, in one named place.

- `fix_config`: config.json fields ModelOpt writes wrong (rotary_base under transformers 5; each family's own
  corrections, e.g. GPT-2's learned positions).
- `mark_weight_only`: int8_wo/int4_wo follow TensorRT-LLM's quantize.py: an unquantized export with quant_algo set,
  quantized by TensorRT-LLM at load (ModelOpt 0.37 mislabels its int8 weight-only export, and neither generation
  exports per-channel int4).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.errors import StageFailed
from builder.quant.config import trtllm_exclude_modules
from builder.recipe.schema import Recipe
from runtime.formats import FORMATS


def family_of(hf_config: dict[str, Any]):
    from runtime import families

    family = families.for_hf_config(hf_config)
    if family is None:
        raise StageFailed(f"architecture {hf_config.get('architectures')} is not supported")
    return family


def fix_config(path: Path, hf_config: dict[str, Any]) -> None:
    """Correct what ModelOpt's TensorRT-LLM export gets wrong, so TensorRT-LLM computes what the model computes.

    - rotary_base: transformers 5 moved `rope_theta` into `rope_parameters`; ModelOpt's lookup misses it and writes
      nothing, and TensorRT-LLM then uses its default 10000 (SmolLM2 needs 100000, Qwen2 1e6).
    - the family's own corrections (runtime/families: `trtllm_config`), e.g. GPT-2's learned absolute positions,
      which the export marks rope_gpt_neox (TensorRT-LLM would apply RoPE instead of the table).
    """
    from runtime import families

    config = json.loads(path.read_text())
    changed = False
    rope = hf_config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf_config.get("rope_theta"))
    if (
        theta is not None
        and config.get("position_embedding_type", "").startswith("rope")
        and config.get("rotary_base") != float(theta)
    ):
        config["rotary_base"] = float(theta)
        changed = True
    family = families.for_hf_config(hf_config)
    for key, value in (family.trtllm_config if family else {}).items():
        if config.get(key) != value:
            config[key] = value
            changed = True
    if changed:
        path.write_text(json.dumps(config, indent=4) + "\n")


def mark_weight_only(out: Path, recipe: Recipe, model) -> None:
    """int8_wo/int4_wo: set quant_algo on the unquantized export, as TensorRT-LLM's quantize.py does; TensorRT-LLM
    quantizes the weights per channel when it loads the checkpoint."""
    from builder.errors import UsageError

    linears = [n for n, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D") or n.endswith("lm_head")]
    try:
        exclude = trtllm_exclude_modules(linears, recipe.quantization.exclude, family_of(model.config.to_dict()))
    except ValueError as e:
        raise UsageError(str(e)) from None
    path = out / "config.json"
    config = json.loads(path.read_text())
    quant = dict(config.get("quantization") or {})
    quant["quant_algo"] = FORMATS[recipe.quantization.format].quant_algo
    quant["exclude_modules"] = exclude
    config["quantization"] = quant
    path.write_text(json.dumps(config, indent=4) + "\n")
