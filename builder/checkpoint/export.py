"""Writing checkpoints: the TensorRT-LLM checkpoint (tp x pp shards) and the unified HF checkpoint.

Both go through ModelOpt's exporters, from the unquantized model or from the calibrated state of the `quantize` stage
(builder/quant/state.py), with trtq's corrections (builder/quant/modelopt_fixes.py). A tp x pp checkpoint is sliced
from the unsharded one when the quantize stage wrote it (builder/checkpoint/reshard.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from builder._deps import require
from builder.errors import StageFailed
from builder.model.load import copy_tokenizer, export_dtype, load_model, read_config
from builder.quant.modelopt_fixes import fix_config, mark_weight_only
from builder.recipe.schema import Recipe
from runtime.formats import FORMATS, KV_CACHES, needs_calibration

log = logging.getLogger("trtq.export")


def prepared_model(recipe: Recipe, model_dir: Path, quantize_dir: Path | None):
    """The model to export: restored with its calibrated quantizers when the format is quantized."""
    dtype = export_dtype(recipe.model.dtype, read_config(model_dir))
    if quantize_dir is None or not needs_calibration(recipe.quantization.format, recipe.quantization.kv_cache):
        return load_model(model_dir, dtype, recipe.model.trust_remote_code), dtype
    from builder.quant.state import restore_quantized

    return restore_quantized(recipe, model_dir, quantize_dir, dtype), dtype


UNSHARDED = "trtllm"  # the quantize stage's unsharded (tp1 pp1) TensorRT-LLM checkpoint


def export_checkpoint(recipe: Recipe, model_dir: Path, quantize_dir: Path | None, out: Path) -> dict[str, Any]:
    """Write `config.json` + `rank{N}.safetensors` for recipe.parallel into ``out`` and check what was written.

    From the quantize stage's unsharded checkpoint when there is one: sliced into tp x pp ranks (builder/checkpoint/reshard.py,
    byte-identical to ModelOpt's own split) in about a second, without torch or ModelOpt. Otherwise, or when the
    layout cannot be derived by slicing, ModelOpt exports the (restored) model directly.
    """
    tp, pp = recipe.parallel.tp, recipe.parallel.pp
    t0 = time.perf_counter()
    how = None
    src = quantize_dir / UNSHARDED if quantize_dir is not None else None
    if src is not None and (src / "config.json").is_file():
        how = _from_unsharded(src, out, tp, pp)
    if how is None:
        model, dtype = prepared_model(recipe, model_dir, quantize_dir)
        write_trtllm(model, recipe, model_dir, out, tp, pp)
        how = f"ModelOpt export in {dtype}"
    log.info("TensorRT-LLM checkpoint: tp=%d pp=%d, %s (%.1f s)", tp, pp, how, time.perf_counter() - t0)
    copy_tokenizer(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    q = recipe.quantization
    check_checkpoint(out, tp, pp, FORMATS[q.format].quant_algo, KV_CACHES[q.kv_cache].quant_algo)
    return config


def _from_unsharded(src: Path, out: Path, tp: int, pp: int) -> str | None:
    """Derive the tp x pp checkpoint from ``src`` (tp1 pp1); None when slicing cannot give ModelOpt's exact split."""
    import os
    import shutil

    if tp == pp == 1:
        for f in sorted(src.iterdir()):
            if f.suffix != ".safetensors":
                shutil.copy2(f, out / f.name)  # small files are copied, so that no edit can reach the other stage
                continue
            try:
                os.link(f, out / f.name)  # rank files are never written again: share their bytes
            except OSError:
                shutil.copy2(f, out / f.name)
        return "the calibrated unsharded checkpoint"
    from builder.checkpoint.reshard import reshard

    try:
        reshard(src, out, tp, pp)
    except ValueError as e:
        log.info("cannot slice the unsharded checkpoint into tp=%d pp=%d (%s); exporting with ModelOpt", tp, pp, e)
        for f in out.iterdir():
            f.unlink()
        return None
    return "sliced from the calibrated unsharded checkpoint"


