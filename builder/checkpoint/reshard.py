"""Derive a tp x pp TensorRT-LLM checkpoint from the unsharded (tp=1, pp=1) one by slicing tensors.

A new layout then costs a second of disk I/O instead of a ModelOpt export (torch, transformers, the calibrated model).
The result is byte-identical to what ModelOpt 0.47's `export_tensorrt_llm_checkpoint(...,
inference_tensor_parallel=tp, inference_pipeline_parallel=pp)` writes (modelopt/torch/export/postprocess.py:
`_split_model_config_for_tp`, `_split_model_config_for_pp`; model_config_utils.py: `merge_qkv`,
`pack_linear_weights`; quant_utils.py: `process_layer_quant_config`). That works because ModelOpt splits the float
weights first and quantizes each rank's slice afterwards with scales fixed before the split: a row (per-channel
scale), a group (AWQ) or an element (per-tensor scale) is quantized the same way wherever it lands. Packed int4
weights hold two output rows per byte row, (out/2, in), so they are sliced in pairs of rows.

What a rank holds (r = tp rank, s = pp stage, rank = r + s * tp):
- column-parallel linears (attention.qkv, mlp.fc, mlp.gate, lm_head): weight, bias and per-channel/per-group
  weights_scaling_factor cut along the output rows; attention.qkv cuts q, k and v separately (GQA), and repeats KV
  heads when tp > num_key_value_heads (layer_utils.py `dup_kv_weight`); lm_head's weight is zero-padded to a
  multiple of tp rows. Everything else (activation, prequant/smoother, scalar and FP8 scales) is replicated.
- row-parallel linears (attention.dense, mlp.proj): weight cut along the inputs, AWQ per-group scales along their
  groups, prequant_scaling_factor (AWQ pre-quant scale, SmoothQuant smoother) along its length; bias and the rest
  replicated.
- vocab_embedding and position_embedding: rows zero-padded to a multiple of tp and cut; norms and KV-cache scales
  replicated.
- pipeline stage s: layers [s*L/pp, (s+1)*L/pp), renamed from 0; stage 0 also the embeddings, the last stage ln_f
  and lm_head.
- config.json is the one the last rank writes: rank = tp*pp - 1, mapping, and quantization.exclude_modules
  summarized over the last rank's linears (under their per-rank names).

Anything this module cannot reproduce exactly raises ValueError naming it; the caller then runs the full export.
Only numpy and the standard library are imported.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from builder.checkpoint import _safetensors as st

# The ModelOpt releases whose export these rules were checked against, bit for bit (tests/unit/test_reshard.py; CI
# runs it under both: 0.37 is what NVIDIA's TensorRT-LLM 1.2.x container ships).
VERIFIED_MODELOPT = ("0.37.", "0.47.")

COLUMN, ROW = "column", "row"
_LINEARS = {  # per decoder layer, in ModelOpt's DecoderLayerConfig field order
    "attention.qkv": COLUMN,
    "attention.dense": ROW,
    "mlp.fc": COLUMN,
    "mlp.gate": COLUMN,
    "mlp.proj": ROW,
}
_LINEAR_FIELDS = (
    "weight",
    "bias",
    "weights_scaling_factor",
    "weights_scaling_factor_2",
    "activation_scaling_factor",
    "prequant_scaling_factor",
)
_REPLICATED = {  # per decoder layer
    f"{norm}.{field}" for norm in ("input_layernorm", "post_layernorm") for field in ("weight", "bias")
} | {f"attention.{kv}_cache_scaling_factor" for kv in ("k", "v", "kv")}
_EMBEDDINGS = ("transformer.vocab_embedding.weight", "transformer.position_embedding.weight")
_LN_F = ("transformer.ln_f.weight", "transformer.ln_f.bias")
_LAYER = re.compile(r"transformer\.layers\.(\d+)\.(.+)$")
_MAPPING_KEYS = {"world_size", "tp_size", "pp_size"}


class _Linear:
    """One linear of the tp=1 checkpoint: its tensors by field, and what its weight holds."""

    def __init__(self, name: str, kind: str, fields: dict[str, st.Tensor]):
        self.name, self.kind, self.fields = name, kind, fields
        if "weight" not in fields or len(fields["weight"].shape) != 2:
            raise ValueError(f"{name}: {sorted(fields)} hold no 2-D weight")
        scale = fields.get("weights_scaling_factor")
        if scale is None and set(fields) - {"weight", "bias"}:
            raise ValueError(f"{name}: scales {sorted(set(fields) - {'weight', 'bias'})} without a weight scale")
        self.quantized = scale is not None
        self.awq = scale is not None and len(scale.shape) == 2  # per-group scales: int4 weights packed (out/2, in)
        rows, self.n_in = fields["weight"].shape
        self.n_out = rows * 2 if self.awq else rows
        self.block = 0
        if self.awq:
            if fields["weight"].dtype != "I8" or scale.shape[0] != self.n_out or self.n_in % scale.shape[1]:
                raise ValueError(f"{name}: weight {fields['weight'].shape} does not fit per-group scales {scale.shape}")
            self.block = self.n_in // scale.shape[1]


def reshard(src: Path, dst: Path, tp: int, pp: int) -> dict[str, Any]:
    """Write the tp x pp checkpoint derived from the tp=1, pp=1 checkpoint ``src`` into ``dst``; return its config.

    ``src`` holds config.json and rank0.safetensors as the export stage writes them at tp=pp=1 (ModelOpt's
    `export_tensorrt_llm_checkpoint` plus trtq's config fixes); ``dst`` gets config.json, rank{r}.safetensors for
    r < tp*pp and ModelOpt's quant_cfg.json when ``src`` has one. Tokenizer files are not copied.

    Raises:
        ValueError: the layout cannot be derived exactly from ``src`` (the message says why); export with ModelOpt.
        FileExistsError: ``dst`` already holds a checkpoint.
    """
    src, dst = Path(src), Path(dst)
    if tp < 1 or pp < 1:
        raise ValueError(f"tp={tp}, pp={pp}: both must be at least 1")
    config = json.loads((src / "config.json").read_text())
    _check_source(config, src)
    tensors, _ = st.read(src / "rank0.safetensors")
    plan = _Plan(config, tensors, tp, pp)
    out_config = plan.config()
    quant_cfg = _quant_cfg(src)

    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the destination is the source checkpoint")
    dst.mkdir(parents=True, exist_ok=True)
    old = sorted(
        p.name for p in dst.iterdir() if p.name == "config.json" or re.fullmatch(r"rank\d+\.safetensors", p.name)
    )
    if old:
        raise FileExistsError(f"{dst} already holds a checkpoint ({', '.join(old[:3])}); write into an empty directory")
    for stage in range(pp):
        for t in range(tp):
            st.write(dst / f"rank{t + stage * tp}.safetensors", plan.shard(t, stage))
    if quant_cfg is not None:
        shutil.copyfile(src / "quant_cfg.json", dst / "quant_cfg.json")
    (dst / "config.json").write_text(json.dumps(out_config, indent=4) + "\n")
    return out_config


def _check_source(config: dict[str, Any], src: Path) -> None:
    producer = config.get("producer") or {}
    if producer.get("name") != "modelopt" or not str(producer.get("version", "")).startswith(VERIFIED_MODELOPT):
        raise ValueError(
            f"{src}: written by {producer or 'an unknown producer'}; resharding is verified only against ModelOpt "
            f"{', '.join(v + 'x' for v in VERIFIED_MODELOPT)}"
        )
    mapping = config.get("mapping") or {}
    if set(mapping) != _MAPPING_KEYS or (mapping["world_size"], mapping["tp_size"], mapping["pp_size"]) != (1, 1, 1):
        raise ValueError(f"{src}: mapping {mapping} is not ModelOpt's tp=1, pp=1 mapping")
    if config.get("rank") != 0:
        raise ValueError(f"{src}: config rank is {config.get('rank')}, not 0")
    from runtime import families

    exact = sorted({f.modelopt_decoder for f in families.BY_NAME.values() if f.reshard_exact})
    if config.get("decoder") not in exact:  # the families whose slicing was checked against ModelOpt, bit for bit
        raise ValueError(f"{src}: decoder {config.get('decoder')!r} is not one of {', '.join(exact)}")
    for key in ("moe", "num_medusa_heads", "base_architecture"):
        if key in config:
            raise ValueError(f"{src}: config has {key!r}; resharding covers dense decoders only")


def _quant_cfg(src: Path) -> dict[str, Any] | None:
    """ModelOpt's quant_cfg.json (written when no linear is quantized): copied when it names no layer."""
    path = src / "quant_cfg.json"
    if not path.is_file():
        return None
    quant_cfg = json.loads(path.read_text())
    if quant_cfg.get("quantized_layers"):
        raise ValueError(f"{path}: per-layer (mixed-precision) quantization names layers per rank")
    return quant_cfg


class _Plan:
    """The tp=1 checkpoint sorted into linears, replicated tensors and embeddings, checked against tp x pp."""

    def __init__(self, config: dict[str, Any], tensors: dict[str, st.Tensor], tp: int, pp: int):
        self.src_config, self.tp, self.pp = config, tp, pp
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config["num_key_value_heads"])
        self.head_size = int(config["head_size"])
        self.n_layers = int(config["num_hidden_layers"])
        self.top: dict[str, st.Tensor] = {}
        layers: dict[int, dict[str, st.Tensor]] = {}
        lm_head: dict[str, st.Tensor] = {}
        for name, t in tensors.items():
            m = _LAYER.match(name)
            if m:
                layers.setdefault(int(m.group(1)), {})[m.group(2)] = t
            elif name.startswith("lm_head.") and name[len("lm_head.") :] in _LINEAR_FIELDS:
                lm_head[name[len("lm_head.") :]] = t
            elif name in _EMBEDDINGS or name in _LN_F:
                self.top[name] = t
            else:
                raise ValueError(f"tensor {name} is not one this resharder knows how to split")
        if sorted(layers) != list(range(self.n_layers)):
            raise ValueError(f"checkpoint has layers {sorted(layers)[:5]}..., config says {self.n_layers}")
        self.layers = [self._parse_layer(i, layers[i]) for i in range(self.n_layers)]
        self.lm_head = _Linear("lm_head", COLUMN, lm_head) if lm_head else None
        self._check()

    def _parse_layer(self, index: int, named: dict[str, st.Tensor]) -> tuple[dict[str, _Linear], dict[str, st.Tensor]]:
        fields: dict[str, dict[str, st.Tensor]] = {}
        replicated = {}
        for rest, t in named.items():
            prefix, _, field = rest.rpartition(".")
            if prefix in _LINEARS and field in _LINEAR_FIELDS:
                fields.setdefault(prefix, {})[field] = t
            elif rest in _REPLICATED:
                replicated[rest] = t
            else:
                raise ValueError(
                    f"tensor transformer.layers.{index}.{rest} is not one this resharder knows how to split"
                )
        linears = {
            p: _Linear(f"transformer.layers.{index}.{p}", _LINEARS[p], fields[p]) for p in _LINEARS if p in fields
        }
        if "attention.qkv" not in linears or "attention.dense" not in linears:
            raise ValueError(f"transformer.layers.{index}: no attention.qkv/attention.dense")
        return linears, replicated

    # ------------------------------------------------------------------------------------------------ checks
    def _check(self) -> None:
        tp, pp = self.tp, self.pp
        if self.n_layers % pp:
            raise ValueError(f"pp={pp}: {self.n_layers} layers cannot be split evenly (ModelOpt asserts)")
        if self.heads % tp:
            raise ValueError(f"tp={tp}: {self.heads} attention heads are not divisible (ModelOpt cuts heads apart)")
        if (self.kv_heads >= tp and self.kv_heads % tp) or (self.kv_heads < tp and tp % self.kv_heads):
            raise ValueError(f"tp={tp}: {self.kv_heads} KV heads can neither be split nor repeated evenly")
        if self.src_config.get("share_embedding_table") and pp > 1:
            raise ValueError(f"pp={pp}: a checkpoint without lm_head (share_embedding_table) is not verified at pp > 1")
        for linears, _ in self.layers:
            for lin in linears.values():
                self._check_linear(lin)
            qkv = linears["attention.qkv"]
            if qkv.n_out != (self.heads + 2 * self.kv_heads) * self.head_size:
                raise ValueError(f"{qkv.name}: {qkv.n_out} rows are not (heads + 2 * kv heads) * head size")
            if self.kv_heads < tp:
                self._check_kv_repeat(qkv)
        if self.lm_head is not None:
            self._check_linear(self.lm_head)
            self._check_lm_head(self.lm_head)

    def _check_linear(self, lin: _Linear) -> None:
        """Where ModelOpt's `check_weight_shape_valid` fails, and splits this module does not reproduce."""
        tp = self.tp
        if lin.kind == COLUMN and lin.n_in % tp or lin.kind == ROW and (lin.n_out % tp or lin.n_in % tp):
            raise ValueError(f"{lin.name}: weight {lin.n_out}x{lin.n_in} cannot be split for tp={tp}")
        if lin.awq and (lin.n_in // tp) % lin.block:
            raise ValueError(f"{lin.name}: per-rank width {lin.n_in // tp} is not a multiple of AWQ group {lin.block}")
        if lin.kind == COLUMN and lin.name != "lm_head":
            for size in self._parts(lin):
                if size % tp or (lin.awq and (size // tp) % 2):
                    raise ValueError(f"{lin.name}: {size} output rows cannot be split for tp={tp}")

    def _check_kv_repeat(self, qkv: _Linear) -> None:
        """ModelOpt repeats KV heads only for weights, group scales, biases and scalars (layer_utils.build_qkv)."""
        for field in ("weights_scaling_factor", "weights_scaling_factor_2", "activation_scaling_factor"):
            t = qkv.fields.get(field)
            scalar = t is None or int(np.prod(t.shape)) == 1
            if not scalar and (field != "weights_scaling_factor" or len(t.shape) == 1):
                raise ValueError(
                    f"{qkv.name}: tp={self.tp} repeats KV heads, which ModelOpt does not support with per-channel "
                    f"{field} {list(t.shape)}"
                )
        if qkv.awq and (self.head_size % 2):
            raise ValueError(f"{qkv.name}: odd head size {self.head_size} cannot be sliced out of packed int4 rows")

    def _check_lm_head(self, lin: _Linear) -> None:
        vocab = lin.n_out
        if vocab % self.tp and len(lin.fields) > 1:
            raise ValueError(f"lm_head: {vocab} rows with {sorted(lin.fields)} cannot be split for tp={self.tp}")
        if lin.awq and self.tp > 1 and (vocab // self.tp) % 2:
            raise ValueError(f"lm_head: {vocab // self.tp} int4 rows per rank cannot be cut from packed pairs")
        if lin.awq and self.pp > 1:
            # ModelOpt's update_lm_head_quantization checks lm_head rows against block * pp (it is passed
            # inference_pipeline_parallel) on the HF model, before the AWQ vocabulary padding, and exports lm_head
            # unquantized (resmoothed) when they do not divide.
            if vocab % (lin.block * self.pp):
                raise ValueError(
                    f"lm_head: ModelOpt exports an AWQ lm_head unquantized at pp={self.pp} "
                    f"({vocab} rows % (group {lin.block} * pp) != 0)"
                )
            embedding = self.top.get(_EMBEDDINGS[0])
            if embedding is None or not embedding.data[-1].any():
                raise ValueError(
                    "lm_head: the vocabulary may have been padded for AWQ, so whether ModelOpt keeps lm_head "
                    f"quantized at pp={self.pp} is unknown"
                )

    # ------------------------------------------------------------------------------------------------ slicing
    def _parts(self, lin: _Linear) -> list[int]:
        """Output rows (unpacked) of the column linear's pieces that ModelOpt splits separately."""
        if lin.name.endswith("attention.qkv"):
            q, kv = self.heads * self.head_size, self.kv_heads * self.head_size
            return [q, kv, kv]
        return [lin.n_out]

    def _row_ranges(self, lin: _Linear, r: int) -> list[tuple[int, int]]:
        """The unpacked output rows of ``lin`` that tp rank ``r`` holds, as [begin, end) ranges."""
        tp, out, offset = self.tp, [], 0
        for i, size in enumerate(self._parts(lin)):
            if i > 0 and self.kv_heads < tp:  # k or v with repeated heads: one head per rank
                head = r // (tp // self.kv_heads)
                out.append((offset + head * self.head_size, offset + (head + 1) * self.head_size))
            else:
                chunk = size // tp
                out.append((offset + r * chunk, offset + (r + 1) * chunk))
            offset += size
        return out

    def _column(self, lin: _Linear, r: int) -> dict[str, st.Tensor]:
        tp, out = self.tp, {}
        if lin.name == "lm_head" and lin.n_out % tp:  # model_config_utils.pad_weights: weight only
            w = lin.fields["weight"]
            chunk = -(-lin.n_out // tp)
            data = w.data[r * chunk : (r + 1) * chunk]
            if data.shape[0] < chunk:
                data = np.concatenate([data, np.zeros((chunk - data.shape[0], *data.shape[1:]), data.dtype)])
            return {"weight": st.Tensor(w.dtype, data)}
        ranges = self._row_ranges(lin, r)
        for field, t in lin.fields.items():
            if field == "weight":
                out[field] = _rows(t, [(b // 2, e // 2) for b, e in ranges] if lin.awq else ranges)
            elif field == "bias" or (field == "weights_scaling_factor" and int(np.prod(t.shape)) != 1):
                out[field] = _rows(t, ranges)
            else:
                out[field] = t
        return out

    def _row(self, lin: _Linear, r: int) -> dict[str, st.Tensor]:
        tp, out = self.tp, {}
        for field, t in lin.fields.items():
            if field == "weight" or (field == "weights_scaling_factor" and lin.awq):
                n = t.shape[1] // tp
                out[field] = st.Tensor(t.dtype, t.data[:, r * n : (r + 1) * n])
            elif field == "prequant_scaling_factor":
                n = t.shape[0] // tp
                out[field] = st.Tensor(t.dtype, t.data[r * n : (r + 1) * n])
            else:
                out[field] = t
        return out

    def _embedding(self, t: st.Tensor, r: int) -> st.Tensor:
        """postprocess._split_model_config_for_tp: rows zero-padded to a multiple of tp, then chunked."""
        chunk = -(-t.shape[0] // self.tp)
        data = t.data[r * chunk : (r + 1) * chunk]
        if data.shape[0] < chunk:
            data = np.concatenate([data, np.zeros((chunk - data.shape[0], *data.shape[1:]), data.dtype)])
        return st.Tensor(t.dtype, data)

    def shard(self, r: int, stage: int) -> dict[str, st.Tensor]:
        """The tensors of tp rank ``r`` in pipeline stage ``stage``, under their per-rank names."""
        out: dict[str, st.Tensor] = {}
        per_stage = self.n_layers // self.pp
        if stage == 0:
            for name in _EMBEDDINGS:
                if name in self.top:
                    out[name] = self._embedding(self.top[name], r) if self.tp > 1 else self.top[name]
        for local in range(per_stage):
            linears, replicated = self.layers[stage * per_stage + local]
            prefix = f"transformer.layers.{local}."
            for rest, t in replicated.items():
                out[prefix + rest] = t
            for name, lin in linears.items():
                fields = lin.fields if self.tp == 1 else (self._column if lin.kind == COLUMN else self._row)(lin, r)
                for field, t in fields.items():
                    out[f"{prefix}{name}.{field}"] = t
        if stage == self.pp - 1:
            for name in _LN_F:
                if name in self.top:
                    out[name] = self.top[name]
            if self.lm_head is not None:
                fields = self.lm_head.fields if self.tp == 1 else self._column(self.lm_head, r)
                for field, t in fields.items():
                    out[f"lm_head.{field}"] = t
        return out

    # ------------------------------------------------------------------------------------------------ config
    def _linear_names(self, stage: int, pp: int) -> list[tuple[str, bool]]:
        """(per-rank name, quantized) of the linears that pipeline stage ``stage`` of ``pp`` holds, in ModelOpt's
        order (DecoderLayerConfig fields, then lm_head)."""
        per_stage = self.n_layers // pp
        names = []
        for local in range(per_stage):
            linears, _ = self.layers[stage * per_stage + local]
            names += [(f"transformer.layers.{local}.{p}", lin.quantized) for p, lin in linears.items()]
        if stage == pp - 1 and self.lm_head is not None:
            names.append(("lm_head", self.lm_head.quantized))
        return names

    def config(self) -> dict[str, Any]:
        """config.json as ModelOpt writes it: from the last rank (export_tensorrt_llm_checkpoint)."""
        config = json.loads(json.dumps(self.src_config))
        tp, pp = self.tp, self.pp
        config["rank"] = tp * pp - 1
        config["mapping"] = {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}
        quant = config.get("quantization") or {}
        everything = self._linear_names(0, 1)
        if not any(q for _, q in everything):
            # No linear quantized: ModelOpt's quantization section names no module, and the exclude_modules trtq adds
            # for weight-only formats (export.py _mark_weight_only) use global layer numbers, whatever the layout.
            return config
        if "exclude_modules" not in quant:
            raise ValueError("quantized checkpoint without quantization.exclude_modules")
        # Re-deriving tp=1's list must give what the source holds, else the source was not written the way assumed.
        original = _exclude_modules(everything, self.src_config)
        if sorted(original) != sorted(quant["exclude_modules"]):
            raise ValueError(
                f"quantization.exclude_modules {quant['exclude_modules']} is not what ModelOpt writes for these "
                f"linears ({original})"
            )
        last = self._linear_names(pp - 1, pp)
        if not any(q for _, q in last):
            raise ValueError(f"pp={pp}: the last stage has no quantized linear; ModelOpt then writes quant_cfg.json")
        quant["exclude_modules"] = _exclude_modules(last, config)
        return config


def _rows(t: st.Tensor, ranges: list[tuple[int, int]]) -> st.Tensor:
    parts = [t.data[b:e] for b, e in ranges]
    return st.Tensor(t.dtype, parts[0] if len(parts) == 1 else np.concatenate(parts))


def _exclude_modules(linears: list[tuple[str, bool]], config: dict[str, Any]) -> list[str]:
    """quant_utils.process_layer_quant_config's exclude_modules, plus the lm_head tensorrt_llm_utils adds for a shared
    embedding table; sorted (ModelOpt's own list passes through a set, so its order varies from run to run)."""
    unquantized = [n for n, q in linears if not q]
    quantized = [n for n, q in linears if q]
    out = sorted(_prefix_wildcard_summarize(unquantized, quantized))
    if config.get("share_embedding_table"):
        out.append("lm_head")
    return sorted(set(out))


def _prefix_wildcard_summarize(unquantized: list[str], quantized: list[str]) -> set[str]:
    """ModelOpt 0.47 quant_utils._prefix_wildcard_summarize_exclude_modules (Apache-2.0), logging dropped."""
    negative: set[str] = set()
    for layer in quantized:
        negative.add(layer)
        negative.update(layer[:i] + "*" for i in range(len(layer) + 1))

    def candidates(name: str):
        for i, c in enumerate(name):
            if c == ".":
                yield [name[:i] + "*"]
                yield [name[:i], name[:i] + ".*"]
        yield [name]

    summary: set[str] = set()
    for layer in unquantized:
        chosen: list[str] = []
        for wildcards in candidates(layer):
            if any(w in negative for w in wildcards):
                continue
            if all(w in summary for w in wildcards):
                chosen = []
                break
            chosen = wildcards
            break
        if len(chosen) == 2:
            a, b = sorted(chosen, key=len)
            summary.update([b] if b == a + ".*" else chosen)
        else:
            summary.update(chosen)
    return summary
