"""Fixtures for the contract tests: the strict tensorrt_llm stand-in, fake checkpoints and artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from contract.standin import install  # noqa: E402


@pytest.fixture
def standin(monkeypatch):
    """The stand-in `tensorrt_llm` 1.2.1 for one test (rank 0 of 1, an H100-like GPU)."""
    s = install(monkeypatch)
    _fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", "9.0", 81559)
    return s


def _fake_host(monkeypatch, tensorrt_llm: str | None, gpus: int) -> None:
    import runtime.select as sel

    monkeypatch.setattr(sel, "detect_host", lambda: sel.Host(tensorrt_llm, gpus))


def _fake_gpu(monkeypatch, name: str, cc: str, mib: int) -> None:
    from builder.stages import build
    from runtime import gpu as _gpu

    gpus = [] if name is None else [_gpu.Gpu(name, cc, mib * 1024 * 1024)]
    monkeypatch.setattr(build, "local_gpus", lambda: gpus)
    _fake_host(monkeypatch, "1.2.1", len(gpus))  # what runtime.select sees: the stand-in release on these GPUs


@pytest.fixture
def fake_gpu(monkeypatch):
    """Replace the visible GPU: fake_gpu(name, compute capability, MiB) or fake_gpu(None) for none."""
    return lambda name, cc="9.0", mib=81559: _fake_gpu(monkeypatch, name, cc, mib)
