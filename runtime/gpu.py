"""The one GPU probe: which NVIDIA GPUs this machine has (name, compute capability, memory), and how we know.

Read with `nvidia-smi` (no torch import: the engine stage's fingerprint asks for it at planning time, and `trtq pull`
before it downloads anything), falling back to torch.cuda when nvidia-smi is absent but CUDA works. Which format runs
on which compute capability is the format table's business (runtime/formats.py).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"
    memory_bytes: int = 0  # 0 when the probe could not tell

    @property
    def sm(self) -> tuple[int, int]:
        return cc_key(self.compute_capability)


def cc_key(cc: str) -> tuple[int, int]:
    """'9.0' -> (9, 0)."""
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def normalize_cc(value) -> str | None:
    """A compute capability given as "9.0", [9, 0], 90, "sm90" or "sm_90", as "9.0"."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).lower().removeprefix("sm").lstrip("_ ")
    if "." in text:
        major, minor = text.split(".", 1)
        return f"{int(major)}.{int(minor)}"
    if text.isdigit():
        return f"{int(text) // 10}.{int(text) % 10}"
    return str(value)


def probe() -> tuple[list[Gpu], str]:
    """(the GPUs visible here, how they were found: "nvidia-smi", "torch" or "none")."""
    gpus = _nvidia_smi()
    if gpus is not None:
        return gpus, "nvidia-smi"
    gpus = _torch()
    if gpus is not None:
        return gpus, "torch"
    return [], "none"


def local_gpus() -> list[Gpu]:
    """The GPUs visible here (empty when there are none)."""
    return probe()[0]


def _nvidia_smi() -> list[Gpu] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # an old driver without compute_cap, or no device: let torch try
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0] and parts[1]:
            mib = int(parts[2]) if parts[2].isdigit() else 0
            gpus.append(Gpu(parts[0], normalize_cc(parts[1]) or parts[1], mib * 1024 * 1024))  # memory.total: MiB
    return gpus or None


def _torch() -> list[Gpu] | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(Gpu(p.name, f"{p.major}.{p.minor}", int(p.total_memory)))
    return gpus
