"""Stage `quantize`: calibrate with ModelOpt and keep the calibrated state, so exports never recalibrate.

Output (`quantize/`): `modelopt_state.pth` (ModelOpt's own restore state, written with torch.save by this stage),
`model.safetensors` (the calibrated weights and quantizer buffers: SmoothQuant and AWQ rescale weights in place),
`calibration.json` (what was done, with which data, how long), and, when the recipe targets a TensorRT-LLM
checkpoint or engine, `trtllm/`: the calibrated model exported unsharded (tp1 pp1) while it is still in memory. The
`checkpoint` stage slices that into tp x pp ranks, so a tp/pp change re-exports in about a second; the HF export and
the verify stage restore the model from the state files.

Calibration runs on CUDA when a GPU is present (in the model's float16/bfloat16), else on the CPU in float32:
CPU kernels for half precision are slow and less accurate, and the export casts to the checkpoint dtype anyway.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

NAME = VERB = "quantize"
AFTER = ("resolve",)
LIBRARIES = ("torch", "transformers", "nvidia-modelopt", "safetensors")
DELIVERABLE = False

log = logging.getLogger("trtq.quantize")


def wanted(recipe) -> bool:
    from runtime.formats import needs_calibration

    return needs_calibration(recipe.quantization.format, recipe.quantization.kv_cache)


def reads(recipe, ctx) -> dict[str, Any]:
    from builder.fingerprint import file_identity
    from runtime.formats import FORMATS

    calibration = recipe.calibration.model_dump(mode="json")
    if calibration["dataset"] != "builtin" and not calibration["dataset"].startswith("hf:"):
        path = (ctx.recipe_dir / calibration["dataset"]).resolve()
        calibration["file"] = file_identity(path) if path.is_file() else None
    out = {
        "dtype": recipe.model.dtype,
        "trust_remote_code": recipe.model.trust_remote_code,
        "quantization": recipe.quantization.model_dump(mode="json"),
        "calibration": calibration,
    }
    # The AWQ group size depends on tp (per-rank widths); key the calibration by the size chosen, not by tp itself,
    # so a tp change that keeps the group size re-exports without recalibrating.
    if FORMATS[recipe.quantization.format].grouped and ctx.resolved:
        from builder.planning.layout import awq_block_size

        out["quantization"]["awq_block_size"] = awq_block_size(ctx.shape, recipe)
    return out


def run(ctx) -> dict[str, Any]:
    from builder._deps import require, version
    from builder._determinism import deterministic_torch
    from builder.model.load import export_dtype, load_model
    from builder.planning.layout import awq_block_size
    from builder.quant.calibrate import algorithm_text, calibrate, calibration_device, calibration_samples, trtq_steps
    from builder.quant.config import build_config
    from builder.quant.data import documents, token_windows
    from builder.quant.state import STATE, SUMMARY, WEIGHTS, save_weights
    from runtime.formats import FORMATS

    recipe, model_dir, recipe_dir, out = ctx.recipe, ctx.model_dir, ctx.recipe_dir, ctx.out
    torch = require("torch", "Calibration")
    mtq = require("modelopt.torch.quantization", "Calibration")
    mto = require("modelopt.torch.opt", "Calibration")
    transformers = require("transformers", "Calibration")
    from tqdm.auto import tqdm

    q, c = recipe.quantization, recipe.calibration
    config = ctx.model_config
    block = awq_block_size(ctx.shape, recipe, log_choice=True) if FORMATS[q.format].grouped else None
    cfg = build_config(
        mtq, q.format, q.kv_cache, q.exclude, alpha=q.smoothquant_alpha, block_size=block, algorithm=q.algorithm
    )
    steps = trtq_steps(q.format, q.algorithm, cfg)
    device = calibration_device(c.device)
    dtype = "float32" if device == "cpu" else export_dtype(recipe.model.dtype, config)
    samples = calibration_samples(recipe)

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    t0 = time.perf_counter()
    docs = documents(c, recipe_dir, limit_chars=max(200_000, samples * c.seq_len * 12))
    data = token_windows(docs, tokenizer, samples, c.seq_len, c.seed)
    log.info(
        "calibration data: %s, %d x %d tokens (%.1f s)",
        c.dataset,
        data.shape[0],
        data.shape[1],
        time.perf_counter() - t0,
    )
    model = load_model(model_dir, dtype, recipe.model.trust_remote_code, device)
    log.info(
        "calibrating %s on %s in %s (%s)",
        q.format + ("" if q.kv_cache == "none" else f" + kv {q.kv_cache}"),
        device,
        dtype,
        algorithm_text(cfg, steps),
    )

    def forward_loop(m) -> None:
        batches = range(0, data.shape[0], c.batch_size)
        for i in tqdm(batches, desc="calibrating", unit="batch", leave=False, dynamic_ncols=True):
            m(data[i : i + c.batch_size].to(device))

    deterministic_torch(torch, c.seed)
    t0 = time.perf_counter()

    def stats_loop(m) -> None:  # second moments settle on far fewer tokens than AWQ's search needs: 8 windows
        for i in range(0, min(8, data.shape[0]), c.batch_size):
            m(data[i : min(i + c.batch_size, 8)].to(device))

    model = calibrate(model, cfg, steps, forward_loop, data[:1, :16].to(device), stats_loop)
    seconds = time.perf_counter() - t0
    log.info("calibrated in %.1f s", seconds)

    torch.save(mto.modelopt_state(model), out / STATE)
    save_weights(model.cpu(), out / WEIGHTS)  # the export below runs on the CPU, as a restored model does
    unsharded = "checkpoint" in recipe.targets or "engine" in recipe.targets
    if unsharded:  # from the model in memory: no second load, no restore; exports then only slice it per rank
        from builder.checkpoint.export import UNSHARDED, export_unsharded

        export_unsharded(model, recipe, model_dir, out / UNSHARDED)
    summary = {
        "format": q.format,
        "kv_cache": q.kv_cache,
        "algorithm": algorithm_text(cfg, steps),
        "awq_block_size": block,
        "samples": int(data.shape[0]),
        "seq_len": int(data.shape[1]),
        "dataset": c.dataset,
        "device": device,
        "dtype": dtype,
        "seconds": round(seconds, 2),
        "modelopt": version("nvidia-modelopt"),
        "unsharded_checkpoint": unsharded,
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
