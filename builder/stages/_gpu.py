"""What this machine's GPU is (name, compute capability, memory), and which formats each compute capability runs.

Read with `nvidia-smi` (no torch import: the engine stage's fingerprint asks for it at planning time), falling back to
torch.cuda when nvidia-smi is absent but CUDA works.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

# Minimum compute capability per format and KV-cache format. Sources: TensorRT-LLM support matrix ("Ampere (SM80,
# SM86) - FP32, FP16, BF16, INT8, INT4"; "Ada Lovelace (SM89) ... FP8"), ModelOpt support matrix (FP8 and W4A8: "Ada
# and later"; INT8 SmoothQuant and W4A16 AWQ: "Ampere and later").
MIN_SM = {
    "fp16": (8, 0),
    "bf16": (8, 0),
    "int8_wo": (8, 0),
    "int4_wo": (8, 0),
    "int8_sq": (8, 0),
    "int4_awq": (8, 0),
    "w4a8_awq": (8, 9),
    "fp8": (8, 9),
}
MIN_SM_KV = {"none": (0, 0), "int8": (8, 0), "fp8": (8, 9)}


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"
    memory_bytes: int

    @property
    def sm(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


def local_gpus() -> list[Gpu]:
    """The GPUs visible here (empty when there are none)."""
    gpus = _nvidia_smi()
    return gpus if gpus is not None else _torch_gpus()


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
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].isdigit():
            gpus.append(Gpu(parts[0], parts[1], int(parts[2]) * 1024 * 1024))  # memory.total is MiB
    return gpus


def _torch_gpus() -> list[Gpu]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(Gpu(p.name, f"{p.major}.{p.minor}", int(p.total_memory)))
    return gpus


def format_problem(fmt: str, kv_cache: str, sm: tuple[int, int], gpu_name: str) -> str | None:
    """Why ``fmt`` (with ``kv_cache``) cannot run on a GPU of compute capability ``sm`` (None when it can)."""
    need = MIN_SM[fmt]
    if sm < need:
        return (
            f"quantization.format: {fmt} needs compute capability {need[0]}.{need[1]}+, but {gpu_name} is "
            f"{sm[0]}.{sm[1]}: use {_suggest(sm)}"
        )
    need_kv = MIN_SM_KV[kv_cache]
    if sm < need_kv:
        return (
            f"quantization.kv_cache: {kv_cache} needs compute capability {need_kv[0]}.{need_kv[1]}+, but {gpu_name} "
            f"is {sm[0]}.{sm[1]}: use kv_cache int8 or none"
        )
    return None


def _suggest(sm: tuple[int, int]) -> str:
    ok = [f for f, need in MIN_SM.items() if sm >= need and f not in ("fp16", "bf16")]
    return ", ".join(ok) if ok else "a GPU of compute capability 8.0 or newer"
