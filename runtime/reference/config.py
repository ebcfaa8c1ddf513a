"""The checkpoint's config.json, read once into a plain object (what the decoder needs, nothing else)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import families
from runtime.errors import CheckpointError
from runtime.formats import ACTIVATION_QUANT_ALGOS, KV_QUANT_ALGOS, QUANT_ALGOS


@dataclass(frozen=True)
class Mapping:
    """tensorrt_llm/mapping.py: rank = pp_rank * tp_size + tp_rank."""

    tp_size: int = 1
    pp_size: int = 1

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    def tp_rank(self, rank: int) -> int:
        return rank % self.tp_size

    def pp_rank(self, rank: int) -> int:
        return rank // self.tp_size

    def layers(self, num_layers: int, pp_rank: int) -> range:
        """Global indices of the layers a pipeline stage holds (Mapping.pp_layers: even split)."""
        per = num_layers // self.pp_size
        return range(pp_rank * per, (pp_rank + 1) * per)


@dataclass(frozen=True)
class CheckpointConfig:
    path: Path
    architecture: str
    family: str  # runtime/families: the name of the family the architecture belongs to
    dtype: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    intermediate_size: int
    hidden_act: str
    norm_eps: float
    rmsnorm: bool
    position_embedding_type: str
    rotary_base: float
    rotary_pct: float
    rotary_scaling: dict[str, Any] | None
    max_position_embeddings: int
    bias: bool
    use_parallel_embedding: bool
    embedding_sharding_dim: int
    share_embedding_table: bool
    mapping: Mapping
    quant_algo: str | None
    kv_cache_quant_algo: str | None
    group_size: int
    has_zero_point: bool
    pre_quant_scale: bool
    exclude_modules: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def exact(self) -> bool:
        """Whether the checkpoint quantizes activations or the KV cache: then its rounding is chaotic and the
        reference computes it exactly (runtime/reference/quant.py), so that a split equals the unsplit checkpoint."""
        return self.quant_algo in ACTIVATION_QUANT_ALGOS or self.kv_cache_quant_algo is not None

    @property
    def padded_vocab(self) -> int:
        """TensorRT-LLM pads the vocabulary to a multiple of tp (tensorrt_llm/_utils.py pad_vocab_size)."""
        tp = self.mapping.tp_size
        return -(-self.vocab_size // tp) * tp


def read_config(ckpt_dir: str | Path) -> CheckpointConfig:
    """Parse ``ckpt_dir/config.json``; every problem is one line naming the file and the field."""
    path = Path(ckpt_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt_dir}: no config.json: not a TensorRT-LLM checkpoint directory") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable: {e}") from None

    def need(key: str):
        if raw.get(key) is None:
            raise CheckpointError(f"{path}: field '{key}' is missing")
        return raw[key]

    arch = str(need("architecture"))
    family = families.for_checkpoint(arch)
    if family is None:
        supported = sorted(a for f in families.BY_NAME.values() for a in f.trtllm_architectures)
        raise CheckpointError(
            f"{path}: architecture {arch} is not implemented by the reference runtime (supported: {', '.join(supported)})"
        )
    quant = raw.get("quantization") or {}
    algo, kv = quant.get("quant_algo"), quant.get("kv_cache_quant_algo")
    if algo not in QUANT_ALGOS:
        raise CheckpointError(
            f"{path}: quantization.quant_algo {algo} is not implemented by the reference runtime "
            f"(supported: {', '.join(str(a) for a in QUANT_ALGOS)})"
        )
    if quant.get("has_zero_point"):
        raise CheckpointError(
            f"{path}: quantization.has_zero_point is true (asymmetric int4, e.g. GPTQ): not implemented by the "
            "reference runtime (trtq's AWQ exports are symmetric)"
        )
    if kv not in KV_QUANT_ALGOS:
        raise CheckpointError(f"{path}: quantization.kv_cache_quant_algo {kv} is not implemented (INT8, FP8 or null)")
    mapping = raw.get("mapping") or {}
    tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    if int(mapping.get("world_size", tp * pp)) != tp * pp:
        raise CheckpointError(f"{path}: mapping.world_size {mapping.get('world_size')} != tp_size {tp} x pp_size {pp}")
    heads = int(need("num_attention_heads"))
    hidden = int(need("hidden_size"))
    layers = int(need("num_hidden_layers"))
    if layers % pp:
        raise CheckpointError(f"{path}: {layers} layers cannot be split into pp_size={pp} stages")
    return CheckpointConfig(
        path=Path(ckpt_dir),
        architecture=arch,
        family=family.name,
        dtype=str(raw.get("dtype", "float16")),
        vocab_size=int(need("vocab_size")),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_size=int(raw.get("head_size") or hidden // heads),
        intermediate_size=int(raw.get("intermediate_size") or 4 * hidden),
        hidden_act=str(raw.get("hidden_act", "gelu")),
        norm_eps=float(raw.get("norm_epsilon", 1e-5)),
        rmsnorm=bool(raw.get("rmsnorm", family.norm == "rms")),
        position_embedding_type=str(raw.get("position_embedding_type") or "learned_absolute"),
        # tensorrt_llm/models/modeling_utils.py PretrainedConfig: rotary_base defaults to 10000.0
        rotary_base=float(raw.get("rotary_base", 10000.0)),
        rotary_pct=float(raw.get("rotary_pct", 1.0)),
        rotary_scaling=raw.get("rotary_scaling"),
        max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
        bias=bool(raw.get("bias", False)),
        use_parallel_embedding=bool(raw.get("use_parallel_embedding", False)),
        embedding_sharding_dim=int(raw.get("embedding_sharding_dim", 0)),
        share_embedding_table=bool(raw.get("share_embedding_table", False)),
        mapping=Mapping(tp, pp),
        quant_algo=algo,
        kv_cache_quant_algo=kv,
        # QuantConfig (tensorrt_llm/models/modeling_utils.py) defaults group_size to 128
        group_size=int(quant.get("group_size") or 128),
        has_zero_point=bool(quant.get("has_zero_point", False)),
        pre_quant_scale=bool(quant.get("pre_quant_scale", False)),
        exclude_modules=tuple(quant.get("exclude_modules") or ()),
        raw=raw,
    )
