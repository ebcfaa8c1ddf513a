"""Publish and pull through file:// (no server needed): what is published, refusals, integrity, resume, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest

from builder.errors import UsageError
from builder.publish import publish_artifact
from builder.publish._artifact import PublishRefused
from runtime import compat
from runtime.pull import IncompatibleError, IntegrityError, PullError, PullRefused, pull
from tests._publish import DEFAULT_FILES, make_artifact, run_cli, tree_hashes


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as compat sees it: no GPU, no TensorRT-LLM (and no probing, so no torch import)."""
    monkeypatch.setattr(compat, "this_machine", lambda: compat.Machine())


H100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_llm": "1.2.1", "tensorrt": "10.13.2"}


def test_publishes_exactly_the_manifest_files_and_manifest_last(tmp_path):
    art = make_artifact(tmp_path / "a")
    r = publish_artifact(art, f"file://{tmp_path}/store")
    assert r["files"] == 4 and r["uploaded"] == 4
    published = tree_hashes(tmp_path / "store")
    assert sorted(published) == sorted([*DEFAULT_FILES, "manifest.json"])  # no resolve/, .stage.json, .lock
    assert published == {k: v for k, v in tree_hashes(art).items() if k in published}


def test_pull_verifies_and_lands_complete(tmp_path):
    art = make_artifact(tmp_path / "a")
    publish_artifact(art, f"file://{tmp_path}/store")
    r = pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    assert r.files == 3 and r.downloaded_bytes == sum(map(len, DEFAULT_FILES.values()))
    assert tree_hashes(tmp_path / "got") == tree_hashes(tmp_path / "store")
    assert not (tmp_path / ".got.partial").exists()
    again = pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    assert again.up_to_date and again.downloaded_bytes == 0


def test_default_dest_is_root_slash_name(tmp_path):
    publish_artifact(make_artifact(tmp_path / "a", name="smol-fp16"), f"file://{tmp_path}/store")
    r = pull(f"file://{tmp_path}/store", root=tmp_path / "engines", machine=compat.Machine())
    assert r.dest == tmp_path / "engines" / "smol-fp16" and (r.dest / "manifest.json").is_file()


@pytest.mark.parametrize(
    "status, says",
    [
        ("failed-verification", "failed verification: pass --allow-unverified"),
        ("incomplete: engine: no GPU", "is not complete: finish the build"),
        ("incomplete (--until export)", "is not complete"),
    ],
)
def test_refuses_incomplete_or_failed_unless_allowed(tmp_path, status, says):
    art = make_artifact(tmp_path / "a", status=status)
    with pytest.raises(PublishRefused) as e:
        publish_artifact(art, f"file://{tmp_path}/store")
    assert says in str(e.value) and e.value.exit_code == 2
    assert not (tmp_path / "store").exists()
    r = publish_artifact(art, f"file://{tmp_path}/store", allow_unverified=True)
    assert r["status"] == status and (tmp_path / "store" / "manifest.json").is_file()


def test_refuses_to_overwrite_unless_forced(tmp_path):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/store")
    other = make_artifact(tmp_path / "b", {"checkpoint/config.json": b"{}"}, name="other")
    with pytest.raises(PublishRefused, match="already holds a published artifact: pass --force"):
        publish_artifact(other, f"file://{tmp_path}/store")
    publish_artifact(other, f"file://{tmp_path}/store", force=True)
    assert sorted(tree_hashes(tmp_path / "store")) == ["checkpoint/config.json", "manifest.json"]  # old files gone


def test_refuses_an_artifact_changed_after_its_build(tmp_path):
    art = make_artifact(tmp_path / "a")
    (art / "checkpoint/tokenizer.json").write_text("{}")
    with pytest.raises(PublishRefused, match="checkpoint/tokenizer.json: differs from the manifest"):
        publish_artifact(art, f"file://{tmp_path}/store")


