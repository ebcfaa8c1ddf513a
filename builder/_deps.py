"""Optional dependencies: import them where needed, and say how to get them when they are missing."""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

from builder.errors import MissingDependency

# module name -> (distribution on PyPI, what provides it)
_PROVIDERS = {
    "torch": ("torch", "pip install 'trtq[quantize]' torch==2.13.0 (CPU) or use the TensorRT-LLM container"),
    "transformers": ("transformers", "pip install 'trtq[quantize]'"),
    "modelopt": ("nvidia-modelopt", "pip install 'trtq[quantize]'"),
    "safetensors": ("safetensors", "pip install 'trtq[quantize]'"),
    "gguf": ("gguf", "pip install 'trtq[quantize]'"),
    "mpi4py": ("mpi4py", "pip install 'trtq[mpi]'"),
    "matplotlib": ("matplotlib", "pip install 'trtq[report]'"),
    "tensorrt_llm": (
        "tensorrt-llm",
        "run inside nvcr.io/nvidia/tensorrt-llm/release:1.2.1 (see docker/README.md); it cannot be pip-installed here",
    ),
}


def require(module: str, why: str) -> ModuleType:
    """Import ``module`` or raise MissingDependency saying what it was needed for and how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise  # a missing *transitive* import inside an installed package is a real bug: keep the traceback
        _, how = _PROVIDERS.get(top, (top, f"pip install {top}"))
        raise MissingDependency(f"{why} needs '{top}', which is not installed: {how}") from e


def version(distribution: str) -> str | None:
    """Installed version of a distribution without importing it (fast), or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
