"""`trtq verify ARTIFACT`: prove an export right with the reference runtime before spending GPU hours.

Exit codes: 0 passed, 1 verification failed, 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Unquantized HF model to compare with (default: the artifact's resolved model).",
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The TP=1/PP=1 checkpoint of the same calibration: logits must match it within float tolerance "
    "(default for a split artifact: its own quantize/trtllm).",
)
@click.option(
    "--texts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text file to score, one text per paragraph (blank-line separated); default: built-in texts.",
)
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(2, 8192), help="Tokens per text.")
@click.option(
    "--fake-quant/--no-fake-quant",
    default=True,
    show_default=True,
    help="Also compare with the calibrated ModelOpt model restored from the artifact's quantize/ stage (rank 0).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("-v", "--verbose", is_flag=True)
def verify(artifact, source, baseline, texts, max_tokens, fake_quant, as_json, verbose) -> None:
    """Compare the reference run of ARTIFACT's TensorRT-LLM checkpoint with the fake-quant and source models, and a
    split checkpoint with the unsplit one of the same calibration.

    \b
    Examples:
      trtq verify engines/smollm2-135m-int8_sq
      mpirun -n 3 trtq verify engines/smollm2-135m-int8_sq-tp3      # baseline: its own quantize/trtllm
      mpirun -n 2 trtq verify engines/smollm2-135m-tp2 --baseline engines/smollm2-135m-tp1/checkpoint
    """
    from builder.errors import StageFailed, UsageError
    from builder.verify.checkpoint import verify_checkpoint
    from runtime.mpi import world_from_env
    from runtime.select import checkpoint_dir

    world = world_from_env()
    setup_logging(verbose, quiet=world.rank != 0 or as_json)
    ckpt = checkpoint_dir(artifact)
    if ckpt is None:
        raise UsageError(
            f"{artifact}: no TensorRT-LLM checkpoint (checkpoint/config.json): build with targets: [checkpoint]"
        )
    if source is None:
        source = _resolved_source(artifact)
    if source is None and baseline is None:
        raise UsageError(f"{artifact}: no source model found (no resolve/source.json): pass --source or --baseline")
    text_list = None
    if texts is not None:
        text_list = [p.strip() for p in texts.read_text().split("\n\n") if p.strip()]
    if baseline is None and _split(ckpt):
        unsplit = artifact / "quantize" / "trtllm"
        baseline = unsplit if (unsplit / "config.json").is_file() else None
    fake = (lambda: _fake_quant_model(artifact, source)) if fake_quant and source is not None else None
    try:
        report = verify_checkpoint(
            ckpt, source, fake, texts=text_list, baseline_checkpoint=baseline, max_tokens=max_tokens
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if report.get("leader") is False:
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for name, m in report["comparisons"].items():
            click.echo(
                f"{name:<10} max_abs {m['max_abs']:.4g}  mean_abs {m['mean_abs']:.4g}  nrmse {m['nrmse']:.4g}  "
                f"top1 {m['top1']:.3f}  ppl {m['ppl']:.3f} vs {m['ppl_other']:.3f}"
            )
        click.echo("verification " + ("passed" if report["passed"] else "FAILED: " + "; ".join(report["failed"])))
    if not report["passed"]:
        raise StageFailed(f"verification failed: {'; '.join(report['failed'])}")


def _split(ckpt: Path) -> bool:
    from runtime.reference.config import read_config

    return read_config(ckpt).mapping.world_size > 1


def _resolved_source(artifact: Path) -> Path | None:
    """The unquantized model the artifact was built from (its resolve stage), when it is still there."""
    src = artifact / "resolve" / "source.json"
    if not src.is_file():
        return None
    from builder.model.source import model_dir

    d = model_dir(artifact / "resolve")
    return d if (d / "config.json").is_file() else None


def _fake_quant_model(artifact: Path, source: Path):
    """The calibrated fake-quant model of a quantized artifact (restored by the quantize stage), or None."""
    import logging

    from runtime.manifest import ManifestError, read_manifest

    log = logging.getLogger("trtq.verify")
    qdir = artifact / "quantize"
    if not qdir.is_dir():
        return None
    try:
        from builder.model.load import export_dtype, read_config
        from builder.quant.state import restore_quantized
        from builder.recipe.schema import Recipe

        recipe = Recipe.model_validate(read_manifest(artifact).recipe)
        return restore_quantized(recipe, source, qdir, export_dtype(recipe.model.dtype, read_config(source)))
    except (ImportError, ManifestError, ValueError, OSError) as e:
        log.warning("no fake-quant comparison (%s): comparing with the source model only", str(e).splitlines()[0])
        return None
