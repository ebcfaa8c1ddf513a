"""`hf://org/name[@branch]`: publish to a Hugging Face Hub model repository with huggingface_hub.

The repository is created private unless --public; every file, manifest.json and a generated model card (README.md)
go in one commit, so the repository never shows half an artifact (huggingface_hub skips LFS files the Hub already
has, so a re-run after a failed upload does not send them again). Refused without --force: a revision that already
holds files other than .gitattributes. With --force, files of the previous artifact that are not in this one are
deleted in the same commit. Token: HF_TOKEN or the cached `hf auth login` (huggingface_hub's own lookup); endpoint:
HF_ENDPOINT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from builder.publish._artifact import Publishable, PublishFailed, PublishRefused
from builder.publish.card import model_card
from runtime.locations import HfLocation
from runtime.stores.hf_store import transport_errors

log = logging.getLogger("trtq.publish")

KEEP = (".gitattributes",)
CARD = "README.md"


def publish(
    art: Publishable, loc: HfLocation, *, force: bool, public: bool = False, progress: Callable[[int], None]
) -> dict[str, Any]:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    repo_id, branch = loc.repo_id, loc.revision
    try:
        repo = api.create_repo(repo_id, repo_type="model", private=not public, exist_ok=True)
        log.info("repository %s ready (%s)", repo_id, "public" if public else "private unless it existed")
        existing: list[str] = []
        if branch is not None:
            branches = {b.name for b in api.list_repo_refs(repo_id, repo_type="model").branches}
            if branch not in branches:
                api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
            else:
                existing = api.list_repo_files(repo_id, revision=branch, repo_type="model")
        else:
            existing = api.list_repo_files(repo_id, repo_type="model")
        taken = [f for f in existing if f not in KEEP]
        if taken and not force:
            what = "a published artifact (manifest.json)" if "manifest.json" in taken else f"{len(taken)} files"
            raise PublishRefused(
                f"{loc} already holds {what}: publish to another branch (@name), or pass --force to replace it"
            )
        card = model_card(art.manifest, art.dir, str(loc)).encode()
        ops: list[Any] = [CommitOperationAdd(path_in_repo=f.rel, path_or_fileobj=str(f.path)) for f in art.files]
        ops.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card))
        ops.append(CommitOperationAdd(path_in_repo="manifest.json", path_or_fileobj=art.manifest_bytes))
        ours = {f.rel for f in art.all_files} | {CARD, *KEEP}
        ops += [CommitOperationDelete(path_in_repo=f) for f in sorted(taken) if f not in ours]
        m = art.manifest
        info = api.create_commit(
            repo_id,
            operations=ops,
            commit_message=f"trtq publish {m.name} ({m.quantization.get('format')}, tp{m.parallel.get('tp')} pp{m.parallel.get('pp')})",
            commit_description=f"Published by trtq {m.trtq_version}; status {m.status}. manifest.json lists every file with its sha256.",
            repo_type="model",
            revision=branch,
        )
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = (
            " (set HF_TOKEN or run `hf auth login` with a token that can write to it)" if status in (401, 403) else ""
        )
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PublishFailed(f"{loc}: {first}{hint}") from None
    except transport_errors() as e:
        raise PublishFailed(
            f"{loc}: connection failed ({type(e).__name__}): run the same publish again to resume"
        ) from None
    progress(art.total_bytes)  # huggingface_hub draws its own per-file bars during the commit
    return {
        "uploaded": len(art.all_files),
        "skipped": 0,
        "uploaded_bytes": art.total_bytes,
        "location": getattr(info, "commit_url", None) or getattr(repo, "url", None) or str(loc),
        "revision": getattr(info, "oid", None),
        "card": CARD,
    }
