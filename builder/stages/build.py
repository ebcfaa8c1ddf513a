"""Stage `build`: TensorRT-LLM engines, one per rank, for the pinned TensorRT-LLM release (1.2.1)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Any

from builder.errors import StageFailed
from builder.recipe import Recipe

CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"


def container_command(recipe_file: str | None) -> str:
    """The command that finishes a build inside NVIDIA's container, from the checkpoints built here."""
    recipe_arg = shlex.quote(recipe_file or "recipe.yaml")
    return (
        f"docker run --rm --gpus all --ipc=host --ulimit memlock=-1 -v $PWD:/work -w /work {CONTAINER} "
        f"bash -c 'pip install --no-deps /work && trtq build {recipe_arg}'"
    )


def build_engines(recipe: Recipe, checkpoint: Path, out: Path) -> dict[str, Any]:
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise StageFailed(
            "engine: tensorrt_llm is not installed here, so the checkpoint is ready but no engine was built. "
            f"Finish inside the TensorRT-LLM container: {container_command(None)} "
            "(or build only up to the checkpoint with --until export)"
        )
    raise StageFailed("engine: building engines is not available in this trtq version yet (use --until export)")
