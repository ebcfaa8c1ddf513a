"""The `trtllm` suite: the real TensorRT-LLM 1.2.1 on a GPU (inside nvcr.io/nvidia/tensorrt-llm/release:1.2.1).

Everywhere else every test here is skipped, and `-ra` prints why.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def _why_not() -> str | None:
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "needs tensorrt_llm 1.2.1: run inside nvcr.io/nvidia/tensorrt-llm/release:1.2.1 (pytest -m trtllm)"
    if shutil.which("nvidia-smi") is None:
        return "needs an NVIDIA GPU (nvidia-smi not found)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _why_not()
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.trtllm)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
