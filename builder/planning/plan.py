"""`trtq plan`: will this recipe fit on that GPU? Pure arithmetic from the model config and the format.

Per rank (tp x pp), it predicts:
- the TensorRT-LLM checkpoint shard size (what `export` writes: weights, quantization scales, safetensors header),
- the engine's weight bytes on the GPU (the same, except weight-only formats, whose checkpoints hold 16-bit weights
  that TensorRT-LLM quantizes at load),
- the KV-cache bytes per token, and how many tokens of KV cache the GPU has room for after weights and headroom.

Layout follows what ModelOpt's `export_tensorrt_llm_checkpoint` writes (measured, tests/plan): fused qkv, column-split
qkv/fc/gate and row-split dense/proj across tp; the vocabulary (and GPT-2's position) embedding split by rows across
tp on the first pp stage;
lm_head split the same way on the last pp stage (also for tied embeddings); norms and row-parallel biases whole on each
rank. Excluded modules (lm_head) stay 16-bit.

Headroom (documented estimate, not measured on GPUs): 2 GiB for the CUDA context, cuBLAS/TensorRT workspace and NCCL
buffers, plus activations of one max_num_tokens step (max_num_tokens x (3 x hidden + 2 x intermediate/tp) x 2 bytes)
and fp32 logits for max_batch_size rows. TensorRT-LLM then gives the KV cache 90% of what is left
(kv_cache_free_gpu_memory_fraction's default).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from builder.planning.layout import ModelShape, tp_problems, valid_tp
from runtime import families
from runtime.families import Family
from runtime.formats import FORMATS, KV_CACHES, sm_problem
from runtime.gpu import cc_key

GIB = 1024**3
FIXED_HEADROOM = 2 * GIB
KV_FRACTION = 0.9
HEADER_BYTES_PER_TENSOR = 110  # safetensors JSON header entry (name, dtype, shape, offsets), measured on exports
AWQ_GROUP = 128

# name -> (memory.total as nvidia-smi reports it, MiB; compute capability)
GPUS: dict[str, tuple[int, str]] = {
    "A10G": (23028, "8.6"),
    "L4": (23034, "8.9"),
    "RTX-4090": (24564, "8.9"),
    "A100-40GB": (40960, "8.0"),
    "L40S": (46068, "8.9"),
    "A100-80GB": (81920, "8.0"),
    "H100-80GB": (81559, "9.0"),
    "H200": (143771, "9.0"),
    "B200": (183359, "10.0"),
}
_ALIASES = {"4090": "RTX-4090", "RTX4090": "RTX-4090", "H100": "H100-80GB", "A100": "A100-80GB", "H200-141GB": "H200"}


def gpu_spec(name: str) -> tuple[str, int, str]:
    """(canonical name, memory bytes, compute capability) for a GPU name from the table (case-insensitive)."""
    key = name.strip().upper().replace(" ", "-")
    table = {k.upper(): k for k in GPUS}
    canon = table.get(key) or _ALIASES.get(key) or _ALIASES.get(key.replace("-", ""))
    if canon is None:
        raise KeyError(name)
    mib, sm = GPUS[canon]
    return canon, mib * 1024 * 1024, sm


@dataclass(frozen=True)
class Limits:
    """The engine limits a plan needs (an EngineSpec has them all)."""

    max_batch_size: int = 64
    max_seq_len: int = 2048
    max_num_tokens: int = 8192


@dataclass
class Estimate:
    format: str
    kv_cache: str
    tp: int
    pp: int
    checkpoint_bytes: list[int]  # per rank: predicted rank{N}.safetensors size
    weight_bytes: list[int]  # per rank: weights on the GPU once the engine is built
    kv_bytes_per_token: int  # per rank (largest)
    headroom_bytes: int
    limits: Limits
    notes: list[str] = field(default_factory=list)

    @property
    def largest_rank_weights(self) -> int:
        return max(self.weight_bytes)


@dataclass
class Fit:
    fits: bool
    gpu_memory_bytes: int
    kv_bytes_available: int
    kv_tokens: int  # tokens of KV cache per rank that fit
    sequences_at_max_len: int  # how many max_seq_len sequences the KV cache holds
    reason: str
    advice: str = ""


# ---------------------------------------------------------------------------------------------- shapes
def _shape(config: dict[str, Any]) -> ModelShape:
    cfg = dict(config)
    if "head_size" in cfg and "head_dim" not in cfg:  # a TensorRT-LLM checkpoint config
        cfg["head_dim"] = cfg["head_size"]
    return ModelShape.from_config(cfg)


def _family(config: dict[str, Any]) -> Family:
    """The family of an HF config, or of a TensorRT-LLM checkpoint config (its `architecture`); Llama's shape for
    others (the layout check refuses unsupported families before anything is planned for real)."""
    found = families.for_hf_config(config) or families.for_checkpoint(str(config.get("architecture", "")))
    return found or families.BY_NAME["llama"]


def _linear(fmt: str, out: int, inp: int, checkpoint: bool, group: int) -> tuple[float, int]:
    """(bytes, tensor count) for one quantized linear layer of shape (out, inp): weights plus the format's scales."""
    spec = FORMATS[fmt]
    per_weight = spec.checkpoint_bytes_per_weight if checkpoint else spec.engine_bytes_per_weight
    scale_bytes, scale_tensors = spec.linear_scales(out, inp, group, not checkpoint)
    return out * inp * per_weight + scale_bytes, 1 + scale_tensors


