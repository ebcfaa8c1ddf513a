"""`trtq pull URL [DEST]`: download a published artifact, prove every byte, and say whether it can run here.

    1. read the remote manifest.json (small) and validate it;
    2. check compatibility with this machine (GPU compute capability, TensorRT-LLM/TensorRT versions) *before*
       downloading gigabytes: an engine that cannot run here is an error unless ignore_compat;
    3. download every listed file into DEST's staging directory `.DEST.partial/`, resuming files a previous
       interrupted pull left there;
    4. check every file's size and sha256 against the manifest: on a mismatch delete the staging directory and fail;
    5. rename the staging directory to DEST. DEST therefore only ever holds a complete, verified artifact.

This module is part of `runtime` (a serving box has no `builder`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from runtime import compat
from runtime.errors import TrtqError
from runtime.locations import LocationError, parse_location
from runtime.manifest import FILENAME, Manifest, ManifestError, file_problems, swap_in
from runtime.manifest import parse_manifest as read_manifest_bytes
from runtime.stores import MissingClient, StoreError, open_store

log = logging.getLogger("trtq.pull")

_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9._-]+$")
STATE = ".trtq-pull.json"  # in the staging directory: which remote manifest the partial files belong to
_CHUNK = 1 << 20


class PullError(TrtqError):
    """A pull failed. ``exit_code`` is what the CLI exits with (1 failure, 2 bad input)."""


class PullRefused(PullError):
    """The user asked for something pull will not do as asked (bad URL, DEST taken)."""

    exit_code = 2


class IntegrityError(PullError):
    """A downloaded file does not match the manifest (size or sha256). The partial download has been deleted."""


class IncompatibleError(PullError):
    """The artifact cannot run on this machine (and ignore_compat was not given). Nothing was downloaded."""


@dataclass
class PullResult:
    url: str
    dest: Path
    name: str
    status: str
    resolved: str | None
    files: int
    bytes: int
    downloaded_bytes: int
    resumed_files: int
    seconds: float
    up_to_date: bool = False
    findings: list[compat.Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "dest": str(self.dest),
            "name": self.name,
            "status": self.status,
            "resolved": self.resolved,
            "files": self.files,
            "bytes": self.bytes,
            "downloaded_bytes": self.downloaded_bytes,
            "resumed_files": self.resumed_files,
            "seconds": round(self.seconds, 3),
            "up_to_date": self.up_to_date,
            "verified": "sha256",
            "compatibility": [{"level": f.level, "message": f.message} for f in self.findings],
        }


def parse_manifest(data: bytes, where: str) -> Manifest:
    """The store's manifest; a damaged one fails the pull (exit 1), naming the store."""
    try:
        return read_manifest_bytes(data, f"{where}: {FILENAME}")
    except ManifestError as e:
        raise PullError(str(e)) from None


def safe_relpath(rel: str, where: str) -> PurePosixPath:
    """A manifest path is relative and stays inside the artifact; anything else is refused (a hostile manifest)."""
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts) or "\\" in rel:
        raise PullError(f"{where}: manifest lists an unsafe path {rel!r}: refusing to write outside the artifact")
    if p.as_posix() == FILENAME:
        raise PullError(f"{where}: manifest lists {FILENAME} as one of its own files: the manifest is damaged")
    return p


