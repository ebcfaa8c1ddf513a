"""Activation-weighted clipping of block-quantized INT4 weights: trtq's step after ModelOpt's AWQ search.

AWQ (awq_lite) rescales input channels so that the weights that meet large activations are quantized finely, but
each block of 64 or 128 weights still takes its largest magnitude as its range: one outlier coarsens the grid for
the whole block. ModelOpt's own remedy (awq_clip) searches clip ratios by running every linear's calibration inputs
through each candidate, which takes longer than the AWQ search itself on a CPU (SmolLM2-135M: over 10 minutes on
top of awq_lite's 7).

Here the error a block's clipping causes is measured in closed form instead. For an output row, the expected squared
error of ``x . (w - q(w))`` over the calibration data is, to first order (independent channels),
``sum_j E[x_j^2] (w_j - q(w_j))^2``. One extra forward pass records ``E[x_j^2]`` for every quantized linear (its
input after AWQ's pre-quant scale); then each block gets the ratio r in [0.5, 1] of its max that minimizes that sum,
and the weight quantizer's range (amax) is set to it. Fake quantization and the export read the same amax, so the
checkpoint holds exactly what was measured (builder/quant/smoothing.py first gives fused groups one AWQ scale, so that the
export has nothing to resmooth: resmoothing re-measures the max and would undo the clipping). SmolLM2-135M, 32 x 256
calibration tokens (tests/bench/bench_defaults.py): perplexity over bf16 +26.8% instead of ModelOpt's awq_lite +44.8%,
for one forward pass over 8 windows and about a second of arithmetic.
"""

from __future__ import annotations

import logging

from builder.quant._hooks import module_inputs

log = logging.getLogger("trtq.quantize")

RATIOS = tuple(1.0 - 0.025 * i for i in range(21))  # 1.0 down to 0.5


def _int4_block_linears(model):
    import torch

    for name, module in model.named_modules():
        q = getattr(module, "weight_quantizer", None)
        if (
            isinstance(module, torch.nn.Linear)
            and q is not None
            and getattr(q, "is_enabled", False)
            and getattr(q, "num_bits", None) == 4
            and isinstance(getattr(q, "block_sizes", None), dict)
            and q.block_sizes.get(-1)
            and getattr(q, "amax", None) is not None
        ):
            yield name, module, int(q.block_sizes[-1])


def input_second_moments(model, forward_loop, names: set[str]) -> dict:
    """E[x_j^2] per input channel of each named linear, over one pass of ``forward_loop``."""
    import torch

    sums: dict = {}
    counts: dict = {}

    def accumulate(name, x) -> None:
        x = x.detach().float().reshape(-1, x.shape[-1])
        sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
        counts[name] = counts.get(name, 0) + x.shape[0]

    with module_inputs(model, lambda name, _module: name in names, accumulate), torch.no_grad():
        forward_loop(model)
    return {n: sums[n] / counts[n] for n in sums}


def clip_int4_blocks(model, forward_loop, ratios=RATIOS) -> int:
    """Set the range of every INT4 weight block to its activation-weighted best clip. Returns the linears changed."""
    import torch

    linears = list(_int4_block_linears(model))
    moments = input_second_moments(model, forward_loop, {n for n, _, _ in linears})
    changed = 0
    with torch.no_grad():
        for name, module, block in linears:
            if name not in moments:
                continue  # never reached by the calibration data
            w = module.weight.float()
            out, width = w.shape
            if width % block:
                continue
            groups = w.reshape(out, width // block, block)
            pre = module.input_quantizer.pre_quant_scale
            h = moments[name].to(w.device) * (pre.float().to(w.device) ** 2 if pre is not None else 1.0)
            h = h.reshape(1, width // block, block)
            amax = groups.abs().amax(-1)
            best = torch.full_like(amax, float("inf"))
            best_ratio = torch.ones_like(amax)
            for r in ratios:
                scale = (amax * r).clamp(min=1e-8).unsqueeze(-1) / 7.0
                err = ((groups - (groups / scale).round().clamp(-8, 7) * scale).pow(2) * h).sum(-1)
                better = err < best
                best = torch.where(better, err, best)
                best_ratio = torch.where(better, torch.full_like(best_ratio, r), best_ratio)
            old = module.weight_quantizer.amax
            if old.numel() != amax.numel():
                continue  # not the block layout this assumes: leave ModelOpt's ranges alone
            module.weight_quantizer.amax = (amax * best_ratio).reshape(old.shape).to(old.dtype)
            changed += 1
    log.info("INT4 blocks clipped by activation-weighted error: %d linears", changed)
    return changed
