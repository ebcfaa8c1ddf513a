"""The decoder of one rank: its shard of the embedding, its pipeline stage's layers, the final norm and lm_head.

Architectures (tensorrt_llm/models/llama/model.py, qwen/model.py, gpt/model.py):
- llama family (Llama, Mistral, Qwen2): RmsNorm, fused qkv (Qwen2: with bias), RoPE (gpt-neox rotate-half),
  GQA, GatedMLP `act(fc(x)) * gate(x)` then proj (tensorrt_llm/layers/mlp.py GatedMLP), pre-norm residuals.
- gpt (GPT-2): LayerNorm with bias, learned absolute position embedding, biased linears, MLP fc -> gelu -> proj.
Activations: tensorrt_llm/functional.py ACT2FN; its `gelu` is the tanh approximation.
"""

from __future__ import annotations

import fnmatch
import logging
import math

import torch
import torch.nn.functional as F

from runtime import families
from runtime.errors import CheckpointError
from runtime.reference.config import CheckpointConfig
from runtime.reference.parallel import Parallel
from runtime.reference.quant import build_linear, kv_cache_scale, kv_qdq

log = logging.getLogger("trtq.reference")

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


ACT = {
    "silu": F.silu,
    "swiglu": F.silu,
    "gelu": _gelu_tanh,  # tensorrt_llm/functional.py gelu: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": F.relu,
}


