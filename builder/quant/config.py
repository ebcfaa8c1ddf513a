"""trtq's quantization formats: what each maps to in ModelOpt and what TensorRT-LLM must see in the checkpoint.

Both ModelOpt generations are supported: the one in NVIDIA's 1.2.x container (0.3x: `quant_cfg` is a dict of
pattern -> attributes) and PyPI's newest (0.4x: `quant_cfg` is a list of {"quantizer_name", "cfg", "enable"} entries).
ModelOpt's *_CFG constants are deep-copied, never mutated.
"""

from __future__ import annotations

import copy
from typing import Any

from runtime.formats import FORMATS, KV_CACHES, needs_calibration  # noqa: F401  (needs_calibration: re-exported)

KV_PATTERN = "*[kv]_bmm_quantizer"

# ModelOpt's default is 1.0 (all of the activation range moved into the weights). On SmolLM2-135M with the same
# 32 x 256 calibration tokens, 0.8 gives +6.0% perplexity over bf16 against ModelOpt's +15.4% (0.7: +9.4%,
# 0.5: +37.5%); the SmoothQuant authors use 0.8-0.85 for the Llama family. Any alpha below 1.0 needs the fused-layer
# smoothing of builder/quant/smoothing.py, which the quantize stage always applies after ModelOpt's SmoothQuant.
DEFAULT_SMOOTHQUANT_ALPHA = 0.8
DEFAULT_AWQ_ALGORITHM = "awq_lite"


def _pattern(p: str) -> str:
    return p if any(c in p for c in "*?[") else f"*{p}*"


def build_config(
    mtq,
    fmt: str,
    kv_cache: str,
    exclude: tuple[str, ...],
    *,
    alpha: float | None = None,
    block_size: int | None = None,
    algorithm: str = "auto",
) -> dict[str, Any]:
    """The ModelOpt quantization config for a format, in the style of the installed ModelOpt (list or dict)."""
    spec = FORMATS[fmt]
    listy = isinstance(mtq.INT4_AWQ_CFG["quant_cfg"], list)
    constant = spec.modelopt_constant(_modelopt_version())
    if constant is not None:
        cfg = copy.deepcopy(getattr(mtq, constant))
    else:  # KV-cache-only calibration for the unquantized and weight-only formats
        cfg = {"quant_cfg": [{"quantizer_name": "*", "enable": False}] if listy else {"default": {"enable": False}}}
        cfg["algorithm"] = "max"
    rules = cfg["quant_cfg"]

    if spec.grouped and block_size is not None:
        for wcfg in _weight_cfgs(rules, listy):
            if "block_sizes" in wcfg:
                wcfg["block_sizes"] = {**wcfg["block_sizes"], -1: block_size}
    if constant is not None:
        if "lm_head" not in exclude:  # ModelOpt keeps lm_head unquantized by default; the recipe asked otherwise
            _drop(rules, "*lm_head*", listy)
        for p in exclude:
            _add(rules, _pattern(p), None, listy)
    if KV_CACHES[kv_cache].num_bits is not None:
        _add(rules, KV_PATTERN, {"num_bits": KV_CACHES[kv_cache].num_bits, "axis": None}, listy)

    if fmt == "int8_sq":
        cfg["algorithm"] = {"method": "smoothquant", "alpha": DEFAULT_SMOOTHQUANT_ALPHA if alpha is None else alpha}
        if algorithm == "max":
            cfg["algorithm"] = "max"
    elif spec.grouped:
        method = DEFAULT_AWQ_ALGORITHM if algorithm == "auto" else algorithm
        base = cfg.get("algorithm")
        extra = {k: v for k, v in base.items() if k != "method"} if isinstance(base, dict) else {}
        cfg["algorithm"] = {"method": method, **(extra if method == "awq_lite" else {})}
    elif algorithm not in ("auto", "max"):
        raise ValueError(f"algorithm {algorithm} does not apply to {fmt}")
    return cfg


def _modelopt_version() -> str | None:
    from builder._deps import version

    return version("nvidia-modelopt")


def _weight_cfgs(rules, listy: bool) -> list[dict]:
    found = []
    items = (
        [e.get("cfg") for e in rules if e.get("quantizer_name") == "*weight_quantizer"]
        if listy
        else [rules.get("*weight_quantizer")]
    )
    for c in items:
        if isinstance(c, list):
            found += [x for x in c if isinstance(x, dict)]
        elif isinstance(c, dict):
            found.append(c)
    return found


def _add(rules, pattern: str, attrs: dict | None, listy: bool) -> None:
    if listy:
        rules.append(
            {"quantizer_name": pattern, "enable": False} if attrs is None else {"quantizer_name": pattern, "cfg": attrs}
        )
    else:
        rules[pattern] = {"enable": False} if attrs is None else {**attrs, "enable": True}


def _drop(rules, pattern: str, listy: bool) -> None:
    if listy:
        rules[:] = [e for e in rules if e.get("quantizer_name") != pattern]
    else:
        rules.pop(pattern, None)


# ------------------------------------------------------------------------------------ weight-only exclude patterns
def trtllm_exclude_modules(linear_names: list[str], exclude: tuple[str, ...], family) -> list[str]:
    """Map recipe exclude patterns (over HF module names) to TensorRT-LLM module names for a weight-only checkpoint,
    through the family's linear map (runtime/families: which HF linears are fused into which TensorRT-LLM module).

    Raises ValueError when a pattern excludes part of a fused module (q_proj without k_proj and v_proj).
    """
    import fnmatch
    import re

    groups: dict[str, dict[str, bool]] = {}
    out: set[str] = set()
    for name in linear_names:
        hit = any(fnmatch.fnmatch(name, _pattern(p)) for p in exclude)
        if name.endswith("lm_head") or name == "lm_head":
            if hit:
                out.add("lm_head")
            continue
        m = re.search(r"(?:layers|h)\.(\d+)\.(.+)$", name)
        if not m:
            continue
        layer, tail = m.groups()
        module = family.trtllm_module(tail)
        if module is None:
            continue
        target = module[0]
        groups.setdefault(f"transformer.layers.{layer}.{target}", {})[name] = hit
    for trt_name, members in sorted(groups.items()):
        if all(members.values()):
            out.add(trt_name)
        elif any(members.values()):
            raise ValueError(
                f"quantization.exclude: {', '.join(n for n, h in members.items() if h)} is fused with "
                f"{', '.join(n for n, h in members.items() if not h)} into {trt_name}: exclude all of them or none"
            )
    return sorted(out)
