"""Stage `verify`: prove the exported checkpoint right with the reference runtime (builder/verify/), and gate it.

The checkpoint is compared with the fake-quant and source models, and a split one with the unsplit checkpoint of
the same calibration; the accuracy gate (`verify.perplexity`, `verify.prompts`) runs after it.
"""

from __future__ import annotations

import logging
from typing import Any

NAME = VERB = "verify"
AFTER = ("checkpoint", "quantize")
LIBRARIES = ("torch", "transformers", "nvidia-modelopt")
DELIVERABLE = True

log = logging.getLogger("trtq.verify")


def wanted(recipe) -> bool:
    return recipe.verify is not None and ("checkpoint" in recipe.targets or "engine" in recipe.targets)


def reads(recipe, ctx) -> dict[str, Any]:
    out: dict[str, Any] = {"verify": recipe.verify.model_dump(mode="json") if recipe.verify else None}
    ppl = recipe.verify.perplexity if recipe.verify else None
    if ppl is not None and ppl.dataset != "builtin" and not ppl.dataset.startswith("hf:"):
        from builder.fingerprint import file_identity

        path = (ctx.recipe_dir / ppl.dataset).resolve()
        out["eval_file"] = file_identity(path) if path.is_file() else None
    return out


def run(ctx) -> dict[str, Any]:
    """The pipeline's `verify` stage: write `verify/report.json` and return the summary the manifest records.

    A failed comparison does not raise here: the report is kept, the build marks the artifact failed-verification and
    exits 1. The checkpoint is compared with the fake-quant model and the source model; a split one (tp x pp > 1) also
    with the unsplit checkpoint of the same calibration (`quantize/trtllm/`, or a tp1 export made here for formats
    without calibration), one process per rank under mpirun (`python -m builder.verify.checkpoint`). The accuracy gate
    (`verify.perplexity`, `verify.prompts`; builder/verify/gate.py) runs after it the same way and adds `perplexity` and
    `prompts` to the summary; its results are in verify/gate.json, the prompts' outputs in verify/prompts.json.
    """
    import json
    import shutil

    from builder.verify.checkpoint import unsplit_checkpoint, verify_rank

    recipe, recipe_dir, out = ctx.recipe, ctx.recipe_dir, ctx.out
    checkpoint, model_dir, quantize_dir = ctx.upstream("checkpoint"), ctx.model_dir, ctx.quantize_dir
    spec = recipe.verify
    texts = None
    if spec.texts:
        texts = [t.strip() for t in (recipe_dir / spec.texts).read_text().split("\n\n") if t.strip()]
    world = recipe.parallel.tp * recipe.parallel.pp
    report: dict[str, Any] = {"passed": True, "failed": []}
    if spec.reference:
        args = {
            "checkpoint": str(checkpoint),
            "source": str(model_dir),
            "quantize_dir": str(quantize_dir) if quantize_dir is not None else None,
            "recipe": recipe.model_dump(mode="json"),
            "texts": texts,
            "max_tokens": spec.max_tokens,
            "baseline": None,
        }
        scratch = out / ".unsplit"
        try:
            if world > 1:
                args["baseline"] = str(unsplit_checkpoint(recipe, model_dir, quantize_dir, scratch))
                from builder._mpirun import run_ranks

                report = run_ranks("builder.verify.checkpoint", args, world, out, "verify")
            else:
                report = verify_rank(args)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    summary = {"passed": bool(report.get("passed")), "failed": list(report.get("failed", []))}
    for name, m in (report.get("comparisons") or {}).items():
        summary[name] = {k: m[k] for k in ("nrmse", "top1", "ppl", "ppl_ratio") if k in m}
    if spec.perplexity is not None or spec.prompts:
        from builder.verify.gate import run_gate

        gate = run_gate(spec, recipe_dir, ctx.workspace.dir, checkpoint, model_dir, world, out)
        summary["failed"] += gate["failed"]
        summary["passed"] = summary["passed"] and gate["passed"]
        if "perplexity" in gate:
            summary["perplexity"] = {
                k: gate["perplexity"][k]
                for k in ("ppl", "baseline_ppl", "increase", "max_increase", "passed", "tokens", "dataset")
                if k in gate["perplexity"]
            }
        if "prompts" in gate:
            rows = gate["prompts"]["results"]
            summary["prompts"] = {"passed": sum(r["passed"] for r in rows), "total": len(rows)}
    log.info("verify: %s", "passed" if summary["passed"] else "FAILED: " + "; ".join(summary["failed"]))
    return summary
