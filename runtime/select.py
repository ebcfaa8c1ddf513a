"""Pick the runner for an artifact (or a bare engine / checkpoint directory), for this process's rank.

What an artifact can hold, and what runs it:

    engine/       TensorRT engines            -> EngineRunner   (needs TensorRT-LLM <= 1.3.0rc20 and a GPU)
    hf/           unified HF checkpoint        -> PyTorchRunner  (needs TensorRT-LLM and a GPU)
    checkpoint/   TensorRT-LLM checkpoint      -> the reference runner (torch, CPU or GPU)

`--backend auto` takes the first row that the artifact holds AND this machine can run, in that order (the PyTorch
backend starts its own tp x pp workers, so it is not picked for a process that is one of several launched ranks). When the
artifact holds engines or an HF export but the machine runs neither, and there is no checkpoint to fall back to, it
still picks the TensorRT-LLM runner, whose error then says what is missing. The choice and its reason are logged.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import BackendUnavailable
from runtime.mpi import world_from_env
from runtime.runners.base import Runner

log = logging.getLogger("trtq.run")

BACKENDS = ("auto", "reference", "engine", "pytorch")


# ---------------------------------------------------------------------------------------------- what the artifact holds
def checkpoint_dir(artifact_dir: str | Path) -> Path | None:
    """The TensorRT-LLM checkpoint of an artifact, or the directory itself when it is one."""
    d = Path(artifact_dir)
    if (d / "config.json").is_file() and (d / "rank0.safetensors").is_file():
        return d
    if (d / "checkpoint" / "config.json").is_file():
        return d / "checkpoint"
    return None


def engine_dir(artifact_dir: str | Path) -> Path | None:
    """The TensorRT engines of an artifact (engine/), or the directory itself when it is an engine directory
    (config.json + rank0.engine, as trtllm-build writes it)."""
    d = Path(artifact_dir)
    if (d / "config.json").is_file() and (d / "rank0.engine").is_file():
        return d
    if (d / "engine").is_dir():
        return d / "engine"
    return None


def hf_dir(artifact_dir: str | Path) -> Path | None:
    """The unified Hugging Face checkpoint of an artifact (hf/), for TensorRT-LLM's PyTorch backend."""
    d = Path(artifact_dir) / "hf"
    return d if d.is_dir() else None


def tokenizer_dir(artifact_dir: str | Path) -> Path:
    """Where the tokenizer lives: checkpoint/ (trtq copies it there), else hf/, else engine/, else the directory."""
    d = Path(artifact_dir)
    for cand in (checkpoint_dir(d), d / "hf", engine_dir(d), d):
        if cand is not None and ((cand / "tokenizer.json").is_file() or (cand / "tokenizer_config.json").is_file()):
            return cand
    return d


# ---------------------------------------------------------------------------------------------- what the machine has
@dataclass(frozen=True)
class Host:
    """What this machine can run: the TensorRT-LLM version installed (None when it is not) and its GPU count."""

    tensorrt_llm: str | None
    gpus: int

    def engines(self) -> str | None:
        """Why TensorRT engines cannot run here, or None when they can."""
        from runtime.runners._trtllm import CONTAINER, has_engine_backend

        if self.tensorrt_llm is None:
            return f"tensorrt_llm is not installed here (it is in {CONTAINER})"
        if self.tensorrt_llm and not has_engine_backend(self.tensorrt_llm):
            return f"tensorrt_llm {self.tensorrt_llm} has no TensorRT engine backend (removed after 1.3.0rc20)"
        return None if self.gpus else "no NVIDIA GPU is visible"

    def llm_api(self) -> str | None:
        """Why TensorRT-LLM's PyTorch backend cannot run here, or None when it can."""
        from runtime.runners._trtllm import CONTAINER

        if self.tensorrt_llm is None:
            return f"tensorrt_llm is not installed here (it is in {CONTAINER})"
        return None if self.gpus else "no NVIDIA GPU is visible"


