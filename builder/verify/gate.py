"""The verify stage's accuracy gate: `verify.perplexity` and `verify.prompts` (the checks are in builder/verify/evaluate.py).

A single-rank artifact is gated in the build's process. A split one (tp x pp > 1) needs one process per rank: the gate
runs under OpenMPI's mpirun as `python -m builder.verify.gate ARGS.json`, every rank loading its shard, and rank 0
prints the result as JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("trtq.verify")


def gate_spec(spec) -> dict[str, Any]:
    """The JSON form of a VerifySpec's gate sections."""
    return {
        "perplexity": spec.perplexity.model_dump(mode="json") if spec.perplexity is not None else None,
        "prompts": [p.model_dump(mode="json") for p in spec.prompts],
    }


def run_gate(
    spec, recipe_dir: Path, artifact_dir: Path, checkpoint: Path, model_dir: Path, world: int, out: Path
) -> dict[str, Any]:
    """Run the gate, write verify/gate.json (and verify/prompts.json), return {"passed", "failed", ...}."""
    args = {
        "artifact_dir": str(artifact_dir),
        "source": str(model_dir),
        "spec": gate_spec(spec),
        "base_dir": str(recipe_dir),
    }
    result = _gate(args) if world == 1 else _under_mpirun(args, world, out)
    (out / "gate.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if "prompts" in result:
        (out / "prompts.json").write_text(json.dumps(result["prompts"], indent=2, ensure_ascii=False) + "\n")
    p = result.get("perplexity")
    if p is not None:
        log.info(
            "perplexity %.4f vs %.4f unquantized (%+.2f%%, max +%.2f%%) on %d tokens of %s%s",
            p["ppl"],
            p["baseline_ppl"],
            100 * p["increase"],
            100 * p["max_increase"],
            p["tokens"],
            p["dataset"],
            ": FAILED" if not p["passed"] else "",
        )
    if "prompts" in result:
        rows = result["prompts"]["results"]
        log.info("prompts: %d/%d passed", sum(r["passed"] for r in rows), len(rows))
    return result


def _gate(args: dict[str, Any]) -> dict[str, Any] | None:
    from builder.errors import StageFailed, UsageError
    from builder.verify.evaluate import gate
    from runtime.errors import TrtqError

    try:
        return gate(Path(args["artifact_dir"]), Path(args["source"]), args["spec"], Path(args["base_dir"]))
    except UsageError as e:
        raise UsageError(f"verify.perplexity: {e}") from None
    except (TrtqError, ValueError) as e:
        raise StageFailed(f"verify: the accuracy gate could not run: {e}") from None


def _under_mpirun(args: dict[str, Any], world: int, out: Path) -> dict[str, Any]:
    from builder._mpirun import run_ranks

    return run_ranks("builder.verify.gate", args, world, out, "verify: the accuracy gate")


if __name__ == "__main__":
    from builder._mpirun import rank_main

    sys.exit(rank_main(sys.argv[1:], _gate))