class KVCache:
    """Per-layer K/V for a batch, preallocated to max_len slots (left-padded prompts share slot indices).

    With a quantized KV cache the stored values are the quantize->dequantize of what was written, which is exactly
    what the attention kernel reads back (kv_quant_orig_scale * int8/fp8 value)."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head: int):
        self.k = [torch.zeros(batch, kv_heads, max_len, head) for _ in range(n_layers)]
        self.v = [torch.zeros(batch, kv_heads, max_len, head) for _ in range(n_layers)]
        self.length = 0
        self.max_len = max_len

    def update(self, li: int, k, v, kv_q=None, kv_scale=None):
        """Store this step's K/V for layer ``li`` (quantize->dequantize with ``kv_q`` when the cache is quantized) and
        return the K/V the attention reads: the fresh ones in the context phase (context FMHA), else every past token
        read back from the cache. The cache protocol Layer.forward calls; runtime/serve has a per-sequence one."""
        start, n = self.length, k.shape[2]
        self.k[li][:, :, start : start + n] = kv_q(k, kv_scale) if kv_q else k
        self.v[li][:, :, start : start + n] = kv_q(v, kv_scale) if kv_q else v
        if start > 0:
            return self.k[li][:, :, : start + n], self.v[li][:, :, : start + n]
        return k, v

    def advance(self, n: int) -> None:
        """All layers have stored ``n`` more positions."""
        self.length += n


class Layer:
    def __init__(self, cfg: CheckpointConfig, par: Parallel, t: dict, i: int, shard: str, weight_only_tp: int = 1):
        p = f"transformer.layers.{i}"
        tp = par.tp_size
        dtype = DTYPES.get(cfg.dtype, torch.float16)
        self.heads = cfg.num_heads // tp
        # ModelOpt/TensorRT-LLM replicate KV heads when there are fewer than tp (tensorrt_llm/layers/attention.py:
        # num_attention_kv_heads = (num_kv_heads + tp_size - 1) // tp_size).
        self.kv_heads = (cfg.num_kv_heads + tp - 1) // tp
        self.head = cfg.head_size
        h = cfg.hidden_size
        qkv_out = (self.heads + 2 * self.kv_heads) * self.head

        def lin(name, shape, row=False):
            # row-parallel linears of an unsplit checkpoint quantized at load as weight_only_tp ranks would
            # weight_only_quantize_dict (tensorrt_llm/models/modeling_utils.py) skips weights matching
            # exclude_modules (fnmatch on the tensor name)
            wname = f"{p}.{name}.weight"
            excluded = any(
                fnmatch.fnmatchcase(wname, pat) or fnmatch.fnmatchcase(f"{p}.{name}", pat)
                for pat in cfg.exclude_modules
            )
            return build_linear(
                t,
                f"{p}.{name}",
                cfg.quant_algo,
                dtype,
                shape,
                shard,
                cfg.group_size,
                quantize_weight_only=not excluded,
                exact=cfg.exact,
                weight_only_slices=weight_only_tp if row else 1,
            )

        self.norm1 = _norm(t, f"{p}.input_layernorm", h, shard)
        self.norm2 = _norm(t, f"{p}.post_layernorm", h, shard)
        self.qkv = lin("attention.qkv", (qkv_out, h))
        self.dense = lin("attention.dense", (h, self.heads * self.head), row=True)
        inter = cfg.intermediate_size // tp
        self.gated = f"{p}.mlp.gate.weight" in t
        self.fc = lin("mlp.fc", (inter, h))
        self.gate = lin("mlp.gate", (inter, h)) if self.gated else None
        self.proj = lin("mlp.proj", (h, inter), row=True)
        if cfg.hidden_act not in ACT:
            raise CheckpointError(f"{cfg.path}/config.json: hidden_act {cfg.hidden_act} is not implemented")
        self.act = ACT[cfg.hidden_act]
        self.kv_q = kv_qdq(cfg.kv_cache_quant_algo)
        self.kv_scale = kv_cache_scale(t, f"{p}.attention", shard) if self.kv_q else None
        self.eps = cfg.norm_eps
        self.rms = cfg.rmsnorm
        self.par = par

    def forward(self, x, rope, mask, cache: KVCache | None, li: int):
        b, n, _ = x.shape
        r = self.par
        qkv = self.qkv(_apply_norm(x, self.norm1, self.rms, self.eps))
        hq, hk = self.heads * self.head, self.kv_heads * self.head
        q = qkv[..., :hq].view(b, n, self.heads, self.head).transpose(1, 2)
        k = qkv[..., hq : hq + hk].view(b, n, self.kv_heads, self.head).transpose(1, 2)
        v = qkv[..., hq + hk :].view(b, n, self.kv_heads, self.head).transpose(1, 2)
        if rope is not None:
            q, k = _rotate(q, rope), _rotate(k, rope)
        if cache is not None:
            # generation reads every past token back from the (quantized) cache; the context phase attends to the
            # fresh K/V (context FMHA) while the cache keeps the quantized copy
            k, v = cache.update(li, k, v, self.kv_q, self.kv_scale)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
        attn = attn.transpose(1, 2).reshape(b, n, self.heads * self.head)
        x = x + self.dense.finish(r.tp_all_reduce(self.dense.partial(attn)))
        hdn = _apply_norm(x, self.norm2, self.rms, self.eps)
        inter = self.act(self.fc(hdn))
        if self.gate is not None:
            inter = inter * self.gate(hdn)
        return x + self.proj.finish(r.tp_all_reduce(self.proj.partial(inter)))


def _norm(t: dict, prefix: str, size: int, shard: str):
    w = t.get(f"{prefix}.weight")
    if w is None:
        raise CheckpointError(f"{shard}: tensor {prefix}.weight is missing")
    if w.numel() != size:
        raise CheckpointError(f"{shard}: {prefix}.weight has {w.numel()} values, expected {size}")
    b = t.get(f"{prefix}.bias")
    return (w.float(), None if b is None else b.float())


def _apply_norm(x, norm, rms: bool, eps: float):
    w, b = norm
    if rms:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _rotate(x, rope):
    cos, sin, dim = rope
    rot, rest = x[..., :dim], x[..., dim:]
    half = dim // 2
    x1, x2 = rot[..., :half], rot[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    out = rot * cos + rotated * sin
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


class Decoder:
    """One rank's part of the model. All ranks call `forward`; it returns logits on the last stage, else None."""

    def __init__(self, cfg: CheckpointConfig, par: Parallel, tensors: dict, shard: str, weight_only_tp: int = 1):
        """``weight_only_tp``: run an unsplit W8A16/W4A16 checkpoint as its tp=N engine computes (each rank
        quantizes its slice of a row-parallel weight at load); 1 otherwise."""
        self.cfg, self.par = cfg, par
        tp = par.tp_size
        h = cfg.hidden_size
        n_local = cfg.num_layers // par.pp_size
        make_layer = families.BY_NAME[cfg.family].reference_layer or Layer
        self.layers = [make_layer(cfg, par, tensors, i, shard, weight_only_tp) for i in range(n_local)]
        if f"transformer.layers.{n_local}.input_layernorm.weight" in tensors:
            raise CheckpointError(
                f"{shard}: holds more than {n_local} layers: its config.json mapping (pp_size={par.pp_size}) does not "
                "match the shard"
            )
        self.rope_dim = 0
        self.pos_table = None
        self.pos_sharded = False
        has_table = "transformer.position_embedding.weight" in tensors
        if cfg.position_embedding_type == "learned_absolute":
            if par.first_stage:
                self.pos_table = self._embedding_table(tensors, "transformer.position_embedding.weight", shard, None)
                # Newer exports shard the position table like the vocab table; older TensorRT-LLM (models/gpt/
                # model.py GPTEmbedding) keeps it whole: tell them apart by its row count.
                self.pos_sharded = tp > 1 and self.pos_table.shape[0] * tp == cfg.max_position_embeddings
        elif cfg.position_embedding_type.startswith("rope"):
            if has_table:
                # ModelOpt 0.47 writes "rope_gpt_neox" for GPT-2 (its default when a decoder reports none) next to the
                # learned table. TensorRT-LLM (models/gpt/model.py GPTEmbedding) creates position_embedding only for
                # learned_absolute, so an engine would apply RoPE and drop the table: refuse rather than guess.
                raise CheckpointError(
                    f"{cfg.path}/config.json: position_embedding_type is {cfg.position_embedding_type} but the "
                    "checkpoint holds transformer.position_embedding.weight (a learned position table, as GPT-2 has): "
                    "TensorRT-LLM would apply RoPE and ignore the table; set position_embedding_type to "
                    "learned_absolute in config.json (a known ModelOpt 0.47 export bug)"
                )
            self.rope_dim = int(cfg.head_size * cfg.rotary_pct)
            self.inv_freq = _inv_freq(cfg, self.rope_dim)
        else:
            raise CheckpointError(
                f"{cfg.path}/config.json: position_embedding_type {cfg.position_embedding_type} is not implemented"
            )
        self.embed = None
        if par.first_stage:
            self.embed = self._embedding_table(tensors, "transformer.vocab_embedding.weight", shard, cfg.padded_vocab)
        self.ln_f = self.lm_head = None
        if par.last_stage:
            self.ln_f = _norm(tensors, "transformer.ln_f", h, shard)
            key = "lm_head.weight" if "lm_head.weight" in tensors else None
            if key is None and cfg.share_embedding_table and "transformer.vocab_embedding.weight" in tensors:
                key = "transformer.vocab_embedding.weight"
            if key is None:
                raise CheckpointError(f"{shard}: lm_head.weight is missing on the last pipeline stage")
            dtype = DTYPES.get(cfg.dtype, torch.float16)
            # lm_head is a ColumnLinear over the (padded) vocab with gather_output=True; excluded from quantization
            # by default (QuantConfig.exclude_modules ['lm_head']), and never weight-only quantized.
            t = {
                "lm_head.weight": tensors[key],
                **({"lm_head.bias": tensors["lm_head.bias"]} if "lm_head.bias" in tensors else {}),
            }
            for s in ("weights_scaling_factor", "activation_scaling_factor", "prequant_scaling_factor"):
                if f"lm_head.{s}" in tensors:
                    t[f"lm_head.{s}"] = tensors[f"lm_head.{s}"]
            self.lm_head = build_linear(
                t,
                "lm_head",
                cfg.quant_algo,
                dtype,
                (cfg.padded_vocab // tp, h),
                shard,
                cfg.group_size,
                quantize_weight_only=False,
                exact=cfg.exact,
            )

    def _embedding_table(self, tensors, key, shard, rows):
        w = tensors.get(key)
        if w is None:
            raise CheckpointError(f"{shard}: tensor {key} is missing on the first pipeline stage")
        cfg, tp = self.cfg, self.par.tp_size
        w = w.float()
        h = cfg.hidden_size
        total = (
            rows
            if rows is not None
            else w.shape[0] * (tp if cfg.use_parallel_embedding and cfg.embedding_sharding_dim == 0 else 1)
        )
        if cfg.use_parallel_embedding and tp > 1:
            want = (total // tp, h) if cfg.embedding_sharding_dim == 0 else (total, h // tp)
        else:
            want = (total, h)
        if rows is not None and tuple(w.shape) != want:
            raise CheckpointError(f"{shard}: {key} has shape {tuple(w.shape)}, expected {want} for this rank")
        return w

    def _lookup(self, table, ids, sharded: bool | None = None):
        cfg, par = self.cfg, self.par
        if sharded is None:
            sharded = cfg.use_parallel_embedding
        if not sharded or par.tp_size == 1:
            return F.embedding(ids, table)
        if cfg.embedding_sharding_dim == 0:
            n = table.shape[0]
            local = ids - par.tp_rank * n
            inside = (local >= 0) & (local < n)
            out = F.embedding(local.clamp(0, n - 1), table) * inside.unsqueeze(-1)
            return par.tp_all_reduce(out)
        return par.tp_all_gather(F.embedding(ids, table), dim=-1)

    def forward(self, ids, positions, mask, cache: KVCache | None, last_only: bool = False):
        """ids, positions: (B, T) int64; mask: (B, 1, T, S) bool (True = attend). Returns (B, T|1, vocab) logits
        on last-stage ranks, None on the others."""
        par = self.par
        b, n = ids.shape
        if par.first_stage:
            x = self._lookup(self.embed, ids)
            if self.pos_table is not None:
                x = x + self._lookup(self.pos_table, positions, self.pos_sharded)
        else:
            x = par.recv_prev((b, n, self.cfg.hidden_size))
        rope = None
        if self.rope_dim:
            freqs = positions.unsqueeze(-1).float() * self.inv_freq
            emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # (B, 1, T, dim)
            rope = (emb.cos(), emb.sin(), self.rope_dim)
        for li, layer in enumerate(self.layers):
            x = layer.forward(x, rope, mask, cache, li)
        if cache is not None:
            cache.advance(n)
        if not par.last_stage:
            par.send_next(x)
            return None
        if last_only:
            x = x[:, -1:]
        x = _apply_norm(x, self.ln_f, self.cfg.rmsnorm, self.cfg.norm_eps)
        logits = par.tp_all_gather(self.lm_head(x), dim=-1)
        return logits[..., : self.cfg.vocab_size]

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        l0 = self.layers[0]
        return KVCache(len(self.layers), batch, l0.kv_heads, max_len, l0.head)


def _inv_freq(cfg: CheckpointConfig, dim: int) -> torch.Tensor:
    """RoPE frequencies (tensorrt_llm/functional.py RopeEmbeddingUtils.create_sinusoidal_positions*): base^(-2i/dim);
    rotary_scaling linear divides positions by the factor; llama3 rescales low frequencies (as Llama 3.1)."""
    inv = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    sc = cfg.rotary_scaling or {}
    kind = sc.get("type") or sc.get("rope_type")
    if kind in (None, "default"):
        pass
    elif kind == "linear":
        inv = inv / float(sc["factor"])
    elif kind == "llama3":
        factor, lo, hi = float(sc["factor"]), float(sc.get("low_freq_factor", 1)), float(sc.get("high_freq_factor", 4))
        old = float(sc.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    else:
        raise CheckpointError(f"{cfg.path}/config.json: rotary_scaling type {kind} is not implemented")
    return inv.float()
