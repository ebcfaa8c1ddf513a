"""Shared test helpers: run the real `trtq` CLI, find optional tools, skip with a printed reason."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/_tiny.py and friends


def run_trtq(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `trtq ARGS` in a subprocess exactly as a user would (python -m builder.cli)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "builder.cli", *map(str, args)],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config, items):
    """Integration tests need torch, transformers and modelopt: skip them, saying why, where those are absent."""
    missing = [m for m in ("torch", "transformers", "modelopt") if not have(m)]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs {', '.join(missing)} (pip install -e '.[quantize]')")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)
