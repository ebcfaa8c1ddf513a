"""One pre-quant scale per group of fused linears: SmoothQuant's chosen for the fused weight, AWQ's averaged early.

ModelOpt's `smoothquant` smooths every linear on its own: q, k and v (and gate and up) read the same activation but
get different per-channel scales when alpha < 1. TensorRT-LLM fuses them into one GEMM (qkv, gate+up) behind one
smoothed input, so ModelOpt's export averages their scales, rescales the weights, and keeps the activation ranges
measured for the old scales. The exported checkpoint then computes something other than the calibrated model
(SmolLM2 at alpha 0.5: nrmse 0.30 between the two), and any alpha below 1.0 is unusable through the export.

`fuse_smoothing` does what TensorRT-LLM's own SmoothQuant does for fused layers: it computes one scale from the
shared activation range and the largest weight of the whole group per input channel,
``s = max|W_group|^(1 - alpha) / max|x|^alpha``, rewrites the group's weights and pre-quant scales with it, and sets
the activation range and the weight ranges that follow from it. The calibrated model and the export then agree, and
ModelOpt's export finds nothing to resmooth. Groups whose scales already agree (alpha 1.0) are left untouched.

AWQ has the same split: awq_lite searches each linear's scale alone and the export averages them. trtq averages them
right after the search instead, so that the INT4 clipping that follows (builder/quant/clipping.py) is measured on, and
exported with, the weights TensorRT-LLM will run.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from builder.quant._hooks import module_inputs

log = logging.getLogger("trtq.quantize")

_EPS = 1.0 / (1 << 31)  # ModelOpt's own floor for a channel that never fired


def shared_input_groups(model, probe) -> list[list[str]]:
    """Names of the quantized linears that read the very same input tensor, found by one short forward pass."""
    import torch

    seen: dict[int, list[str]] = defaultdict(list)
    keep = []  # hold every input so that no tensor id is reused during the pass

    def record(name, x) -> None:
        keep.append(x)
        seen[id(x)].append(name)

    def linear(_name, module) -> bool:
        return isinstance(module, torch.nn.Linear) and hasattr(module, "input_quantizer")

    with module_inputs(model, linear, record), torch.no_grad():
        model(probe)
    groups = []
    for names in seen.values():
        unique = list(dict.fromkeys(names))
        if len(unique) > 1 and unique not in groups:
            groups.append(unique)
    return groups


def fuse_smoothing(model, probe, alpha: float | None = None) -> int:
    """Give every group of linears that share an input one pre-quant scale. Returns how many groups changed.

    SmoothQuant (``alpha`` given): the fused group's own SmoothQuant scale. AWQ (``alpha`` None): the mean of the
    group's scales, which is what ModelOpt's export would use; set here, before INT4 clipping, so that the export has
    nothing left to resmooth (resmoothing recomputes the weight ranges and would undo the clipping).
    """
    import torch

    modules = dict(model.named_modules())
    changed = 0
    with torch.no_grad():
        for names in shared_input_groups(model, probe):
            group = [modules[n] for n in names]
            quantizers = [m.input_quantizer for m in group]
            scales = [q.pre_quant_scale for q in quantizers]
            if any(s is None for s in scales) or all(torch.equal(scales[0], s) for s in scales[1:]):
                continue  # not smoothed (disabled, excluded, or unquantized), or already one scale
            if not all(_weight_layout(m) for m in group):
                log.warning("pre-quant scales of %s left to ModelOpt: unknown weight quantizer layout", names)
                continue
            device = group[0].weight.device
            # the unsmoothed weights: ModelOpt stored W / s
            weights = [m.weight.float() * s.float().reshape(1, -1) for m, s in zip(group, scales, strict=True)]
            if alpha is not None:
                if not all(hasattr(q, "_amax_for_smoothing") for q in quantizers):
                    continue
                act = quantizers[0]._amax_for_smoothing.float().reshape(-1).to(device)
                w_max = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0)
                scale = w_max.pow(1 - alpha) / act.pow(alpha)
                scale[act <= _EPS] = 1
                scale = scale.clamp(min=1e-4, max=1e4)
            else:
                # ModelOpt's export multiplies x by the scale (AWQ stores 1 / its search result): average those
                scale = torch.stack([s.float().reshape(-1) for s in scales]).mean(dim=0)
            scale = _exact_mean_safe(scale.to(scales[0].dtype))
            for m, w in zip(group, weights, strict=True):
                m.weight.data.copy_((w / scale.float().reshape(1, -1)).to(m.weight.dtype))
                m.input_quantizer.pre_quant_scale = scale
                if alpha is not None:
                    m.input_quantizer.amax = (act * scale.float()).amax().to(m.weight.dtype)
                _reset_weight_amax(m)
            changed += 1
    log.debug("one pre-quant scale for %d groups of fused linears", changed)
    return changed


def fuse_weight_scales(model, probe) -> int:
    """Give every group of linears that share an input (q/k/v, gate/up) one per-tensor weight scale: the largest.

    TensorRT-LLM runs a fused group as one GEMM with one weight scale, so ModelOpt's export requantizes q, k and v (or
    gate and up) with the max of their scales. The fake-quant model never did that requantization: on a tiny Llama its
    fp8 logits differed from the exported checkpoint's by nrmse 0.061, as much as the quantization error itself
    (0.065); with the scales fused here first, 0.020. The export is byte-identical either way (the max is what it
    takes); what changes is that the calibrated model now computes what the checkpoint holds. Groups whose weight
    scales are not per tensor (per channel, per block) are left alone. Returns how many groups changed.
    """
    import torch

    modules = dict(model.named_modules())
    changed = 0
    with torch.no_grad():
        for names in shared_input_groups(model, probe):
            stages = [_quantizer_stages(getattr(modules[n], "weight_quantizer", None)) for n in names]
            if len({len(st) for st in stages}) != 1:
                continue
            for quantizers in zip(*stages, strict=True):  # W4A8: the int4 block stage, then the fp8 per-tensor one
                amaxes = [getattr(q, "amax", None) for q in quantizers]
                if any(a is None or a.numel() != 1 for a in amaxes) or not all(q.is_enabled for q in quantizers):
                    continue
                top = torch.stack([a.float().reshape(()) for a in amaxes]).max()
                if all(a.float().reshape(()) == top for a in amaxes):
                    continue
                for q, a in zip(quantizers, amaxes, strict=True):
                    q.amax = top.to(a.dtype).reshape(a.shape)
                changed += 1
    log.debug("one per-tensor weight scale for %d groups of fused linears", changed)
    return changed


def _quantizer_stages(quantizer) -> list:
    """A weight quantizer's stages: itself, or the members of a SequentialQuantizer (W4A8: int4 blocks, then fp8)."""
    if quantizer is None:
        return []
    try:
        return list(quantizer) if type(quantizer).__name__ == "SequentialQuantizer" else [quantizer]
    except TypeError:
        return [quantizer]


