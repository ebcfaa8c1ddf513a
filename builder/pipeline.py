"""The build: an explicit, ordered tuple of stages over one artifact directory.

recipe -> resolve -> quantize -> export (checkpoint, hf) -> build (engine) -> verify -> manifest.json

Each stage's output is keyed by a fingerprint of exactly what it reads (recipe fields, upstream fingerprints, library
versions); a stage whose fingerprint is unchanged is reused, not re-run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from builder import __version__
from builder._deps import version
from builder._fault import crash_point
from builder.context import StageContext
from builder.errors import StageFailed
from builder.fingerprint import changed_keys, file_table, fingerprint
from builder.recipe.schema import Recipe
from builder.stages import build as build_stage
from builder.stages import checkpoint, hf, quantize, resolve, verify
from builder.workspace import STAMP, Workspace

log = logging.getLogger("trtq.build")

VERBS = ("resolve", "quantize", "export", "build", "verify")


# The stage modules (builder/stages/, one contract each), in the order they run.
STAGES: tuple[ModuleType, ...] = (resolve, quantize, checkpoint, hf, build_stage, verify)


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class Step:
    stage: ModuleType  # a stage module (builder/stages/)
    fingerprint: str
    inputs: dict[str, Any]
    action: str  # "run" or "reuse"
    reason: str


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def by_name(self) -> dict[str, Step]:
        return {s.stage.NAME: s for s in self.steps}


def plan(
    recipe: Recipe,
    recipe_dir: Path,
    ws: Workspace,
    force: bool = False,
    until: str | None = None,
    forced_done: set[str] = frozenset(),
) -> Plan:
    """Decide, per stage, whether to run or reuse it, and why. ``forced_done``: stages already re-run by --force."""
    last = VERBS.index(until) if until else len(VERBS) - 1
    result = Plan()
    fps: dict[str, str] = {}
    reruns: set[str] = set()
    ctx = StageContext(recipe, recipe_dir, ws)
    for stage in STAGES:
        name = stage.NAME
        if not stage.wanted(recipe) or VERBS.index(stage.VERB) > last:
            continue
        inputs = {
            "stage": name,
            "reads": stage.reads(recipe, ctx),
            "after": {a: fps[a] for a in stage.AFTER if a in fps},
            "libraries": {lib: version(lib) for lib in stage.LIBRARIES},
            "trtq": __version__,
        }
        fp = fingerprint(inputs)
        fps[name] = fp
        stamp = ws.stamp(name)
        upstream_rerun = [a for a in stage.AFTER if a in reruns]
        intact = getattr(stage, "intact", None)
        if force and name not in forced_done:
            action, reason = "run", "--force"
        elif stamp is None:
            action, reason = "run", "no output yet"
        elif stamp.get("fingerprint") == fp and intact and not intact(ws.stage_dir(name)):
            action, reason = "run", "its output refers to files that are gone"
        elif stamp.get("fingerprint") == fp:
            action, reason = "reuse", f"unchanged ({fp})"
        elif upstream_rerun:
            action, reason = "run", f"{', '.join(upstream_rerun)} changed"
        else:
            changed = [k.removeprefix("reads.") for k in changed_keys(stamp.get("inputs"), inputs)]
            action, reason = "run", "changed: " + (", ".join(changed) if changed else "inputs")
        if action == "run" or name in forced_done:
            reruns.add(name)
        result.steps.append(Step(stage, fp, inputs, action, reason))
    return result


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    plan: Plan
    ran: list[str]
    manifest: Path | None
    status: str


def build(
    recipe: Recipe,
    recipe_dir: Path,
    root: Path,
    *,
    force: bool = False,
    until: str | None = None,
    wait: bool = False,
    recipe_path: Path | None = None,
) -> Outcome:
    """Run the pipeline for ``recipe`` into ``root/<name>``. Raises TrtqError subclasses on failure."""
    from builder.manifest import write_manifest

    ws = Workspace(root, recipe.name)
    with ws.lock(wait=wait):
        from builder.manifest import read_previous

        previous = read_previous(ws)  # before any stage change drops it: `trtq report` entries are carried over
        ran: list[str] = []
        status = "complete" if until is None else f"incomplete (--until {until})"
        # Resolve first: later fingerprints may depend on the resolved model (the AWQ group size does).
        first = plan(recipe, recipe_dir, ws, force=force, until="resolve")
        the_plan = first
        try:
            for step in first.steps:
                _announce(step)
                if step.action == "run":
                    _run_stage(step, recipe, recipe_dir, ws, recipe_path)
                    ran.append(step.stage.NAME)
            the_plan = plan(recipe, recipe_dir, ws, force=force, until=until, forced_done=set(ran))
            for step, earlier in zip(the_plan.steps, first.steps, strict=False):
                if step.stage.NAME in ran:  # resolve ran in the first phase: report it as run, with its reason
                    step.action, step.reason = earlier.action, earlier.reason
            ctx = StageContext(recipe, recipe_dir, ws, recipe_path=recipe_path)  # the resolved model, read once
            if any(s.stage.NAME != "resolve" for s in the_plan.steps):
                _check_layout(ctx)  # an impossible layout is the clearer error
            _check_disk(the_plan, ctx)
            for step in the_plan.steps:
                if step.stage.NAME == "resolve":
                    continue
                _announce(step)
                if step.action == "run":
                    _run_stage(step, recipe, recipe_dir, ws, recipe_path)
                    ran.append(step.stage.NAME)
        except StageFailed as e:
            status = f"incomplete: {e}".split("\n")[0][:200]
            write_manifest(ws, recipe, the_plan, status, recipe_path, previous)
            raise
        verdict = (
            (ws.stamp("verify") or {}).get("result") if any(s.stage.NAME == "verify" for s in the_plan.steps) else None
        )
        if verdict is not None and verdict.get("passed") is False:
            status = "failed-verification"
            write_manifest(ws, recipe, the_plan, status, recipe_path, previous)
            raise StageFailed(
                "verify: the checkpoint failed verification: "
                + "; ".join(verdict.get("failed") or ["see verify/report.json"])
            )
        crash_point("manifest:before")
        manifest = write_manifest(ws, recipe, the_plan, status, recipe_path, previous)
    return Outcome(the_plan, ran, manifest, status)


def _announce(step: Step) -> None:
    verb = "reused" if step.action == "reuse" else "running"
    log.info("%-10s %s: %s", step.stage.NAME, verb, step.reason)


def _check_disk(the_plan: Plan, ctx: StageContext) -> None:
    """Refuse now, not hours into calibration, when the artifact's filesystem cannot hold what the stages write."""
    runs = [s.stage.NAME for s in the_plan.steps if s.action == "run" and s.stage.NAME != "resolve"]
    if not runs:
        return
    from builder.planning.diskspace import check_space, stage_bytes

    try:
        writes = [(name, ctx.workspace.dir, stage_bytes(name, ctx.recipe, ctx.model_config)) for name in runs]
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
        log.warning("disk space not checked: cannot estimate output sizes for this model (%s)", e)
        return
    check_space(writes)


