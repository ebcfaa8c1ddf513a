"""What every stage gets: the recipe, the artifact, its own output directory, and the resolved model, looked up once.

The pipeline makes one `StageContext` per stage run (and one while planning, with ``out`` None). The model's
directory, config.json, shape and family are read from the resolve stage the first time a stage asks, then kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from builder.recipe.schema import Recipe
from builder.workspace import Workspace


@dataclass
class StageContext:
    recipe: Recipe
    recipe_dir: Path
    workspace: Workspace
    out: Path | None = None  # the stage's own (temporary) output directory; None while planning
    recipe_path: Path | None = None  # the recipe file as the user named it (for messages that repeat the command)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def upstream(self, stage: str) -> Path:
        """The directory of a completed upstream stage."""
        return self.workspace.stage_dir(stage)

    @property
    def resolved(self) -> bool:
        """Whether the resolve stage has completed (planning can then read the model's shape)."""
        return self.workspace.stamp("resolve") is not None

    @cached_property
    def model_dir(self) -> Path:
        """The resolved Hugging Face model directory (the resolve stage's source.json)."""
        from builder.model.source import model_dir

        return model_dir(self.upstream("resolve"))

    @cached_property
    def model_config(self) -> dict[str, Any]:
        from builder.model.load import read_config

        return read_config(self.model_dir)

    @cached_property
    def shape(self):
        from builder.planning.layout import ModelShape

        return ModelShape.from_config(self.model_config)

    @property
    def quantize_dir(self) -> Path | None:
        """The quantize stage's directory when this recipe calibrates (or quantizes its KV cache), else None."""
        from runtime.formats import needs_calibration

        q = self.recipe.quantization
        return self.upstream("quantize") if needs_calibration(q.format, q.kv_cache) else None
