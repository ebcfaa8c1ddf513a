"""oci:// publish and pull against a real OCI registry (Debian's docker-registry) on 127.0.0.1, via ORAS."""

from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest

from builder.publish import publish_artifact
from builder.publish._artifact import PublishFailed, PublishRefused
from runtime import compat
from runtime.pull import IntegrityError, pull
from tests._publish import DEFAULT_FILES, make_artifact, registry, tree_hashes

pytestmark = pytest.mark.oci

RANK0 = "checkpoint/rank0.safetensors"
H100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_llm": "1.2.1", "tensorrt": "10.13.2"}


@pytest.fixture
def reg(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTQ_OCI_ATTEMPTS", "1")
    monkeypatch.setenv("TRTQ_OCI_CHUNK_SIZE", str(64 * 1024))  # rank0 (179 kB) goes up in 3 chunks
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no real credentials are read
    (tmp_path / "docker-config").mkdir()
    (tmp_path / "docker-config/config.json").write_text("{}")
    work = tmp_path / "registry"
    work.mkdir()
    with registry(work) as r:
        yield r


def _oci_manifest(reg, repo, ref):
    req = urllib.request.Request(
        f"http://{reg.host}/v2/{repo}/manifests/{ref}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_round_trip_layers_and_annotations(reg, tmp_path):
    files = {**DEFAULT_FILES, "engine/config.json": b"{}", "engine/rank0.engine": b"\1" * 3000}
    art = make_artifact(tmp_path / "a", files, hardware=H100)
    url = f"oci://{reg.host}/trtq/tiny:h100"
    r = publish_artifact(art, url)
    assert r["uploaded"] == 6 and r["revision"].startswith("sha256:")
    m = _oci_manifest(reg, "trtq/tiny", "h100")
    assert m["artifactType"] == "application/vnd.trtq.artifact.v1"
    assert m["config"]["mediaType"] == "application/vnd.trtq.manifest.v1+json"
    titles = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in m["layers"]}
    assert sorted(titles) == sorted([*files, "manifest.json"])
    assert titles[RANK0]["digest"] == "sha256:" + hashlib.sha256(DEFAULT_FILES[RANK0]).hexdigest()
    a = m["annotations"]
    assert a["dev.trtq.compute_capability"] == "9.0" and a["dev.trtq.gpu"] == "NVIDIA H100 80GB HBM3"
    assert a["dev.trtq.tensorrt_llm_version"] == "1.2.1" and a["dev.trtq.format"] == "fp16"
    assert a["dev.trtq.source_commit"] == "a" * 40 and a["dev.trtq.status"] == "complete"
    h100 = compat.Machine((compat.Gpu("NVIDIA H100 80GB HBM3", "9.0"),), "1.2.1", "10.13.2", "nvidia-smi")
    got = pull(url, tmp_path / "got", machine=h100)
    assert got.resolved == r["revision"] and got.findings == []
    assert tree_hashes(tmp_path / "got") == {
        k: v for k, v in tree_hashes(art).items() if k in [*files, "manifest.json"]
    }


def test_oras_pull_gives_the_same_directory(reg, tmp_path):
    """Interoperability: ORAS's own pull (what `oras pull` does) reproduces the artifact."""
    import oras.provider

    art = make_artifact(tmp_path / "a")
    publish_artifact(art, f"oci://{reg.host}/trtq/tiny:v1")
    client = oras.provider.Registry(hostname=reg.host, insecure=True)
    client.pull(target=f"{reg.host}/trtq/tiny:v1", outdir=str(tmp_path / "oras"))
    assert tree_hashes(tmp_path / "oras") == {
        k: v for k, v in tree_hashes(art).items() if k in [*DEFAULT_FILES, "manifest.json"]
    }


def test_existing_tag_is_refused_unless_forced(reg, tmp_path):
    url = f"oci://{reg.host}/trtq/tiny:v1"
    first = publish_artifact(make_artifact(tmp_path / "a"), url)
    other = make_artifact(tmp_path / "b", {"checkpoint/config.json": b'{"other": 1}'}, name="other")
    with pytest.raises(PublishRefused, match="the tag already exists: choose another tag, or pass --force"):
        publish_artifact(other, url)
    assert _oci_manifest(reg, "trtq/tiny", "v1")["annotations"]["org.opencontainers.image.title"] == "tiny-fp16"
    second = publish_artifact(other, url, force=True)
    assert second["revision"] != first["revision"]
    assert _oci_manifest(reg, "trtq/tiny", "v1")["annotations"]["org.opencontainers.image.title"] == "other"


def test_registry_dies_mid_upload_then_rerun_resumes(reg, tmp_path, monkeypatch):
    """The registry process is killed after 2 blobs; restarted on the same storage, the re-run sends only the rest."""
    import oras.provider

    art = make_artifact(tmp_path / "a")
    url = f"oci://{reg.host}/trtq/tiny:v1"
    uploads: list[str] = []
    state = {"die": True}

    def then_maybe_die(real):
        def upload(self, blob, container, layer, **kw):
            r = real(self, blob, container, layer, **kw)
            uploads.append(layer["annotations"]["org.opencontainers.image.title"])
            if len(uploads) == 2 and state["die"]:
                reg.kill()
            return r

        return upload

    for name in ("put_upload", "chunked_upload"):  # rank0 goes in chunks, the small files in one PUT
        monkeypatch.setattr(oras.provider.Registry, name, then_maybe_die(getattr(oras.provider.Registry, name)))
    with pytest.raises(PublishFailed, match="connection to the registry lost.*run the same publish again to resume"):
        publish_artifact(art, url)
    assert uploads == ["checkpoint/config.json", RANK0]
    reg.start()
    state["die"] = False
    uploads.clear()
    seen: list[int] = []
    r = publish_artifact(art, url, progress=lambda n, total: seen.append(n))
    assert sum(seen) == r["bytes"]
    assert uploads == ["checkpoint/tokenizer.json", "manifest.json"]  # the two blobs stored before the crash are kept
    assert r["skipped"] == 2 and r["uploaded"] == 2
    got = pull(url, tmp_path / "got", machine=compat.Machine())
    assert got.files == 3 and (tmp_path / "got" / RANK0).read_bytes() == DEFAULT_FILES[RANK0]


def test_tampered_blob_in_registry_storage_fails_pull(reg, tmp_path):
    url = f"oci://{reg.host}/trtq/tiny:v1"
    publish_artifact(make_artifact(tmp_path / "a"), url)
    blob = reg.blob_path("sha256:" + hashlib.sha256(DEFAULT_FILES[RANK0]).hexdigest())
    data = bytearray(blob.read_bytes())
    data[7] ^= 0xFF
    blob.write_bytes(bytes(data))  # the registry serves stored blobs as they are on disk
    with pytest.raises(IntegrityError, match=f"{RANK0}: sha256"):
        pull(url, tmp_path / "got", machine=compat.Machine())
    assert not (tmp_path / "got").exists() and not (tmp_path / ".got.partial").exists()


def test_missing_tag_is_a_clear_error(reg, tmp_path):
    from runtime.pull import PullError

    with pytest.raises(PullError, match="the tag not found in the registry"):
        pull(f"oci://{reg.host}/trtq/nothing:v9", tmp_path / "got", machine=compat.Machine())


def test_registry_with_login(tmp_path, monkeypatch, capsys):
    """htpasswd (Basic) auth: refused with a clear message without credentials; ORAS_USER/ORAS_PASS or the docker
    config's `auths` let it through; the password is never printed or stored."""
    import base64

    from tests._publish import run_cli

    secret = "CANARYregistryPASS0123"
    monkeypatch.setenv("TRTQ_OCI_ATTEMPTS", "1")
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.delenv("ORAS_USER", raising=False)
    monkeypatch.delenv("ORAS_PASS", raising=False)
    from runtime import compat as compat_module

    monkeypatch.setattr(compat_module, "this_machine", lambda: compat_module.Machine())
    work = tmp_path / "registry"
    work.mkdir()
    art = make_artifact(tmp_path / "a")
    with registry(work, htpasswd=("trtq", secret)) as reg:
        url = f"oci://{reg.host}/trtq/tiny:v1"
        code, _, err = run_cli(["publish", art, "--to", url], capsys)
        assert code == 1 and "the registry refused access: log in" in err and "ORAS_USER" in err

        monkeypatch.setenv("ORAS_USER", "trtq")
        monkeypatch.setenv("ORAS_PASS", secret)
        code, out, err = run_cli(["publish", art, "--to", url, "-v"], capsys)
        assert code == 0, err
        assert secret not in out + err

        monkeypatch.delenv("ORAS_USER")
        monkeypatch.delenv("ORAS_PASS")
        auth = base64.b64encode(f"trtq:{secret}".encode()).decode()
        (docker / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        code, out, err = run_cli(["pull", url, tmp_path / "got", "-v"], capsys)
        assert code == 0, err
        assert secret not in out + err and auth not in out + err
        assert secret not in (tmp_path / "got/manifest.json").read_text()
        for p in reg.storage.rglob("*"):
            if p.is_file():
                assert secret.encode() not in p.read_bytes() and auth.encode() not in p.read_bytes()
