"""`file:///path`: publish as a plain directory (a shared filesystem, a mounted bucket, a USB disk)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.publish._artifact import Publishable, PublishFailed, PublishRefused
from runtime.locations import FileLocation
from runtime.manifest import FILENAME, swap_in

_CHUNK = 1 << 20


def publish(
    art: Publishable, loc: FileLocation, *, force: bool, public: bool = False, progress: Callable[[int], None]
) -> dict[str, Any]:
    """Copy into `.NAME.partial/` next to the destination (kept on failure: a re-run resumes), then rename."""
    dest = loc.path
    if dest.resolve() == art.dir.resolve() or art.dir.resolve() in dest.resolve().parents:
        raise PublishRefused(f"{loc}: the destination is the artifact itself or inside it: choose another directory")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        what = "a published artifact" if (dest / FILENAME).exists() else "other files"
        raise PublishRefused(f"{loc} already holds {what}: pass --force to replace it")
    staging = dest.parent / f".{dest.name}.partial"
    uploaded = skipped = sent = 0
    try:
        staging.mkdir(parents=True, exist_ok=True)
        for f in art.all_files:
            target = staging / f.rel
            if f.rel != FILENAME and target.exists() and target.stat().st_size == f.size and _same(target, f.sha256):
                skipped += 1  # copied by an earlier, interrupted publish
                progress(f.size)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            if f.rel == FILENAME:
                tmp.write_bytes(art.manifest_bytes)
            else:
                shutil.copyfile(f.path, tmp)
            os.replace(tmp, target)
            uploaded += 1
            sent += f.size
            progress(f.size)
        _drop_strays(staging, {f.rel for f in art.all_files})
        swap_in(staging, dest)
    except OSError as e:
        raise PublishFailed(
            f"{loc}: {e.strerror or e} ({e.filename or ''}): files copied so far are kept in {staging}; "
            "run the same publish again to resume"
        ) from None
    return {"uploaded": uploaded, "skipped": skipped, "uploaded_bytes": sent, "location": str(dest), "revision": None}


def _drop_strays(staging: Path, keep: set[str]) -> None:
    """Remove files a different, interrupted publish left in the staging directory."""
    for dirpath, _, names in os.walk(staging):
        for name in names:
            full = Path(dirpath) / name
            if full.relative_to(staging).as_posix() not in keep:
                full.unlink()


def _same(path: Path, sha256: str) -> bool:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest() == sha256
