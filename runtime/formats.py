"""The quantization formats: one row per format, holding everything trtq knows about it.

The recipe's choices and validators, the layout checks, `trtq plan`, the GPU checks (build, pull, run), the model
card, the verify limits and the reference runtime all read these rows; nobody keeps a second list. Adding a format is
one row here plus its quantize and reference code. The KV-cache formats are a second, smaller table.

Pure data (no torch, no ModelOpt): `runtime` reads it to run and check artifacts, `builder` to make them. Sources of
each fact: TensorRT-LLM 1.2.x `tensorrt_llm/quantization/mode.py` (QuantAlgo), its support matrix (compute
capabilities: "Ampere (SM80, SM86) - FP32, FP16, BF16, INT8, INT4"; "Ada Lovelace (SM89) ... FP8"), ModelOpt's
`modelopt/torch/quantization/config.py` (the *_CFG constants, in ModelOpt 0.37 and 0.47) and its unified HF export
(`modelopt/torch/export/unified_export_hf.py`: which formats the PyTorch backend's checkpoint holds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

SM = tuple[int, int]
Limits = dict[str, float]  # metric -> limit: nrmse (max), top1 (min), ppl_ratio (max)


def _no_scales(out: int, inp: int, group: int, engine: bool) -> tuple[float, int]:
    return 0.0, 0


def _per_tensor_fp8(out: int, inp: int, group: int, engine: bool) -> tuple[float, int]:
    return 8.0, 2  # weights_scaling_factor + activation_scaling_factor (fp32 scalars)


def _smoothquant(out: int, inp: int, group: int, engine: bool) -> tuple[float, int]:
    return out * 4 + inp * 2 + 4.0, 3  # per-channel fp32 weight scales, 16-bit smoother, fp32 activation scale


def _awq(out: int, inp: int, group: int, engine: bool) -> tuple[float, int]:
    return out * math.ceil(inp / group) * 4 + inp * 2.0, 2  # fp32 group scales, 16-bit pre-quant scale


def _w4a8_awq(out: int, inp: int, group: int, engine: bool) -> tuple[float, int]:
    b, n = _awq(out, inp, group, engine)
    return b + 8, n + 2  # + weights_scaling_factor_2, activation_scaling_factor


def _quantized_at_load(out: int, inp: int, group: int, engine: bool) -> tuple[float, int]:
    return (out * 2.0, 1) if engine else (0.0, 0)  # per-channel 16-bit scales, added by TensorRT-LLM at load


@dataclass(frozen=True)
class FormatSpec:
    """Everything about one `quantization.format`."""

    name: str
    quant_algo: str | None  # TensorRT-LLM QuantAlgo the checkpoint's config.json carries
    summary: str  # one line for people (model card, `trtq show`)
    min_sm: SM  # lowest GPU compute capability whose TensorRT-LLM kernels run it
    # ModelOpt: the *_CFG constant per generation, as (lowest ModelOpt version, constant name) pairs, newest last.
    # Empty: the weights are not calibrated (16-bit, or quantized by TensorRT-LLM at load).
    modelopt_cfg: tuple[tuple[str, str], ...] = ()
    algorithms: tuple[str, ...] = ("max",)  # what `quantization.algorithm` may name besides auto
    calibration_samples: int = 128  # default calibration windows
    grouped: bool = False  # per-group weight scales (AWQ): the group size must divide every per-rank width
    gemm_multiple: int = 1  # per-rank GEMM widths must be multiples of this (FP8 tensor-core GEMMs: 16)
    unified_hf: bool = True  # ModelOpt's unified HF checkpoint (TensorRT-LLM's PyTorch backend) can hold it
    kv_caches: tuple[str, ...] = ("none", "fp8", "int8")  # KV-cache formats it combines with
    quantizes_activations: bool = False  # static per-tensor activation quantizers (the reference computes exactly)
    quantized_at_load: bool = False  # weights stay 16-bit in the checkpoint; TensorRT-LLM quantizes per rank at load
    dtype: str | None = None  # the checkpoint dtype the format implies (fp16/bf16)
    # trtq plan: bytes per weight element in the checkpoint and on the GPU, and the scales each linear adds
    checkpoint_bytes_per_weight: float = 2.0
    engine_bytes_per_weight: float = 2.0
    linear_scales: Callable[[int, int, int, bool], tuple[float, int]] = _no_scales
    # verify: limits against the fake-quant model (the checkpoint computes what ModelOpt simulated), against the
    # unquantized source model (the quantization error itself; nrmse over the whole vocabulary is dominated by
    # irrelevant logits, so only top-1 and perplexity gate quantized formats), and of a tp x pp split against the
    # unsplit checkpoint of the same calibration.
    verify_fake_quant: Limits = field(default_factory=dict)
    verify_source: Limits = field(default_factory=dict)
    verify_split: Limits = field(default_factory=lambda: {"nrmse": 1e-5, "top1": 0.99, "ppl_ratio": 1.0001})

    @property
    def calibrated(self) -> bool:
        """ModelOpt calibrates the weights/activations (the quantize stage runs even without a KV cache)."""
        return bool(self.modelopt_cfg)

    def modelopt_constant(self, modelopt_version: str | None) -> str | None:
        """The ModelOpt *_CFG name for the installed ModelOpt (None: not calibrated)."""
        chosen = None
        for since, name in self.modelopt_cfg:
            if modelopt_version is None or _version_key(modelopt_version) >= _version_key(since):
                chosen = name
        return chosen or (self.modelopt_cfg[0][1] if self.modelopt_cfg else None)


@dataclass(frozen=True)
class KvCacheSpec:
    """One `quantization.kv_cache` choice."""

    name: str
    quant_algo: str | None  # TensorRT-LLM kv_cache_quant_algo
    num_bits: int | tuple[int, int] | None  # ModelOpt's *[kv]_bmm_quantizer num_bits
    min_sm: SM
    unified_hf: bool  # ModelOpt's unified HF export writes it (kv_cache_quant_algo FP8 only)
    bytes_per_value: float
    # A quantized KV cache adds its own error (measured int8 KV alone vs source: nrmse 0.109, top-1 0.925, ppl
    # 0.966): verify loosens every fake-quant/source limit by this much.
    verify_extra: Limits = field(default_factory=dict)


_UNQUANTIZED = {"nrmse": 0.02, "top1": 0.98, "ppl_ratio": 1.01}

FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(
            "fp16",
            None,
            "unquantized float16",
            (8, 0),
            dtype="float16",
            verify_fake_quant=_UNQUANTIZED,
            verify_source=_UNQUANTIZED,
        ),
        FormatSpec(
            "bf16",
            None,
            "unquantized bfloat16",
            (8, 0),
            dtype="bfloat16",
            verify_fake_quant=_UNQUANTIZED,
            verify_source=_UNQUANTIZED,
        ),
        # Weight-only: TensorRT-LLM's own quantize.py exports unquantized weights and sets quant_algo; TensorRT-LLM
        # quantizes each rank's weights per output channel when it loads them (modeling_utils.py preprocess_weights).
        # ModelOpt 0.37 mislabels int8 weight-only exports as W8A8_SQ_PER_CHANNEL and cannot export per-channel int4.
        FormatSpec(
            "int8_wo",
            "W8A16",
            "int8 weights (per channel, quantized by TensorRT-LLM at load), 16-bit activations",
            (8, 0),
            unified_hf=False,
            quantized_at_load=True,
            engine_bytes_per_weight=1.0,
            linear_scales=_quantized_at_load,
            verify_fake_quant={"top1": 0.90, "ppl_ratio": 1.05},  # the "fake-quant" model is the source: 0.965 / 1.007
            verify_source={"top1": 0.90, "ppl_ratio": 1.05},
        ),
        FormatSpec(
            "int4_wo",
            "W4A16",
            "int4 weights (per channel, quantized by TensorRT-LLM at load), 16-bit activations",
            (8, 0),
            unified_hf=False,
            quantized_at_load=True,
            engine_bytes_per_weight=0.5,
            linear_scales=_quantized_at_load,
            verify_fake_quant={"top1": 0.40, "ppl_ratio": 2.20},  # per channel, no groups: measured 0.468 / 1.861
            verify_source={"top1": 0.40, "ppl_ratio": 2.20},
        ),
        FormatSpec(
            "int8_sq",
            "W8A8_SQ_PER_CHANNEL",
            "SmoothQuant W8A8: int8 weights (per channel) and activations (per tensor)",
            (8, 0),
            modelopt_cfg=(("0.33", "INT8_SMOOTHQUANT_CFG"),),
            algorithms=("smoothquant", "max"),
            unified_hf=False,
            quantizes_activations=True,
            checkpoint_bytes_per_weight=1.0,
            engine_bytes_per_weight=1.0,
            linear_scales=_smoothquant,
            # At trtq's alpha 0.8 less of the activation range moves into the weights, so per-tensor int8
            # activations sit on a coarser grid. SmolLM2, 16x128 calibration tokens: nrmse 0.105-0.143, top-1
            # 0.88-0.90 (alpha 1.0: 0.083 / 0.90); perplexity stays gated as tightly as for every format.
            verify_fake_quant={"nrmse": 0.20, "top1": 0.85, "ppl_ratio": 1.05},
            verify_source={"top1": 0.55, "ppl_ratio": 1.60},  # measured 0.665 / 1.385 (8-sample calibration)
        ),
        FormatSpec(
            "int4_awq",
            "W4A16_AWQ",
            "AWQ int4 weights (per group), 16-bit activations",
            (8, 0),
            modelopt_cfg=(("0.33", "INT4_AWQ_CFG"),),
            algorithms=("awq_lite", "awq_clip", "awq_full"),
            calibration_samples=32,  # AWQ's search is costly; TensorRT-LLM's quantize.py caps it at 32
            grouped=True,
            checkpoint_bytes_per_weight=0.5,
            engine_bytes_per_weight=0.5,
            linear_scales=_awq,
            verify_fake_quant={"nrmse": 0.10, "top1": 0.90, "ppl_ratio": 1.05},  # measured 0.010 / 0.983 / 1.002
            verify_source={"top1": 0.50, "ppl_ratio": 1.80},  # measured 0.688 / 1.046 (block 64)
        ),
        FormatSpec(
            "w4a8_awq",
            "W4A8_AWQ",
            "AWQ int4 weights (per group), fp8 activations",
            (8, 9),
            modelopt_cfg=(("0.33", "W4A8_AWQ_BETA_CFG"),),
            algorithms=("awq_lite", "awq_clip", "awq_full"),
            calibration_samples=32,
            grouped=True,
            gemm_multiple=16,
            kv_caches=("none", "fp8"),  # fp8 activations use fp8 attention
            quantizes_activations=True,
            checkpoint_bytes_per_weight=0.5,
            engine_bytes_per_weight=0.5,
            linear_scales=_w4a8_awq,
            # the per-tensor FP8 weight scale (weights_scaling_factor_2) is shared by fused q/k/v and gate/fc at
            # export, a requantization the fake-quant model never does: measured nrmse 0.139, top-1 0.890
            verify_fake_quant={"nrmse": 0.25, "top1": 0.85, "ppl_ratio": 1.08},
            verify_source={"top1": 0.45, "ppl_ratio": 2.00},  # measured 0.653 / 1.134
        ),
        FormatSpec(
            "fp8",
            "FP8",
            "fp8 (e4m3) weights and activations, per-tensor scales",
            (8, 9),
            modelopt_cfg=(("0.33", "FP8_DEFAULT_CFG"),),
            gemm_multiple=16,
            kv_caches=("none", "fp8"),
            quantizes_activations=True,
            checkpoint_bytes_per_weight=1.0,
            engine_bytes_per_weight=1.0,
            linear_scales=_per_tensor_fp8,
            # one per-tensor FP8 weight scale across fused q/k/v and gate/fc (the max), a requantization its
            # fake-quant model never does: measured nrmse 0.149, top-1 0.913, ppl ratio 1.034
            verify_fake_quant={"nrmse": 0.25, "top1": 0.85, "ppl_ratio": 1.08},
            verify_source={"top1": 0.80, "ppl_ratio": 1.15},  # measured 0.873 / 1.069
        ),
    )
}

_KV_EXTRA = {"nrmse": 0.15, "top1": 0.10, "ppl_ratio": 0.05}
KV_CACHES: dict[str, KvCacheSpec] = {
    spec.name: spec
    for spec in (
        KvCacheSpec("none", None, None, (0, 0), True, 2.0),
        KvCacheSpec("fp8", "FP8", (4, 3), (8, 9), True, 1.0, _KV_EXTRA),
        KvCacheSpec("int8", "INT8", 8, (8, 0), False, 1.0, _KV_EXTRA),
    )
}

FORMAT_NAMES = tuple(FORMATS)
KV_CACHE_NAMES = tuple(KV_CACHES)
UNQUANTIZED = tuple(name for name, spec in FORMATS.items() if spec.quant_algo is None)
QUANT_ALGOS = tuple(dict.fromkeys(spec.quant_algo for spec in FORMATS.values()))  # None first
KV_QUANT_ALGOS = tuple(spec.quant_algo for spec in KV_CACHES.values())
ACTIVATION_QUANT_ALGOS = tuple(s.quant_algo for s in FORMATS.values() if s.quantizes_activations)
AT_LOAD_QUANT_ALGOS = tuple(s.quant_algo for s in FORMATS.values() if s.quantized_at_load)


def by_quant_algo(quant_algo: str | None) -> FormatSpec:
    """The format a checkpoint's quant_algo belongs to (the first row with it: fp16 for None)."""
    for spec in FORMATS.values():
        if spec.quant_algo == quant_algo:
            return spec
    raise KeyError(quant_algo)