def pull(
    url: str,
    dest: Path | None = None,
    *,
    root: Path = Path("engines"),
    force: bool = False,
    ignore_compat: bool = False,
    machine: compat.Machine | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PullResult:
    """Pull the artifact at ``url`` into ``dest`` (default ``root/<manifest name>``); see the module doc for steps.

    ``progress(bytes_now, total_bytes)`` is called as bytes arrive.
    Raises PullError subclasses: PullRefused (bad URL, DEST holds something else), IncompatibleError,
    IntegrityError (staging deleted), PullError (store unreachable: run again to resume).
    """
    t0 = time.perf_counter()
    try:
        location = parse_location(url)
    except LocationError as e:
        raise PullRefused(str(e)) from None
    where = str(location)
    try:
        store = open_store(location)
        manifest_data = store.manifest_bytes()
    except MissingClient as e:
        raise PullRefused(str(e)) from None
    except StoreError as e:
        raise PullError(str(e)) from None
    manifest = parse_manifest(manifest_data, where)
    if dest is None and not _NAME.match(manifest.name):
        raise PullError(f"{where}: the manifest's name {manifest.name!r} is not a safe directory name: give DEST")
    entries = [(safe_relpath(f.path, where), f) for f in manifest.files]
    if not manifest.complete:
        log.warning(
            "%s: status is '%s': this artifact did not complete or did not pass verification", where, manifest.status
        )

    findings = compat.check(manifest, machine if machine is not None else compat.this_machine())
    errors = [f for f in findings if f.level == "error"]
    if errors and not ignore_compat:
        raise IncompatibleError(
            "\n".join(f"{where}: cannot run on this machine: {f.message}" for f in errors)
            + "\n(nothing was downloaded; pass --ignore-compat to download it anyway, e.g. for another machine)"
        )
    for f in findings:
        log.warning("%s: %s", "compatibility" if f.level == "warning" else "incompatible (ignored)", f.message)

    dest = Path(dest) if dest is not None else Path(root) / manifest.name
    dest = dest.absolute()
    total = sum(f.size for _, f in entries)
    result = PullResult(url, dest, manifest.name, manifest.status, store.resolved, len(entries), total, 0, 0, 0.0)
    result.findings = findings

    if not force and (dest / FILENAME).exists() and (dest / FILENAME).read_bytes() == manifest_data:
        _verify(dest, entries, where, delete_on_mismatch=None)  # same artifact already here: prove it, download nothing
        result.up_to_date = True
        result.seconds = time.perf_counter() - t0
        return result
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise PullRefused(
            f"{dest} already exists and holds something else: choose another DEST, or pass --force to replace it"
        )

    staging = dest.parent / f".{dest.name}.partial"
    _prepare_staging(staging, manifest_data, url)
    try:
        for rel, entry in entries:
            target = staging / rel
            have = target.stat().st_size if target.exists() else 0
            if have == entry.size:
                continue  # complete from an earlier attempt (its sha256 is checked below with the rest)
            if 0 < have < entry.size:
                result.resumed_files += 1
                log.info("resuming %s at %d of %d bytes", rel, have, entry.size)

            def counted(n: int) -> None:
                result.downloaded_bytes += n
                if progress:
                    progress(n, total)

            store.fetch(rel.as_posix(), entry.size, target, counted)
    except StoreError as e:
        raise PullError(
            f"{e}\n(the files downloaded so far are kept in {staging}: run the same trtq pull to resume)"
        ) from None
    _verify(staging, entries, where, delete_on_mismatch=staging)
    if hasattr(store, "cleanup"):
        store.cleanup(staging)
    (staging / STATE).unlink()
    (staging / FILENAME).write_bytes(manifest_data)
    swap_in(staging, dest)
    result.seconds = time.perf_counter() - t0
    return result


def _prepare_staging(staging: Path, manifest_data: bytes, url: str) -> None:
    """Keep a staging directory only if it holds partial files of this very manifest; else start clean."""
    digest = hashlib.sha256(manifest_data).hexdigest()
    state = staging / STATE
    try:
        same = json.loads(state.read_text()).get("manifest_sha256") == digest
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        state.write_text(json.dumps({"url": url, "manifest_sha256": digest}) + "\n")


def _verify(base: Path, entries, where: str, delete_on_mismatch: Path | None) -> None:
    """Every file's size and sha256 equal the manifest's, or raise IntegrityError (deleting ``delete_on_mismatch``)."""
    bad = file_problems(base, entries)
    if not bad:
        return
    if delete_on_mismatch is not None:
        shutil.rmtree(delete_on_mismatch, ignore_errors=True)
        tail = "the partial download was deleted; the published copy is damaged or was tampered with"
    else:
        tail = f"the copy in {base} was modified: pull it again with --force"
    raise IntegrityError(
        "\n".join(f"{where}: integrity check failed: {b}" for b in bad[:10])
        + (f"\n... and {len(bad) - 10} more" if len(bad) > 10 else "")
        + f"\n({tail})"
    )
