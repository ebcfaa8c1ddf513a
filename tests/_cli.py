"""Helpers shared by tests: run the real `trtq` CLI, find optional tools."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_trtq(*args, cwd=None, env=None, timeout=900) -> subprocess.CompletedProcess:
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
