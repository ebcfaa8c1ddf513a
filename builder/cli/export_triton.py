"""`trtq export-triton ARTIFACT OUT`: a Triton Inference Server model repository for an artifact's engines.

Exit codes: 0 written (and every config.pbtxt parsed as Triton's ModelConfig), 2 bad input (no engines, OUT not
empty without --force).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command("export-triton")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The backend's all_models/inflight_batcher_llm, for the python models' model.py (default: "
    "/app/all_models/inflight_batcher_llm when it exists, as in Triton's TensorRT-LLM container).",
)
@click.option("--engine-dir", default=None, help="engine/ as Triton will see it (default: its absolute path here).")
@click.option("--tokenizer-dir", default=None, help="The tokenizer as Triton will see it (default: absolute path).")
@click.option("--kv-cache-free-gpu-mem-fraction", type=click.FloatRange(0.0, 1.0), default=0.9, show_default=True)
@click.option(
    "--max-queue-size",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Requests queued before Triton rejects new ones (0 = unbounded).",
)
@click.option(
    "--instances",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Instances of the pre/postprocessing models.",
)
@click.option("--no-streaming", is_flag=True, help="decoupled_mode false (no token streaming).")
@click.option("--force", is_flag=True, help="Replace OUT's model directories if they exist.")
@click.option("--json", "as_json", is_flag=True)
def export_triton(
    artifact,
    out,
    templates,
    engine_dir,
    tokenizer_dir,
    kv_cache_free_gpu_mem_fraction,
    max_queue_size,
    instances,
    no_streaming,
    force,
    as_json,
) -> None:
    """Write a Triton model repository (preprocessing, tensorrt_llm, postprocessing, ensemble) for ARTIFACT's engines.

    \b
    Examples:
      trtq export-triton engines/llama-3.1-8b-instruct-fp8-tp1 triton_repo
      # inside nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3:
      trtq export-triton /work/engines/llama-3.1-8b-instruct-fp8-tp1 /triton_repo
      python3 /app/scripts/launch_triton_server.py --world_size 1 --model_repo /triton_repo
    """
    from builder.errors import UsageError
    from runtime.serve import triton

    setup_logging(False, quiet=as_json)
    values = triton.values_for(
        artifact,
        engine_dir=engine_dir,
        tokenizer_dir=tokenizer_dir,
        kv_cache_free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
        max_queue_size=max_queue_size,
        instances=instances,
        decoupled=not no_streaming,
    )
    existing = [out / m for m in triton.MODELS if (out / m).exists()]
    if existing and not force:
        raise UsageError(f"{out}: already holds {', '.join(p.name for p in existing)}: pass --force to replace them")
    for p in existing:
        shutil.rmtree(p)
    if templates is None and triton.CONTAINER_TEMPLATES.is_dir():
        templates = triton.CONTAINER_TEMPLATES
    repo = triton.write_repo(artifact, out, values, templates)
    world = _world_size(artifact)
    launch = f"python3 /app/scripts/launch_triton_server.py --world_size {world} --model_repo {out.resolve()}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(out),
                    "files": [str(f) for f in repo.files],
                    "missing": repo.missing,
                    "values": values,
                    "world_size": world,
                    "launch": launch,
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{out}: Triton model repository for {artifact} ({len(repo.files)} files; every config.pbtxt parses "
        "as Triton's ModelConfig)"
    )
    for m in repo.missing:
        click.echo(
            f"note: {m} is the TensorRT-LLM backend's own code: copy it from all_models/inflight_batcher_llm "
            f"(inside {triton.TRITON_CONTAINER}: /app/all_models/inflight_batcher_llm), or rerun with "
            "--templates DIR"
        )
    click.echo(f"start: {launch}")


def _world_size(artifact: Path) -> int:
    cfg = json.loads((artifact / "engine" / "config.json").read_text())
    mapping = (cfg.get("pretrained_config") or {}).get("mapping") or {}
    return int(mapping.get("world_size") or 1)
