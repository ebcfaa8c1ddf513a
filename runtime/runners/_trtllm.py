"""Helpers shared by the TensorRT-LLM runners: errors, the lazy import, the world-size check, output decoding."""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from runtime.errors import TrtqError
from runtime.manifest import FILENAME, Manifest, ManifestError, read_manifest
from runtime.runners.base import TokenOutput

CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
# The TensorRT engine backend (trtllm-build, tensorrt_llm.builder, ModelRunner*) is removed from 1.3.0rc21 on.
LAST_WITH_ENGINE_BACKEND = (1, 3, 0, "rc", 20)


def parse_version(v: str) -> tuple:
    """'1.2.1' -> (1, 2, 1, '~'); '1.3.0rc20' -> (1, 3, 0, 'rc', 20); () when unreadable. A final release sorts after
    its release candidates ('~' > any letter); .postN counts as the release."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:\.?(rc|a|b|dev|post)\.?(\d+))?", v)
    if not m:
        return ()
    major, minor, patch, tag, num = m.groups()
    return (int(major), int(minor), int(patch), *((tag, int(num)) if tag and tag != "post" else ("~",)))


def has_engine_backend(version: str) -> bool:
    """Whether TensorRT-LLM ``version`` still has the TensorRT engine backend (releases up to 1.3.0rc20)."""
    parsed = parse_version(version)
    return bool(parsed) and parsed <= LAST_WITH_ENGINE_BACKEND


class RunnerError(TrtqError):
    """A TensorRT-LLM runner cannot start or run; the message is one line saying why and what to do."""

    exit_code = 1


class WorldSizeError(RunnerError):
    """The MPI world does not match the artifact's tp x pp."""

    exit_code = 2


def require_trtllm(what: str) -> ModuleType:
    """Import tensorrt_llm, or say that it only exists inside NVIDIA's container."""
    try:
        return importlib.import_module("tensorrt_llm")
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != "tensorrt_llm":
            raise
        raise RunnerError(
            f"{what} needs tensorrt_llm, which is not installed here: run inside {CONTAINER} "
            "(docker run --gpus all --ipc=host ...), or run the artifact's checkpoint with the reference backend"
        ) from None


def optional_manifest(artifact_dir: Path) -> Manifest | None:
    """The artifact's manifest when it has one. A build in progress has none (the pipeline drops it before the stages
    run and writes it last), and a bare engine or checkpoint directory never has one: runners read their layout from
    the files they load and use the manifest, when present, only to cross-check."""
    if not (Path(artifact_dir) / FILENAME).is_file():
        return None
    try:
        return read_manifest(artifact_dir)
    except ManifestError as e:
        raise RunnerError(str(e)) from None


def layout(manifest: Manifest) -> tuple[int, int, int]:
    tp = int(manifest.parallel.get("tp", 1))
    pp = int(manifest.parallel.get("pp", 1))
    return tp, pp, int(manifest.parallel.get("world_size", tp * pp))


def mapping_layout(config: dict[str, Any]) -> tuple[int, int, int]:
    """(tp, pp, world size) from a TensorRT-LLM config.json: an engine's (its pretrained_config.mapping) or a
    checkpoint's (its mapping)."""
    mapping = (config.get("pretrained_config") or config).get("mapping") or {}
    tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    return tp, pp, int(mapping.get("world_size", tp * pp))


def check_world(tp: int, pp: int, n: int, artifact_dir: Path, world_size: int) -> None:
    """Before loading anything: an engine artifact runs on exactly tp x pp MPI ranks."""
    if world_size != n:
        raise WorldSizeError(
            f"{artifact_dir}: built for tp={tp} x pp={pp} = {n} rank(s), but this run has {world_size}: "
            + (
                f"run `mpirun -n {n} trtq run {artifact_dir} ...`"
                if n > 1
                else f"run `trtq run {artifact_dir}` without mpirun"
            )
        )


def decode(
    generated: Sequence[int],
    end_id: int | None,
    max_new_tokens: int,
    stops: Sequence[Sequence[int]],
    final: bool = True,
) -> TokenOutput:
    """Turn one sequence's generated tokens into a TokenOutput: cut at end_id or a stop sequence, say why it ended.

    A final sequence that neither reached end_id nor a stop ended for length, or (shorter) at an EOS the runtime did
    not count in its length. A non-final one (a streaming step) has finish_reason None unless it already ended.
    """
    tokens = list(generated)
    if end_id is not None and end_id in tokens:
        return _cut_stops(tokens[: tokens.index(end_id)], "eos", stops)
    out = _cut_stops(tokens, None, stops)
    if out.finish_reason is None and final:
        out.finish_reason = "length" if len(tokens) >= max_new_tokens else "eos"
    return out


def _cut_stops(tokens: list[int], reason: str | None, stops: Sequence[Sequence[int]]) -> TokenOutput:
    best = None
    for stop in stops:
        n = len(stop)
        for i in range(len(tokens) - n + 1):
            if n and tokens[i : i + n] == list(stop):
                best = i if best is None else min(best, i)
                break
    if best is not None:
        return TokenOutput(tokens[:best], "stop")
    return TokenOutput(tokens, reason)  # type: ignore[arg-type]


def end_id_of(model_dir: Path) -> int | None:
    """The EOS id from generation_config.json (else config.json) in ``model_dir``, when there is one."""
    import json

    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if isinstance(eos, list):
                eos = eos[0] if eos else None
            if isinstance(eos, int):
                return eos
    return None


def holdback(stops: Sequence[Sequence[int]]) -> int:
    """Tokens a stream keeps back so that a stop sequence split across steps is never printed."""
    return max((len(s) for s in stops), default=1) - 1
