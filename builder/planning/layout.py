"""Check, before any heavy work, that the model can be split tp x pp (and quantized) the way the recipe asks.

ModelOpt does not check: a tp that does not divide the attention heads exports "successfully" with heads cut in half
across ranks, and a pp that does not divide the layers fails deep inside the export with a bare AssertionError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.errors import LayoutError
from runtime.formats import FORMATS


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide how a decoder can be split, read from an HF config.json."""

    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        cfg = dict(config.get("text_config") or {}, **{k: v for k, v in config.items() if k != "text_config"})

        def first(*keys, default=None):
            for k in keys:
                if cfg.get(k) is not None:
                    return cfg[k]
            if default is None:
                raise LayoutError(f"model config has none of {', '.join(keys)}: cannot plan the layout")
            return default

        hidden = int(first("hidden_size", "n_embd", "d_model"))
        heads = int(first("num_attention_heads", "n_head"))
        return cls(
            architecture=(cfg.get("architectures") or ["?"])[0],
            hidden_size=hidden,
            num_layers=int(first("num_hidden_layers", "n_layer")),
            num_heads=heads,
            num_kv_heads=int(first("num_key_value_heads", "n_head_kv", "num_attention_heads", "n_head")),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(first("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
            vocab_size=int(first("vocab_size")),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


def check_family(config: dict[str, Any]) -> None:
    """Refuse, before any heavy work, a model whose family trtq does not know (runtime/families)."""
    from runtime import families

    if families.for_hf_config(config) is None:
        archs = config.get("architectures") or ["(none: config.json has no architectures)"]
        raise LayoutError(
            f"model: architecture {archs[0]} is not supported by trtq's export and reference runtime; supported: "
            + ", ".join(families.supported_hf_architectures())
        )


def tp_problems(shape: ModelShape, tp: int) -> list[str]:
    """Why ``tp`` cannot split this model (empty when it can)."""
    out = []
    if shape.num_heads % tp:
        out.append(f"{shape.num_heads} attention heads are not divisible by tp={tp}")
    kv = shape.num_kv_heads
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        out.append(f"{kv} KV heads can neither be split nor evenly replicated across tp={tp}")
    if shape.intermediate_size % tp:
        out.append(f"intermediate size {shape.intermediate_size} is not divisible by tp={tp}")
    return out


def valid_tp(shape: ModelShape, limit: int = 64) -> list[int]:
    return [t for t in range(1, min(limit, shape.num_heads) + 1) if not tp_problems(shape, t)]


def valid_pp(shape: ModelShape) -> list[int]:
    return [p for p in range(1, shape.num_layers + 1) if shape.num_layers % p == 0]


def check_layout(shape: ModelShape, tp: int, pp: int) -> None:
    """Raise LayoutError naming the valid tp/pp values when the split cannot work."""
    problems = tp_problems(shape, tp)
    if problems:
        raise LayoutError(
            f"parallel.tp: {tp} does not fit {shape.architecture}: {'; '.join(problems)}. "
            f"Valid tp values: {', '.join(map(str, valid_tp(shape)))}"
        )
    if shape.num_layers % pp:
        raise LayoutError(
            f"parallel.pp: {shape.num_layers} layers cannot be split evenly into pp={pp} stages. "
            f"Valid pp values: {', '.join(map(str, valid_pp(shape)))}"
        )


def quantized_in_widths(shape: ModelShape, tp: int) -> dict[str, int]:
    """Per-rank input widths of the quantized linears (the dimension AWQ groups and FP8 GEMMs run along)."""
    return {
        "hidden size (qkv, mlp inputs)": shape.hidden_size,
        "attention output per rank": shape.num_heads * shape.head_dim // tp,
        "mlp intermediate per rank": shape.intermediate_size // tp,
    }


def awq_block_size(shape: ModelShape, recipe, log_choice: bool = False) -> int:
    """The AWQ group size: the recipe's, or the largest of 128/64/32 that divides every per-rank width."""
    import logging

    tp = recipe.parallel.tp
    widths = quantized_in_widths(shape, tp)
    fits = [g for g in (128, 64, 32) if all(w % g == 0 for w in widths.values())]
    requested = recipe.quantization.awq_block_size
    if requested != "auto":
        bad = {k: w for k, w in widths.items() if w % requested}
        if bad:
            raise LayoutError(
                f"quantization.awq_block_size: {requested} does not divide "
                + ", ".join(f"{k} {w}" for k, w in bad.items())
                + f" at tp={tp}. Valid sizes: {', '.join(map(str, fits)) or 'none (change tp)'}"
            )
        return int(requested)
    if not fits:
        raise LayoutError(
            "quantization.awq_block_size: none of 128, 64, 32 divides "
            + ", ".join(f"{k} {w}" for k, w in widths.items())
            + f" at tp={tp}: use another tp or a format without groups (int8_sq, fp8)"
        )
    if fits[0] != 128 and log_choice:
        worst = next(f"{k} {w}" for k, w in widths.items() if w % 128)
        logging.getLogger("trtq.quantize").info("AWQ group size %d: %s is not divisible by 128", fits[0], worst)
    return fits[0]


def check_quant_layout(shape: ModelShape, recipe) -> None:
    """Format-specific layout rules (the format table's), checked before calibration."""
    fmt = recipe.quantization.format
    spec = FORMATS[fmt]
    if spec.grouped:
        awq_block_size(shape, recipe)
    if spec.gemm_multiple > 1:
        # e.g. FP8 GEMMs need the reduction dimension to be a multiple of 16 (cuBLASLt / TensorRT-LLM fp8 kernels)
        m = spec.gemm_multiple
        bad = {k: w for k, w in quantized_in_widths(shape, recipe.parallel.tp).items() if w % m}
        if bad:
            raise LayoutError(
                f"quantization.format: {fmt} needs widths divisible by {m}, but "
                + ", ".join(f"{k} is {w}" for k, w in bad.items())
                + f" at tp={recipe.parallel.tp}"
            )
