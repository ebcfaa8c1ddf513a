"""Publish an artifact: `publish_artifact(dir, url)` checks it, then hands it to the module of the URL's scheme.

    hf://org/name[@branch]   hf.py    huggingface_hub: private repo by default, one commit, generated model card
    s3://bucket/prefix       s3.py    boto3: multipart, resumable, sha256 in object metadata
    oci://registry/repo:tag  oci.py   ORAS: one OCI layer per file, manifest facts as annotations
    file:///path             file.py  a plain directory copy

Every scheme uploads the deliverable files first and manifest.json last, refuses to overwrite an existing
tag/revision/prefix unless force, and refuses incomplete or failed artifacts unless allow_unverified.
Credentials come from each service's usual environment and config; trtq never reads, logs or stores them.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.errors import MissingDependency, UsageError
from runtime.locations import LocationError, parse_location
from runtime.stores import MissingClient

log = logging.getLogger("trtq.publish")


def publish_artifact(
    artifact_dir: Path,
    url: str,
    *,
    force: bool = False,
    allow_unverified: bool = False,
    public: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Publish the artifact in ``artifact_dir`` to ``url``; return a summary (JSON-able).

    Raises PublishRefused (exit 2; nothing was uploaded) or PublishFailed (exit 1; run again to resume).
    ``public`` only matters for hf:// (a new repository is private unless it is given).
    ``progress(bytes_done_now, total_bytes)`` is called as files (S3: parts) are stored or found already there.
    """
    from builder.publish._artifact import load_publishable

    try:
        location = parse_location(url)
    except LocationError as e:
        raise UsageError(str(e)) from None
    t0 = time.perf_counter()
    art = load_publishable(Path(artifact_dir), allow_unverified=allow_unverified)
    if not art.manifest.complete:
        log.warning("publishing %s although its status is '%s' (--allow-unverified)", artifact_dir, art.manifest.status)
    module = importlib.import_module(f"builder.publish.{location.scheme}")
    log.info("publishing %s (%d files, %d bytes) to %s", artifact_dir, len(art.all_files), art.total_bytes, location)
    try:
        total = art.total_bytes
        result = module.publish(
            art, location, force=force, public=public, progress=(lambda n: progress(n, total)) if progress else _noop
        )
    except MissingClient as e:
        raise MissingDependency(str(e)) from None
    return {
        "artifact": str(artifact_dir),
        "url": str(location),
        "scheme": location.scheme,
        "name": art.manifest.name,
        "status": art.manifest.status,
        "files": len(art.all_files),
        "bytes": art.total_bytes,
        **result,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _noop(n: int) -> None:
    pass