def detect_host() -> Host:
    """TensorRT-LLM's version (from its distribution, without importing it) and the GPUs nvidia-smi (else torch)
    sees. "" for a tensorrt_llm that is importable but has no distribution metadata."""
    from runtime.compat import this_machine

    machine = this_machine()
    version = machine.tensorrt_llm
    if version is None:
        mod = sys.modules.get("tensorrt_llm")
        if mod is not None:
            version = str(getattr(mod, "__version__", ""))
        elif importlib.util.find_spec("tensorrt_llm") is not None:
            version = ""
    return Host(version, len(machine.gpus))


# ---------------------------------------------------------------------------------------------- the choice
def choose_backend(artifact_dir: str | Path, backend: str = "auto", host: Host | None = None) -> tuple[str, str]:
    """(backend, why) for ``artifact_dir``: the asked one, or with ``auto`` the first of engine, pytorch, reference
    that the artifact holds and the machine (``host``, probed when needed) can run."""
    d = Path(artifact_dir)
    if backend not in BACKENDS:
        raise BackendUnavailable(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend, "--backend " + backend
    holds = {
        "engine": engine_dir(d) is not None,
        "pytorch": hf_dir(d) is not None,
        "reference": checkpoint_dir(d) is not None,
    }
    if not any(holds.values()):
        raise BackendUnavailable(
            f"{d}: nothing to run: no engine/, checkpoint/ or hf/ directory (and it is not a TensorRT-LLM checkpoint "
            "or engine directory)"
        )
    skipped = []
    if holds["engine"] or holds["pytorch"]:
        host = detect_host() if host is None else host
        ranks = world_from_env().size
        llm_api = host.llm_api() or (
            f"it starts its own worker processes, and this is one of {ranks} launched ranks" if ranks > 1 else None
        )
        for name, what, why_not in (
            ("engine", "engine/", host.engines()),
            ("pytorch", "hf/", llm_api),
        ):
            if holds[name]:
                if why_not is None:
                    return name, f"{what} present and this machine runs it"
                skipped.append(f"{what} needs TensorRT-LLM on a GPU: {why_not}")
    if holds["reference"]:
        return "reference", "; ".join(skipped) or "only a TensorRT-LLM checkpoint"
    first = "engine" if holds["engine"] else "pytorch"
    return first, "; ".join(skipped)


def resolve_backend(artifact_dir: str | Path, backend: str = "auto", host: Host | None = None) -> str:
    chosen, why = choose_backend(artifact_dir, backend, host)
    if backend == "auto":
        log.info("backend %s: %s", chosen, why)
    return chosen


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


def open_runner(artifact_dir: str | Path, backend: str = "auto", host: Host | None = None) -> Runner:
    """Open the runner for ``artifact_dir`` on this process's rank (rank/world size from the launcher's environment)."""
    d = Path(artifact_dir)
    chosen = resolve_backend(d, backend, host)
    world = world_from_env()
    if chosen == "engine":
        if engine_dir(d) is None:
            raise BackendUnavailable(
                f"--backend engine: {d} has no engine/ directory (build it with targets: [engine])"
            )
        return _lazy("runtime.runners.engine", "EngineRunner", "engine").open(d, world.rank, world.size)
    if chosen == "pytorch":
        if hf_dir(d) is None:
            raise BackendUnavailable(f"--backend pytorch: {d} has no hf/ directory (build it with targets: [hf])")
        return _lazy("runtime.runners.pytorch", "PyTorchRunner", "pytorch").open(d, world.rank, world.size)
    ckpt = checkpoint_dir(d)
    if ckpt is None:
        raise BackendUnavailable(
            f"--backend reference: {d} has no TensorRT-LLM checkpoint (checkpoint/config.json + rank*.safetensors)"
        )
    from runtime.reference.runner import ReferenceRunner

    return ReferenceRunner.open(ckpt)
