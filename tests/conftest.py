"""Test set-up: tests/ on sys.path for the helper modules, and integration tests skipped (with the reason) when the
heavy libraries are absent. Helpers live in tests/_cli.py, tests/_tiny.py, ... (not here: several conftest.py files
exist, and `from conftest import` would pick one at random)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/_cli.py, tests/_tiny.py and friends

from _cli import have  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Integration tests need torch, transformers and modelopt: skip them, saying why, where those are absent."""
    missing = [m for m in ("torch", "transformers", "modelopt") if not have(m)]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs {', '.join(missing)} (pip install -e '.[quantize]')")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)
