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
from pathlib import Path
from typing import Any

from builder._deps import require, version
from builder._determinism import deterministic_torch
from builder._model import export_dtype, load_model, read_config
from builder.calib import documents, token_windows
from builder.clipping import clip_int4_blocks
from builder.errors import UsageError
from builder.layout import ModelShape, awq_block_size
from builder.quant_formats import build_config
from builder.recipe import Recipe
from builder.smoothing import fuse_smoothing
from runtime.formats import FORMATS

log = logging.getLogger("trtq.quantize")

STATE = "modelopt_state.pth"
WEIGHTS = "model.safetensors"
SUMMARY = "calibration.json"


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


def quantize(recipe: Recipe, model_dir: Path, recipe_dir: Path, out: Path) -> dict[str, Any]:
    torch = require("torch", "Calibration")
    mtq = require("modelopt.torch.quantization", "Calibration")
    mto = require("modelopt.torch.opt", "Calibration")
    transformers = require("transformers", "Calibration")
    from tqdm.auto import tqdm

    q, c = recipe.quantization, recipe.calibration
    config = read_config(model_dir)
    shape = ModelShape.from_config(config)
    block = awq_block_size(shape, recipe, log_choice=True) if FORMATS[q.format].grouped else None
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
        _algo(cfg, steps),
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
        from builder.stages.export import UNSHARDED, export_unsharded

        export_unsharded(model, recipe, model_dir, out / UNSHARDED)
    summary = {
        "format": q.format,
        "kv_cache": q.kv_cache,
        "algorithm": _algo(cfg, steps),
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


def save_weights(model, path: Path) -> None:
    """The model's state as safetensors, streamed tensor by tensor. safetensors' own save_model first turns every
    tensor into bytes, a second copy of the model in memory at the build's peak. Names that alias one storage (tied
    embeddings) are dropped as save_model drops them, so safetensors' load_model restores them the same way."""
    import torch
    from safetensors.torch import _remove_duplicate_names

    from builder import _safetensors as st

    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.bfloat16: "BF16",
        torch.float16: "F16",
        torch.float8_e4m3fn: "F8_E4M3",
        torch.float8_e5m2: "F8_E5M2",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }
    raw = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # numpy has no bfloat16 or fp8
    state = model.state_dict()
    for dropped in _remove_duplicate_names(state).values():
        for name in dropped:
            del state[name]
    tensors = {}
    for name, t in state.items():
        t = t.detach().contiguous()
        tensors[name] = st.Tensor(names[t.dtype], t.view(raw[t.element_size()]).numpy())
    st.write(path, tensors)


def restore_quantized(recipe: Recipe, model_dir: Path, quantize_dir: Path, export_dtype_name: str):
    """Rebuild the calibrated model from the stage's files (on the CPU) for export."""
    torch = require("torch", "Restoring the calibrated model")
    mto = require("modelopt.torch.opt", "Restoring the calibrated model")
    from safetensors.torch import load_model as load_weights

    summary = json.loads((quantize_dir / SUMMARY).read_text())
    model = load_model(model_dir, summary["dtype"], recipe.model.trust_remote_code)
    # Our own file, written by the quantize stage above; ModelOpt's state holds Python objects, hence no weights_only.
    state = torch.load(quantize_dir / STATE, weights_only=False, map_location="cpu")
    model = mto.restore_from_modelopt_state(model, state)
    load_weights(model, str(quantize_dir / WEIGHTS), strict=True)
    log.debug("restored calibrated %s model for %s export", summary["format"], export_dtype_name)
    return model.eval()


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
        if "int4-clip" in steps:
            clip_int4_blocks(model, stats_loop or forward_loop)
    return model


def trtq_steps(fmt: str, algorithm: str, cfg: dict[str, Any]) -> tuple[str, ...]:
    """What trtq does after ModelOpt's calibration (builder/smoothing.py, builder/clipping.py).

    fused-smoothing: whenever SmoothQuant ran (a correctness fix: the export must compute what was calibrated);
    fused-awq-scales + int4-clip: int4_awq with the default algorithm (`auto`); an explicit awq_lite/awq_clip/awq_full
    is ModelOpt's alone.
    """
    method = cfg["algorithm"].get("method") if isinstance(cfg.get("algorithm"), dict) else cfg.get("algorithm")
    steps = []
    if method == "smoothquant":
        steps.append("fused-smoothing")
    if fmt == "int4_awq" and algorithm == "auto":
        steps += ["fused-awq-scales", "int4-clip"]
    return tuple(steps)


def _algo(cfg: dict[str, Any], steps: tuple[str, ...] = ()) -> str:
    a = cfg.get("algorithm")
    if isinstance(a, dict):
        rest = ", ".join(f"{k}={v}" for k, v in a.items() if k != "method")
        text = f"{a.get('method')}" + (f" ({rest})" if rest else "")
    else:
        text = str(a)
    return " + ".join([text, *steps])
