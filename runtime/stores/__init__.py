"""Read access to published artifacts, one module per URL scheme (the write side is `builder.publish`).

A store hands `runtime.pull` two things: the artifact's `manifest.json` bytes, and each listed file, appended to a
partial local file from where that one stopped (so an interrupted pull resumes instead of starting over).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from runtime.errors import TrtqError
from runtime.locations import Location

MANIFEST = "manifest.json"
CHUNK = 1 << 20

Progress = Callable[[int], None]


class StoreError(TrtqError):
    """The store could not be read (not found, refused, connection lost). The message names the URL and the fix."""


class MissingClient(StoreError):
    """The client library for a scheme is not installed (boto3, oras). The message names the extra to install."""

    exit_code = 2


class Store(Protocol):
    resolved: str | None  # the immutable version read (commit sha, manifest digest), once known

    def manifest_bytes(self) -> bytes: ...

    def fetch(self, rel: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        """Complete ``dest`` (which may hold a first part of the file already) with the rest of file ``rel``."""
        ...


def open_store(location: Location) -> Store:
    module = importlib.import_module(f"runtime.stores.{location.scheme}_store")
    return module.open_store(location)


def resume_offset(dest: Path, size: int) -> int:
    """How many bytes of ``dest`` to keep: all of a partial file, none of one longer than expected."""
    try:
        have = dest.stat().st_size
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return 0
    if have > size:
        dest.unlink()
        return 0
    return have


def require(module: str, scheme: str):
    """Import an optional client library or raise StoreError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingClient(
            f"{scheme}:// needs the '{module.split('.')[0]}' package, which is not installed: pip install 'trtq[publish]'"
        ) from e
