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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import __version__
from builder._deps import version
from builder._fault import crash_point
from builder.errors import StageFailed
from builder.fingerprint import changed_keys, file_table, fingerprint
from builder.recipe import Recipe
from builder.workspace import STAMP, Workspace
from runtime.formats import FORMATS, needs_calibration

log = logging.getLogger("trtq.build")

VERBS = ("resolve", "quantize", "export", "build", "verify")
UNQUANTIZED = ("fp16", "bf16")


@dataclass
class StageContext:
    """What a stage function gets: the recipe, where it came from, the artifact, and its own output directory."""

    recipe: Recipe
    recipe_dir: Path
    workspace: Workspace
    out: Path
    recipe_path: Path | None = None  # the recipe file as the user named it (for messages that repeat the command)

    def upstream(self, stage: str) -> Path:
        return self.workspace.stage_dir(stage)


@dataclass(frozen=True)
class Stage:
    name: str  # its directory under the artifact
    verb: str  # the step it belongs to (--until takes these)
    run: Callable[[StageContext], dict[str, Any] | None]
    reads: Callable[[Recipe, Path, Workspace], dict[str, Any]]  # the inputs its fingerprint covers
    after: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    wanted: Callable[[Recipe], bool] = lambda r: True
    deliverable: bool = False  # part of the published artifact (listed in the manifest's files)
    intact: Callable[[Path], bool] | None = None  # extra check that a completed output is still usable


# ---------------------------------------------------------------------------------------------- stage adapters
def _resolve(ctx: StageContext) -> dict[str, Any]:
    from builder.stages.resolve import resolve

    return resolve(ctx.recipe.model, ctx.recipe_dir, ctx.out)


def _model_dir(ctx: StageContext) -> Path:
    from builder.stages.resolve import model_dir

    return model_dir(ctx.upstream("resolve"))


def _quantize(ctx: StageContext) -> dict[str, Any]:
    from builder.stages.quantize import quantize

    return quantize(ctx.recipe, _model_dir(ctx), ctx.recipe_dir, ctx.out)


def _quantize_dir(ctx: StageContext) -> Path | None:
    q = ctx.recipe.quantization
    return ctx.upstream("quantize") if needs_calibration(q.format, q.kv_cache) else None


def _checkpoint(ctx: StageContext) -> dict[str, Any]:
    from builder.stages.export import export_checkpoint

    config = export_checkpoint(ctx.recipe, _model_dir(ctx), _quantize_dir(ctx), ctx.out)
    return {"quantization": config.get("quantization"), "dtype": config.get("dtype")}


def _hf(ctx: StageContext) -> None:
    from builder.stages.export import export_hf

    export_hf(ctx.recipe, _model_dir(ctx), _quantize_dir(ctx), ctx.out)


def _engine(ctx: StageContext) -> dict[str, Any]:
    from builder.stages.build import build_engines

    recipe_file = str(ctx.recipe_path) if ctx.recipe_path else None
    return build_engines(ctx.recipe, ctx.upstream("checkpoint"), ctx.out, recipe_file=recipe_file)


def _verify(ctx: StageContext) -> dict[str, Any]:
    from builder.stages.verify import run_verify_stage

    return run_verify_stage(
        ctx.recipe,
        ctx.recipe_dir,
        ctx.upstream("checkpoint"),
        _model_dir(ctx),
        _quantize_dir(ctx),
        ctx.out,
        artifact_dir=ctx.workspace.dir,
    )


def _engine_facts() -> dict[str, Any]:
    from builder.stages.build import fingerprint_facts

    return fingerprint_facts()  # TensorRT-LLM/TensorRT versions and the GPU's compute capability


def _reads_model(r: Recipe, recipe_dir: Path, ws: Workspace) -> dict[str, Any]:
    from builder.stages.resolve import identity

    return {"model": identity(r.model, recipe_dir)}


def _reads_quantize(r: Recipe, recipe_dir: Path, ws: Workspace) -> dict[str, Any]:
    calibration = r.calibration.model_dump(mode="json")
    if calibration["dataset"] not in ("builtin",) and not calibration["dataset"].startswith("hf:"):
        from builder.fingerprint import file_identity

        path = (recipe_dir / calibration["dataset"]).resolve()
        calibration["file"] = file_identity(path) if path.is_file() else None
    reads = {
        "dtype": r.model.dtype,
        "trust_remote_code": r.model.trust_remote_code,
        "quantization": r.quantization.model_dump(mode="json"),
        "calibration": calibration,
    }
    # The AWQ group size depends on tp (per-rank widths); key the calibration by the size chosen, not by tp itself,
    # so a tp change that keeps the group size re-exports without recalibrating.
    if FORMATS[r.quantization.format].grouped and ws.stamp("resolve") is not None:
        from builder._model import read_config
        from builder.layout import ModelShape, awq_block_size
        from builder.stages.resolve import model_dir

        shape = ModelShape.from_config(read_config(model_dir(ws.stage_dir("resolve"))))
        reads["quantization"]["awq_block_size"] = awq_block_size(shape, r)
    return reads


