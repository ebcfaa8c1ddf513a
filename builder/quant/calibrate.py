"""Calibration: ModelOpt's algorithm for the format, then trtq's own steps (fused-group SmoothQuant, fused AWQ
scales, activation-weighted INT4 clipping), on the device and with the number of windows the recipe asks for."""

from __future__ import annotations

from typing import Any

from builder._deps import require
from builder.errors import UsageError
from builder.quant.clipping import clip_int4_blocks
from builder.quant.smoothing import fuse_smoothing, fuse_weight_scales
from builder.recipe.schema import Recipe
from runtime.formats import FORMATS


def calibration_device(requested: str) -> str:
    torch = require("torch", "Calibration")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("calibration.device: cuda was asked for but no CUDA GPU is visible (use auto or cpu)")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def calibration_samples(recipe: Recipe) -> int:
    """Recipe value, or the format's default (128 windows; 32 for AWQ, whose search is costly)."""
    if recipe.calibration.samples is not None:
        return recipe.calibration.samples
    return FORMATS[recipe.quantization.format].calibration_samples


def calibrate(model, cfg: dict[str, Any], steps: tuple[str, ...], forward_loop, probe, stats_loop=None):
    """ModelOpt's calibration, then trtq's steps (see trtq_steps). ``probe``: a few tokens to trace shared inputs;
    ``stats_loop``: the forward pass that measures activation moments for INT4 clipping (default: forward_loop)."""
    torch = require("torch", "Calibration")
    mtq = require("modelopt.torch.quantization", "Calibration")
    with torch.no_grad():
        model = mtq.quantize(model, cfg, forward_loop)
        if "fused-smoothing" in steps:
            fuse_smoothing(model, probe, alpha=cfg["algorithm"]["alpha"])
        if "fused-awq-scales" in steps:
            fuse_smoothing(model, probe)
        if "fused-weight-scales" in steps:
            fuse_weight_scales(model, probe)
        if "int4-clip" in steps:
            clip_int4_blocks(model, stats_loop or forward_loop)
    return model


def trtq_steps(fmt: str, algorithm: str, cfg: dict[str, Any]) -> tuple[str, ...]:
    """What trtq does after ModelOpt's calibration (builder/quant/smoothing.py, builder/quant/clipping.py).

    fused-smoothing: whenever SmoothQuant ran (a correctness fix: the export must compute what was calibrated);
    fused-weight-scales: per-tensor weight scales (fp8, W4A8's fp8 stage): one per fused group, the one the export
    uses anyway, so that the calibrated model computes what the checkpoint holds;
    fused-awq-scales + int4-clip: int4_awq with the default algorithm (`auto`); an explicit awq_lite/awq_clip/awq_full
    is ModelOpt's alone.
    """
    method = cfg["algorithm"].get("method") if isinstance(cfg.get("algorithm"), dict) else cfg.get("algorithm")
    steps = []
    if method == "smoothquant":
        steps.append("fused-smoothing")
    if fmt == "int4_awq" and algorithm == "auto":
        steps += ["fused-awq-scales", "int4-clip"]
    if fmt == "w4a8_awq" and algorithm == "auto":
        steps.append("fused-awq-scales")
    if fmt in ("fp8", "w4a8_awq"):
        steps.append("fused-weight-scales")
    return tuple(steps)


def algorithm_text(cfg: dict[str, Any], steps: tuple[str, ...] = ()) -> str:
    a = cfg.get("algorithm")
    if isinstance(a, dict):
        rest = ", ".join(f"{k}={v}" for k, v in a.items() if k != "method")
        text = f"{a.get('method')}" + (f" ({rest})" if rest else "")
    else:
        text = str(a)
    return " + ".join([text, *steps])