def needs_calibration(fmt: str, kv_cache: str) -> bool:
    """Whether the `quantize` stage runs: the format calibrates, or the KV cache needs scales."""
    return FORMATS[fmt].calibrated or KV_CACHES[kv_cache].quant_algo is not None


def verify_limits(kind: str, fmt: FormatSpec, kv: KvCacheSpec) -> Limits:
    """The limits of one verify comparison ("fake_quant", "source" or "split") for ``fmt`` with ``kv``."""
    base = {"fake_quant": fmt.verify_fake_quant, "source": fmt.verify_source, "split": fmt.verify_split}[kind]
    lim = dict(base)
    if kind != "split":
        for key, extra in kv.verify_extra.items():
            if key in lim:
                lim[key] = lim[key] - extra if key == "top1" else lim[key] + extra
    return {k: round(v, 6) for k, v in lim.items()}


def sm_problem(fmt: str, kv_cache: str, sm: SM, gpu_name: str) -> str | None:
    """Why ``fmt`` with ``kv_cache`` cannot run on a GPU of compute capability ``sm`` (None when it can)."""
    need = FORMATS[fmt].min_sm
    if sm < need:
        ok = [f for f, s in FORMATS.items() if sm >= s.min_sm and s.quant_algo is not None]
        return (
            f"quantization.format: {fmt} needs compute capability {need[0]}.{need[1]}+, but {gpu_name} is "
            f"{sm[0]}.{sm[1]}: use {', '.join(ok) if ok else 'a GPU of compute capability 8.0 or newer'}"
        )
    need_kv = KV_CACHES[kv_cache].min_sm
    if sm < need_kv:
        ok = [k for k, s in KV_CACHES.items() if sm >= s.min_sm and k in FORMATS[fmt].kv_caches]
        return (
            f"quantization.kv_cache: {kv_cache} needs compute capability {need_kv[0]}.{need_kv[1]}+, but {gpu_name} "
            f"is {sm[0]}.{sm[1]}: use kv_cache {' or '.join(ok)}"
        )
    return None


def _version_key(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
