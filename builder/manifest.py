"""Write `manifest.json`, last, from the stamps of the stages that completed."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

from builder import __version__
from builder._deps import version
from builder.recipe.schema import Recipe
from builder.workspace import Workspace, write_json_atomic
from runtime.manifest import FILENAME, Manifest

LIBRARIES = ("torch", "transformers", "nvidia-modelopt", "tensorrt-llm", "tensorrt", "huggingface-hub", "safetensors")


def read_previous(ws: Workspace) -> dict[str, Any] | None:
    """The artifact's manifest as it was before this build (None when there is none)."""
    return _read_previous(ws.dir / FILENAME)


def write_manifest(
    ws: Workspace,
    recipe: Recipe,
    plan,
    status: str,
    recipe_path: Path | None = None,
    previous: dict[str, Any] | None = None,
) -> Path:
    """Write the manifest for what is in ``ws`` now. A no-op build leaves an identical manifest untouched."""
    stages: dict[str, Any] = {}
    files: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    for step in plan.steps:
        stamp = ws.stamp(step.stage.NAME)
        if stamp is None or stamp.get("fingerprint") != step.fingerprint:
            continue  # did not complete in this build
        stages[step.stage.NAME] = {
            "fingerprint": stamp["fingerprint"],
            "seconds": stamp.get("seconds"),
            "reused": step.action == "reuse",
        }
        results[step.stage.NAME] = stamp.get("result") or {}
        for row in stamp.get("files", []):
            files.append({**row, "path": f"{step.stage.NAME}/{row['path']}"})
    ckpt = results.get("checkpoint", {})
    quant = dict(ckpt.get("quantization") or {})
    quant["format"] = recipe.quantization.format
    path = ws.dir / FILENAME
    on_disk = _read_previous(path)  # present unless this build changed a stage (then it was dropped)
    files += _kept_report_files(ws.dir, previous or on_disk)
    body = {
        "name": recipe.name,
        "status": status,
        "trtq_version": __version__,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_file": str(recipe_path) if recipe_path else None,
        "source": results.get("resolve", {}),
        "quantization": quant,
        "parallel": {"tp": recipe.parallel.tp, "pp": recipe.parallel.pp, "world_size": recipe.parallel.world_size},
        "stages": {k: {**v, "reused": False} for k, v in stages.items()},
        "versions": {
            "python": platform.python_version(),
            **{lib: version(lib) for lib in LIBRARIES},
            "cuda": cuda_version(),
        },
        "hardware": results.get("engine", {}).get("hardware", {}),
        "verify": results.get("verify") or None,
        "engine": {"trtllm_build": results["engine"].get("trtllm_build")} if "engine" in results else None,
        "files": sorted(files, key=lambda f: f["path"]),
    }
    if on_disk is not None and _same(on_disk, body):
        return path  # nothing changed: keep the manifest (and its timestamp) as it was
    manifest = Manifest.model_validate(
        {**body, "stages": stages, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    )
    write_json_atomic(path, manifest.model_dump(mode="json"))
    return path


def cuda_version() -> str | None:
    """The CUDA version torch was built for (None for a CPU build), read from torch/version.py without importing torch.

    Importing torch costs seconds; a no-op build should not pay that just to write its manifest.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "cuda" and isinstance(node.value, ast.Constant):
            return node.value.value if isinstance(node.value.value, str) else None
    return None


def _kept_report_files(artifact: Path, previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`trtq report` adds report/ to the manifest after the build: keep those entries while the files are unchanged,
    so a rebuild does not drop the report from what gets published."""
    from builder.fingerprint import sha256_file

    kept = []
    for f in (previous or {}).get("files", []):
        full = artifact / f.get("path", "")
        if not (f.get("path", "").startswith("report/") and full.is_file()):
            continue
        if full.stat().st_size == f.get("size") and sha256_file(full) == f.get("sha256"):
            kept.append(f)
    return kept


def _read_previous(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _same(previous: dict[str, Any], body: dict[str, Any]) -> bool:
    prev = {k: previous.get(k) for k in body}
    prev["stages"] = {k: {**v, "reused": False} for k, v in (previous.get("stages") or {}).items()}
    return prev == body
