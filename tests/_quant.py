"""ModelOpt-quantized TensorRT-LLM checkpoints of tiny models, for every format trtq produces (seconds each).

Mirrors what builder/stages/quantize.py + builder/checkpoint/export.py do, without the pipeline: quantize the tiny HF model with the
format's ModelOpt config and a tiny calibration set, then `export_tensorrt_llm_checkpoint`. Weight-only formats
(int8_wo, int4_wo) follow TensorRT-LLM's own quantize.py: unquantized weights, quant_algo W8A16/W4A16 in config.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FORMATS = ("fp16", "int8_sq", "int4_awq", "w4a8_awq", "fp8", "int8_wo", "int4_wo")
KV_FORMATS = ("fp8", "int8")
WEIGHT_ONLY_ALGO = {"int8_wo": "W8A16", "int4_wo": "W4A16"}
CALIB_TEXT = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. ",
    "TensorRT-LLM builds engines from checkpoints; quantization trades accuracy for speed. ",
    "Calibration data should look like what the model will see. 0123456789 + - * / = ( ) [ ] { } ",
    "A lazy dog sleeps while the quick fox runs over the hill to Paris and back again. ",
)


def quant_config(fmt: str, kv: str = "none", block_size: int = 32):
    """The ModelOpt config for ``fmt`` (deep-copied, block size fitted to tiny widths), or None if unquantized."""
    import modelopt.torch.quantization as mtq

    base = {
        "int8_sq": mtq.INT8_SMOOTHQUANT_CFG,
        "int4_awq": mtq.INT4_AWQ_CFG,
        "w4a8_awq": mtq.W4A8_AWQ_BETA_CFG,
        "fp8": mtq.FP8_DEFAULT_CFG,
    }.get(fmt)
    if base is None and kv == "none":
        return None
    cfg = (
        copy.deepcopy(base)
        if base is not None
        else {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    )
    if fmt in ("int4_awq", "w4a8_awq"):
        _set_block_size(cfg, block_size)
    if kv == "fp8":
        cfg = mtq.update_quant_cfg_with_kv_cache_quant(cfg, copy.deepcopy(mtq.FP8_KV_CFG["quant_cfg"]))
    elif kv == "int8":
        int8_kv = [{"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": 8, "axis": None}, "enable": True}]
        cfg = mtq.update_quant_cfg_with_kv_cache_quant(cfg, int8_kv)
    return cfg


def _set_block_size(cfg, block_size: int) -> None:
    entries = cfg["quant_cfg"]
    items = entries if isinstance(entries, list) else [{"cfg": v} for v in entries.values()]
    for item in items:
        sub = item.get("cfg")
        for c in sub if isinstance(sub, list) else [sub]:
            if isinstance(c, dict) and isinstance(c.get("block_sizes"), dict) and -1 in c["block_sizes"]:
                c["block_sizes"][-1] = block_size


def calibration_batches(tokenizer, n: int = 4, texts=None, max_len: int = 128):
    import torch

    texts = list(texts or CALIB_TEXT)
    return [torch.tensor([tokenizer(t)["input_ids"][:max_len]]) for t in (texts * n)[:n]]


def license_texts(n: int = 16, chars: int = 2000) -> list[str]:
    """Real English prose for calibrating a real model offline (Debian's /usr/share/common-licenses), or []."""
    root = Path("/usr/share/common-licenses")
    out = []
    for p in sorted(root.glob("*")) if root.is_dir() else []:
        if p.is_file():
            text = p.read_text(errors="ignore")
            out += [text[i : i + chars] for i in range(0, len(text) - chars, chars)]
    return out[:n]


def quantize_model(
    model_dir: Path, fmt: str, kv: str = "none", block_size: int = 32, seed: int = 0, texts=None, n: int = 4
):
    """The HF model at ``model_dir`` fake-quantized for ``fmt`` (+KV cache quant) with ModelOpt; float32, eval."""
    import modelopt.torch.quantization as mtq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    cfg = quant_config(fmt, kv, block_size)
    if cfg is None:
        return model
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    batches = calibration_batches(tok, n, texts)

    def forward_loop(m):
        with torch.no_grad():
            for b in batches:
                m(b)

    torch.manual_seed(seed)
    return mtq.quantize(model, cfg, forward_loop)


def export_checkpoint(
    model, model_dir: Path, out: Path, fmt: str, dtype: str = "float16", tp: int = 1, pp: int = 1
) -> Path:
    """Export ``model`` (fake-quantized or not) as a TensorRT-LLM checkpoint into ``out``, with the tokenizer files."""
    import shutil

    import torch
    from modelopt.torch.export import export_tensorrt_llm_checkpoint, get_model_type

    out = Path(out)
    with torch.inference_mode():
        export_tensorrt_llm_checkpoint(
            model,
            get_model_type(model),
            getattr(torch, dtype),
            export_dir=str(out),
            inference_tensor_parallel=tp,
            inference_pipeline_parallel=pp,
        )
    cfg_path = out / "config.json"
    config = fix_exported_config(
        json.loads(cfg_path.read_text()), json.loads((Path(model_dir) / "config.json").read_text())
    )
    if fmt in WEIGHT_ONLY_ALGO:  # TensorRT-LLM's quantize.py: unquantized weights, quantized at load
        config.setdefault("quantization", {})["quant_algo"] = WEIGHT_ONLY_ALGO[fmt]
    cfg_path.write_text(json.dumps(config, indent=4))
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "generation_config.json",
    ):
        if (Path(model_dir) / name).is_file():
            shutil.copyfile(Path(model_dir) / name, out / name)
    return out


def fix_exported_config(config: dict, hf_config: dict) -> dict:
    """What ModelOpt 0.47's TensorRT-LLM export gets wrong with transformers 5 (the export stage must do the same):
    - rotary_base: transformers 5 moved rope_theta into rope_parameters, ModelOpt's lookup (hf_config_map.py) misses
      it and writes nothing, so TensorRT-LLM would use its default 10000 (SmolLM2: 100000, Qwen2: 1e6).
    - GPT-2: position_embedding_type is written as rope_gpt_neox although the model has learned absolute positions
      (transformer.position_embedding.weight is exported)."""
    config = dict(config)
    rope = hf_config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf_config.get("rope_theta"))
    if theta is not None and "rotary_base" not in config:
        config["rotary_base"] = float(theta)
    if config.get("architecture") == "GPT2LMHeadModel":
        config["position_embedding_type"] = "learned_absolute"
    return config


def make_checkpoint(
    model_dir: Path, out: Path, fmt: str, kv: str = "none", tp: int = 1, pp: int = 1, dtype: str = "float16", model=None
):
    """Quantize (unless ``model`` is given) and export; returns (checkpoint dir, the fake-quant model)."""
    if model is None:
        model = quantize_model(model_dir, fmt, kv)
    return export_checkpoint(model, model_dir, out, fmt, dtype, tp, pp), model
