"""`trtq serve`'s choice: trtllm-serve on a GPU inside the TensorRT-LLM container, else the reference server; and
the record of what was started and why (ARTIFACT/serve/serve.json).

The backend comes from runtime.select (the same choice `trtq run` makes). An artifact whose engines or HF
checkpoint cannot be served here (no trtllm-serve, no GPU) falls back to its TensorRT-LLM checkpoint on the
reference runtime when the backend was left on auto, and says so; an explicit --backend engine/pytorch fails with
the reason instead.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.errors import BackendUnavailable

log = logging.getLogger("trtq.serve")

RECORD = Path("serve") / "serve.json"


@dataclass
class Decision:
    server: str  # "trtllm-serve" or "reference"
    backend: str  # "engine", "pytorch" or "reference"
    reason: str


def decide(artifact: Path, backend: str = "auto", cannot_start=None) -> Decision:
    """Which server serves ``artifact`` here, and why. ``cannot_start`` (tests) replaces the machine probe."""
    from runtime.select import checkpoint_dir, choose_backend
    from runtime.serve import trtllm

    chosen, why = choose_backend(artifact, backend)  # the same choice `trtq run` makes, with its reason
    if chosen == "reference":
        return Decision(
            "reference", "reference", f"{why}: serving the TensorRT-LLM checkpoint on the CPU reference runtime"
        )
    why_not = (cannot_start or trtllm.cannot_start)()
    if why_not is None:
        what = "engines (TensorRT backend)" if chosen == "engine" else "unified HF checkpoint (PyTorch backend)"
        return Decision("trtllm-serve", chosen, f"the artifact's {what} and a GPU with trtllm-serve here")
    if backend == "auto" and checkpoint_dir(artifact) is not None:
        return Decision(
            "reference",
            "reference",
            f"the artifact's {chosen} backend cannot start here ({why_not}): serving its TensorRT-LLM checkpoint on "
            "the CPU reference runtime instead",
        )
    raise BackendUnavailable(f"cannot start trtllm-serve for {artifact}: {why_not}")


def write_record(artifact: Path, decision: Decision, **facts: Any) -> Path | None:
    """ARTIFACT/serve/serve.json: what was started, why, and how to reach it (None when not writable)."""
    record = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        **asdict(decision),
        **facts,
    }
    path = artifact / RECORD
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        tmp.replace(path)
    except OSError as e:
        log.warning("could not write %s (%s); the record follows: %s", path, e, json.dumps(record, default=str))
        return None
    return path
