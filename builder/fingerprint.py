"""Fingerprints: a stage's output is reused only while exactly the inputs it depends on are unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from runtime.manifest import sha256_file  # noqa: F401  (one implementation; builder re-exports it)


def fingerprint(inputs: dict[str, Any]) -> str:
    """A short stable hash of JSON-able inputs (key order does not matter)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any] | None, new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two input dicts (to say *why* a stage re-runs)."""
    if old is None:
        return []
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, path + ".")
        elif a != b:
            out.append(path)
    return out


def file_table(root: Path, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every regular file under ``root`` (sorted, relative POSIX paths) with its size and sha256."""
    rows = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if name in skip or full.is_symlink():
                continue
            rows.append({"path": rel, "size": full.stat().st_size, "sha256": sha256_file(full)})
    return rows


def file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of a local input file (name, size, mtime): enough to notice it was replaced."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