def export_unsharded(model, recipe: Recipe, model_dir: Path, out: Path) -> None:
    """The tp1 pp1 TensorRT-LLM checkpoint of the calibrated ``model`` (the quantize stage keeps it)."""
    out.mkdir()
    t0 = time.perf_counter()
    write_trtllm(model, recipe, model_dir, out, 1, 1)
    log.info("unsharded TensorRT-LLM checkpoint written (%.1f s)", time.perf_counter() - t0)


def write_trtllm(model, recipe: Recipe, model_dir: Path, out: Path, tp: int, pp: int) -> None:
    """ModelOpt's TensorRT-LLM export of ``model`` for tp x pp, with trtq's corrections to config.json."""
    torch = require("torch", "Exporting a TensorRT-LLM checkpoint")
    mte = require("modelopt.torch.export", "Exporting a TensorRT-LLM checkpoint")
    decoder = mte.get_model_type(model)
    if decoder is None:
        raise StageFailed(f"ModelOpt {mte.__name__} has no TensorRT-LLM export for {type(model).__name__}")
    dtype = export_dtype(recipe.model.dtype, read_config(model_dir))
    with torch.inference_mode():
        mte.export_tensorrt_llm_checkpoint(
            model,
            decoder,
            getattr(torch, dtype),
            export_dir=str(out),
            inference_tensor_parallel=tp,
            inference_pipeline_parallel=pp,
        )
    fix_config(out / "config.json", read_config(model_dir))
    if FORMATS[recipe.quantization.format].quantized_at_load:
        mark_weight_only(out, recipe, model)


def export_hf(recipe: Recipe, model_dir: Path, quantize_dir: Path | None, out: Path) -> None:
    """Write the unified HF checkpoint (what TensorRT-LLM's PyTorch backend loads)."""
    torch = require("torch", "Exporting the unified HF checkpoint")
    model, dtype = prepared_model(recipe, model_dir, quantize_dir)
    with torch.inference_mode():
        if quantize_dir is None:
            model.save_pretrained(out, safe_serialization=True)
        else:
            mte = require("modelopt.torch.export", "Exporting the unified HF checkpoint")
            mte.export_hf_checkpoint(model, export_dir=str(out))
    copy_tokenizer(model_dir, out)
    log.info("unified HF checkpoint (%s)", dtype)


def check_checkpoint(ckpt: Path, tp: int, pp: int, quant_algo: str | None, kv_algo: str | None) -> None:
    """Check an exported checkpoint: quant_algo and mapping as asked, one file per rank, consistent shard shapes."""
    from builder.checkpoint._safetensors import read

    config = json.loads((ckpt / "config.json").read_text())
    quant = config.get("quantization") or {}
    got_algo = (quant.get("quant_algo"), quant.get("kv_cache_quant_algo"))
    if got_algo != (quant_algo, kv_algo):
        raise StageFailed(
            f"exported checkpoint {ckpt}: quant_algo/kv_cache_quant_algo are {got_algo}, expected {(quant_algo, kv_algo)}"
        )
    mapping = config.get("mapping") or {}
    want = {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}
    got = {k: mapping.get(k, 1 if k != "world_size" else None) for k in want}
    if got != want:
        raise StageFailed(f"exported checkpoint {ckpt}: mapping is {got}, expected {want}")
    shapes: dict[int, dict[str, tuple]] = {}
    for rank in range(tp * pp):
        path = ckpt / f"rank{rank}.safetensors"
        if not path.is_file():
            raise StageFailed(f"exported checkpoint {ckpt}: {path.name} is missing")
        shapes[rank] = {k: t.shape for k, t in read(path)[0].items()}
    for stage in range(pp):
        ranks = [stage * tp + t for t in range(tp)]
        first = shapes[ranks[0]]
        for r in ranks[1:]:
            if shapes[r] != first:
                diff = sorted(set(shapes[r].items()) ^ set(first.items()))[:3]
                raise StageFailed(
                    f"exported checkpoint {ckpt}: rank{r} and rank{ranks[0]} hold different tensors: {diff}"
                )
