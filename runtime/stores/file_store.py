"""`file:///path`: an artifact directory on a local or mounted filesystem."""

from __future__ import annotations

from pathlib import Path

from runtime.locations import FileLocation
from runtime.stores import CHUNK, MANIFEST, Progress, StoreError, resume_offset


class FileStore:
    def __init__(self, location: FileLocation):
        self.root = location.path
        self.resolved = None

    def manifest_bytes(self) -> bytes:
        try:
            return (self.root / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"file://{self.root}: no {MANIFEST}: not a published trtq artifact") from None
        except OSError as e:
            raise StoreError(f"file://{self.root}: cannot read {MANIFEST}: {e.strerror}") from None

    def fetch(self, rel: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        offset = resume_offset(dest, size)
        src = self.root / rel
        try:
            with open(src, "rb") as fin, open(dest, "ab") as fout:
                fin.seek(offset)
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
                    if progress:
                        progress(len(chunk))
        except FileNotFoundError:
            raise StoreError(f"file://{self.root}: {rel} is listed in the manifest but missing") from None


def open_store(location: FileLocation) -> FileStore:
    return FileStore(location)
