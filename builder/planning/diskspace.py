"""Refuse a build early when the filesystem it writes to cannot hold what its stages are about to write.

A 70B build that dies of a full disk after hours of calibration costs those hours again; the estimate is cheap
arithmetic on the model config (builder/planning/plan.py's per-rank checkpoint sizes), so it runs before any stage does.
Estimates per stage (bytes written into the artifact, or the shared cache for a GGUF conversion):

- resolve: nothing for a local or hub model (hub files go to the Hugging Face cache); a GGUF file is converted once
  into $TRTQ_CACHE at its dequantized size (its tensors' elements x 2 bytes, x 4 for a float32 GGUF);
- quantize: the calibrated weights at the calibration dtype (float32 on the CPU, 16-bit on a GPU), plus the
  unsharded (tp1) checkpoint when the recipe targets a checkpoint or engine;
- checkpoint: every rank's shard as `trtq plan` predicts it (within 5% of real exports, tests/plan);
- hf: the same weights unsplit; engine: the weights on the GPU, as the engine files hold them.

Each filesystem must have the sum plus 10% and 64 MiB to spare. TRTQ_SKIP_DISK_CHECK=1 skips the check.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from builder.errors import DiskSpaceError

log = logging.getLogger("trtq.build")

MARGIN = 1.10
SLACK = 64 * 1024**2


def stage_bytes(stage: str, recipe, config: dict[str, Any]) -> int:
    """Bytes the stage ``stage`` writes for ``recipe`` on a model with HF ``config``."""
    from builder.planning.plan import estimate

    q, p = recipe.quantization, recipe.parallel
    if stage == "quantize":
        full = estimate(config, "fp16", "none", 1, 1).checkpoint_bytes[0]
        state = full * (1 if recipe.calibration.device == "cuda" else 2)  # float32 calibration on the CPU
        if "checkpoint" in recipe.targets or "engine" in recipe.targets:  # plus the unsharded checkpoint
            state += estimate(config, q.format, q.kv_cache, 1, 1).checkpoint_bytes[0]
        return state
    if stage == "checkpoint":
        return sum(estimate(config, q.format, q.kv_cache, p.tp, p.pp).checkpoint_bytes)
    if stage == "hf":
        return estimate(config, q.format, q.kv_cache, 1, 1).checkpoint_bytes[0]
    if stage == "engine":
        return sum(estimate(config, q.format, q.kv_cache, p.tp, p.pp, recipe.engine).weight_bytes)
    return 0


def gguf_converted_bytes(reader) -> int:
    """The size of a GGUF file (an open GGUFReader) once dequantized into a 16-bit (or float32) HF checkpoint."""
    field = reader.fields.get("general.file_type")
    file_type = int(field.parts[field.data[0]][0]) if field is not None else -1
    return sum(int(t.n_elements) for t in reader.tensors) * (4 if file_type == 0 else 2)


def check_space(writes: list[tuple[str, Path, int]]) -> None:
    """``writes``: (what, directory it goes to, bytes). Raises DiskSpaceError naming the filesystem when short."""
    if os.environ.get("TRTQ_SKIP_DISK_CHECK", "").lower() in ("1", "true", "yes"):
        return
    by_fs: dict[int, list[tuple[str, Path, int]]] = {}
    for what, where, n in writes:
        if n > 0:
            by_fs.setdefault(os.stat(_existing(where)).st_dev, []).append((what, where, n))
    for items in by_fs.values():
        where = _existing(items[0][1])
        need = int(sum(n for _, _, n in items) * MARGIN) + SLACK
        free = shutil.disk_usage(where).free
        parts = ", ".join(f"{what} {_size(n)}" for what, _, n in items)
        log.debug("disk: %s needs about %s on %s (%s free)", parts, _size(need), mount_point(where), _size(free))
        if need > free:
            raise DiskSpaceError(
                f"not enough disk space on {mount_point(where)} (for {items[0][1]}): this build writes about "
                f"{_size(need)} ({parts}, with 10% margin) but only {_size(free)} is free: free some space or "
                "build elsewhere with --root (TRTQ_SKIP_DISK_CHECK=1 skips this check)"
            )


def mount_point(path: Path) -> Path:
    path = Path(os.path.realpath(_existing(path)))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
