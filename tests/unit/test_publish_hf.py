"""hf:// publish and pull against huggingface_hub's HfApi, mocked at the method level (no Hub runs offline).

These pin the exact calls: a private repo by default, one commit holding every file + manifest.json + README.md,
the overwrite check, branch creation, and a pull pinned to one commit sha.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi  # noqa: E402

from builder.publish import publish_artifact  # noqa: E402
from builder.publish._artifact import PublishFailed, PublishRefused  # noqa: E402
from runtime import compat  # noqa: E402
from runtime.pull import IntegrityError, pull  # noqa: E402
from tests._publish import DEFAULT_FILES, make_artifact, tree_hashes  # noqa: E402

SHA = "c0ffee" + "0" * 34


class FakeHub:
    """Records every HfApi call; answers like a Hub holding ``files`` on ``branches``."""

    def __init__(self, monkeypatch, files=(".gitattributes",), branches=("main",)):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.files, self.branches = list(files), list(branches)
        for name in (
            "create_repo",
            "list_repo_refs",
            "list_repo_files",
            "create_branch",
            "create_commit",
            "model_info",
        ):
            monkeypatch.setattr(HfApi, name, self._recorder(name))

    def _recorder(self, name):
        def method(api, *args, **kwargs):
            self.calls.append((name, args, kwargs))
            return getattr(self, "_" + name)(*args, **kwargs)

        return method

    def names(self):
        return [c[0] for c in self.calls]

    def call(self, name):
        (found,) = [c for c in self.calls if c[0] == name]
        return found

    def _create_repo(self, repo_id, **kw):
        return SimpleNamespace(url=f"https://huggingface.co/{repo_id}", repo_id=repo_id)

    def _list_repo_refs(self, repo_id, **kw):
        return SimpleNamespace(branches=[SimpleNamespace(name=b) for b in self.branches])

    def _list_repo_files(self, repo_id, **kw):
        return list(self.files)

    def _create_branch(self, repo_id, **kw):
        return None

    def _create_commit(self, repo_id, operations, **kw):
        self.operations = list(operations)
        return SimpleNamespace(oid=SHA, commit_url=f"https://huggingface.co/{repo_id}/commit/{SHA}")

    def _model_info(self, repo_id, revision=None, **kw):
        return SimpleNamespace(sha=SHA)


def _ops(hub):
    return {op.path_in_repo: op for op in hub.operations}


def test_new_repository_is_private_and_gets_one_commit(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    art = make_artifact(tmp_path / "a")
    r = publish_artifact(art, "hf://me/smol-fp16")
    assert hub.names() == ["create_repo", "list_repo_files", "create_commit"]
    assert hub.call("create_repo")[1:] == (("me/smol-fp16",), {"repo_type": "model", "private": True, "exist_ok": True})
    assert hub.call("list_repo_files")[1:] == (("me/smol-fp16",), {"repo_type": "model"})
    _, args, kw = hub.call("create_commit")
    assert args == ("me/smol-fp16",)
    assert kw["repo_type"] == "model" and kw["revision"] is None
    assert kw["commit_message"] == "trtq publish tiny-fp16 (fp16, tp1 pp1)"
    ops = _ops(hub)
    assert sorted(ops) == sorted([*DEFAULT_FILES, "manifest.json", "README.md"])
    assert all(isinstance(op, CommitOperationAdd) for op in hub.operations)
    assert ops["checkpoint/rank0.safetensors"].path_or_fileobj == str(art / "checkpoint/rank0.safetensors")
    assert ops["manifest.json"].path_or_fileobj == (art / "manifest.json").read_bytes()
    assert ops["README.md"].path_or_fileobj.startswith(b"---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert r["revision"] == SHA and r["location"].endswith(f"/commit/{SHA}")


def test_public_flag(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x", public=True)
    assert hub.call("create_repo")[2]["private"] is False


def test_new_branch_is_created_and_committed_to(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, files=[".gitattributes", "manifest.json"], branches=["main"])
    publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x@h100-tp2")
    assert hub.names() == ["create_repo", "list_repo_refs", "create_branch", "create_commit"]
    assert hub.call("create_branch")[1:] == (("me/x",), {"branch": "h100-tp2", "repo_type": "model", "exist_ok": True})
    assert hub.call("create_commit")[2]["revision"] == "h100-tp2"


def test_existing_revision_is_refused_without_force(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, files=[".gitattributes", "manifest.json", "checkpoint/old.safetensors"])
    with pytest.raises(
        PublishRefused, match=r"hf://me/x already holds a published artifact \(manifest.json\).*--force"
    ):
        publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x")
    assert "create_commit" not in hub.names()


def test_existing_branch_is_checked_too(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, files=[".gitattributes", "manifest.json"], branches=["main", "v1"])
    with pytest.raises(PublishRefused):
        publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x@v1")
    assert hub.call("list_repo_files")[2] == {"revision": "v1", "repo_type": "model"}
    assert "create_branch" not in hub.names()


def test_force_replaces_and_deletes_stale_files_in_the_same_commit(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, files=[".gitattributes", "manifest.json", "README.md", "checkpoint/old.safetensors"])
    publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x", force=True)
    deletes = [op.path_in_repo for op in hub.operations if isinstance(op, CommitOperationDelete)]
    assert deletes == ["checkpoint/old.safetensors"]  # README.md and manifest.json are rewritten, not deleted
    assert hub.names().count("create_commit") == 1


def test_permission_error_says_how_to_log_in(tmp_path, monkeypatch):
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    FakeHub(monkeypatch)

    def denied(api, *a, **k):
        req = httpx.Request("POST", "https://huggingface.co/api/models/me/x/commit/main")
        raise HfHubHTTPError("403 Forbidden: you cannot write to me/x", response=httpx.Response(403, request=req))

    monkeypatch.setattr(HfApi, "create_commit", denied)
    with pytest.raises(PublishFailed) as e:
        publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x")
    assert "403 Forbidden" in str(e.value) and "HF_TOKEN" in str(e.value) and e.value.exit_code == 1


def test_token_never_reaches_the_card_or_the_commit(tmp_path, monkeypatch):
    canary = "hf_CANARYtokenVALUE0123456789"
    monkeypatch.setenv("HF_TOKEN", canary)
    hub = FakeHub(monkeypatch)
    r = publish_artifact(make_artifact(tmp_path / "a"), "hf://me/x")
    for op in hub.operations:
        data = op.path_or_fileobj if isinstance(op.path_or_fileobj, bytes) else Path(op.path_or_fileobj).read_bytes()
        assert canary.encode() not in data, op.path_in_repo
    assert canary not in repr(hub.calls) and canary not in repr(r)


def _fake_download(repo: Path, log: list):
    def hf_hub_download(repo_id, filename, *, revision=None, local_dir=None, **kw):
        log.append((repo_id, filename, revision, local_dir))
        src = repo / filename
        if local_dir is None:
            return str(src)
        dest = Path(local_dir) / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return str(dest)

    return hf_hub_download


def test_pull_pins_one_commit_and_verifies(tmp_path, monkeypatch):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/repo")
    hub = FakeHub(monkeypatch)
    log: list = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(tmp_path / "repo", log))
    r = pull("hf://me/x@main", tmp_path / "got", machine=compat.Machine())
    assert hub.call("model_info")[1:] == (("me/x",), {"revision": "main"})
    assert r.resolved == SHA and {entry[2] for entry in log} == {SHA}  # every file read at the same commit
    assert tree_hashes(tmp_path / "got") == tree_hashes(tmp_path / "repo")
    assert not (tmp_path / "got/.cache").exists()


def test_pull_detects_a_tampered_hub_file(tmp_path, monkeypatch):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/repo")
    (tmp_path / "repo/checkpoint/config.json").write_bytes(b'{"tampered": true}')
    FakeHub(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(tmp_path / "repo", []))
    with pytest.raises(IntegrityError, match="checkpoint/config.json"):
        pull("hf://me/x", tmp_path / "got", machine=compat.Machine())
    assert not (tmp_path / "got").exists() and not (tmp_path / ".got.partial").exists()
