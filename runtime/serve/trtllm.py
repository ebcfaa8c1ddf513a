"""`trtllm-serve` for an artifact's engines (TensorRT backend) or unified HF checkpoint (PyTorch backend).

Written against TensorRT-LLM 1.2.x's `tensorrt_llm/commands/serve.py` (click command `serve` under a DefaultGroup,
so `trtllm-serve serve MODEL` and `trtllm-serve MODEL` are the same) and `llmapi/llm_args.py` (the keys of the
`--extra_llm_api_options` YAML are LlmArgs fields, merged over the command line by update_llm_args_with_extra_dict).
Every option used is recorded with the commit it was read from in tests/contract/trtllm_serve_v1_2_1.json, and the
tests parse the command line built here with a click command rebuilt from that record.

- engines: MODEL = engine/ with `--backend tensorrt`; batch and length limits are the engine's own (engine/
  config.json build_config), because the runtime cannot exceed what the engine was built for.
- unified HF checkpoint: MODEL = hf/ with `--backend pytorch`; limits from the recipe's engine section.
- tp x pp > 1: `mpirun -n <tp*pp> trtllm-llmapi-launch trtllm-serve ...`: the launcher starts the MPI world and runs
  the server on rank 0 while the other ranks serve as the LLM API's workers (TensorRT-LLM's multi-node recipe, which
  works the same on one node).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
BACKENDS = {"engine": "tensorrt", "pytorch": "pytorch"}


@dataclass(frozen=True)
class TrtllmServe:
    """What trtq starts: the command line, the extra_llm_api_options YAML (as a dict) and where it goes."""

    argv: list[str]
    extra_options: dict[str, Any]
    extra_options_path: Path
    model_dir: Path
    backend: str  # "tensorrt" or "pytorch"
    world_size: int
    notes: list[str] = field(default_factory=list)


def cannot_start() -> str | None:
    """Why trtllm-serve cannot run on this machine, or None when it can (trtllm-serve on PATH and a CUDA GPU)."""
    from runtime.compat import this_machine

    exe = shutil.which("trtllm-serve")
    machine = this_machine()
    if exe is None:
        return (
            "trtllm-serve is not installed here (it ships with tensorrt_llm in " + CONTAINER + "): run "
            "`trtq serve` inside that container with --gpus all"
        )
    if not machine.gpus:
        return f"no CUDA GPU is visible ({'nvidia-smi' if machine.gpu_probe == 'none' else machine.gpu_probe})"
    return None


def engine_limits(engine_dir: Path) -> dict[str, Any]:
    """The engine's build_config (max_batch_size, max_seq_len, max_num_tokens, max_beam_width, plugin_config)."""
    cfg = json.loads((engine_dir / "config.json").read_text())
    return cfg.get("build_config") or {}


def plan(
    artifact: Path,
    backend: str,
    *,
    host: str,
    port: int,
    tokenizer_dir: Path,
    tp: int,
    pp: int,
    recipe: dict[str, Any] | None,
    out_dir: Path,
    kv_cache_free_gpu_memory_fraction: float = 0.9,
    mpirun: str = "mpirun",
    as_root: bool = False,
) -> TrtllmServe:
    """The trtllm-serve command for ``artifact`` with ``backend`` ("engine" or "pytorch")."""
    recipe = recipe or {}
    spec = recipe.get("engine") or {}
    notes = []
    if backend == "engine":
        model_dir = artifact / "engine"
        bc = engine_limits(model_dir)
        limits = {k: bc.get(k) for k in ("max_batch_size", "max_seq_len", "max_num_tokens", "max_beam_width")}
        plugins = bc.get("plugin_config") or {}
        # KV-cache block reuse needs paged context FMHA in the engine (TensorRT-LLM refuses it otherwise)
        reuse = bool(plugins.get("use_paged_context_fmha", True))
        if not reuse:
            notes.append("KV-cache block reuse off: the engine was built without use_paged_context_fmha")
    elif backend == "pytorch":
        model_dir = artifact / "hf"
        limits = {k: spec.get(k) for k in ("max_batch_size", "max_seq_len", "max_num_tokens", "max_beam_width")}
        reuse = True
    else:
        raise ValueError(f"trtllm-serve serves engines or the unified HF checkpoint, not {backend!r}")
    extra = {
        "kv_cache_config": {
            "free_gpu_memory_fraction": float(kv_cache_free_gpu_memory_fraction),
            "enable_block_reuse": reuse,
        }
    }
    extra_path = out_dir / "extra_llm_api_options.yaml"
    argv = [
        "trtllm-serve",
        "serve",
        str(model_dir),
        "--backend",
        BACKENDS[backend],
        "--tokenizer",
        str(tokenizer_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--tp_size",
        str(tp),
        "--pp_size",
        str(pp),
    ]
    for key, value in limits.items():
        if value is not None:
            argv += [f"--{key}", str(int(value))]
    argv += ["--kv_cache_free_gpu_memory_fraction", str(float(kv_cache_free_gpu_memory_fraction))]
    if (recipe.get("model") or {}).get("trust_remote_code"):
        argv.append("--trust_remote_code")
    argv += ["--extra_llm_api_options", str(extra_path)]
    world = tp * pp
    if world > 1:
        launch = [mpirun, "-n", str(world)] + (["--allow-run-as-root"] if as_root else [])
        argv = launch + ["trtllm-llmapi-launch"] + argv
    return TrtllmServe(argv, extra, extra_path, model_dir, BACKENDS[backend], world, notes)


def write_extra_options(serve: TrtllmServe) -> None:
    import yaml

    serve.extra_options_path.parent.mkdir(parents=True, exist_ok=True)
    serve.extra_options_path.write_text(yaml.safe_dump(serve.extra_options, sort_keys=True))


def run(serve: TrtllmServe) -> int:
    """Start trtllm-serve in the foreground (this process becomes it); returns only if exec fails."""
    write_extra_options(serve)
    exe = shutil.which(serve.argv[0])
    if exe is None:
        raise FileNotFoundError(serve.argv[0])
    os.execv(exe, serve.argv)
    return 1  # pragma: no cover