def _reads_export(r: Recipe, recipe_dir: Path, ws: Workspace) -> dict[str, Any]:
    q = r.quantization
    return {"dtype": r.model.dtype, "format": q.format, "kv_cache": q.kv_cache, "exclude": list(q.exclude)}


def _reads_verify(r: Recipe, recipe_dir: Path, ws: Workspace) -> dict[str, Any]:
    reads: dict[str, Any] = {"verify": r.verify.model_dump(mode="json") if r.verify else None}
    ppl = r.verify.perplexity if r.verify else None
    if ppl is not None and ppl.dataset != "builtin" and not ppl.dataset.startswith("hf:"):
        from builder.fingerprint import file_identity

        path = (recipe_dir / ppl.dataset).resolve()
        reads["eval_file"] = file_identity(path) if path.is_file() else None
    return reads


_EXPORT_LIBS = ("torch", "transformers", "nvidia-modelopt", "safetensors")

STAGES: tuple[Stage, ...] = (
    Stage(
        "resolve",
        "resolve",
        _resolve,
        _reads_model,
        libraries=("transformers", "gguf", "huggingface-hub"),
        intact=lambda d: __import__("builder.stages.resolve", fromlist=["intact"]).intact(d),
    ),
    Stage(
        "quantize",
        "quantize",
        _quantize,
        _reads_quantize,
        after=("resolve",),
        libraries=_EXPORT_LIBS,
        wanted=lambda r: needs_calibration(r.quantization.format, r.quantization.kv_cache),
    ),
    Stage(
        "checkpoint",
        "export",
        _checkpoint,
        lambda r, d, ws: {**_reads_export(r, d, ws), "parallel": r.parallel.model_dump(mode="json")},
        after=("resolve", "quantize"),
        libraries=_EXPORT_LIBS,
        wanted=lambda r: "checkpoint" in r.targets or "engine" in r.targets,
        deliverable=True,
    ),
    Stage(
        "hf",
        "export",
        _hf,
        _reads_export,
        after=("resolve", "quantize"),
        libraries=_EXPORT_LIBS,
        wanted=lambda r: "hf" in r.targets,
        deliverable=True,
    ),
    Stage(
        "engine",
        "build",
        _engine,
        lambda r, d, ws: {"engine": r.engine.model_dump(mode="json"), **_engine_facts()},
        after=("checkpoint",),
        libraries=("tensorrt-llm", "tensorrt"),
        wanted=lambda r: "engine" in r.targets,
        deliverable=True,
    ),
    Stage(
        "verify",
        "verify",
        _verify,
        _reads_verify,
        after=("checkpoint", "quantize"),
        libraries=("torch", "transformers", "nvidia-modelopt"),
        wanted=lambda r: r.verify is not None and ("checkpoint" in r.targets or "engine" in r.targets),
        deliverable=True,
    ),
)


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class Step:
    stage: Stage
    fingerprint: str
    inputs: dict[str, Any]
    action: str  # "run" or "reuse"
    reason: str


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def by_name(self) -> dict[str, Step]:
        return {s.stage.name: s for s in self.steps}


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
    for stage in STAGES:
        if not stage.wanted(recipe) or VERBS.index(stage.verb) > last:
            continue
        inputs = {
            "stage": stage.name,
            "reads": stage.reads(recipe, recipe_dir, ws),
            "after": {a: fps[a] for a in stage.after if a in fps},
            "libraries": {lib: version(lib) for lib in stage.libraries},
            "trtq": __version__,
        }
        fp = fingerprint(inputs)
        fps[stage.name] = fp
        stamp = ws.stamp(stage.name)
        upstream_rerun = [a for a in stage.after if a in reruns]
        if force and stage.name not in forced_done:
            action, reason = "run", "--force"
        elif stamp is None:
            action, reason = "run", "no output yet"
        elif stamp.get("fingerprint") == fp and stage.intact and not stage.intact(ws.stage_dir(stage.name)):
            action, reason = "run", "its output refers to files that are gone"
        elif stamp.get("fingerprint") == fp:
            action, reason = "reuse", f"unchanged ({fp})"
        elif upstream_rerun:
            action, reason = "run", f"{', '.join(upstream_rerun)} changed"
        else:
            changed = [k.removeprefix("reads.") for k in changed_keys(stamp.get("inputs"), inputs)]
            action, reason = "run", "changed: " + (", ".join(changed) if changed else "inputs")
        if action == "run" or stage.name in forced_done:
            reruns.add(stage.name)
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
        results: dict[str, Any] = {}
        # Resolve first: later fingerprints may depend on the resolved model (the AWQ group size does).
        first = plan(recipe, recipe_dir, ws, force=force, until="resolve")
        the_plan = first
        try:
            for step in first.steps:
                _announce(step)
                if step.action == "run":
                    _run_stage(step, recipe, recipe_dir, ws, recipe_path)
                    ran.append(step.stage.name)
            the_plan = plan(recipe, recipe_dir, ws, force=force, until=until, forced_done=set(ran))
            for step, earlier in zip(the_plan.steps, first.steps, strict=False):
                if step.stage.name in ran:  # resolve ran in the first phase: report it as run, with its reason
                    step.action, step.reason = earlier.action, earlier.reason
            if any(s.stage.name != "resolve" for s in the_plan.steps):
                _check_layout_once(recipe, ws, results)  # an impossible layout is the clearer error
            _check_disk(the_plan, recipe, ws)
            for step in the_plan.steps:
                if step.stage.name == "resolve":
                    continue
                _check_layout_once(recipe, ws, results)
                _announce(step)
                if step.action == "run":
                    _run_stage(step, recipe, recipe_dir, ws, recipe_path)
                    ran.append(step.stage.name)
        except StageFailed as e:
            status = f"incomplete: {e}".split("\n")[0][:200]
            write_manifest(ws, recipe, the_plan, status, recipe_path, previous)
            raise
        verdict = (
            (ws.stamp("verify") or {}).get("result") if any(s.stage.name == "verify" for s in the_plan.steps) else None
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
    log.info("%-10s %s: %s", step.stage.name, verb, step.reason)


def _check_disk(the_plan: Plan, recipe: Recipe, ws: Workspace) -> None:
    """Refuse now, not hours into calibration, when the artifact's filesystem cannot hold what the stages write."""
    runs = [s.stage.name for s in the_plan.steps if s.action == "run" and s.stage.name != "resolve"]
    if not runs:
        return
    from builder._model import read_config
    from builder.diskspace import check_space, stage_bytes
    from builder.stages.resolve import model_dir

    config = read_config(model_dir(ws.stage_dir("resolve")))
    try:
        writes = [(name, ws.dir, stage_bytes(name, recipe, config)) for name in runs]
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
        log.warning("disk space not checked: cannot estimate output sizes for this model (%s)", e)
        return
    check_space(writes)


def _check_layout_once(recipe: Recipe, ws: Workspace, memo: dict[str, Any]) -> None:
    if memo.get("layout_checked"):
        return
    from builder._model import read_config
    from builder.layout import ModelShape, check_family, check_layout
    from builder.stages.resolve import model_dir

    config = read_config(model_dir(ws.stage_dir("resolve")))
    check_family(config)
    shape = ModelShape.from_config(config)
    check_layout(shape, recipe.parallel.tp, recipe.parallel.pp)
    if recipe.quantization.format not in UNQUANTIZED:
        from builder.layout import check_quant_layout

        check_quant_layout(shape, recipe)
    memo["layout_checked"] = True


def _run_stage(step: Step, recipe: Recipe, recipe_dir: Path, ws: Workspace, recipe_path: Path | None) -> None:
    # The manifest describes the stage directories as they were; once one of them is about to change it would list
    # files that no longer match. No manifest at all is the honest state until this build writes its own.
    ws.drop_manifest()
    t0 = time.perf_counter()
    # Libraries print progress to stdout (ModelOpt's "current rank: 0 ..."); stdout belongs to --json output.
    with ws.writing(step.stage.name) as tmp, contextlib.redirect_stdout(sys.stderr):
        crash_point(f"{step.stage.name}:before")
        ctx = StageContext(recipe, recipe_dir, ws, tmp, recipe_path)
        result = step.stage.run(ctx) or {}
        seconds = round(time.perf_counter() - t0, 3)
        stamp = {
            "stage": step.stage.name,
            "fingerprint": step.fingerprint,
            "inputs": step.inputs,
            "result": result,
            "seconds": seconds,
            "files": file_table(tmp, skip=(STAMP,)) if step.stage.deliverable else [],
        }
        ws.publish_stage(step.stage.name, tmp, stamp)
    crash_point(f"{step.stage.name}:after")
    log.info("%-10s done in %.1f s", step.stage.name, seconds)