def _exact_mean_safe(scale):
    """The scale with its two lowest float32 mantissa bits cleared (a relative change below 5e-7), so that the mean
    of 2, 3 or 4 copies, which is how ModelOpt's export checks a fused group, is exactly the scale again."""
    import torch

    if scale.dtype != torch.float32:  # 16-bit means are computed in float32 and round back exactly
        return scale
    return (scale.contiguous().view(torch.int32) & ~3).view(torch.float32)


def _weight_layout(module) -> str | None:
    """'channel' (one range per output row) or 'block' (per row and input block), from the quantizer's amax (W4A8's
    SequentialQuantizer: from its first stage, the int4 blocks)."""
    stages = _quantizer_stages(getattr(module, "weight_quantizer", None))
    q = stages[0] if stages else None
    if any(getattr(later, "amax", None) is None or later.amax.numel() != 1 for later in stages[1:]):
        return None  # only per-tensor later stages (W4A8's fp8 scale) are known
    amax = getattr(q, "amax", None)
    if amax is None:
        return None
    out, width = module.weight.shape
    if amax.numel() == out:
        return "channel"
    block = (getattr(q, "block_sizes", None) or {}).get(-1)
    if block and width % block == 0 and amax.numel() == out * (width // block):
        return "block"
    return None


def _reset_weight_amax(module) -> None:
    """Max calibration of the weight quantizer again, for the rescaled weight (what ModelOpt's export would do).
    A SequentialQuantizer's later stages (W4A8's fp8 per-tensor scale) see the raw weight during max calibration,
    as its first stage does: their range is the weight's max."""
    q, *later = _quantizer_stages(module.weight_quantizer)
    w = module.weight.detach().float().abs()
    for stage in later:
        stage.amax = w.max().reshape(stage.amax.shape).to(stage.amax.dtype)
    if _weight_layout(module) == "block":
        block = q.block_sizes[-1]
        w = w.reshape(w.shape[0], -1, block)
        amax = w.amax(dim=-1)
    else:
        amax = w.amax(dim=1)
    q.amax = amax.reshape(q.amax.shape).to(q.amax.dtype)
