"""Will this artifact run on this machine? Compare a manifest's facts with the local GPU and libraries.

TensorRT engines run only on the GPU architecture (compute capability) and the TensorRT / TensorRT-LLM versions they
were built with; a checkpoint is portable but its quantization format needs a recent enough GPU. `trtq pull` checks
this before it downloads anything; runners can call `check()` before they load anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from runtime.formats import FORMATS, KV_CACHES
from runtime.gpu import Gpu, cc_key, normalize_cc, probe
from runtime.manifest import Manifest


@dataclass(frozen=True)
class Machine:
    """What this machine offers: GPUs (found how) and the TensorRT-LLM / TensorRT versions installed."""

    gpus: tuple[Gpu, ...] = ()
    tensorrt_llm: str | None = None
    tensorrt: str | None = None
    gpu_probe: str = "none"  # "nvidia-smi", "torch" or "none"


@dataclass(frozen=True)
class Finding:
    level: str  # "error" (it cannot run here) or "warning" (it may not, or we could not tell)
    message: str


@dataclass(frozen=True)
class Requirements:
    """What an artifact needs, read from its manifest (for `trtq show`, the model card, OCI annotations, checks)."""

    engine: bool
    gpu_name: str | None = None
    compute_capability: str | None = None  # exact, for engines
    min_compute_capability: str | None = None  # for the format, checkpoints and engines alike
    tensorrt_llm: str | None = None
    tensorrt: str | None = None
    cuda: str | None = None
    world_size: int = 1
    reasons: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for people, e.g. 'GPU sm 9.0 (NVIDIA H100), 2 GPUs, TensorRT-LLM 1.2.1, TensorRT 10.13, CUDA 12.9'."""
        parts = []
        if self.engine:
            gpu = f"GPU compute capability {self.compute_capability or '?'}"
            parts.append(gpu + (f" ({self.gpu_name})" if self.gpu_name else ""))
        elif self.min_compute_capability:
            parts.append(f"GPU compute capability >= {self.min_compute_capability}")
        parts.append(f"{self.world_size} GPU{'s' if self.world_size != 1 else ''} (tp x pp)")
        if self.tensorrt_llm:
            parts.append(f"TensorRT-LLM {self.tensorrt_llm}")
        elif not self.engine:
            parts.append("TensorRT-LLM to build engines")
        if self.tensorrt:
            parts.append(f"TensorRT {self.tensorrt}")
        if self.cuda:
            parts.append(f"CUDA {self.cuda}")
        return ", ".join(parts)


def requirements(m: Manifest) -> Requirements:
    """What the artifact in ``m`` needs to run."""
    hw = m.hardware or {}
    engine = bool(hw) or any(f.path.startswith("engine/") for f in m.files)
    fmt = m.quantization.get("format")
    kv = (m.recipe.get("quantization") or {}).get("kv_cache") or "none"
    need, reasons = None, {}
    for spec, why in ((FORMATS.get(fmt), f"format {fmt}"), (KV_CACHES.get(kv), f"kv cache {kv}")):
        cc = f"{spec.min_sm[0]}.{spec.min_sm[1]}" if spec is not None and spec.min_sm > (0, 0) else None
        if cc and (need is None or cc_key(cc) > cc_key(need)):
            need, reasons["min_compute_capability"] = cc, why
    versions = m.versions or {}
    return Requirements(
        engine=engine,
        gpu_name=hw.get("gpu") or hw.get("gpu_name") or hw.get("name"),
        compute_capability=normalize_cc(hw.get("compute_capability") or hw.get("sm")),
        min_compute_capability=need,
        tensorrt_llm=hw.get("tensorrt_llm") or (versions.get("tensorrt-llm") if engine else None),
        tensorrt=hw.get("tensorrt") or (versions.get("tensorrt") if engine else None),
        cuda=hw.get("cuda") or versions.get("cuda"),
        world_size=m.world_size,
        reasons=reasons,
    )


def this_machine() -> Machine:
    """Probe the local GPUs (runtime/gpu.py) and TensorRT-LLM/TensorRT versions (no imports)."""
    gpus, how = probe()
    return Machine(tuple(gpus), _version("tensorrt_llm", "tensorrt-llm"), _version("tensorrt", "tensorrt-cu12"), how)


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def check(m: Manifest, machine: Machine) -> list[Finding]:
    """Every reason the artifact in ``m`` cannot (error) or may not (warning) run on ``machine``, most serious first."""
    req = requirements(m)
    out: list[Finding] = []
    local_ccs = sorted({g.compute_capability for g in machine.gpus})
    where = ", ".join(f"{g.name} ({g.compute_capability})" for g in machine.gpus)
    if req.engine:
        built_for = f"compute capability {req.compute_capability or '?'}" + (
            f" ({req.gpu_name})" if req.gpu_name else ""
        )
        if not machine.gpus:
            out.append(
                Finding(
                    "warning",
                    f"no NVIDIA GPU found on this machine ({_probe(machine)}): the engines were built for {built_for} "
                    "and run only on a GPU of that architecture",
                )
            )
        elif req.compute_capability and req.compute_capability not in local_ccs:
            out.append(
                Finding(
                    "error",
                    f"the engines were built for {built_for}, but this machine has {where}: TensorRT engines do not run "
                    "on another GPU architecture; pull it on such a GPU, or pull the checkpoint and build engines here",
                )
            )
        out += _library("TensorRT-LLM", req.tensorrt_llm, machine.tensorrt_llm, "tensorrt_llm")
        out += _library("TensorRT", req.tensorrt, machine.tensorrt, "tensorrt")
    elif (
        req.min_compute_capability
        and machine.gpus
        and all(cc_key(c) < cc_key(req.min_compute_capability) for c in local_ccs)
    ):
        why = req.reasons.get("min_compute_capability", "this format")
        out.append(
            Finding(
                "error",
                f"{why} needs a GPU with compute capability >= {req.min_compute_capability}, but this machine has "
                f"{where}",
            )
        )
    if machine.gpus and len(machine.gpus) < req.world_size:
        out.append(
            Finding(
                "warning",
                f"the artifact is split over {req.world_size} GPUs (tp {m.parallel.get('tp')} x pp "
                f"{m.parallel.get('pp')}); this machine has {len(machine.gpus)}",
            )
        )
    return sorted(out, key=lambda f: f.level != "error")


def _probe(machine: Machine) -> str:
    return "no nvidia-smi, no CUDA torch" if machine.gpu_probe == "none" else f"checked with {machine.gpu_probe}"


def _library(label: str, needed: str | None, local: str | None, module: str) -> list[Finding]:
    if not needed:
        return []
    if local is None:
        return [
            Finding(
                "warning",
                f"{label} is not installed here ({module} not found): the engines need {label} {needed} "
                "(run them inside nvcr.io/nvidia/tensorrt-llm/release with that version)",
            )
        ]
    if local != needed:
        return [
            Finding(
                "error",
                f"the engines were built with {label} {needed}, but this machine has {label} {local}: engines do not "
                f"load across {label} versions; use {label} {needed} or rebuild the engines here",
            )
        ]
    return []