def test_refuses_a_manifest_listing_caches(tmp_path):
    art = make_artifact(tmp_path / "a", {"resolve/source.json": b"{}"})
    with pytest.raises(PublishRefused, match="not a deliverable file"):
        publish_artifact(art, f"file://{tmp_path}/store")


def test_bad_url_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="is not an artifact URL"):
        publish_artifact(make_artifact(tmp_path / "a"), "gs://bucket/x")


def test_tampered_file_fails_pull_and_deletes_the_partial_download(tmp_path):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/store")
    blob = tmp_path / "store/checkpoint/rank0.safetensors"
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF  # same size, one flipped byte
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as e:
        pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    assert "checkpoint/rank0.safetensors: sha256" in str(e.value) and "partial download was deleted" in str(e.value)
    assert e.value.exit_code == 1
    assert not (tmp_path / "got").exists() and not (tmp_path / ".got.partial").exists()


def test_interrupted_pull_resumes_from_where_it_stopped(tmp_path, monkeypatch):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/store")
    from runtime.stores import file_store

    real = file_store.FileStore.fetch
    calls = []

    def dying(self, rel, size, dest, progress=None):
        calls.append(rel)
        if rel == "checkpoint/rank0.safetensors":  # half the file arrives, then the connection "drops"
            src = (self.root / rel).read_bytes()
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src[: size // 2])
            raise file_store.StoreError("file://store: connection lost")
        return real(self, rel, size, dest, progress)

    monkeypatch.setattr(file_store.FileStore, "fetch", dying)
    with pytest.raises(PullError, match="run the same trtq pull to resume"):
        pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    staging = tmp_path / ".got.partial"
    half = len(DEFAULT_FILES["checkpoint/rank0.safetensors"]) // 2
    assert (staging / "checkpoint/rank0.safetensors").stat().st_size == half
    assert not (tmp_path / "got").exists()

    monkeypatch.setattr(file_store.FileStore, "fetch", real)
    r = pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    assert r.resumed_files == 1
    # config.json was complete before; of rank0 only the second half moved; tokenizer.json never arrived before.
    assert r.downloaded_bytes == len(DEFAULT_FILES["checkpoint/rank0.safetensors"]) - half + len(
        DEFAULT_FILES["checkpoint/tokenizer.json"]
    )
    assert tree_hashes(tmp_path / "got") == tree_hashes(tmp_path / "store")


def test_staging_from_another_artifact_is_discarded(tmp_path):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/store")
    staging = tmp_path / ".got.partial"
    (staging / "checkpoint").mkdir(parents=True)
    (staging / "checkpoint/rank0.safetensors").write_bytes(b"junk from another artifact")
    (staging / ".trtq-pull.json").write_text(json.dumps({"manifest_sha256": "0" * 64}))
    r = pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    assert r.resumed_files == 0 and tree_hashes(tmp_path / "got") == tree_hashes(tmp_path / "store")


def test_hostile_manifest_paths_are_refused(tmp_path):
    store = make_artifact(tmp_path / "store", {"checkpoint/config.json": b"{}"})
    raw = json.loads((store / "manifest.json").read_text())
    raw["files"].append({"path": "../../etc/evil", "size": 1, "sha256": hashlib.sha256(b"x").hexdigest()})
    (store / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(PullError, match="unsafe path '../../etc/evil'"):
        pull(f"file://{store}", tmp_path / "got", machine=compat.Machine())
    assert not (tmp_path / "etc").exists()


def test_incompatible_engine_is_refused_before_downloading(tmp_path):
    files = {"engine/config.json": b"{}", "engine/rank0.engine": b"\0" * 4096}
    publish_artifact(make_artifact(tmp_path / "a", files, hardware=H100), f"file://{tmp_path}/store")
    a100 = compat.Machine((compat.Gpu("NVIDIA A100-SXM4-80GB", "8.0"),), "1.2.1", "10.13.2", "nvidia-smi")
    with pytest.raises(IncompatibleError) as e:
        pull(f"file://{tmp_path}/store", tmp_path / "got", machine=a100)
    assert "built for compute capability 9.0" in str(e.value) and "--ignore-compat" in str(e.value)
    assert not (tmp_path / "got").exists() and not (tmp_path / ".got.partial").exists()
    r = pull(f"file://{tmp_path}/store", tmp_path / "got", machine=a100, ignore_compat=True)
    assert r.findings[0].level == "error" and (tmp_path / "got/engine/rank0.engine").is_file()


def test_dest_holding_something_else_is_refused(tmp_path):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/store")
    (tmp_path / "got").mkdir()
    (tmp_path / "got/notes.txt").write_text("mine")
    with pytest.raises(PullRefused, match="already exists and holds something else"):
        pull(f"file://{tmp_path}/store", tmp_path / "got", machine=compat.Machine())
    assert (tmp_path / "got/notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------- the CLI
def test_cli_publish_and_pull_json(tmp_path, capsys, no_gpu):
    art = make_artifact(tmp_path / "a")
    code, out, _ = run_cli(["publish", art, "--to", f"file://{tmp_path}/store", "--json"], capsys)
    assert code == 0 and json.loads(out)["uploaded"] == 4
    code, out, err = run_cli(["pull", f"file://{tmp_path}/store", tmp_path / "got", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["files"] == 3 and summary["verified"] == "sha256" and summary["dest"] == str(tmp_path / "got")


def test_cli_exit_codes_and_messages(tmp_path, capsys, no_gpu):
    art = make_artifact(tmp_path / "a", status="failed-verification")
    code, _, err = run_cli(["publish", art, "--to", f"file://{tmp_path}/store"], capsys)
    assert code == 2 and "failed verification: pass --allow-unverified" in err
    code, out, _ = run_cli(["publish", art, "--to", f"file://{tmp_path}/store", "--allow-unverified"], capsys)
    assert code == 0 and "published" in out
    (tmp_path / "store/checkpoint/tokenizer.json").write_text("tampered")
    code, _, err = run_cli(["pull", f"file://{tmp_path}/store", tmp_path / "got"], capsys)
    assert code == 1 and "integrity check failed: checkpoint/tokenizer.json" in err
    assert not (tmp_path / "got").exists()
    code, _, err = run_cli(["pull", "s3://models", tmp_path / "x"], capsys)
    assert code == 2 and "name a prefix" in err


def test_cli_publish_finds_artifact_by_name_under_root(tmp_path, capsys):
    make_artifact(tmp_path / "engines" / "smol", name="smol")
    code, out, err = run_cli(
        ["publish", "smol", "--root", tmp_path / "engines", "--to", f"file://{tmp_path}/s"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "s/manifest.json").is_file() and "published" in out


def test_missing_client_library_names_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` sees when it is not installed
    code, _, err = run_cli(["publish", make_artifact(tmp_path / "a"), "--to", "s3://models/x"], capsys)
    assert code == 2 and "s3:// needs the 'boto3' package" in err and "pip install 'trtq[publish]'" in err


def test_progress_adds_up_to_the_total_even_when_resuming(tmp_path):
    art = make_artifact(tmp_path / "a")
    seen: list[tuple[int, int]] = []
    r = publish_artifact(art, f"file://{tmp_path}/store", progress=lambda n, total: seen.append((n, total)))
    assert sum(n for n, _ in seen) == r["bytes"] and {t for _, t in seen} == {r["bytes"]}


def test_a_hostile_artifact_name_cannot_choose_the_directory(tmp_path):
    store = make_artifact(tmp_path / "store", {"checkpoint/config.json": b"{}"}, name="../../escape")
    with pytest.raises(PullError, match="not a safe directory name: give DEST"):
        pull(f"file://{store}", root=tmp_path / "engines" / "x", machine=compat.Machine())
    seen: list[tuple[int, int]] = []
    r = pull(f"file://{store}", tmp_path / "ok", machine=compat.Machine(), progress=lambda n, t: seen.append((n, t)))
    assert r.dest == tmp_path / "ok" and sum(n for n, _ in seen) == 2 and {t for _, t in seen} == {2}