def _rank_bytes(config: dict[str, Any], fmt: str, tp: int, pp: int, pp_rank: int, checkpoint: bool,
                group: int) -> tuple[float, int]:  # fmt: skip
    s = _shape(config)
    fam = _family(config)
    h, d = s.hidden_size, s.head_dim
    kv_local = max(1, s.num_kv_heads // tp) if s.num_kv_heads >= tp else 1
    q_local = s.num_heads // tp
    inter_local = s.intermediate_size // tp
    layers = s.num_layers // pp
    total, tensors = 0.0, 0

    def add(b: float, n: int = 1) -> None:
        nonlocal total, tensors
        total += b
        tensors += n

    for _ in range(layers):
        for out, inp in (((q_local + 2 * kv_local) * d, h), (h, q_local * d)):  # qkv, dense
            add(*_linear(fmt, out, inp, checkpoint, group))
        mlp = [(inter_local, h)] * (2 if fam.gated_mlp else 1) + [(h, inter_local)]
        for out, inp in mlp:  # (fc, proj) or (fc, gate, proj)
            add(*_linear(fmt, out, inp, checkpoint, group))
        add(2 * h * 2, 2)  # input_layernorm, post_layernorm weights
        if fam.all_biases:
            add(2 * h * 2 + ((q_local + 2 * kv_local) * d + h + inter_local + h) * 2, 6)  # norm + linear biases
        elif fam.qkv_bias:
            add((q_local + 2 * kv_local) * d * 2, 1)  # qkv bias
    vocab_local = math.ceil(s.vocab_size / tp)
    if pp_rank == 0:
        add(vocab_local * h * 2)  # vocab_embedding (rows split across tp)
        if fam.positions == "learned":
            positions = int(config.get("n_positions") or config.get("max_position_embeddings") or 0)
            add(math.ceil(positions / tp) * h * 2)  # learned positions, rows split like the vocabulary
    if pp_rank == pp - 1:
        add(vocab_local * h * 2)  # lm_head, 16-bit (excluded from quantization)
        add(h * 2 * (2 if fam.all_biases else 1), 2 if fam.all_biases else 1)  # ln_f
    return total, tensors


def kv_bytes_per_token(config: dict[str, Any], kv_cache: str, tp: int, pp: int) -> int:
    """KV-cache bytes one token takes on one rank: K and V for the rank's layers and KV heads."""
    s = _shape(config)
    kv_local = max(1, s.num_kv_heads // tp) if s.num_kv_heads >= tp else 1
    return int(2 * (s.num_layers // pp) * kv_local * s.head_dim * KV_CACHES[kv_cache].bytes_per_value)


def estimate(config: dict[str, Any], fmt: str, kv_cache: str, tp: int, pp: int, limits: Any = None,
             group_size: int | None = None) -> Estimate:  # fmt: skip
    """Per-rank sizes for ``config`` (an HF or TensorRT-LLM checkpoint config.json) in ``fmt`` at tp x pp."""
    limits = Limits(limits.max_batch_size, limits.max_seq_len, limits.max_num_tokens) if limits else Limits()
    s = _shape(config)
    group = group_size or _awq_group(s, tp)
    notes = []
    if FORMATS[fmt].grouped:
        notes.append(f"AWQ group size {group}")
    ckpt, weights = [], []
    for r in range(tp * pp):
        b, n = _rank_bytes(config, fmt, tp, pp, r // tp, True, group)
        ckpt.append(int(b + n * HEADER_BYTES_PER_TENSOR + 8))
        weights.append(int(_rank_bytes(config, fmt, tp, pp, r // tp, False, group)[0]))
    act = limits.max_num_tokens * (3 * s.hidden_size + 2 * s.intermediate_size // tp) * 2
    logits = limits.max_batch_size * math.ceil(s.vocab_size / tp) * 4
    return Estimate(fmt, kv_cache, tp, pp, ckpt, weights, kv_bytes_per_token(config, kv_cache, tp, pp),
                    FIXED_HEADROOM + act + logits, limits, notes)  # fmt: skip


def _awq_group(s: ModelShape, tp: int) -> int:
    """Largest of 128/64/32 dividing every per-rank input width (what trtq's `awq_block_size: auto` picks)."""
    widths = (s.hidden_size, s.num_heads * s.head_dim // tp, s.intermediate_size // tp)
    for g in (128, 64, 32):
        if all(w % g == 0 for w in widths):
            return g
    return 32


def fit(est: Estimate, gpu_memory_bytes: int) -> Fit:
    """Whether the largest rank fits on a GPU with ``gpu_memory_bytes``, and how much KV cache is left."""
    used = est.largest_rank_weights + est.headroom_bytes
    avail = int(max(0, gpu_memory_bytes - used) * KV_FRACTION)
    tokens = avail // max(1, est.kv_bytes_per_token)
    seqs = tokens // est.limits.max_seq_len
    if used > gpu_memory_bytes:
        reason = (f"the largest rank needs {_gib(est.largest_rank_weights)} of weights + {_gib(est.headroom_bytes)} "
                  f"headroom, more than the GPU's {_gib(gpu_memory_bytes)}")  # fmt: skip
        return Fit(False, gpu_memory_bytes, 0, 0, 0, reason)
    if seqs < 1:
        reason = (f"after weights and headroom, the KV cache holds {tokens} tokens, fewer than one "
                  f"max_seq_len ({est.limits.max_seq_len}) sequence")  # fmt: skip
        return Fit(False, gpu_memory_bytes, avail, tokens, 0, reason)
    full = est.limits.max_batch_size
    reason = (f"fits: KV cache for {tokens} tokens = {seqs} sequence(s) of max_seq_len {est.limits.max_seq_len}"
              + ("" if seqs >= full else f" (fewer than max_batch_size {full}: the rest wait)"))  # fmt: skip
    return Fit(True, gpu_memory_bytes, avail, tokens, seqs, reason)


def alternatives(config: dict[str, Any], est: Estimate, gpu_memory_bytes: int, sm: str) -> list[str]:
    """Layouts and formats that would fit when ``est`` does not: more tp with the same format, or a smaller format."""
    cc = cc_key(sm)
    s = _shape(config)
    out = []
    same_format_runs = sm_problem(est.format, est.kv_cache, cc, "") is None
    for tp in valid_tp(s) if same_format_runs else ():
        if tp > est.tp and tp * est.pp <= 64:
            e = estimate(config, est.format, est.kv_cache, tp, est.pp, est.limits)
            if fit(e, gpu_memory_bytes).fits:
                out.append(f"tp={tp} (x pp={est.pp}) with {est.format}")
                break
    runnable_kv = [k for k, spec in KV_CACHES.items() if cc >= spec.min_sm and k != "none"]
    kv = est.kv_cache if cc >= KV_CACHES[est.kv_cache].min_sm else (runnable_kv[-1] if runnable_kv else "none")
    for fmt, spec in FORMATS.items():
        if fmt == est.format or spec.quant_algo is None or cc < spec.min_sm or tp_problems(s, est.tp):
            continue
        if kv not in spec.kv_caches:
            continue
        e = estimate(config, fmt, kv, est.tp, est.pp, est.limits)
        smaller = e.largest_rank_weights < est.largest_rank_weights or not same_format_runs
        if smaller and fit(e, gpu_memory_bytes).fits:
            out.append(f"format {fmt} at tp={est.tp}" + ("" if kv == est.kv_cache else f" with kv_cache {kv}"))
    return out


def plan_report(config: dict[str, Any], recipe: Any, gpu: str) -> dict[str, Any]:
    """Everything `trtq plan` prints, as a dict (also its --json output)."""
    name, mem, sm = gpu_spec(gpu)
    q, p = recipe.quantization, recipe.parallel
    est = estimate(config, q.format, q.kv_cache, p.tp, p.pp, recipe.engine)
    verdict = fit(est, mem)
    problem = sm_problem(q.format, q.kv_cache, cc_key(sm), name)
    layout = tp_problems(_shape(config), p.tp)
    fits = verdict.fits and problem is None and not layout
    reason = problem or ("; ".join(layout) if layout else verdict.reason)
    return {
        "recipe": recipe.name,
        "gpu": {"name": name, "memory_bytes": mem, "compute_capability": sm},
        "format": q.format,
        "kv_cache": q.kv_cache,
        "tp": p.tp,
        "pp": p.pp,
        "ranks": [
            {"rank": r, "checkpoint_bytes": c, "weight_bytes": w}
            for r, (c, w) in enumerate(zip(est.checkpoint_bytes, est.weight_bytes, strict=True))
        ],
        "kv_bytes_per_token": est.kv_bytes_per_token,
        "headroom_bytes": est.headroom_bytes,
        "kv_tokens": verdict.kv_tokens,
        "sequences_at_max_seq_len": verdict.sequences_at_max_len,
        "limits": asdict(est.limits),
        "fits": fits,
        "reason": reason,
        "alternatives": [] if fits else alternatives(config, est, mem, sm),
        "notes": est.notes,
    }


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"
