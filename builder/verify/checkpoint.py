"""Verify a TensorRT-LLM checkpoint: run it with the reference runtime and compare its logits with the ModelOpt
fake-quantized model, the unquantized source model, and, for a split checkpoint, the unsplit one.

Metrics per comparison, on a fixed batch of texts (teacher-forced, every position):
  max_abs / mean_abs  logit difference (fp32)
  nrmse               RMS(difference) / std(the other model's logits): scale-free, comparable across models
  top1                fraction of positions where both pick the same next token
  ppl / ppl_ratio     next-token perplexity of the checkpoint and of the other model, and their ratio

Thresholds (per format, in the format table runtime/formats.py; a check fails when a metric is past its limit):
- vs the fake-quant model: the checkpoint must compute what ModelOpt simulated. Only accumulation order, fp16
  storage of unquantized tensors, and a few rounding ties differ, so the limits are tight.
- vs the source model (always, and the only reference when no fake-quant model is given): the quantization error
  itself; looser, per format, sized from measured SmolLM2-135M errors with margin; gated on top-1 and perplexity.
- weight-only formats (W8A16/W4A16) are quantized by TensorRT-LLM at load, so their "fake-quant" model is the
  unquantized one and gets the source limits.
- vs the unsplit checkpoint of the same calibration (a tp x pp build against `quantize/trtllm/`, or `--baseline`):
  the reference runtime computes a split checkpoint exactly as the unsplit one (runtime/reference/quant.py: the
  row-parallel reduction is exact), so only float rounding may differ: nrmse <= 1e-5, top1 >= 0.99. Anything more is
  an export bug (a wrong slice, a scale that differs between ranks), not noise.
Under mpirun every rank runs its shard; then the ranks leave the process group and rank 0 alone loads the comparison
models, one at a time, and reports. `python -m builder.verify.checkpoint ARGS.json` is one rank of the verify stage
(builder/verify/checkpoint.py starts it under mpirun through builder/_mpirun.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("trtq.verify")

BUILTIN_TEXTS = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital of "
    "Germany. Rivers flow from the mountains to the sea, carrying water, sand and stones along their way.",
    "To build a house, first lay a solid foundation, then raise the walls, and finally put on the roof. Each step "
    "depends on the one before it, so a mistake early on is expensive to fix later.",
    "Quantization stores the weights of a neural network with fewer bits. It makes the model smaller and faster, "
    "but every rounding step adds a little error, which is why the result must be checked against the original.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5\nfor i in range(3):\n    print(i * i)\n",
)


def limits(kind: str, quant_algo: str | None, kv_algo: str | None = None, overrides: dict | None = None) -> dict:
    """The limits of one comparison ("fake_quant", "source" or "baseline": a split against the unsplit checkpoint),
    from the format table (runtime/formats.py); ``overrides``: {kind: {metric: limit}}."""
    from runtime.formats import KV_CACHES, by_quant_algo, verify_limits

    kv = next(spec for spec in KV_CACHES.values() if spec.quant_algo == kv_algo)
    lim = verify_limits("split" if kind == "baseline" else kind, by_quant_algo(quant_algo), kv)
    lim.update((overrides or {}).get(kind, {}))
    return lim


def compare(ours: Sequence, theirs: Sequence, tokens: Sequence[Sequence[int]]) -> dict[str, float]:
    """Metrics of the checkpoint's logits (``ours``) against another model's, per position of every sequence."""
    import torch

    a = torch.cat([x.float() for x in ours])
    b = torch.cat([x.float() for x in theirs])
    d = a - b
    nll_a, nll_b, n = 0.0, 0.0, 0
    for la, lb, t in zip(ours, theirs, tokens, strict=True):
        tgt = torch.tensor(t[1:], dtype=torch.long)
        if len(tgt) == 0:
            continue
        nll_a += torch.nn.functional.cross_entropy(la[:-1].float(), tgt, reduction="sum").item()
        nll_b += torch.nn.functional.cross_entropy(lb[:-1].float(), tgt, reduction="sum").item()
        n += len(tgt)
    ppl_a, ppl_b = math.exp(nll_a / max(n, 1)), math.exp(nll_b / max(n, 1))

    def sig(x: float) -> float:
        return float(f"{x:.6g}")

    return {
        "max_abs": sig(d.abs().max().item()),
        "mean_abs": sig(d.abs().mean().item()),
        "nrmse": sig((d.pow(2).mean().sqrt() / b.std().clamp_min(1e-12)).item()),
        "top1": sig((a.argmax(-1) == b.argmax(-1)).float().mean().item()),
        "ppl": sig(ppl_a),
        "ppl_other": sig(ppl_b),
        "ppl_ratio": sig(ppl_a / ppl_b),
        "positions": int(a.shape[0]),
    }


def _checks(name: str, metrics: dict, lim: dict) -> list[dict]:
    out = []
    for key, limit in sorted(lim.items()):
        value = metrics[key]
        ok = value >= limit if key == "top1" else value <= limit
        out.append({"comparison": name, "metric": key, "value": value, "limit": limit, "ok": bool(ok)})
    return out


def _hf_logits(model, tokens: Sequence[Sequence[int]]) -> list:
    import torch

    outs = []
    with torch.inference_mode():
        for t in tokens:
            outs.append(model(torch.tensor([list(t)])).logits[0].float())
    return outs


def verify_checkpoint(
    checkpoint_dir: str | Path,
    source_model_dir: str | Path | None = None,
    fake_quant_model: Any = None,
    *,
    texts: Sequence[str] | None = None,
    baseline_checkpoint: str | Path | None = None,
    max_tokens: int = 128,
    thresholds: dict | None = None,
) -> dict[str, Any]:
    """Verify a TensorRT-LLM checkpoint; returns the report (``report["passed"]``). All ranks call it under mpirun;
    non-leader ranks return {"leader": False, ...}. Comparison models run in float32 on rank 0, one at a time, after
    the checkpoint's own run is done and freed.

    ``fake_quant_model``: the calibrated ModelOpt model (torch module), or a callable that loads it (called on rank 0
    only). ``source_model_dir``: the unquantized HF model. ``baseline_checkpoint``: the unsplit (TP=1, PP=1) export of
    the same calibration, to match within float tolerance. ``thresholds``: {"fake_quant"|"source"|"baseline":
    {metric: limit}} overrides."""
    from runtime.generate import load_tokenizer
    from runtime.mpi import leave_distributed
    from runtime.reference.runner import ReferenceRunner

    ckpt = Path(checkpoint_dir)
    runner = ReferenceRunner.open(ckpt)
    cfg = runner.cfg
    tok_dir = (
        ckpt if (ckpt / "tokenizer_config.json").is_file() or (ckpt / "tokenizer.json").is_file() else source_model_dir
    )
    if tok_dir is None:
        raise ValueError(f"{ckpt}: no tokenizer next to the checkpoint and no source model given")
    tokenizer = load_tokenizer(tok_dir)
    tokens = [tokenizer(t)["input_ids"][:max_tokens] for t in (texts or BUILTIN_TEXTS)]
    tokens = [t for t in tokens if len(t) >= 2]
    ours = runner.logits(tokens)
    leader, rank = runner.is_leader, runner.rank
    runner.close()
    del runner
    leave_distributed()  # the other ranks are done; rank 0 compares alone, for as long as that takes
    if not leader:
        return {"leader": False, "rank": rank, "passed": None}
    report: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "quant_algo": cfg.quant_algo,
        "kv_cache_quant_algo": cfg.kv_cache_quant_algo,
        "mapping": {"tp": cfg.mapping.tp_size, "pp": cfg.mapping.pp_size},
        "sequences": len(tokens),
        "comparisons": {},
        "checks": [],
    }

    def add(name: str, theirs: list, lim: dict) -> None:
        m = compare(ours, theirs, tokens)
        report["comparisons"][name] = m
        report["checks"] += _checks(name, m, lim)

    if baseline_checkpoint is not None:
        base = _open_single(baseline_checkpoint, weight_only_tp=cfg.mapping.tp_size)
        theirs = base.logits(tokens, through_cache=cfg.kv_cache_quant_algo is not None)
        base.close()
        report["baseline_checkpoint"] = str(baseline_checkpoint)
        add("baseline", theirs, limits("baseline", cfg.quant_algo, cfg.kv_cache_quant_algo, thresholds))
    model = fake_quant_model
    if model is not None and not hasattr(model, "named_modules"):  # a loader, not the model itself
        model = model()
    if model is not None:
        theirs = _hf_logits(model.float().eval(), tokens)
        del model
        add("fake_quant", theirs, limits("fake_quant", cfg.quant_algo, cfg.kv_cache_quant_algo, thresholds))
    if source_model_dir is not None:
        import torch
        from transformers import AutoModelForCausalLM

        src = AutoModelForCausalLM.from_pretrained(str(source_model_dir), dtype=torch.float32).eval()
        theirs = _hf_logits(src, tokens)
        del src
        add("source", theirs, limits("source", cfg.quant_algo, cfg.kv_cache_quant_algo, thresholds))
    if not report["checks"]:
        raise ValueError("verify: nothing to compare against: give a source model, a fake-quant model or a baseline")
    report["passed"] = all(c["ok"] for c in report["checks"])
    report["failed"] = [
        f"{c['comparison']}.{c['metric']}={c['value']} (limit {c['limit']})" for c in report["checks"] if not c["ok"]
    ]
    return report


def _open_single(ckpt: str | Path, weight_only_tp: int = 1):
    """A baseline checkpoint must be single-rank: it is run whole inside rank 0 (weight-only formats as the split's
    tp ranks quantize at load: runtime/reference/quant.py)."""
    from runtime.reference.config import read_config
    from runtime.reference.runner import ReferenceRunner

    cfg = read_config(ckpt)
    if cfg.mapping.world_size != 1:
        raise ValueError(f"baseline checkpoint {ckpt} has tp x pp = {cfg.mapping.world_size}: use a TP=1, PP=1 export")
    return ReferenceRunner.open(ckpt, rank=0, world_size=1, weight_only_tp=weight_only_tp)


def unsplit_checkpoint(recipe, model_dir: Path, quantize_dir: Path | None, scratch: Path) -> Path:
    """The tp1 pp1 checkpoint a split build must compute the same as: the quantize stage's, or (formats without
    calibration) a tp1 export of the same model made here, independently of the split being checked."""
    from builder.checkpoint.export import UNSHARDED, prepared_model, write_trtllm

    if quantize_dir is not None and (quantize_dir / UNSHARDED / "config.json").is_file():
        return quantize_dir / UNSHARDED
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    model, _ = prepared_model(recipe, model_dir, quantize_dir)
    write_trtllm(model, recipe, model_dir, scratch, 1, 1)
    return scratch


def verify_rank(args: dict[str, Any]) -> dict[str, Any]:
    """One rank's part of the verify stage (every rank of a split checkpoint runs it; rank 0 returns the report)."""
    from builder.errors import StageFailed
    from runtime.errors import TrtqError

    def fake_quant():
        if not args.get("quantize_dir"):
            return None
        from builder.model.load import export_dtype, read_config
        from builder.quant.state import restore_quantized
        from builder.recipe.schema import Recipe
        from runtime.formats import needs_calibration

        recipe = Recipe.model_validate(args["recipe"])
        if not needs_calibration(recipe.quantization.format, recipe.quantization.kv_cache):
            return None
        source = Path(args["source"])
        dtype = export_dtype(recipe.model.dtype, read_config(source))
        return restore_quantized(recipe, source, Path(args["quantize_dir"]), dtype)

    try:
        report = verify_checkpoint(
            args["checkpoint"],
            args["source"],
            fake_quant,
            texts=args.get("texts"),
            baseline_checkpoint=args.get("baseline"),
            max_tokens=args["max_tokens"],
        )
    except (TrtqError, ValueError) as e:
        raise StageFailed(f"verify: {e}") from None
    return report if report.get("leader") is not False else None


if __name__ == "__main__":
    import sys

    from builder._mpirun import rank_main

    sys.exit(rank_main(sys.argv[1:], verify_rank))
