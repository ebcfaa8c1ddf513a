"""Pick the runner for an artifact (or a bare checkpoint directory), for this process's rank.

engine/ present -> EngineRunner (TensorRT engines); only hf/ -> PyTorchRunner (TensorRT-LLM's PyTorch backend);
checkpoint/ (or a directory that is itself a TensorRT-LLM checkpoint) -> the CPU reference runner.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from runtime.errors import BackendUnavailable
from runtime.mpi import world_from_env
from runtime.runners.base import Runner

BACKENDS = ("auto", "reference", "engine", "pytorch")


def checkpoint_dir(artifact_dir: str | Path) -> Path | None:
    """The TensorRT-LLM checkpoint of an artifact, or the directory itself when it is one."""
    d = Path(artifact_dir)
    if (d / "config.json").is_file() and (d / "rank0.safetensors").is_file():
        return d
    if (d / "checkpoint" / "config.json").is_file():
        return d / "checkpoint"
    return None


def tokenizer_dir(artifact_dir: str | Path) -> Path:
    """Where the tokenizer lives: checkpoint/ (trtq copies it there), else hf/, else the directory itself."""
    d = Path(artifact_dir)
    for cand in (checkpoint_dir(d), d / "hf", d):
        if cand is not None and ((cand / "tokenizer.json").is_file() or (cand / "tokenizer_config.json").is_file()):
            return cand
    return d


def resolve_backend(artifact_dir: str | Path, backend: str = "auto") -> str:
    d = Path(artifact_dir)
    if backend not in BACKENDS:
        raise BackendUnavailable(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if (d / "engine").is_dir():
        return "engine"
    if checkpoint_dir(d) is not None:
        return "reference"
    if (d / "hf").is_dir():
        return "pytorch"
    raise BackendUnavailable(
        f"{d}: nothing to run: no engine/, checkpoint/ or hf/ directory (and it is not a TensorRT-LLM checkpoint)"
    )


def _lazy(module: str, cls: str, backend: str):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise BackendUnavailable(
                f"--backend {backend}: this trtq install has no {module} module (the {backend} runner is not part of "
                "it yet); use --backend reference for a TensorRT-LLM checkpoint"
            ) from None
        raise
    return getattr(mod, cls)


def open_runner(artifact_dir: str | Path, backend: str = "auto") -> Runner:
    """Open the runner for ``artifact_dir`` on this process's rank (rank/world size from the MPI environment)."""
    d = Path(artifact_dir)
    chosen = resolve_backend(d, backend)
    world = world_from_env()
    if chosen == "engine":
        if not (d / "engine").is_dir():
            raise BackendUnavailable(
                f"--backend engine: {d} has no engine/ directory (build it with targets: [engine])"
            )
        return _lazy("runtime.runners.engine", "EngineRunner", "engine").open(d, world.rank, world.size)
    if chosen == "pytorch":
        if not (d / "hf").is_dir():
            raise BackendUnavailable(f"--backend pytorch: {d} has no hf/ directory (build it with targets: [hf])")
        return _lazy("runtime.runners.pytorch", "PyTorchRunner", "pytorch").open(d, world.rank, world.size)
    ckpt = checkpoint_dir(d)
    if ckpt is None:
        raise BackendUnavailable(
            f"--backend reference: {d} has no TensorRT-LLM checkpoint (checkpoint/config.json + rank*.safetensors)"
        )
    from runtime.reference.runner import ReferenceRunner

    return ReferenceRunner.open(ckpt)
