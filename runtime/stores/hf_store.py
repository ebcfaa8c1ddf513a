"""`hf://org/name[@revision]`: an artifact in a Hugging Face Hub model repository, read with huggingface_hub.

The revision is resolved to a commit sha once, and every file is read at that commit, so a pull never mixes two
versions. Token: HF_TOKEN or the cached `hf auth login`; endpoint: HF_ENDPOINT. huggingface_hub resumes its own
partial downloads (`.incomplete` files under the destination's .cache/huggingface/).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.locations import HfLocation
from runtime.stores import MANIFEST, Progress, StoreError, require


def transport_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises when the Hub or the network fails (httpx in 1.x, requests before)."""
    import importlib.util

    from huggingface_hub import errors

    out: list[type[Exception]] = [errors.HfHubHTTPError, errors.LocalEntryNotFoundError, OSError]
    for module, attr in (("httpx", "HTTPError"), ("requests.exceptions", "RequestException")):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            out.append(getattr(importlib.import_module(module), attr))
    return tuple(out)


class HfStore:
    def __init__(self, location: HfLocation):
        hub = require("huggingface_hub", "hf")
        self.loc = location
        self.api = hub.HfApi()
        self.hub = hub
        self.resolved: str | None = None

    def _errors(self) -> tuple[type[Exception], ...]:
        return transport_errors()

    def _explain(self, e: Exception, what: str) -> StoreError:
        from huggingface_hub import errors

        if isinstance(e, errors.RepositoryNotFoundError):
            return StoreError(
                f"{self.loc}: repository not found, or private and no token allows it: set HF_TOKEN or run `hf auth login`"
            )
        if isinstance(e, errors.RevisionNotFoundError):
            return StoreError(f"{self.loc}: revision {self.loc.revision!r} not found in the repository")
        if isinstance(e, errors.EntryNotFoundError):
            return StoreError(f"{self.loc}: {what} not found in the repository at {self.resolved or 'its revision'}")
        return StoreError(f"{self.loc}: {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def manifest_bytes(self) -> bytes:
        try:
            info = self.api.model_info(self.loc.repo_id, revision=self.loc.revision)
            self.resolved = info.sha
            path = self.hub.hf_hub_download(self.loc.repo_id, MANIFEST, revision=self.resolved)
        except self._errors() as e:
            raise self._explain(e, MANIFEST) from None
        return Path(path).read_bytes()

    def fetch(self, rel: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        # hf_hub_download(local_dir=...) writes to local_dir/rel and resumes from its own .incomplete file;
        # the pull's staging directory is that local_dir.
        local_dir = dest.parents[len(Path(rel).parts) - 1]
        try:
            self.hub.hf_hub_download(self.loc.repo_id, rel, revision=self.resolved, local_dir=local_dir)
        except self._errors() as e:
            raise self._explain(e, rel) from None
        if progress:
            progress(size)

    @staticmethod
    def cleanup(staging: Path) -> None:
        shutil.rmtree(staging / ".cache", ignore_errors=True)


def open_store(location: HfLocation) -> HfStore:
    return HfStore(location)
