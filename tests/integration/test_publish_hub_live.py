"""Live Hugging Face Hub round trip: publish -> pull -> sha256 equal, on a real (private) repository.

Runs only when HF_TOKEN and TRTQ_TEST_HUB_REPO (e.g. my-user/trtq-live-test; it is created private and
overwritten with --force) are set and huggingface.co is reachable; skips otherwise. Never part of CI.
"""

from __future__ import annotations

import os
import socket

import pytest

from builder.publish import publish_artifact
from runtime import compat
from runtime.pull import pull
from tests._publish import DEFAULT_FILES, make_artifact, tree_hashes

pytestmark = pytest.mark.hub


def _online() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_live_hub_round_trip(tmp_path):
    repo = os.environ.get("TRTQ_TEST_HUB_REPO")
    if not os.environ.get("HF_TOKEN") or not repo:
        pytest.skip("live Hub test: set HF_TOKEN and TRTQ_TEST_HUB_REPO=org/name to run it")
    if not _online():
        pytest.skip("live Hub test: huggingface.co is not reachable")
    art = make_artifact(tmp_path / "a")
    r = publish_artifact(art, f"hf://{repo}", force=True)
    assert r["revision"]
    got = pull(f"hf://{repo}@{r['revision']}", tmp_path / "got", machine=compat.Machine())
    assert got.resolved == r["revision"]
    published = tree_hashes(tmp_path / "got")
    assert published == {k: v for k, v in tree_hashes(art).items() if k in published}
    assert sorted(published) == sorted([*DEFAULT_FILES, "manifest.json"])
