"""Build artifacts for tests through trtq's own pipeline (builder.pipeline.build), never around it."""

from __future__ import annotations

import json
from pathlib import Path


def build_artifact(
    model_dir: Path,
    root: Path,
    name: str,
    fmt: str = "fp16",
    kv: str = "none",
    tp: int = 1,
    pp: int = 1,
    until: str | None = "export",
    **fields,
) -> Path:
    """Build ``model_dir`` as ``fmt`` (+ ``kv``) at tp x pp into ``root/name`` with a small builtin calibration (4
    windows of 32 tokens; AWQ group 32) unless ``fields`` say otherwise; returns the artifact directory."""
    from builder.pipeline import build
    from builder.recipe.load import load_recipe
    from runtime.formats import FORMATS

    quant = {"format": fmt, "kv_cache": kv} | ({"awq_block_size": 32} if FORMATS[fmt].grouped else {})
    body = {
        "name": name,
        "model": {"path": str(model_dir)},
        "quantization": quant | fields.pop("quantization", {}),
        "calibration": {"samples": 4, "seq_len": 32} | fields.pop("calibration", {}),
        "parallel": {"tp": tp, "pp": pp},
        "targets": ["checkpoint"],
        **fields,
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(body))
    recipe, recipe_dir = load_recipe(path)
    build(recipe, recipe_dir, root, until=until, recipe_path=path)
    return root / name
