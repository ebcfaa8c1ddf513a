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


def _exact_mean_safe(scale):
    """The scale with its two lowest float32 mantissa bits cleared (a relative change below 5e-7), so that the mean
    of 2, 3 or 4 copies, which is how ModelOpt's export checks a fused group, is exactly the scale again."""
    import torch

    if scale.dtype != torch.float32:  # 16-bit means are computed in float32 and round back exactly
        return scale
    return (scale.contiguous().view(torch.int32) & ~3).view(torch.float32)


def _weight_layout(module) -> str | None:
    """'channel' (one range per output row) or 'block' (per row and input block), from the quantizer's amax."""
    q = getattr(module, "weight_quantizer", None)
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
    """Max calibration of the weight quantizer again, for the rescaled weight (what ModelOpt's export would do)."""
    q = module.weight_quantizer
    w = module.weight.detach().float().abs()
    if _weight_layout(module) == "block":
        block = q.block_sizes[-1]
        w = w.reshape(w.shape[0], -1, block)
        amax = w.amax(dim=-1)
    else:
        amax = w.amax(dim=1)
    q.amax = amax.reshape(q.amax.shape).to(q.amax.dtype)