def _check_layout(ctx: StageContext) -> None:
    """Before any heavy work: a family trtq knows, a tp x pp split the model allows, widths the format allows."""
    from builder.planning.layout import check_family, check_layout, check_quant_layout
    from runtime.formats import FORMATS

    recipe = ctx.recipe
    check_family(ctx.model_config)
    check_layout(ctx.shape, recipe.parallel.tp, recipe.parallel.pp)
    if FORMATS[recipe.quantization.format].quant_algo is not None:
        check_quant_layout(ctx.shape, recipe)


def _run_stage(step: Step, recipe: Recipe, recipe_dir: Path, ws: Workspace, recipe_path: Path | None) -> None:
    # The manifest describes the stage directories as they were; once one of them is about to change it would list
    # files that no longer match. No manifest at all is the honest state until this build writes its own.
    ws.drop_manifest()
    t0 = time.perf_counter()
    # Libraries print progress to stdout (ModelOpt's "current rank: 0 ..."); stdout belongs to --json output.
    with ws.writing(step.stage.NAME) as tmp, contextlib.redirect_stdout(sys.stderr):
        crash_point(f"{step.stage.NAME}:before")
        ctx = StageContext(recipe, recipe_dir, ws, tmp, recipe_path)
        result = step.stage.run(ctx) or {}
        seconds = round(time.perf_counter() - t0, 3)
        stamp = {
            "stage": step.stage.NAME,
            "fingerprint": step.fingerprint,
            "inputs": step.inputs,
            "result": result,
            "seconds": seconds,
            "files": file_table(tmp, skip=(STAMP,)) if step.stage.DELIVERABLE else [],
        }
        ws.publish_stage(step.stage.NAME, tmp, stamp)
    crash_point(f"{step.stage.NAME}:after")
    log.info("%-10s done in %.1f s", step.stage.NAME, seconds)
