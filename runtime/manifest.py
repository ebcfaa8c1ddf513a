"""The artifact manifest (`manifest.json`): what went in, what came out, and whether it can run here.

`builder` writes it; everything that reads an artifact (runners, `trtq show`, pull) reads it through this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import UsageError

SCHEMA_VERSION = 1
FILENAME = "manifest.json"

# `status` values. Only a "complete" artifact is published without --allow-unverified.
COMPLETE = "complete"  # every requested stage finished (and verification passed, when the recipe has `verify:`)
FAILED_VERIFICATION = "failed-verification"  # built, but the accuracy gate in `verify:` failed; see `verify`
INCOMPLETE_PREFIX = "incomplete"  # "incomplete: <why>" or "incomplete (--until export)": a stage failed or was skipped


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str  # relative to the artifact directory, POSIX
    size: int
    sha256: str


class StageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fingerprint: str
    seconds: float | None = None
    reused: bool = False


class Manifest(BaseModel):
    """Versioned manifest schema. Unknown keys are kept (a newer trtq may add some) but never required."""

    model_config = ConfigDict(extra="allow", frozen=True)
    schema_version: int = SCHEMA_VERSION
    name: str
    status: str  # "complete", "incomplete: ...", "failed-verification"
    created: str
    trtq_version: str
    recipe: dict[str, Any]
    recipe_file: str | None = None
    source: dict[str, Any] = Field(default_factory=dict)  # kind, hub, revision, commit, gguf/file identity
    quantization: dict[str, Any] = Field(default_factory=dict)  # quant_algo, kv_cache_quant_algo, format
    parallel: dict[str, int] = Field(default_factory=dict)  # tp, pp, world_size
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    # trtq's libraries (torch, transformers, nvidia-modelopt, tensorrt-llm, tensorrt, ...) and "cuda" (torch's build).
    versions: dict[str, str | None] = Field(default_factory=dict)
    # Engines only: the GPU they were built on and for. Keys: gpu (name), compute_capability ("9.0"),
    # gpu_memory_bytes, tensorrt_llm, tensorrt (versions). Engines run only where these match.
    hardware: dict[str, Any] = Field(default_factory=dict)
    # Every deliverable file (checkpoint/, hf/, engine/, report/, verify/) with size and sha256; never caches.
    files: list[FileEntry] = Field(default_factory=list)
    # The verify stage's results (perplexity gate, prompt checks) when the recipe has `verify:`; None otherwise.
    verify: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def world_size(self) -> int:
        return int(self.parallel.get("world_size", 1))


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB': sizes as `trtq show` and model cards print them."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in 1 MiB chunks: what the manifest's `files` table records for each file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ManifestError(UsageError):
    """The artifact has no readable manifest."""


def read_manifest(artifact: str | Path) -> Manifest:
    path = Path(artifact) / FILENAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{artifact}: no {FILENAME}: not a trtq artifact, or its build never finished") from None
    except OSError as e:
        raise ManifestError(f"{path}: unreadable manifest: {e}") from None
    return parse_manifest(data, str(path))


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest from its bytes (a file, or a store's copy); ``where`` names it in the one-line error."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{where}: not JSON ({e}): the manifest is damaged") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: not a trtq manifest (not a JSON object)")
    if int(raw.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: manifest schema {raw.get('schema_version')} is newer than this trtq reads ({SCHEMA_VERSION}): "
            "upgrade trtq"
        )
    try:
        return Manifest.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError: report as a damaged manifest
        raise ManifestError(f"{where}: not a valid trtq manifest: {str(e).splitlines()[0]}") from None


def file_problems(base: Path, entries) -> list[str]:
    """What differs between the files under ``base`` and the manifest's ``(relative path, FileEntry)`` pairs: missing
    files, sizes and sha256s (empty when every file is as listed). Publish checks this before uploading, pull after
    downloading."""
    bad = []
    for rel, entry in entries:
        path = Path(base) / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            bad.append(f"{rel}: missing")
            continue
        if size != entry.size:
            bad.append(f"{rel}: {size} bytes, manifest says {entry.size}")
            continue
        got = sha256_file(path)
        if got != entry.sha256:
            bad.append(f"{rel}: sha256 {got[:16]}..., manifest says {entry.sha256[:16]}...")
    return bad


def swap_in(staging: Path, dest: Path) -> None:
    """Put the complete directory ``staging`` where ``dest`` is, replacing it: two renames, so a reader sees the old
    or the new directory, never a mixture; the old one is deleted afterwards."""
    import os
    import shutil

    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.rename(dest, old)
        os.rename(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, dest)
