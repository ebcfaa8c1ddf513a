"""The model families trtq knows: one module per family, one registration line below.

A `Family` holds everything trtq knows about a family across the stages, as data: the Hugging Face architectures it
covers, what ModelOpt's TensorRT-LLM export calls its decoder and writes as the checkpoint's architecture, how its
linears are named and fused into TensorRT-LLM modules, whether slicing the unsharded checkpoint reproduces ModelOpt's
own tp x pp export, what the reference runtime runs, and the per-layer tensors `trtq plan` counts. Everything that
varies by family derives from these rows (resolve's support check, the layout check, the weight-only exclusions,
resharding, plan, the export's config fixes, the reference runtime). Adding a family: write its module (a `Family`
and, where the generic decoder does not fit, its reference layer), then add it to `_FAMILIES`.

Pure data, importable without torch: `runtime` runs checkpoints with it, `builder` makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COLUMN, ROW = "column", "row"


@dataclass(frozen=True)
class Family:
    name: str
    hf_architectures: tuple[str, ...]  # config.json `architectures[0]` values of the HF models it covers
    trtllm_architectures: tuple[str, ...]  # TensorRT-LLM checkpoint `architecture` values (MODEL_MAP keys)
    modelopt_decoder: str  # ModelOpt's decoder type (modelopt.torch.export.get_model_type; `decoder` in config.json)
    # HF linear name suffix -> (TensorRT-LLM module it is fused into, column/row parallel); q/k/v share one module
    linears: dict[str, tuple[str, str]]
    # the reference runtime: normalization ("rms" | "layer"), positions ("rope" | "learned"), gated MLP
    norm: str = "rms"
    positions: str = "rope"
    gated_mlp: bool = True
    # per-layer biases the checkpoint holds (trtq plan): on qkv only (Qwen2), on every linear and norm (GPT-2)
    qkv_bias: bool = False
    all_biases: bool = False
    # slicing quantize/trtllm into tp x pp gives ModelOpt's own export byte for byte (tests/unit/test_reshard.py)
    reshard_exact: bool = True
    # fields trtq writes into the exported checkpoint's config.json when ModelOpt gets them wrong
    trtllm_config: dict[str, Any] = field(default_factory=dict)
    # the reference runtime's decoder layer for this family: a callable with runtime.reference.model.Layer's
    # signature (cfg, par, tensors, index, shard, weight_only_tp), defined in the family's module with its torch
    # imports inside; None: the generic pre-norm attention + MLP layer
    reference_layer: Callable[..., Any] | None = None

    def trtllm_module(self, hf_linear: str) -> tuple[str, str] | None:
        """The TensorRT-LLM module (and its parallelism) an HF linear (full or partial name) belongs to."""
        return next((v for suffix, v in self.linears.items() if hf_linear.endswith(suffix)), None)


from runtime.families import gpt2, llama  # noqa: E402  (the family modules import Family from here)

_FAMILIES: tuple[Family, ...] = (llama.LLAMA, llama.MISTRAL, llama.QWEN2, gpt2.GPT2)

BY_NAME = {f.name: f for f in _FAMILIES}
_BY_HF = {arch: f for f in _FAMILIES for arch in f.hf_architectures}
_BY_TRTLLM = {arch: f for f in _FAMILIES for arch in f.trtllm_architectures}


def supported_hf_architectures() -> list[str]:
    return sorted(_BY_HF)


def for_hf_config(config: dict[str, Any]) -> Family | None:
    """The family of an HF model (its config.json), or None when trtq does not support it."""
    archs = config.get("architectures") or []
    return _BY_HF.get(str(archs[0])) if archs else None


def for_checkpoint(architecture: str) -> Family | None:
    """The family of a TensorRT-LLM checkpoint's `architecture`."""
    return _BY_TRTLLM.get(architecture)


def for_modelopt_decoder(decoder: str) -> list[Family]:
    return [f for f in _FAMILIES if f.modelopt_decoder == decoder]
