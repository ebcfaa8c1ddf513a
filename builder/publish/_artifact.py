"""What gets published: the manifest's deliverable files (each re-checked against its sha256) and manifest.json.

Never the resolve/quantize caches, stage stamps (.stage.json) or the build lock: only what the manifest lists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder.errors import StageFailed, UsageError
from runtime.manifest import FILENAME, Manifest, ManifestError, file_problems, read_manifest

# Stage directories that are build caches, not deliverables: a manifest listing them is refused.
_CACHES = ("resolve", "quantize")
_NEVER = (".stage.json", ".lock")


class PublishRefused(UsageError):
    """Publishing was refused (incomplete or failed artifact, target already taken): exit 2, nothing uploaded."""


class PublishFailed(StageFailed):
    """The upload failed part-way (server gone, permission denied): exit 1. Running it again resumes."""


@dataclass(frozen=True)
class PublishFile:
    rel: str  # POSIX path inside the artifact
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Publishable:
    dir: Path
    manifest: Manifest
    manifest_bytes: bytes
    files: tuple[PublishFile, ...]  # the deliverables, sorted; manifest.json is NOT among them

    @property
    def manifest_file(self) -> PublishFile:
        """manifest.json as a file to upload (always last: its presence marks a complete publish)."""
        return PublishFile(
            FILENAME, self.dir / FILENAME, len(self.manifest_bytes), hashlib.sha256(self.manifest_bytes).hexdigest()
        )

    @property
    def all_files(self) -> tuple[PublishFile, ...]:
        return (*self.files, self.manifest_file)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.all_files)


def load_publishable(artifact_dir: Path, allow_unverified: bool = False) -> Publishable:
    """Read and check an artifact for publishing; raise PublishRefused with the reason and the fix."""
    artifact_dir = Path(artifact_dir)
    try:
        manifest = read_manifest(artifact_dir)
    except ManifestError as e:
        raise PublishRefused(str(e)) from None
    if not manifest.complete:
        failed = manifest.status == "failed-verification"
        what = "failed verification" if failed else "is not complete"
        fix = (
            "pass --allow-unverified to publish it anyway"
            if failed
            else "finish the build (trtq build RECIPE), or pass --allow-unverified to publish it anyway"
        )
        if not allow_unverified:
            raise PublishRefused(f"{artifact_dir}: status '{manifest.status}': the artifact {what}: {fix}")
    if not manifest.files:
        raise PublishRefused(f"{artifact_dir}: the manifest lists no files: nothing to publish (build a target first)")
    files = []
    changed = []
    for entry in manifest.files:
        rel = PurePosixPath(entry.path)
        if (
            rel.is_absolute()
            or any(p in ("", ".", "..") for p in rel.parts)
            or rel.parts[0] in _CACHES
            or rel.name in _NEVER
        ):
            raise PublishRefused(f"{artifact_dir}/{FILENAME}: lists {entry.path!r}, which is not a deliverable file")
        path = artifact_dir / rel
        problems = file_problems(artifact_dir, [(rel, entry)])
        if problems:
            changed.append(
                problems[0]
                if problems[0].endswith("missing")
                else f"{entry.path}: differs from the manifest ({problems[0].split(': ', 1)[1]})"
            )
            continue
        files.append(PublishFile(rel.as_posix(), path, entry.size, entry.sha256))
    if changed:
        raise PublishRefused(
            "\n".join(f"{artifact_dir}: {c}" for c in changed[:10])
            + "\n(the artifact changed after its build: rebuild it with trtq build RECIPE before publishing)"
        )
    manifest_bytes = (artifact_dir / FILENAME).read_bytes()
    return Publishable(artifact_dir, manifest, manifest_bytes, tuple(sorted(files, key=lambda f: f.rel)))
