"""The artifact directory: one sub-directory per stage, each written atomically and stamped with its fingerprint.

    engines/<name>/
      .lock                 held while a build runs
      resolve/  quantize/  checkpoint/  hf/  engine/  verify/     one per stage, each with .stage.json
      manifest.json         written last

A stage writes into `.tmp-<stage>-<pid>/`; only when it finished is its stamp written and the directory renamed into
place, so a stage directory that exists is always complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

from builder._fault import crash_point
from builder.errors import LockedError, UsageError

STAMP = ".stage.json"
MANIFEST = "manifest.json"  # runtime.manifest.FILENAME (a test keeps them equal)


class Workspace:
    """The directory of one artifact under the artifact root."""

    def __init__(self, root: Path, name: str):
        root = Path(root).absolute()
        self.root = root
        self.dir = root / name
        # `name` is validated by the recipe; this guards programmatic callers too (no traversal out of the root).
        if self.dir.resolve().parent != root.resolve():
            raise UsageError(f"artifact name '{name}' would escape the artifact root {root}")
        if self.dir.is_symlink():
            raise UsageError(_symlink_message(self.dir))

    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def stamp(self, stage: str) -> dict[str, Any] | None:
        """The stamp of a completed stage, or None when the stage has not completed."""
        path = self.stage_dir(stage) / STAMP
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a damaged stamp means "not complete": the stage runs again

    @contextlib.contextmanager
    def lock(self, wait: bool = False):
        """Hold the artifact's lock for a build; a second build refuses (or waits) instead of interleaving writes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:  # O_NOFOLLOW: a planted .lock symlink must not make us truncate the file it points to
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if (self.dir / ".lock").is_symlink():
                raise UsageError(_symlink_message(self.dir / ".lock")) from None
            raise UsageError(f"{self.dir / '.lock'}: cannot open the build lock: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                raise LockedError(
                    f"{self.dir} is being built by {holder}: wait for it to finish (or pass --wait to queue)"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            self._refuse_symlinks()
            self._clean_leftovers()
            yield self
        finally:
            os.close(fd)  # closing releases the flock

    def _refuse_symlinks(self) -> None:
        """Stage directories and the manifest are real entries inside the artifact: a symlink could make a build
        reuse (or overwrite) files outside the artifact root, so it is refused, never followed."""
        for p in sorted(self.dir.iterdir()):
            if p.is_symlink() and not p.name.startswith((".tmp-", ".old-")):
                raise UsageError(_symlink_message(p))

    def _clean_leftovers(self) -> None:
        """Remove temporary directories left by a build that was killed (only called under the lock)."""
        for p in [*self.dir.glob(".tmp-*"), *self.dir.glob(".old-*")]:
            if p.is_symlink():
                p.unlink()  # the link, never what it points to
            else:
                shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, stage: str):
        """Yield an empty temporary directory for ``stage``; it is removed if the block raises.

        The caller moves it into place with `publish_stage` once the stage's work is complete.
        """
        tmp = self.dir / f".tmp-{stage}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def publish_stage(self, stage: str, tmp: Path, stamp: dict[str, Any]) -> Path:
        """Stamp ``tmp`` and move it into place as the stage's directory, replacing an older one."""
        write_json_atomic(tmp / STAMP, stamp)
        _fsync_tree(tmp)
        crash_point(f"{stage}:publish")
        final = self.stage_dir(stage)
        old = None
        if final.exists():
            old = self.dir / f".old-{stage}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            crash_point(f"{stage}:swap")
        os.rename(tmp, final)
        _fsync_dir(self.dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def drop_manifest(self) -> None:
        """Remove manifest.json (called under the lock before any stage directory changes)."""
        path = self.dir / MANIFEST
        if path.exists():
            path.unlink()
            _fsync_dir(self.dir)

    def remove_stage(self, stage: str) -> None:
        """Drop a stage's output (a target the recipe no longer asks for)."""
        final = self.stage_dir(stage)
        if final.exists():
            old = self.dir / f".old-{stage}-{os.getpid()}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)


def _symlink_message(path: Path) -> str:
    return (
        f"{path} is a symbolic link (to {os.readlink(path)}): trtq writes artifacts only as real files and "
        "directories inside the artifact root: remove the link (the root itself may be a link)"
    )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: readers see the old or the new file, whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
