"""Recipe files for the reliability tests."""

from __future__ import annotations

import json
from pathlib import Path


def recipe_file(tmp_path: Path, model_dir: Path, **fields) -> Path:
    body = {
        "name": fields.pop("name", "tiny"),
        "model": fields.pop("model", {"path": str(model_dir)}),
        "quantization": {"format": fields.pop("format", "fp16")},
        "calibration": {"samples": 4, "seq_len": 32},
        "parallel": {"tp": fields.pop("tp", 1)},
        "targets": fields.pop("targets", ["checkpoint"]),
        **fields,
    }
    p = tmp_path / "recipe.yaml"
    p.write_text(json.dumps(body))
    return p
