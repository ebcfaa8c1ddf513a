"""Start the reference server: load the checkpoint (one rank each under mpirun), then rank 0 serves HTTP with
uvicorn and the scheduler thread while the other ranks follow its plans.

SIGTERM or Ctrl-C on rank 0 drains: uvicorn stops accepting connections and waits for the requests in flight to
finish (streams included), then the scheduler tells the other ranks to leave and everyone exits 0. The other ranks
ignore SIGTERM (mpirun forwards it to them) and leave when rank 0 says so.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("trtq.serve")

DEFAULT_MAX_BATCH = 16  # rows of the running batch when the artifact's recipe does not say (engine.max_batch_size)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None
    api_key: str | None = None
    max_batch_size: int | None = None  # None: the recipe's engine.max_batch_size, else DEFAULT_MAX_BATCH
    max_queue: int = 128
    max_seq_len: int | None = None  # None: the recipe's engine.max_seq_len, capped at the model's positions
    max_body_bytes: int = 4 * 2**20
    threads: int | None = None  # torch CPU threads (None: torch's default, or cores / ranks under mpirun)


def limits(cfg, recipe: dict[str, Any] | None, opts: ServeOptions) -> tuple[int, int]:
    """(rows, max_len) of the running batch: options, else the recipe's engine section, else defaults; never more
    positions than the model has."""
    engine = (recipe or {}).get("engine") or {}
    rows = opts.max_batch_size or int(engine.get("max_batch_size") or DEFAULT_MAX_BATCH)
    max_len = opts.max_seq_len or int(engine.get("max_seq_len") or cfg.max_position_embeddings)
    return rows, min(max_len, int(cfg.max_position_embeddings))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_reference(
    checkpoint: Path,
    tokenizer_dir: Path,
    opts: ServeOptions,
    *,
    model_name: str,
    recipe: dict[str, Any] | None = None,
    on_start=None,
) -> int:
    """Serve ``checkpoint`` until SIGTERM/SIGINT; returns the exit code. ``on_start(info)`` runs on rank 0 once the
    socket is listening (trtq serve writes its record there)."""
    from runtime.reference.runner import ReferenceRunner
    from runtime.serve.engine import BatchEngine
    from runtime.serve.scheduler import Channel, worker_loop

    runner = ReferenceRunner.open(checkpoint)
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    rows, max_len = limits(runner.cfg, recipe, opts)
    engine = BatchEngine(runner, rows, max_len)
    channel = Channel(runner.world_size)
    if not runner.is_leader:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        worker_loop(engine, channel)
        return 0
    return _serve_http(runner, engine, channel, tokenizer_dir, opts, model_name, rows, max_len, on_start)


def _serve_http(runner, engine, channel, tokenizer_dir, opts, model_name, rows, max_len, on_start) -> int:
    import asyncio
    import contextlib

    import uvicorn

    from runtime.generate import end_ids, load_tokenizer
    from runtime.serve.app import ServeState, build_app
    from runtime.serve.metrics import Metrics
    from runtime.serve.scheduler import Scheduler

    tokenizer = load_tokenizer(tokenizer_dir)
    metrics = Metrics()
    scheduler = Scheduler(engine, channel, opts.max_queue, metrics)
    state = ServeState(
        tokenizer=tokenizer,
        scheduler=scheduler,
        metrics=metrics,
        model=model_name,
        max_len=max_len,
        end_ids=frozenset(end_ids(tokenizer, tokenizer_dir)),
        api_key=opts.api_key,
        max_body=opts.max_body_bytes,
    )
    if not is_loopback(opts.host):
        log.warning(
            "listening on %s: reachable from other machines%s",
            opts.host,
            "" if opts.api_key else " WITHOUT an API key (--api-key)",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        log.info(
            "serving %s on http://%s:%d/v1 (reference runtime, %d rank(s), batch rows %d, context %d, queue %d)",
            model_name,
            opts.host,
            opts.port,
            runner.world_size,
            rows,
            max_len,
            opts.max_queue,
        )
        if on_start is not None:
            on_start({"rows": rows, "max_len": max_len, "world_size": runner.world_size})
        try:
            yield
        finally:
            state.draining = True
            await asyncio.get_running_loop().run_in_executor(None, scheduler.stop)
            log.info("stopped after %d iterations", scheduler.steps)

    app = build_app(state)
    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app, host=opts.host, port=opts.port, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=5
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was installed before it: make
    # that one a no-op so a drained server exits 0 (and says so) rather than dying by the signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if scheduler.failed is not None:
        return 1
    return 0 if server.started else 1
